//! Indexed reads and writes: Gather, GatherElements, GatherNd, ScatterElements, ScatterNd.
//! Every index read from data is checked against its axis (negative ones count from the
//! end) and an out-of-range one is an error naming it.

use super::{istrides, out_numel, take_along_axis};
use crate::error::{IrError, Result};
use crate::op::ScatterReduction;
use crate::ops::util::{input, input_type, norm_axis};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Storable, Tensor};
use crate::{bail, ensure, with_data};

/// The values of an index tensor, which must have an integer type.
fn index_values(t: &Tensor) -> Result<Vec<i64>> {
    ensure!(
        t.dtype().is_int(),
        "indices must be integers, found {}",
        t.dtype()
    );
    Ok(t.to_i64_vec())
}

/// An index into an axis of size `dim`, negative counting from the end.
fn norm_index(v: i64, dim: usize, axis: usize) -> Result<usize> {
    let d = dim as i64;
    let i = if v < 0 { v + d } else { v };
    if i < 0 || i >= d {
        bail!("index {v} is out of range for axis {axis} of size {dim}");
    }
    Ok(i as usize)
}

/// For each element of `shape` (row-major), `Σ idx_d · strides[d]`.
fn offset_map(shape: &[usize], strides: &[isize]) -> Result<Vec<isize>> {
    let n = out_numel(shape)?;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    let mut off: isize = 0;
    for _ in 0..n {
        out.push(off);
        for d in (0..rank).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d] as isize;
            idx[d] = 0;
        }
    }
    Ok(out)
}

pub(super) fn eval_gather(axis: i64, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let data = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    ensure!(data.rank() >= 1, "Gather cannot index a scalar");
    let a = norm_axis(axis, data.rank())?;
    let dim = data.shape()[a];
    let idx: Vec<usize> = index_values(ind)?
        .into_iter()
        .map(|v| norm_index(v, dim, a))
        .collect::<Result<_>>()?;
    take_along_axis(data, a, &idx, ind.shape())
}

pub(super) fn infer_gather(axis: i64, types: &[Option<&TensorType>]) -> Result<TensorType> {
    let data = input_type(types, 0)?;
    let ind = input_type(types, 1)?;
    let (Some(d), Some(i)) = (data.shape.dims(), ind.shape.dims()) else {
        return Ok(TensorType::unknown_shape(data.dtype));
    };
    ensure!(!d.is_empty(), "Gather cannot index a scalar");
    let a = norm_axis(axis, d.len())?;
    let mut out = d[..a].to_vec();
    out.extend_from_slice(i);
    out.extend_from_slice(&d[a + 1..]);
    Ok(TensorType::new(data.dtype, out))
}

/// Checks GatherElements/ScatterElements shapes: same rank, and off the axis the indices
/// fit inside the data. Returns the data offset of each index position without its axis term.
fn elements_offsets(data: &Tensor, ind: &Tensor, a: usize) -> Result<Vec<isize>> {
    ensure!(
        ind.rank() == data.rank(),
        "indices have rank {} but data has rank {}",
        ind.rank(),
        data.rank()
    );
    for d in 0..data.rank() {
        ensure!(
            d == a || ind.shape()[d] <= data.shape()[d],
            "indices shape {:?} does not fit data shape {:?} on axis {d}",
            ind.shape(),
            data.shape()
        );
    }
    let mut st = istrides(data.shape());
    st[a] = 0;
    offset_map(ind.shape(), &st)
}

pub(super) fn eval_gather_elements(axis: i64, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let data = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    ensure!(data.rank() >= 1, "GatherElements cannot index a scalar");
    let a = norm_axis(axis, data.rank())?;
    let offs = elements_offsets(data, ind, a)?;
    let dim = data.shape()[a];
    let astride = istrides(data.shape())[a];
    let flat: Vec<usize> = index_values(ind)?
        .into_iter()
        .zip(&offs)
        .map(|(v, &o)| Ok((o + norm_index(v, dim, a)? as isize * astride) as usize))
        .collect::<Result<_>>()?;
    let out = with_data!(data.data(), v, T => <T as Storable>::wrap(flat.iter().map(|&i| v[i]).collect()));
    Tensor::from_data(ind.shape().to_vec(), out)
}

