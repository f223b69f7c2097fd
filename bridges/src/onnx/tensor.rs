//! ONNX element types and `TensorProto` decoding (inline typed fields, raw little-endian
//! bytes, or external data files next to the model).

use kiln_ir::half::{bf16, f16};
use kiln_ir::{tensor::checked_numel, DType, IrError, Result, Tensor};
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::TensorProto;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// ONNX `TensorProto.DataType` names, indexed by type code.
pub(crate) const ONNX_TYPE_NAMES: [&str; 29] = [
    "UNDEFINED",
    "FLOAT",
    "UINT8",
    "INT8",
    "UINT16",
    "INT16",
    "INT32",
    "INT64",
    "STRING",
    "BOOL",
    "FLOAT16",
    "DOUBLE",
    "UINT32",
    "UINT64",
    "COMPLEX64",
    "COMPLEX128",
    "BFLOAT16",
    "FLOAT8E4M3FN",
    "FLOAT8E4M3FNUZ",
    "FLOAT8E5M2",
    "FLOAT8E5M2FNUZ",
    "UINT4",
    "INT4",
    "FLOAT4E2M1",
    "FLOAT8E8M0",
    "UINT2",
    "INT2",
    "FLOAT6E2M3",
    "FLOAT6E3M2",
];

/// ONNX `TensorProto.DataType` code names, for messages about types kiln does not have.
fn onnx_type_name(code: i32) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|i| ONNX_TYPE_NAMES.get(i))
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("unknown type code {code}"))
}

/// The kiln dtype of an ONNX element type code; an error names types kiln lacks.
pub(crate) fn dtype_from_onnx(code: i32) -> Result<DType> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::BF16,
        _ => {
            return Err(IrError::msg(format!(
                "element type {} is not supported",
                onnx_type_name(code)
            )))
        }
    })
}

/// Decodes a tensor. `base_dir` is the model's folder, needed for external data (`None`
/// refuses external data).
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let what = if t.name.is_empty() {
        "a tensor".to_string()
    } else {
        format!("tensor `{}`", t.name)
    };
    decode(t, base_dir).map_err(|e| IrError {
        node: e.node,
        message: format!("{what}: {}", e.message),
    })
}

fn decode(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let dtype = dtype_from_onnx(t.data_type)?;
    let mut shape = Vec::with_capacity(t.dims.len().min(64));
    for &d in &t.dims {
        shape.push(
            usize::try_from(d).map_err(|_| {
                IrError::msg(format!("negative dimension {d} in dims {:?}", t.dims))
            })?,
        );
    }
    let n = checked_numel(&shape)?;
    if t.segment.is_some() {
        return Err(IrError::msg("segmented tensors are not supported"));
    }
    let external = matches!(t.data_location.enum_value(), Ok(DataLocation::EXTERNAL));
    if !external && !t.external_data.is_empty() {
        return Err(IrError::msg(
            "external_data entries without data_location EXTERNAL",
        ));
    }
    if let Err(code) = t.data_location.enum_value() {
        return Err(IrError::msg(format!("unknown data_location {code}")));
    }
    // Every byte count is checked against the element count before anything is allocated,
    // so a tiny file cannot ask for a huge tensor.
    let bytes_needed = n
        .checked_mul(dtype.size())
        .ok_or_else(|| IrError::msg(format!("shape {shape:?} is too large")))?;
    if external {
        let bytes = read_external(t, base_dir, bytes_needed)?;
        return Tensor::from_le_bytes(dtype, shape, &bytes);
    }
    if !t.raw_data.is_empty() || (n == 0 && no_typed_data(t)) {
        if t.raw_data.len() != bytes_needed {
            return Err(IrError::msg(format!(
                "shape {shape:?} of {dtype} needs {bytes_needed} bytes of raw_data, found {}",
                t.raw_data.len()
            )));
        }
        return Tensor::from_le_bytes(dtype, shape, &t.raw_data);
    }
    let field_len = match dtype {
        DType::F32 => t.float_data.len(),
        DType::F64 => t.double_data.len(),
        DType::I64 => t.int64_data.len(),
        DType::U32 | DType::U64 => t.uint64_data.len(),
        _ => t.int32_data.len(),
    };
    if field_len != n {
        return Err(IrError::msg(format!(
            "shape {shape:?} needs {n} elements, the data field holds {field_len}"
        )));
    }
    let i32s = &t.int32_data;
    let u64s = &t.uint64_data;
    match dtype {
        DType::F32 => Tensor::new(shape, t.float_data.clone()),
        DType::F64 => Tensor::new(shape, t.double_data.clone()),
        DType::I64 => Tensor::new(shape, t.int64_data.clone()),
        DType::U64 => Tensor::new(shape, u64s.clone()),
        DType::U32 => Tensor::new(shape, u64s.iter().map(|&x| x as u32).collect::<Vec<_>>()),
        DType::I32 => Tensor::new(shape, i32s.clone()),
        // Narrow types travel in int32_data, one element (or bit pattern) per entry.
        DType::I16 => Tensor::new(shape, i32s.iter().map(|&x| x as i16).collect::<Vec<_>>()),
        DType::I8 => Tensor::new(shape, i32s.iter().map(|&x| x as i8).collect::<Vec<_>>()),
        DType::U16 => Tensor::new(shape, i32s.iter().map(|&x| x as u16).collect::<Vec<_>>()),
        DType::U8 => Tensor::new(shape, i32s.iter().map(|&x| x as u8).collect::<Vec<_>>()),
        DType::Bool => Tensor::new(shape, i32s.iter().map(|&x| x != 0).collect::<Vec<_>>()),
        DType::F16 => Tensor::new(
            shape,
            i32s.iter()
                .map(|&x| f16::from_bits(x as u16))
                .collect::<Vec<_>>(),
        ),
        DType::BF16 => Tensor::new(
            shape,
            i32s.iter()
                .map(|&x| bf16::from_bits(x as u16))
                .collect::<Vec<_>>(),
        ),
    }
}

