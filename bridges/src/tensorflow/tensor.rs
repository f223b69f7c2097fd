//! TensorFlow element types, shapes and `TensorProto` decoding.

use super::proto::{TensorProto, TensorShapeProto};
use kiln_ir::half::{bf16, f16};
use kiln_ir::tensor::checked_numel;
use kiln_ir::{DType, Dim, IrError, Result, Shape, Storable, Tensor};

/// Splatting one value over a shape may not make more elements than this.
const MAX_SPLAT: usize = 1 << 31;

pub fn dtype_from_tf(t: i32) -> Result<DType> {
    // Values above 100 are TF's reference types (DT_FLOAT_REF = 101 ...): same element type.
    let base = if t > 100 { t - 100 } else { t };
    Ok(match base {
        1 => DType::F32,
        2 => DType::F64,
        3 => DType::I32,
        4 => DType::U8,
        5 => DType::I16,
        6 => DType::I8,
        9 => DType::I64,
        10 => DType::Bool,
        14 => DType::BF16,
        17 => DType::U16,
        19 => DType::F16,
        22 => DType::U32,
        23 => DType::U64,
        7 => return Err(IrError::msg("string tensors are not supported")),
        20 => return Err(IrError::msg("a resource handle is used as a value")),
        _ => {
            return Err(IrError::msg(format!(
                "TensorFlow data type {t} is not supported"
            )))
        }
    })
}

/// A shape whose every dim is known (a constant's); refuses negative or unknown sizes.
pub fn concrete_shape(s: Option<&TensorShapeProto>) -> Result<Vec<usize>> {
    let Some(s) = s else { return Ok(vec![]) };
    if s.unknown_rank {
        return Err(IrError::msg("a constant has an unknown rank"));
    }
    s.dim
        .iter()
        .map(|d| {
            usize::try_from(d.size)
                .map_err(|_| IrError::msg(format!("a constant has the negative dim {}", d.size)))
        })
        .collect()
}

/// A possibly partial shape: size -1 is unknown. The first unknown dim of an input is the
/// batch (`Dim::Sym("N")`) when `batch_sym` is set.
pub fn shape_from_tf(s: Option<&TensorShapeProto>, batch_sym: bool) -> Shape {
    let Some(s) = s else {
        return Shape::unknown_rank();
    };
    if s.unknown_rank {
        return Shape::unknown_rank();
    }
    let dims = s
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match usize::try_from(d.size) {
            Ok(n) => Dim::Known(n),
            Err(_) if i == 0 && batch_sym => Dim::Sym("N".into()),
            Err(_) => Dim::Unknown,
        })
        .collect();
    Shape(Some(dims))
}

/// `vals` stretched to `n` elements as TF does: the last value repeats; none means zeros.
fn fill<T: Storable + Copy + Default>(vals: Vec<T>, n: usize) -> Result<Vec<T>> {
    if vals.len() == n {
        return Ok(vals);
    }
    if vals.len() > n {
        return Err(IrError::msg(format!(
            "a constant has {} values for {} elements",
            vals.len(),
            n
        )));
    }
    if n > MAX_SPLAT {
        return Err(IrError::msg(format!(
            "a constant of {n} elements is too large"
        )));
    }
    let last = vals.last().copied().unwrap_or_default();
    let mut out = vals;
    out.resize(n, last);
    Ok(out)
}

pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let dtype = dtype_from_tf(t.dtype)?;
    let shape = concrete_shape(t.tensor_shape.as_ref())?;
    let n = checked_numel(&shape)?;
    if !t.tensor_content.is_empty() {
        return Tensor::from_le_bytes(dtype, shape, &t.tensor_content);
    }
    match dtype {
        DType::F32 => Tensor::new(shape, fill(t.float_val.clone(), n)?),
        DType::F64 => Tensor::new(shape, fill(t.double_val.clone(), n)?),
        DType::I32 => Tensor::new(shape, fill(t.int_val.clone(), n)?),
        DType::I16 => Tensor::new(
            shape,
            fill(t.int_val.iter().map(|&v| v as i16).collect(), n)?,
        ),
        DType::I8 => Tensor::new(
            shape,
            fill(t.int_val.iter().map(|&v| v as i8).collect(), n)?,
        ),
        DType::U8 => Tensor::new(
            shape,
            fill(t.int_val.iter().map(|&v| v as u8).collect(), n)?,
        ),
        DType::U16 => Tensor::new(
            shape,
            fill(t.int_val.iter().map(|&v| v as u16).collect(), n)?,
        ),
        DType::I64 => Tensor::new(shape, fill(t.int64_val.clone(), n)?),
        DType::U32 => Tensor::new(shape, fill(t.uint32_val.clone(), n)?),
        DType::U64 => Tensor::new(shape, fill(t.uint64_val.clone(), n)?),
        DType::Bool => Tensor::new(shape, fill(t.bool_val.clone(), n)?),
        DType::F16 => Tensor::new(
            shape,
            fill(
                t.half_val
                    .iter()
                    .map(|&v| f16::from_bits(v as u16))
                    .collect(),
                n,
            )?,
        ),
        DType::BF16 => Tensor::new(
            shape,
            fill(
                t.half_val
                    .iter()
                    .map(|&v| bf16::from_bits(v as u16))
                    .collect(),
                n,
            )?,
        ),
    }
}
