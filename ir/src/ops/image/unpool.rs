//! MaxUnpool: scatters pooled values back to the positions MaxPool's indices name.

use super::{bounded_numel, size_from};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::ops::util::{const_input, input, input_type, opt_input, strides as row_strides};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

/// Attribute lists with ONNX defaults filled in: (kernel, pads, strides).
fn attrs(kernel: &[i64], pads: &[i64], strides: &[i64]) -> Result<(Vec<i64>, Vec<i64>, Vec<i64>)> {
    let r = kernel.len();
    if r == 0 {
        return Err(IrError::msg("kernel_shape is required"));
    }
    let p = if pads.is_empty() {
        vec![0; 2 * r]
    } else {
        pads.to_vec()
    };
    let s = if strides.is_empty() {
        vec![1; r]
    } else {
        strides.to_vec()
    };
    if p.len() != 2 * r || s.len() != r {
        return Err(IrError::msg(format!(
            "pads {p:?} and strides {s:?} do not match kernel_shape {kernel:?}"
        )));
    }
    Ok((kernel.to_vec(), p, s))
}

/// The unpooled size of one spatial dim.
fn unpooled(d: usize, i: usize, k: &[i64], p: &[i64], s: &[i64]) -> Result<usize> {
    let r = k.len();
    let v = (d as i64 - 1)
        .saturating_mul(s[i])
        .saturating_sub(p[i] + p[r + i])
        .saturating_add(k[i]);
    size_from(v, "an unpooled dim")
}

pub(super) fn infer(
    kernel: &[i64],
    pads: &[i64],
    strides: &[i64],
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    input_type(types, 1)?;
    let (k, p, s) = attrs(kernel, pads, strides)?;
    if types.get(2).copied().flatten().is_some() {
        return Ok(match const_input(consts, 2) {
            Some(os) => {
                let dims: Vec<usize> = os
                    .to_i64_vec()
                    .iter()
                    .map(|&v| size_from(v, "an output_shape dim"))
                    .collect::<Result<_>>()?;
                TensorType::known(x.dtype, &dims)
            }
            None => match x.shape.rank() {
                Some(r) => TensorType::new(x.dtype, Shape::of_rank(r)),
                None => TensorType::unknown_shape(x.dtype),
            },
        });
    }
    let Some(dims) = x.shape.dims() else {
        return Ok(TensorType::unknown_shape(x.dtype));
    };
    if dims.len() != k.len() + 2 {
        return Err(IrError::msg(format!(
            "x has rank {}, kernel_shape {k:?} needs {}",
            dims.len(),
            k.len() + 2
        )));
    }
    let mut out = dims[..2].to_vec();
    for i in 0..k.len() {
        out.push(match dims[i + 2].known() {
            Some(d) => Dim::Known(unpooled(d, i, &k, &p, &s)?),
            None => Dim::Unknown,
        });
    }
    Ok(TensorType::new(x.dtype, Shape(Some(out))))
}

pub(super) fn eval(
    kernel: &[i64],
    pads: &[i64],
    strides: &[i64],
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let (k, p, s) = attrs(kernel, pads, strides)?;
    let xs = x.shape();
    if xs.len() != k.len() + 2 || ind.shape() != xs {
        return Err(IrError::msg(format!(
            "x {xs:?} and indices {:?} must match, with rank {}",
            ind.shape(),
            k.len() + 2
        )));
    }
    if ind.dtype() != DType::I64 {
        return Err(IrError::msg(format!(
            "indices must be i64, found {}",
            ind.dtype()
        )));
    }
    let mut inferred = xs[..2].to_vec();
    for i in 0..k.len() {
        inferred.push(unpooled(xs[i + 2], i, &k, &p, &s)?);
    }
    let out_shape = match opt_input(inputs, 2) {
        Some(os) => {
            let dims: Vec<usize> = os
                .to_i64_vec()
                .iter()
                .map(|&v| size_from(v, "an output_shape dim"))
                .collect::<Result<_>>()?;
            if dims.len() != inferred.len() || dims.iter().zip(&inferred).any(|(o, i)| o < i) {
                return Err(IrError::msg(format!(
                    "output_shape {dims:?} is smaller than the unpooled shape {inferred:?}"
                )));
            }
            dims
        }
        None => inferred.clone(),
    };
    let total = bounded_numel(&out_shape)?;
    let inferred_total = bounded_numel(&inferred)?;
    // Indices address the unpooled shape; it sits in the leading corner of output_shape.
    let in_strides = row_strides(&inferred);
    let out_strides = row_strides(&out_shape);
    let mut map: Vec<Option<usize>> = vec![None; total];
    for (src, &i) in ind.to_i64_vec().iter().enumerate() {
        if i < 0 || i as u64 >= inferred_total as u64 {
            return Err(IrError::msg(format!(
                "index {i} is out of range for the unpooled shape {inferred:?}"
            )));
        }
        let mut rest = i as usize;
        let mut dst = 0;
        for d in 0..inferred.len() {
            dst += rest / in_strides[d] * out_strides[d];
            rest %= in_strides[d];
        }
        map[dst] = Some(src);
    }
    super::gather_or_zero(x, out_shape, &map)
}
