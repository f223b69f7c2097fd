//! Shape and data movement: ops that rearrange, select, replicate or generate elements
//! without arithmetic on them (apart from scatter reductions). Every body is generic over
//! all 13 element types.
//!
//! Shared machinery lives here: a strided copy (Transpose, Slice, Expand, Tile,
//! DepthToSpace are all "read the input at base + Σ idx·stride"), a take-along-axis (Gather,
//! Compress, Unique), reading integer "shape-like" inputs, and the output size bound every
//! data-derived size must pass before anything is allocated.

mod concat_split;
mod gather_scatter;
mod generators;
mod pad;
mod reshape;
mod select;
mod slice;
mod transpose;

use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{checked_numel, Storable, Tensor};
use crate::{bail, ensure, with_data};

pub(crate) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<TensorType>>> {
    let one = |r: Result<TensorType>| r.map(|t| vec![t]);
    Some(match op {
        Op::Reshape { allowzero } => one(reshape::infer_reshape(*allowzero, types, consts)),
        Op::Flatten { axis } => one(reshape::infer_flatten(*axis, types)),
        Op::Squeeze => one(reshape::infer_squeeze(types, consts)),
        Op::Unsqueeze => one(reshape::infer_unsqueeze(types, consts)),
        Op::Shape { start, end } => one(reshape::infer_shape(*start, *end, types)),
        Op::Size => one(reshape::infer_size(types)),
        Op::Transpose { perm } => one(transpose::infer_transpose(perm.as_deref(), types)),
        Op::DepthToSpace { blocksize, .. } => {
            one(transpose::infer_depth_to_space(*blocksize, types))
        }
        Op::SpaceToDepth { blocksize, .. } => {
            one(transpose::infer_space_to_depth(*blocksize, types))
        }
        Op::Concat { axis } => one(concat_split::infer_concat(*axis, types)),
        Op::Split { axis } => concat_split::infer_split(*axis, types, consts, n_outputs),
        Op::Slice => one(slice::infer_slice(types, consts)),
        Op::Gather { axis } => one(gather_scatter::infer_gather(*axis, types)),
        Op::GatherElements { axis } => one(gather_scatter::infer_gather_elements(*axis, types)),
        Op::GatherNd { batch_dims } => one(gather_scatter::infer_gather_nd(*batch_dims, types)),
        Op::ScatterElements { .. } | Op::ScatterNd { .. } => {
            one(gather_scatter::infer_scatter(types))
        }
        Op::Pad { .. } => one(pad::infer_pad(types, consts)),
        Op::Tile => one(pad::infer_tile(types, consts)),
        Op::Expand => one(pad::infer_expand(types, consts)),
        Op::ConstantOfShape { value } => {
            one(generators::infer_constant_of_shape(value, types, consts))
        }
        Op::Range => one(generators::infer_range(types, consts)),
        Op::OneHot { axis } => one(generators::infer_one_hot(*axis, types, consts)),
        Op::EyeLike { dtype, .. } => one(generators::infer_eye_like(*dtype, types)),
        Op::NonZero => one(select::infer_non_zero(types)),
        Op::Compress { axis } => one(select::infer_compress(*axis, types, consts)),
        Op::Unique { axis, .. } => select::infer_unique(*axis, types, n_outputs),
        Op::ReverseSequence { .. } | Op::Trilu { .. } => one(util_same(types)),
        _ => return None,
    })
}

