//! Reduce (the ten ONNX Reduce* ops, opset 18+: axes as an input) and ArgMax/ArgMin.

use super::common::{axes_mask, cmp_nan, lanes, ReducePlan};
use crate::dtype::{DType, Element};
use crate::error::{IrError, Result};
use crate::op::{Op, ReduceKind};
use crate::ops::util::{const_input, input, input_type, ints, norm_axis, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{Storable, Tensor};
use crate::{with_data, with_dtype};
use std::cmp::Ordering;

pub fn infer(op: &Op, types: &[Option<&TensorType>], consts: &[Option<&Tensor>]) -> Result<Vec<TensorType>> {
    match op {
        Op::Reduce { kind, keepdims, noop_with_empty_axes } => {
            let x = input_type(types, 0)?;
            check_dtype(*kind, x.dtype)?;
            let axes_ty = types.get(1).copied().flatten();
            let axes: Option<Vec<i64>> = match axes_ty {
                None => Some(vec![]),
                Some(_) => const_input(consts, 1).map(ints),
            };
            let shape = match axes {
                Some(axes) => reduced_shape(&x.shape, &axes, *keepdims, *noop_with_empty_axes)?,
                None => dynamic_axes_shape(&x.shape, axes_ty, *keepdims, *noop_with_empty_axes),
            };
            Ok(vec![TensorType { dtype: x.dtype, shape }])
        }
        Op::ArgReduce { axis, keepdims, .. } => {
            let x = input_type(types, 0)?;
            if x.dtype == DType::Bool {
                return Err(IrError::msg("arg_reduce does not take bool tensors"));
            }
            let shape = match x.shape.dims() {
                None => Shape::unknown_rank(),
                Some(dims) => {
                    let a = norm_axis(*axis, dims.len())?;
                    Shape(Some(squash(dims, |i| i == a, *keepdims)))
                }
            };
            Ok(vec![TensorType { dtype: DType::I64, shape }])
        }
        _ => Err(IrError::msg("not a reduction")),
    }
}

fn check_dtype(kind: ReduceKind, d: DType) -> Result<()> {
    if d == DType::Bool && !matches!(kind, ReduceKind::Max | ReduceKind::Min) {
        return Err(IrError::msg(format!("reduce {kind} does not take bool tensors")));
    }
    Ok(())
}

/// `dims` with the selected ones set to 1 (`keepdims`) or removed.
fn squash(dims: &[Dim], selected: impl Fn(usize) -> bool, keepdims: bool) -> Vec<Dim> {
    dims.iter()
        .enumerate()
        .filter_map(|(i, d)| match (selected(i), keepdims) {
            (false, _) => Some(d.clone()),
            (true, true) => Some(Dim::Known(1)),
            (true, false) => None,
        })
        .collect()
}

/// The output shape for axes known at compile time.
fn reduced_shape(x: &Shape, axes: &[i64], keepdims: bool, noop: bool) -> Result<Shape> {
    if axes.is_empty() && noop {
        return Ok(x.clone());
    }
    let Some(dims) = x.dims() else {
        // Reducing everything without keepdims gives a scalar whatever the rank.
        return Ok(if axes.is_empty() && !keepdims { Shape(Some(vec![])) } else { Shape::unknown_rank() });
    };
    let mask = if axes.is_empty() { vec![true; dims.len()] } else { axes_mask(axes, dims.len())? };
    Ok(Shape(Some(squash(dims, |i| mask[i], keepdims))))
}

/// The output shape when the axes are a run-time value.
fn dynamic_axes_shape(x: &Shape, axes_ty: Option<&TensorType>, keepdims: bool, noop: bool) -> Shape {
    let Some(dims) = x.dims() else { return Shape::unknown_rank() };
    // Every dim either stays or becomes 1; a dim that is already 1 is 1 either way.
    let maybe = |d: &Dim| if *d == Dim::Known(1) { Dim::Known(1) } else { Dim::Unknown };
    if keepdims {
        return Shape(Some(dims.iter().map(maybe).collect()));
    }
    let n_axes = axes_ty.and_then(|t| t.shape.dims()).and_then(|d| d.first().and_then(|n| n.known()));
    match n_axes {
        Some(0) if noop => x.clone(),
        Some(0) => Shape(Some(vec![])),
        Some(n) if n <= dims.len() => Shape::of_rank(dims.len() - n),
        _ => Shape::unknown_rank(),
    }
}

pub fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    match op {
        Op::Reduce { kind, keepdims, noop_with_empty_axes } => {
            let x = input(inputs, 0)?;
            let axes = opt_input(inputs, 1).map(ints).unwrap_or_default();
            Ok(vec![reduce(x, *kind, &axes, *keepdims, *noop_with_empty_axes)?])
        }
        Op::ArgReduce { max, axis, keepdims, select_last_index } => {
            Ok(vec![arg_reduce(input(inputs, 0)?, *max, *axis, *keepdims, *select_last_index)?])
        }
        _ => Err(IrError::msg("not a reduction")),
    }
}