pub(super) fn infer_gather_elements(
    axis: i64,
    types: &[Option<&TensorType>],
) -> Result<TensorType> {
    let data = input_type(types, 0)?;
    let ind = input_type(types, 1)?;
    if let (Some(r), Some(q)) = (data.shape.rank(), ind.shape.rank()) {
        ensure!(r == q, "indices have rank {q} but data has rank {r}");
        norm_axis(axis, r)?;
    }
    Ok(TensorType {
        dtype: data.dtype,
        shape: ind.shape.clone(),
    })
}

/// GatherNd/ScatterNd geometry: for each index tuple (in order), the flat offset of the
/// slice it selects, and the slice length.
struct NdPlan {
    offsets: Vec<usize>,
    inner: usize,
}

fn nd_plan(data: &Tensor, ind: &Tensor, batch_dims: usize) -> Result<NdPlan> {
    let (r, q) = (data.rank(), ind.rank());
    ensure!(q >= 1, "indices must have rank at least 1");
    ensure!(
        batch_dims < q && batch_dims < r,
        "batch_dims {batch_dims} must be below the ranks of data ({r}) and indices ({q})"
    );
    ensure!(
        ind.shape()[..batch_dims] == data.shape()[..batch_dims],
        "the batch dims of indices {:?} and data {:?} differ",
        ind.shape(),
        data.shape()
    );
    let k = ind.shape()[q - 1];
    ensure!(
        k <= r - batch_dims,
        "index tuples of length {k} are too long for data of rank {r} with {batch_dims} batch dims"
    );
    let vals = index_values(ind)?;
    let ds = crate::ops::util::strides(data.shape());
    let batches: usize = data.shape()[..batch_dims].iter().product();
    let batch_size: usize = data.shape()[batch_dims..].iter().product();
    let inner: usize = data.shape()[batch_dims + k..].iter().product();
    let per_batch: usize = ind.shape()[batch_dims..q - 1].iter().product();
    let mut offsets = Vec::with_capacity(batches * per_batch);
    for b in 0..batches {
        for m in 0..per_batch {
            let t = (b * per_batch + m) * k;
            let mut off = b * batch_size;
            for j in 0..k {
                let ax = batch_dims + j;
                off += norm_index(vals[t + j], data.shape()[ax], ax)? * ds[ax];
            }
            offsets.push(off);
        }
    }
    Ok(NdPlan { offsets, inner })
}

fn batch_dims_usize(b: i64) -> Result<usize> {
    usize::try_from(b)
        .map_err(|_| IrError::msg(format!("batch_dims must be non-negative, found {b}")))
}

