//! CenterCropPad: crops or zero-pads chosen axes to a size, keeping the centre (the extra
//! odd element is cut from, or added at, the end).

use super::{bounded_numel, gather_or_zero, size_from};
use crate::error::{IrError, Result};
use crate::ops::util::{const_input, input, input_type, norm_axis, strides};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

fn crop_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(IrError::msg(format!(
                "axis {a} is listed twice in axes {axes:?}"
            )));
        }
        out.push(a);
    }
    Ok(out)
}

fn target_sizes(shape: &Tensor, n_axes: usize) -> Result<Vec<usize>> {
    let v = shape.to_i64_vec();
    if v.len() != n_axes {
        return Err(IrError::msg(format!(
            "shape has {} values for {} axes",
            v.len(),
            n_axes
        )));
    }
    v.iter()
        .map(|&s| size_from(s, "a center_crop_pad size"))
        .collect()
}

pub(super) fn infer(
    axes: &[i64],
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    input_type(types, 1)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(TensorType::unknown_shape(x.dtype));
    };
    let axes = crop_axes(axes, dims.len())?;
    let mut out = dims.to_vec();
    match const_input(consts, 1) {
        Some(s) => {
            for (&a, n) in axes.iter().zip(target_sizes(s, axes.len())?) {
                out[a] = Dim::Known(n);
            }
        }
        None => {
            for &a in &axes {
                out[a] = Dim::Unknown;
            }
        }
    }
    Ok(TensorType::new(x.dtype, Shape(Some(out))))
}

pub(super) fn eval(axes: &[i64], inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let axes = crop_axes(axes, x.rank())?;
    let sizes = target_sizes(input(inputs, 1)?, axes.len())?;
    let in_shape = x.shape();
    let mut out_shape = in_shape.to_vec();
    for (&a, &n) in axes.iter().zip(&sizes) {
        out_shape[a] = n;
    }
    let total = bounded_numel(&out_shape)?;
    // Input position = output position + shift; the shift is negative where padding.
    let shift: Vec<i64> = (0..in_shape.len())
        .map(|a| {
            (in_shape[a] as i64 - out_shape[a] as i64)
                .div_euclid(2)
                .max(0)
                - (out_shape[a] as i64 - in_shape[a] as i64)
                    .div_euclid(2)
                    .max(0)
        })
        .collect();
    let in_strides = strides(in_shape);
    let mut map = Vec::with_capacity(total);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..total {
        let mut src = Some(0usize);
        for a in 0..idx.len() {
            let p = idx[a] as i64 + shift[a];
            src = match src {
                Some(s) if p >= 0 && (p as usize) < in_shape[a] => {
                    Some(s + p as usize * in_strides[a])
                }
                _ => None,
            };
        }
        map.push(src);
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    gather_or_zero(x, out_shape, &map)
}