fn no_typed_data(t: &TensorProto) -> bool {
    t.float_data.is_empty()
        && t.double_data.is_empty()
        && t.int32_data.is_empty()
        && t.int64_data.is_empty()
        && t.uint64_data.is_empty()
}

/// Reads `len` bytes of external data. The location must be a relative path that stays
/// inside the model's folder (no `..`, no absolute path, no symlink out of it).
fn read_external(t: &TensorProto, base_dir: Option<&Path>, bytes_needed: usize) -> Result<Vec<u8>> {
    let base = base_dir.ok_or_else(|| {
        IrError::msg("uses external data, which is refused when loading from bytes")
    })?;
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for e in &t.external_data {
        let num = || {
            e.value.parse::<u64>().map_err(|_| {
                IrError::msg(format!(
                    "external data {} `{}` is not a non-negative integer",
                    e.key, e.value
                ))
            })
        };
        match e.key.as_str() {
            "location" => location = Some(e.value.as_str()),
            "offset" => offset = num()?,
            "length" => length = Some(num()?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| IrError::msg("external data has no location"))?;
    let rel = Path::new(location);
    if location.is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(IrError::msg(format!(
            "external data location `{location}` must be a relative path inside the model's folder"
        )));
    }
    let io = |e: std::io::Error| IrError::msg(format!("external data `{location}`: {e}"));
    let base_real = base.canonicalize().map_err(io)?;
    let real = base.join(rel).canonicalize().map_err(io)?;
    if !real.starts_with(&base_real) {
        return Err(IrError::msg(format!(
            "external data location `{location}` leaves the model's folder"
        )));
    }
    let mut file = std::fs::File::open(&real).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let length = match length {
        Some(l) => l,
        None => file_len.checked_sub(offset).ok_or_else(|| {
            IrError::msg(format!(
                "external data offset {offset} is past the end of `{location}` ({file_len} bytes)"
            ))
        })?,
    };
    let end = offset.checked_add(length);
    if end.map_or(true, |e| e > file_len) {
        return Err(IrError::msg(format!(
            "external data offset {offset} + length {length} is past the end of `{location}` ({file_len} bytes)"
        )));
    }
    if length != bytes_needed as u64 {
        return Err(IrError::msg(format!(
            "the tensor needs {bytes_needed} bytes, its external data has {length}"
        )));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; bytes_needed];
    file.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}