pub(super) fn eval_gather_nd(batch_dims: i64, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let data = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let b = batch_dims_usize(batch_dims)?;
    let plan = nd_plan(data, ind, b)?;
    let q = ind.rank();
    let k = ind.shape()[q - 1];
    let mut shape = ind.shape()[..q - 1].to_vec();
    shape.extend_from_slice(&data.shape()[b + k..]);
    let n = out_numel(&shape)?;
    let out = with_data!(data.data(), v, T => {
        let mut out: Vec<T> = Vec::with_capacity(n);
        for &o in &plan.offsets {
            out.extend_from_slice(&v[o..o + plan.inner]);
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(shape, out)
}

pub(super) fn infer_gather_nd(
    batch_dims: i64,
    types: &[Option<&TensorType>],
) -> Result<TensorType> {
    let data = input_type(types, 0)?;
    let ind = input_type(types, 1)?;
    let b = batch_dims_usize(batch_dims)?;
    let (Some(d), Some(i)) = (data.shape.dims(), ind.shape.dims()) else {
        return Ok(TensorType::unknown_shape(data.dtype));
    };
    ensure!(!i.is_empty(), "indices must have rank at least 1");
    let Dim::Known(k) = i[i.len() - 1] else {
        return Ok(TensorType::unknown_shape(data.dtype));
    };
    ensure!(
        b < i.len() && b < d.len() && b + k <= d.len(),
        "index tuples of length {k} do not fit data of rank {} with {b} batch dims",
        d.len()
    );
    let mut out = i[..i.len() - 1].to_vec();
    out.extend_from_slice(&d[b + k..]);
    Ok(TensorType::new(data.dtype, out))
}

/// The arithmetic scatter reductions need, for every element type (bool: or / and).
trait Combine: Copy + PartialOrd {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

macro_rules! combine_int {
    ($($t:ty),*) => { $(impl Combine for $t {
        fn add(self, o: Self) -> Self { self.wrapping_add(o) }
        fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
    })* };
}
combine_int!(i8, i16, i32, i64, u8, u16, u32, u64);
macro_rules! combine_float {
    ($($t:ty),*) => { $(impl Combine for $t {
        fn add(self, o: Self) -> Self { self + o }
        fn mul(self, o: Self) -> Self { self * o }
    })* };
}
combine_float!(f32, f64, crate::half::f16, crate::half::bf16);
impl Combine for bool {
    fn add(self, o: Self) -> Self {
        self | o
    }
    fn mul(self, o: Self) -> Self {
        self & o
    }
}

/// Applies one update; max and min propagate NaN as numpy's maximum and minimum do.
#[inline]
fn combine<T: Combine>(r: ScatterReduction, dst: &mut T, u: T) {
    #[allow(clippy::eq_op)]
    let u_nan = u != u;
    *dst = match r {
        ScatterReduction::None => u,
        ScatterReduction::Add => dst.add(u),
        ScatterReduction::Mul => dst.mul(u),
        ScatterReduction::Max => {
            if u_nan || u > *dst {
                u
            } else {
                *dst
            }
        }
        ScatterReduction::Min => {
            if u_nan || u < *dst {
                u
            } else {
                *dst
            }
        }
    };
}

fn scatter_typed<T: Combine>(
    data: &[T],
    updates: &[T],
    targets: &[usize],
    inner: usize,
    r: ScatterReduction,
) -> Vec<T> {
    let mut out = data.to_vec();
    for (m, &t) in targets.iter().enumerate() {
        for j in 0..inner {
            combine(r, &mut out[t + j], updates[m * inner + j]);
        }
    }
    out
}

pub(super) fn eval_scatter_elements(
    axis: i64,
    reduction: ScatterReduction,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let data = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let upd = input(inputs, 2)?;
    ensure!(data.rank() >= 1, "ScatterElements cannot index a scalar");
    ensure!(
        upd.shape() == ind.shape(),
        "updates shape {:?} differs from indices shape {:?}",
        upd.shape(),
        ind.shape()
    );
    ensure!(
        upd.dtype() == data.dtype(),
        "updates are {} but data is {}",
        upd.dtype(),
        data.dtype()
    );
    let a = norm_axis(axis, data.rank())?;
    let offs = elements_offsets(data, ind, a)?;
    let dim = data.shape()[a];
    let astride = istrides(data.shape())[a];
    let targets: Vec<usize> = index_values(ind)?
        .into_iter()
        .zip(&offs)
        .map(|(v, &o)| Ok((o + norm_index(v, dim, a)? as isize * astride) as usize))
        .collect::<Result<_>>()?;
    let out = with_data!(data.data(), v, T => <T as Storable>::wrap(scatter_typed(v, upd.as_slice::<T>()?, &targets, 1, reduction)));
    Tensor::from_data(data.shape().to_vec(), out)
}

pub(super) fn eval_scatter_nd(
    reduction: ScatterReduction,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let data = input(inputs, 0)?;
    let ind = input(inputs, 1)?;
    let upd = input(inputs, 2)?;
    ensure!(
        upd.dtype() == data.dtype(),
        "updates are {} but data is {}",
        upd.dtype(),
        data.dtype()
    );
    ensure!(data.rank() >= 1, "ScatterNd cannot index a scalar");
    let plan = nd_plan(data, ind, 0)?;
    let q = ind.rank();
    let k = ind.shape()[q - 1];
    let mut want = ind.shape()[..q - 1].to_vec();
    want.extend_from_slice(&data.shape()[k..]);
    ensure!(
        upd.shape() == want.as_slice(),
        "updates have shape {:?}, expected {want:?}",
        upd.shape()
    );
    let out = with_data!(data.data(), v, T => <T as Storable>::wrap(scatter_typed(v, upd.as_slice::<T>()?, &plan.offsets, plan.inner, reduction)));
    Tensor::from_data(data.shape().to_vec(), out)
}

pub(super) fn infer_scatter(types: &[Option<&TensorType>]) -> Result<TensorType> {
    let data = input_type(types, 0)?;
    let upd = input_type(types, 2)?;
    ensure!(
        upd.dtype == data.dtype,
        "updates are {} but data is {}",
        upd.dtype,
        data.dtype
    );
    Ok(data.clone())
}
