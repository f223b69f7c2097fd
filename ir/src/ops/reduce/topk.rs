//! TopK: the k largest (or smallest) elements along an axis and their indices.

use super::common::{cmp_nan, lanes};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::ops::util::{const_input, input, input_type, norm_axis, scalar_i64};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{Storable, Tensor};
use crate::with_data;
use std::cmp::Ordering;

pub fn infer(op: &Op, types: &[Option<&TensorType>], consts: &[Option<&Tensor>]) -> Result<Vec<TensorType>> {
    let Op::TopK { axis, .. } = op else { return Err(IrError::msg("not topk")) };
    let x = input_type(types, 0)?;
    if x.dtype == DType::Bool {
        return Err(IrError::msg("topk does not take bool tensors"));
    }
    let k = match const_input(consts, 1) {
        Some(t) => Some(check_k(scalar_i64(t)?)?),
        None => None,
    };
    let shape = match x.shape.dims() {
        None => Shape::unknown_rank(),
        Some(dims) => {
            let a = norm_axis(*axis, dims.len())?;
            let mut out = dims.to_vec();
            if let (Some(k), Some(n)) = (k, dims[a].known()) {
                if k > n {
                    return Err(IrError::msg(format!("k = {k} is larger than axis {a} (size {n})")));
                }
            }
            out[a] = k.map_or(Dim::Unknown, Dim::Known);
            Shape(Some(out))
        }
    };
    Ok(vec![TensorType { dtype: x.dtype, shape: shape.clone() }, TensorType { dtype: DType::I64, shape }])
}

fn check_k(k: i64) -> Result<usize> {
    usize::try_from(k).map_err(|_| IrError::msg(format!("k must be non-negative, found {k}")))
}

pub fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let Op::TopK { axis, largest, .. } = op else { return Err(IrError::msg("not topk")) };
    let x = input(inputs, 0)?;
    let k = check_k(scalar_i64(input(inputs, 1)?)?)?;
    let (values, indices) = topk(x, k, *axis, *largest)?;
    Ok(vec![values, indices])
}

/// Always sorted (ONNX leaves the order free when `sorted` is 0). Equal values keep the
/// lower index first; NaN ranks above every number, as numpy's sort puts it last.
pub fn topk(x: &Tensor, k: usize, axis: i64, largest: bool) -> Result<(Tensor, Tensor)> {
    if x.dtype() == DType::Bool {
        return Err(IrError::msg("topk does not take bool tensors"));
    }
    let a = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = lanes(x.shape(), a);
    if k > n {
        return Err(IrError::msg(format!("k = {k} is larger than axis {a} (size {n})")));
    }
    let mut out_shape = x.shape().to_vec();
    out_shape[a] = k;
    let count = outer * k * inner;
    let mut indices = vec![0i64; count];
    let values = with_data!(x.data(), v, T => {
        let mut vals: Vec<T> = vec![T::default(); count];
        let mut lane: Vec<usize> = Vec::with_capacity(n);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| &v[(o * n + j) * inner + i];
                // A total order: by value (reversed for largest), then by index.
                let order = |p: &usize, q: &usize| -> Ordering {
                    let c = cmp_nan(at(*p), at(*q), true);
                    let c = if largest { c.reverse() } else { c };
                    c.then(p.cmp(q))
                };
                lane.clear();
                lane.extend(0..n);
                if k > 0 && k < n {
                    lane.select_nth_unstable_by(k - 1, order);
                }
                let top = &mut lane[..k];
                top.sort_unstable_by(order);
                for (r, &j) in top.iter().enumerate() {
                    let dst = (o * k + r) * inner + i;
                    vals[dst] = *at(j);
                    indices[dst] = j as i64;
                }
            }
        }
        <T as Storable>::wrap(vals)
    });
    Ok((Tensor::from_data(out_shape.clone(), values)?, Tensor::new(out_shape, indices)?))
}