/// ONNX Reduce*: `axes` empty means all axes, or none at all when `noop` (the composite
/// steps, such as the square of SumSquare, still apply then).
pub fn reduce(x: &Tensor, kind: ReduceKind, axes: &[i64], keepdims: bool, noop: bool) -> Result<Tensor> {
    check_dtype(kind, x.dtype())?;
    let rank = x.rank();
    let mask = if axes.is_empty() { vec![!noop; rank] } else { axes_mask(axes, rank)? };
    let plan = ReducePlan::new(x.shape(), &mask)?;
    let out_shape: Vec<usize> =
        if keepdims { plan.keep_shape.clone() } else { x.shape().iter().zip(&mask).filter(|(_, &m)| !m).map(|(&d, _)| d).collect() };
    let dtype = x.dtype();
    let float_path = dtype.is_float() || matches!(kind, ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp);
    if float_path {
        let xs = x.to_f64_vec();
        let vals: Vec<f64> = plan.bases.iter().map(|&b| reduce_f64(kind, &xs, b, &plan.offsets)).collect();
        return Tensor::from_f64(dtype, out_shape, &vals);
    }
    // Integers (and bool for max/min) reduce exactly in i128, which holds every u64 and i64;
    // sums and products wrap to the output type as numpy's do.
    let xs: Vec<i128> = with_data!(x.data(), v, T => {
        if dtype == DType::U64 { v.iter().map(|e| e.to_u64() as i128).collect() } else { v.iter().map(|e| e.to_i64() as i128).collect() }
    });
    let (lo, hi) = int_range(dtype);
    let vals: Vec<i128> = plan.bases.iter().map(|&b| reduce_int(kind, &xs, b, &plan.offsets, lo, hi)).collect();
    let data = with_dtype!(dtype, T => <T as Storable>::wrap(vals.iter().map(|&v| T::from_i64(v as i64)).collect()));
    Tensor::from_data(out_shape, data)
}

/// The smallest and largest values of an integer (or bool) type.
fn int_range(d: DType) -> (i128, i128) {
    if d == DType::Bool {
        return (0, 1);
    }
    let bits = 8 * d.size() as u32;
    if d.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

fn reduce_f64(kind: ReduceKind, xs: &[f64], base: usize, offsets: &[usize]) -> f64 {
    let it = || offsets.iter().map(|&o| xs[base + o]);
    match kind {
        ReduceKind::Sum => it().sum(),
        ReduceKind::Mean => it().sum::<f64>() / offsets.len() as f64,
        // NaN propagates, as numpy's maximum/minimum do.
        ReduceKind::Max => it().fold(f64::NEG_INFINITY, |a, v| if v.is_nan() || a.is_nan() { f64::NAN } else { a.max(v) }),
        ReduceKind::Min => it().fold(f64::INFINITY, |a, v| if v.is_nan() || a.is_nan() { f64::NAN } else { a.min(v) }),
        ReduceKind::Prod => it().product(),
        ReduceKind::L1 => it().map(f64::abs).sum(),
        ReduceKind::L2 => it().map(|v| v * v).sum::<f64>().sqrt(),
        ReduceKind::LogSum => it().sum::<f64>().ln(),
        ReduceKind::LogSumExp => {
            // Shift by the largest finite value so exp cannot overflow; infinities then
            // give the right limits (+inf stays +inf, all -inf gives -inf).
            let m = it().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
            let m = if m.is_finite() { m } else { 0.0 };
            m + it().map(|v| (v - m).exp()).sum::<f64>().ln()
        }
        ReduceKind::SumSquare => it().map(|v| v * v).sum(),
    }
}

fn reduce_int(kind: ReduceKind, xs: &[i128], base: usize, offsets: &[usize], lo: i128, hi: i128) -> i128 {
    let it = || offsets.iter().map(|&o| xs[base + o]);
    let wsum = |f: fn(i128) -> i128| it().fold(0i128, |a, v| a.wrapping_add(f(v)));
    match kind {
        ReduceKind::Sum => wsum(|v| v),
        ReduceKind::Mean => {
            // numpy's integer mean truncates toward zero; an empty set gives 0.
            let n = offsets.len() as i128;
            if n == 0 {
                0
            } else {
                wsum(|v| v) / n
            }
        }
        ReduceKind::Max => it().max().unwrap_or(lo),
        ReduceKind::Min => it().min().unwrap_or(hi),
        ReduceKind::Prod => it().fold(1i128, |a, v| a.wrapping_mul(v)),
        ReduceKind::L1 => wsum(|v| v.wrapping_abs()),
        ReduceKind::SumSquare => wsum(|v| v.wrapping_mul(v)),
        // These go through the float path.
        ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp => 0,
    }
}

/// ArgMax/ArgMin along `axis`, as i64. NaN counts as the extreme (numpy's first-NaN rule).
pub fn arg_reduce(x: &Tensor, max: bool, axis: i64, keepdims: bool, select_last: bool) -> Result<Tensor> {
    if x.dtype() == DType::Bool {
        return Err(IrError::msg("arg_reduce does not take bool tensors"));
    }
    let a = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = lanes(x.shape(), a);
    let mut out_shape = x.shape().to_vec();
    if keepdims {
        out_shape[a] = 1;
    } else {
        out_shape.remove(a);
    }
    if n == 0 && outer * inner > 0 {
        return Err(IrError::msg(format!("arg_reduce over the empty axis {a} of shape {:?}", x.shape())));
    }
    let mut out = Vec::with_capacity(outer * inner);
    with_data!(x.data(), v, T => {
        // argmax: NaN is above everything; argmin: below everything.
        let wanted = if max { Ordering::Greater } else { Ordering::Less };
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| &v[(o * n + j) * inner + i];
                let mut best = 0usize;
                for j in 1..n {
                    let c = cmp_nan(at(j), at(best), max);
                    if c == wanted || (select_last && c == Ordering::Equal) {
                        best = j;
                    }
                }
                out.push(best as i64);
            }
        }
    });
    Tensor::new(out_shape, out)
}
