//! Helpers shared by the op groups: input access, axis normalisation, broadcasting, strides.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

/// Input `i`, which must be present.
pub fn input(inputs: &[Option<Tensor>], i: usize) -> Result<&Tensor> {
    inputs
        .get(i)
        .and_then(|x| x.as_ref())
        .ok_or_else(|| IrError::msg(format!("input {i} is required but absent")))
}

/// Input `i` if present.
pub fn opt_input(inputs: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    inputs.get(i).and_then(|x| x.as_ref())
}

/// The type of input `i`, which must be present.
pub fn input_type<'a>(types: &[Option<&'a TensorType>], i: usize) -> Result<&'a TensorType> {
    types
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| IrError::msg(format!("input {i} is required but absent")))
}

/// The constant value of input `i`, if it is a constant.
pub fn const_input<'a>(consts: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    consts.get(i).copied().flatten()
}

/// Axis in `[-rank, rank)` to `[0, rank)`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(IrError::msg(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// The elements of a tensor as i64 (for shape, axes, pads… inputs).
pub fn ints(t: &Tensor) -> Vec<i64> {
    t.to_i64_vec()
}

/// A scalar (or one-element) tensor as i64.
pub fn scalar_i64(t: &Tensor) -> Result<i64> {
    if t.len() != 1 {
        return Err(IrError::msg(format!("expected one element, found shape {:?}", t.shape())));
    }
    Ok(t.to_i64_vec()[0])
}

/// A scalar (or one-element) tensor as f64.
pub fn scalar_f64(t: &Tensor) -> Result<f64> {
    if t.len() != 1 {
        return Err(IrError::msg(format!("expected one element, found shape {:?}", t.shape())));
    }
    Ok(t.to_f64_vec()[0])
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcasting of concrete shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db {
            da
        } else if da == 1 {
            db
        } else if db == 1 {
            da
        } else {
            return Err(IrError::msg(format!("shapes {a:?} and {b:?} do not broadcast")));
        };
    }
    Ok(out)
}

/// Numpy broadcasting of symbolic shapes (unknown where it cannot be decided).
pub fn broadcast_dims(a: &Shape, b: &Shape) -> Result<Shape> {
    let (Some(a), Some(b)) = (a.dims(), b.dims()) else { return Ok(Shape::unknown_rank()) };
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n].clone() } else { Dim::Known(1) };
        let db = if i + b.len() >= n { b[i + b.len() - n].clone() } else { Dim::Known(1) };
        out.push(match (&da, &db) {
            _ if da == db => da,
            (Dim::Known(1), _) => db,
            (_, Dim::Known(1)) => da,
            (Dim::Known(x), Dim::Known(y)) => {
                return Err(IrError::msg(format!("dims {x} and {y} do not broadcast")));
            }
            (Dim::Known(_), _) => da,
            (_, Dim::Known(_)) => db,
            _ => Dim::Unknown,
        });
    }
    Ok(Shape(Some(out)))
}

/// For each element of the broadcast `out` shape, the flat index into a tensor of shape
/// `from` broadcast to it.
pub fn broadcast_index_map(from: &[usize], out: &[usize]) -> Vec<usize> {
    let n = out.len();
    let fs = strides(from);
    // stride 0 on broadcast dims
    let mut eff = vec![0usize; n];
    for i in 0..from.len() {
        let oi = i + n - from.len();
        eff[oi] = if from[i] == 1 { 0 } else { fs[i] };
    }
    let total: usize = out.iter().product();
    let mut res = Vec::with_capacity(total);
    let mut idx = vec![0usize; n];
    let mut flat = 0usize;
    for _ in 0..total {
        res.push(flat);
        // increment the multi-index
        for d in (0..n).rev() {
            idx[d] += 1;
            flat += eff[d];
            if idx[d] < out[d] {
                break;
            }
            flat -= eff[d] * idx[d];
            idx[d] = 0;
        }
    }
    res
}

/// Broadcasts a tensor to `shape` (materialised).
pub fn broadcast_to(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let target = broadcast_shapes(t.shape(), shape)?;
    if target != shape {
        return Err(IrError::msg(format!("cannot broadcast {:?} to {:?}", t.shape(), shape)));
    }
    if t.shape() == shape {
        return Ok(t.clone());
    }
    let map = broadcast_index_map(t.shape(), shape);
    gather_flat(t, shape.to_vec(), &map)
}

/// A new tensor whose i-th element is `t`'s `idx[i]`-th element.
pub fn gather_flat(t: &Tensor, shape: Vec<usize>, idx: &[usize]) -> Result<Tensor> {
    let data = crate::with_data!(t.data(), v, T => <T as crate::tensor::Storable>::wrap(idx.iter().map(|&i| v[i]).collect()));
    Tensor::from_data(shape, data)
}

/// The output type for `dtype` and concrete dims.
pub fn ty(dtype: DType, dims: &[usize]) -> TensorType {
    TensorType::known(dtype, dims)
}

/// Dims of a type, or an error for unknown rank.
pub fn dims_of(t: &TensorType) -> Option<&[Dim]> {
    t.shape.dims()
}

/// An "unsupported dtype" error.
pub fn bad_dtype(op: &str, d: DType) -> IrError {
    IrError::msg(format!("{op} does not take {d} tensors"))
}
