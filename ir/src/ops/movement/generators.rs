//! Ops that make new tensors whose size comes from data: ConstantOfShape, Range, OneHot,
//! and EyeLike. Every size read from data is bounded before anything is allocated.

use super::{dim_from_value, int_values, out_numel};
use crate::dtype::{DType, Element};
use crate::error::{IrError, Result};
use crate::ops::util::{const_input, input, input_type};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{Storable, Tensor};
use crate::{bail, ensure, with_data, with_dtype};

fn shape_from(t: &Tensor) -> Result<Vec<usize>> {
    int_values(t, "the shape")?
        .iter()
        .map(|&v| dim_from_value(v, "the shape"))
        .collect()
}

pub(super) fn eval_constant_of_shape(value: &Tensor, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    ensure!(
        value.len() == 1,
        "value must have one element, found shape {:?}",
        value.shape()
    );
    let shape = shape_from(input(inputs, 0)?)?;
    let n = out_numel(&shape)?;
    let data = with_data!(value.data(), v, T => <T as Storable>::wrap(vec![v[0]; n]));
    Tensor::from_data(shape, data)
}

pub(super) fn infer_constant_of_shape(
    value: &Tensor,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let st = input_type(types, 0)?;
    let dtype = value.dtype();
    if let Some(s) = const_input(consts, 0) {
        let shape = shape_from(s)?;
        out_numel(&shape)?;
        return Ok(TensorType::known(dtype, &shape));
    }
    Ok(TensorType {
        dtype,
        shape: match st.shape.dims() {
            Some([Dim::Known(n)]) => Shape::of_rank(*n),
            _ => Shape::unknown_rank(),
        },
    })
}