pub(crate) fn eval(
    op: &Op,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<Tensor>>> {
    let one = |r: Result<Tensor>| r.map(|t| vec![t]);
    Some(match op {
        Op::Reshape { allowzero } => one(reshape::eval_reshape(*allowzero, inputs)),
        Op::Flatten { axis } => one(reshape::eval_flatten(*axis, inputs)),
        Op::Squeeze => one(reshape::eval_squeeze(inputs)),
        Op::Unsqueeze => one(reshape::eval_unsqueeze(inputs)),
        Op::Shape { start, end } => one(reshape::eval_shape(*start, *end, inputs)),
        Op::Size => one(reshape::eval_size(inputs)),
        Op::Transpose { perm } => one(transpose::eval_transpose(perm.as_deref(), inputs)),
        Op::DepthToSpace { blocksize, mode } => {
            one(transpose::eval_depth_to_space(*blocksize, *mode, inputs))
        }
        Op::SpaceToDepth { blocksize, mode } => {
            one(transpose::eval_space_to_depth(*blocksize, *mode, inputs))
        }
        Op::Concat { axis } => one(concat_split::eval_concat(*axis, inputs)),
        Op::Split { axis } => concat_split::eval_split(*axis, inputs, n_outputs),
        Op::Slice => one(slice::eval_slice(inputs)),
        Op::Gather { axis } => one(gather_scatter::eval_gather(*axis, inputs)),
        Op::GatherElements { axis } => one(gather_scatter::eval_gather_elements(*axis, inputs)),
        Op::GatherNd { batch_dims } => one(gather_scatter::eval_gather_nd(*batch_dims, inputs)),
        Op::ScatterElements { axis, reduction } => one(gather_scatter::eval_scatter_elements(
            *axis, *reduction, inputs,
        )),
        Op::ScatterNd { reduction } => one(gather_scatter::eval_scatter_nd(*reduction, inputs)),
        Op::Pad { mode } => one(pad::eval_pad(*mode, inputs)),
        Op::Tile => one(pad::eval_tile(inputs)),
        Op::Expand => one(pad::eval_expand(inputs)),
        Op::ConstantOfShape { value } => one(generators::eval_constant_of_shape(value, inputs)),
        Op::Range => one(generators::eval_range(inputs)),
        Op::OneHot { axis } => one(generators::eval_one_hot(*axis, inputs)),
        Op::EyeLike { dtype, k } => one(generators::eval_eye_like(*dtype, *k, inputs)),
        Op::NonZero => one(select::eval_non_zero(inputs)),
        Op::Compress { axis } => one(select::eval_compress(*axis, inputs)),
        Op::Unique { axis, sorted } => select::eval_unique(*axis, *sorted, inputs, n_outputs),
        Op::ReverseSequence {
            batch_axis,
            time_axis,
        } => one(select::eval_reverse_sequence(
            *batch_axis,
            *time_axis,
            inputs,
        )),
        Op::Trilu { upper } => one(select::eval_trilu(*upper, inputs)),
        _ => return None,
    })
}

/// The output has the type of input 0.
fn util_same(types: &[Option<&TensorType>]) -> Result<TensorType> {
    Ok(crate::ops::util::input_type(types, 0)?.clone())
}

/// The most elements an output whose size comes from data values may have (2^31).
pub(super) const MAX_ELEMS: usize = 1 << 31;

/// The element count of an output shape, refusing sizes over [`MAX_ELEMS`]: a model's
/// data must not be able to make us allocate without bound.
pub(super) fn out_numel(shape: &[usize]) -> Result<usize> {
    let n = checked_numel(shape)?;
    ensure!(
        n <= MAX_ELEMS,
        "output shape {shape:?} has {n} elements, more than the limit of 2^31"
    );
    Ok(n)
}

/// A dimension size taken from data: non-negative and at most [`MAX_ELEMS`].
pub(super) fn dim_from_value(v: i64, what: &str) -> Result<usize> {
    ensure!(v >= 0, "{what} has a negative size {v}");
    let d = usize::try_from(v)
        .map_err(|_| IrError::msg(format!("{what} has an impossible size {v}")))?;
    ensure!(
        d <= MAX_ELEMS,
        "{what} has size {v}, more than the limit of 2^31"
    );
    Ok(d)
}

/// The values of a 0-D or 1-D integer tensor (a shape, axes, pads, repeats… input).
pub(super) fn int_values(t: &Tensor, what: &str) -> Result<Vec<i64>> {
    ensure!(
        t.dtype().is_int(),
        "{what} must be an integer tensor, found {}",
        t.dtype()
    );
    ensure!(
        t.rank() <= 1,
        "{what} must be 1-D, found shape {:?}",
        t.shape()
    );
    Ok(t.to_i64_vec())
}

/// Normalises a list of axes against `rank` and rejects duplicates.
pub(super) fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = crate::ops::util::norm_axis(a, rank)?;
        ensure!(!seen[n], "axis {a} is repeated");
        seen[n] = true;
        out.push(n);
    }
    Ok(out)
}

/// Row-major strides as isize.
pub(super) fn istrides(shape: &[usize]) -> Vec<isize> {
    crate::ops::util::strides(shape)
        .into_iter()
        .map(|s| s as isize)
        .collect()
}

