//! Softmax, LogSoftmax and Hardmax along one axis (opset 13 semantics).

use super::common::{cmp_nan, float_type, lanes, require_float};
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::ops::util::{input, norm_axis};
use crate::shape::TensorType;
use crate::tensor::Tensor;

pub fn infer(op: &Op, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let x = float_type(types, 0)?;
    let axis = match op {
        Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Hardmax { axis } => *axis,
        _ => return Err(IrError::msg("not a softmax")),
    };
    if let Some(r) = x.shape.rank() {
        norm_axis(axis, r)?;
    }
    Ok(vec![x.clone()])
}

pub fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let out = match op {
        Op::Softmax { axis } => softmax(x, *axis, false)?,
        Op::LogSoftmax { axis } => softmax(x, *axis, true)?,
        Op::Hardmax { axis } => hardmax(x, *axis)?,
        _ => return Err(IrError::msg("not a softmax")),
    };
    Ok(vec![out])
}

/// Softmax (or its log) of each lane along `axis`, shifted by the lane's max so that
/// exp never overflows.
pub fn softmax(x: &Tensor, axis: i64, log: bool) -> Result<Tensor> {
    require_float("softmax", x.dtype())?;
    let a = norm_axis(axis, x.rank())?;
    let mut v = x.to_f64_vec();
    softmax_lanes(&mut v, x.shape(), a, log);
    Tensor::from_f64(x.dtype(), x.shape().to_vec(), &v)
}

/// In-place softmax or log-softmax of every lane of `v` (shape `shape`) along `axis`.
pub fn softmax_lanes(v: &mut [f64], shape: &[usize], axis: usize, log: bool) {
    let (outer, n, inner) = lanes(shape, axis);
    for o in 0..outer {
        for i in 0..inner {
            let idx = |j: usize| (o * n + j) * inner + i;
            let m = (0..n).map(|j| v[idx(j)]).fold(f64::NEG_INFINITY, f64::max);
            // A lane of all -inf (or +inf) has no finite max; shifting by 0 keeps the
            // natural limits instead of producing inf - inf.
            let m = if m.is_finite() { m } else { 0.0 };
            let s: f64 = (0..n).map(|j| (v[idx(j)] - m).exp()).sum();
            if log {
                let ls = s.ln();
                for j in 0..n {
                    v[idx(j)] = v[idx(j)] - m - ls;
                }
            } else {
                for j in 0..n {
                    v[idx(j)] = (v[idx(j)] - m).exp() / s;
                }
            }
        }
    }
}

/// 1 at the first maximum of each lane, 0 elsewhere.
pub fn hardmax(x: &Tensor, axis: i64) -> Result<Tensor> {
    require_float("hardmax", x.dtype())?;
    let a = norm_axis(axis, x.rank())?;
    let xs = x.to_f64_vec();
    let (outer, n, inner) = lanes(x.shape(), a);
    let mut out = vec![0.0f64; xs.len()];
    if n > 0 {
        for o in 0..outer {
            for i in 0..inner {
                let idx = |j: usize| (o * n + j) * inner + i;
                let mut best = 0;
                for j in 1..n {
                    if cmp_nan(&xs[idx(j)], &xs[idx(best)], true).is_gt() {
                        best = j;
                    }
                }
                out[idx(best)] = 1.0;
            }
        }
    }
    Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)
}