/// max(ceil((limit - start) / delta), 0), bounded; exact integer arithmetic for ints.
fn range_count(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<usize> {
    for (t, name) in [(start, "start"), (limit, "limit"), (delta, "delta")] {
        ensure!(
            t.len() == 1,
            "{name} must be a scalar, found shape {:?}",
            t.shape()
        );
        ensure!(
            t.dtype() == start.dtype(),
            "{name} is {} but start is {}",
            t.dtype(),
            start.dtype()
        );
    }
    let dtype = start.dtype();
    let count: f64 = if dtype.is_float() {
        let (s, l, d) = (
            start.to_f64_vec()[0],
            limit.to_f64_vec()[0],
            delta.to_f64_vec()[0],
        );
        ensure!(d != 0.0, "delta cannot be 0");
        let c = ((l - s) / d).ceil();
        ensure!(
            c.is_finite() || c < 0.0,
            "range ({s}, {l}, {d}) has no finite length"
        );
        c
    } else {
        let (s, l, d) = (int128(start)?, int128(limit)?, int128(delta)?);
        ensure!(d != 0, "delta cannot be 0");
        let num = l - s;
        // Ceiling division for any signs.
        let q = num / d;
        let c = if (num % d != 0) && ((num < 0) == (d < 0)) {
            q + 1
        } else {
            q
        };
        c as f64
    };
    if count <= 0.0 || count.is_nan() {
        return Ok(0);
    }
    ensure!(
        count.is_finite() && count <= super::MAX_ELEMS as f64,
        "range has {count} elements, more than the limit of 2^31"
    );
    Ok(count as usize)
}

/// A one-element integer tensor's value, exact for every integer type including u64.
fn int128(t: &Tensor) -> Result<i128> {
    if t.dtype() == DType::U64 {
        return Ok(u64_scalar(t)? as i128);
    }
    t.to_i64_vec()
        .first()
        .map(|&v| v as i128)
        .ok_or_else(|| IrError::msg("empty scalar"))
}

fn u64_scalar(t: &Tensor) -> Result<u64> {
    t.as_slice::<u64>()?
        .first()
        .copied()
        .ok_or_else(|| IrError::msg("empty scalar"))
}

pub(super) fn eval_range(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let (start, limit, delta) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
    let n = range_count(start, limit, delta)?;
    let dtype = start.dtype();
    ensure!(dtype != DType::Bool, "Range does not take bool");
    let data = with_dtype!(dtype, T => {
        let v: Vec<T> = if dtype.is_float() {
            let (s, d) = (start.to_f64_vec()[0], delta.to_f64_vec()[0]);
            (0..n).map(|i| T::from_f64(s + i as f64 * d)).collect()
        } else if dtype == DType::U64 {
            let (s, d) = (u64_scalar(start)?, u64_scalar(delta)?);
            (0..n).map(|i| T::from_u64(s.wrapping_add((i as u64).wrapping_mul(d)))).collect()
        } else {
            let (s, d) = (start.to_i64_vec()[0], delta.to_i64_vec()[0]);
            (0..n).map(|i| T::from_i64(s.wrapping_add((i as i64).wrapping_mul(d)))).collect()
        };
        <T as Storable>::wrap(v)
    });
    Tensor::from_data(vec![n], data)
}

pub(super) fn infer_range(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let st = input_type(types, 0)?;
    for i in 1..3 {
        let t = input_type(types, i)?;
        ensure!(
            t.dtype == st.dtype,
            "input {i} is {} but start is {}",
            t.dtype,
            st.dtype
        );
    }
    if let (Some(s), Some(l), Some(d)) = (
        const_input(consts, 0),
        const_input(consts, 1),
        const_input(consts, 2),
    ) {
        return Ok(TensorType::known(st.dtype, &[range_count(s, l, d)?]));
    }
    Ok(TensorType::new(st.dtype, Shape::of_rank(1)))
}

fn one_hot_axis(axis: i64, rank: usize) -> Result<usize> {
    // The axis indexes the output, whose rank is one more.
    let r = rank as i64 + 1;
    ensure!(
        axis >= -r && axis < r,
        "axis {axis} is out of range for output rank {r}"
    );
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

fn one_hot_depth(t: &Tensor) -> Result<usize> {
    ensure!(
        t.len() == 1,
        "depth must be a scalar, found shape {:?}",
        t.shape()
    );
    let d = t.to_f64_vec()[0];
    ensure!(
        d.is_finite() && d >= 1.0,
        "depth must be positive, found {d}"
    );
    dim_from_value(d as i64, "depth")
}

pub(super) fn eval_one_hot(axis: i64, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let (ind, depth, values) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
    ensure!(
        values.len() == 2,
        "values must hold [off, on], found shape {:?}",
        values.shape()
    );
    let depth = one_hot_depth(depth)?;
    let a = one_hot_axis(axis, ind.rank())?;
    let mut shape = ind.shape().to_vec();
    shape.insert(a, depth);
    let n = out_numel(&shape)?;
    let inner: usize = ind.shape()[a..].iter().product();
    let idx = ind.to_f64_vec();
    let d = depth as f64;
    let data = with_data!(values.data(), v, T => {
        let (off, on) = (v[0], v[1]);
        let mut out: Vec<T> = vec![off; n];
        for (k, &x) in idx.iter().enumerate() {
            let x = x.trunc();
            // Indices outside [-depth, depth) give an all-off row, as ONNX specifies.
            let x = if x < 0.0 { x + d } else { x };
            if x >= 0.0 && x < d {
                let (o, i) = (k / inner, k % inner);
                out[(o * depth + x as usize) * inner + i] = on;
            }
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(shape, data)
}

pub(super) fn infer_one_hot(
    axis: i64,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let ind = input_type(types, 0)?;
    let values = input_type(types, 2)?;
    let Some(dims) = ind.shape.dims() else {
        return Ok(TensorType::unknown_shape(values.dtype));
    };
    let a = one_hot_axis(axis, dims.len())?;
    let depth = match const_input(consts, 1) {
        Some(t) => Dim::Known(one_hot_depth(t)?),
        None => Dim::Unknown,
    };
    let mut out = dims.to_vec();
    out.insert(a, depth);
    Ok(TensorType::new(values.dtype, out))
}

pub(super) fn eval_eye_like(
    dtype: Option<DType>,
    k: i64,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let &[rows, cols] = x.shape() else {
        bail!("EyeLike takes a 2-D tensor, found shape {:?}", x.shape())
    };
    let dtype = dtype.unwrap_or(x.dtype());
    let n = out_numel(x.shape())?;
    let data = with_dtype!(dtype, T => {
        let mut out: Vec<T> = vec![T::default(); n];
        for i in 0..rows {
            let j = (i as i64).checked_add(k);
            if let Some(j) = j.filter(|&j| j >= 0 && (j as u64) < cols as u64) {
                out[i * cols + j as usize] = T::from_i64(1);
            }
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(vec![rows, cols], data)
}

pub(super) fn infer_eye_like(
    dtype: Option<DType>,
    types: &[Option<&TensorType>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    if let Some(r) = x.shape.rank() {
        ensure!(r == 2, "EyeLike takes a 2-D tensor, found rank {r}");
    }
    Ok(TensorType {
        dtype: dtype.unwrap_or(x.dtype),
        shape: x.shape.clone(),
    })
}