/// A typed strided copy: output element at multi-index `i` (row-major over `out_shape`) is
/// `src[base + Σ i_d · strides[d]]`. Strides may be zero (broadcast) or negative (reverse).
/// The extreme offsets are checked against `src` once, so the loop cannot go out of bounds.
pub(super) fn strided_vec<T: Copy>(
    src: &[T],
    out_shape: &[usize],
    base: isize,
    strides: &[isize],
) -> Result<Vec<T>> {
    ensure!(
        out_shape.len() == strides.len(),
        "internal: {} strides for rank {}",
        strides.len(),
        out_shape.len()
    );
    let n = out_numel(out_shape)?;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    // A size-1 dim's stride is never followed; zero it so a huge one (a Slice step of
    // i64::MAX) cannot overflow the running offset.
    let strides: Vec<isize> = out_shape
        .iter()
        .zip(strides)
        .map(|(&d, &s)| if d == 1 { 0 } else { s })
        .collect();
    let (mut lo, mut hi) = (base, base);
    for (&d, &s) in out_shape.iter().zip(&strides) {
        let ext = (d as isize - 1) * s;
        if ext < 0 {
            lo += ext
        } else {
            hi += ext
        }
    }
    ensure!(
        lo >= 0 && (hi as usize) < src.len(),
        "internal: strided read [{lo}, {hi}] outside {} elements",
        src.len()
    );
    let rank = out_shape.len();
    if rank == 0 {
        out.push(src[base as usize]);
        return Ok(out);
    }
    let inner = out_shape[rank - 1];
    let istride = strides[rank - 1];
    let mut idx = vec![0usize; rank - 1];
    let mut off = base;
    loop {
        if istride == 1 {
            let s = off as usize;
            out.extend_from_slice(&src[s..s + inner]);
        } else {
            let mut o = off;
            for _ in 0..inner {
                out.push(src[o as usize]);
                o += istride;
            }
        }
        // Odometer over the outer dims.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            idx[d] += 1;
            off += strides[d];
            if idx[d] < out_shape[d] {
                break;
            }
            off -= strides[d] * out_shape[d] as isize;
            idx[d] = 0;
        }
    }
}

/// [`strided_vec`] on a tensor of any element type.
pub(super) fn strided(
    t: &Tensor,
    out_shape: Vec<usize>,
    base: isize,
    strides: &[isize],
) -> Result<Tensor> {
    let data = with_data!(t.data(), v, T => <T as Storable>::wrap(strided_vec(v, &out_shape, base, strides)?));
    Tensor::from_data(out_shape, data)
}

/// The input viewed with its axes permuted (`out dim d` = `in dim perm[d]`), materialised.
pub(super) fn permute(t: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let st = istrides(t.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape()[p]).collect();
    let strides: Vec<isize> = perm.iter().map(|&p| st[p]).collect();
    strided(t, shape, 0, &strides)
}

/// Gather along `axis` with already-validated indices: output shape is
/// `t.shape[..axis] ++ idx_shape ++ t.shape[axis+1..]`.
pub(super) fn take_along_axis(
    t: &Tensor,
    axis: usize,
    idx: &[usize],
    idx_shape: &[usize],
) -> Result<Tensor> {
    let shape = t.shape();
    ensure!(
        axis < shape.len(),
        "internal: axis {axis} for rank {}",
        shape.len()
    );
    let dim = shape[axis];
    if let Some(&bad) = idx.iter().find(|&&i| i >= dim) {
        bail!("index {bad} is out of range for axis {axis} of size {dim}");
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out_shape = shape[..axis].to_vec();
    out_shape.extend_from_slice(idx_shape);
    out_shape.extend_from_slice(&shape[axis + 1..]);
    let n = out_numel(&out_shape)?;
    ensure!(
        n == outer * idx.len() * inner,
        "internal: index count {} does not match shape {idx_shape:?}",
        idx.len()
    );
    let data = with_data!(t.data(), v, T => {
        let mut out: Vec<T> = Vec::with_capacity(n);
        for o in 0..outer {
            for &i in idx {
                let s = (o * dim + i) * inner;
                out.extend_from_slice(&v[s..s + inner]);
            }
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(out_shape, data)
}

/// The product of dims: known when all are known (or one is 0), a symbol when it is the
/// only non-1 factor, unknown otherwise.
pub(super) fn dim_product(dims: &[Dim]) -> Dim {
    if dims.contains(&Dim::Known(0)) {
        return Dim::Known(0);
    }
    let mut known = 1usize;
    let mut other: Vec<&Dim> = Vec::new();
    for d in dims {
        match d {
            Dim::Known(k) => match known.checked_mul(*k) {
                Some(p) => known = p,
                None => return Dim::Unknown,
            },
            _ => other.push(d),
        }
    }
    match other.as_slice() {
        [] => Dim::Known(known),
        [Dim::Sym(s)] if known == 1 => Dim::Sym(s.clone()),
        _ => Dim::Unknown,
    }
}

/// Rank `n` with every dim unknown.
pub(super) fn unknown_dims(n: usize) -> Shape {
    Shape::of_rank(n)
}
