//! Concat and Split: joining and cutting along one axis, as contiguous chunk copies.

use super::{int_values, out_numel};
use crate::error::{IrError, Result};
use crate::ops::util::{const_input, input, input_type, norm_axis, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{Storable, Tensor};
use crate::{bail, ensure, with_data};

pub(super) fn eval_concat(axis: i64, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    ensure!(!inputs.is_empty(), "Concat needs at least one input");
    let xs: Vec<&Tensor> = (0..inputs.len())
        .map(|i| input(inputs, i))
        .collect::<Result<_>>()?;
    let first = xs[0];
    let rank = first.rank();
    ensure!(rank >= 1, "Concat cannot join scalars");
    let a = norm_axis(axis, rank)?;
    let mut out_shape = first.shape().to_vec();
    out_shape[a] = 0;
    for (i, x) in xs.iter().enumerate() {
        ensure!(
            x.dtype() == first.dtype(),
            "input {i} is {} but input 0 is {}",
            x.dtype(),
            first.dtype()
        );
        ensure!(
            x.rank() == rank,
            "input {i} has rank {} but input 0 has rank {rank}",
            x.rank()
        );
        for d in 0..rank {
            ensure!(
                d == a || x.shape()[d] == first.shape()[d],
                "input {i} has shape {:?}, which does not match input 0's {:?} off axis {a}",
                x.shape(),
                first.shape()
            );
        }
        out_shape[a] = out_shape[a]
            .checked_add(x.shape()[a])
            .ok_or_else(|| IrError::msg("the concatenated axis is too long"))?;
    }
    let n = out_numel(&out_shape)?;
    let outer: usize = out_shape[..a].iter().product();
    let inner: usize = out_shape[a + 1..].iter().product();
    let data = with_data!(first.data(), _v, T => {
        let parts: Vec<&[T]> = xs.iter().map(|x| x.as_slice::<T>()).collect::<Result<_>>()?;
        let chunks: Vec<usize> = xs.iter().map(|x| x.shape()[a] * inner).collect();
        let mut out: Vec<T> = Vec::with_capacity(n);
        for o in 0..outer {
            for (p, &c) in parts.iter().zip(&chunks) {
                out.extend_from_slice(&p[o * c..(o + 1) * c]);
            }
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(out_shape, data)
}

/// Two dims that must be equal, merged: a known size wins over a symbol or unknown.
fn merge_dim(a: &Dim, b: &Dim, what: &str) -> Result<Dim> {
    Ok(match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => {
            ensure!(x == y, "{what}: dims {x} and {y} differ");
            a.clone()
        }
        (Dim::Known(_), _) => a.clone(),
        (_, Dim::Known(_)) => b.clone(),
        (Dim::Sym(_), _) => a.clone(),
        _ => b.clone(),
    })
}

pub(super) fn infer_concat(axis: i64, types: &[Option<&TensorType>]) -> Result<TensorType> {
    ensure!(!types.is_empty(), "Concat needs at least one input");
    let ts: Vec<&TensorType> = (0..types.len())
        .map(|i| input_type(types, i))
        .collect::<Result<_>>()?;
    let dtype = ts[0].dtype;
    for (i, t) in ts.iter().enumerate() {
        ensure!(
            t.dtype == dtype,
            "input {i} is {} but input 0 is {dtype}",
            t.dtype
        );
    }
    let Some(rank) = ts.iter().find_map(|t| t.shape.rank()) else {
        return Ok(TensorType::unknown_shape(dtype));
    };
    ensure!(rank >= 1, "Concat cannot join scalars");
    let a = norm_axis(axis, rank)?;
    let mut out: Vec<Dim> = vec![Dim::Unknown; rank];
    let mut sum: Option<usize> = Some(0);
    let mut all_known_rank = true;
    for (i, t) in ts.iter().enumerate() {
        let Some(dims) = t.shape.dims() else {
            all_known_rank = false;
            sum = None;
            continue;
        };
        ensure!(
            dims.len() == rank,
            "input {i} has rank {} but another input has rank {rank}",
            dims.len()
        );
        for d in 0..rank {
            if d != a {
                out[d] = merge_dim(&out[d], &dims[d], &format!("input {i}, axis {d}"))?;
            }
        }
        sum = match (sum, &dims[a]) {
            (Some(s), Dim::Known(k)) => s.checked_add(*k),
            _ => None,
        };
    }
    out[a] = match sum {
        Some(s) => Dim::Known(s),
        // One input of symbolic length along the axis passes its symbol through.
        None if all_known_rank && ts.len() == 1 => {
            ts[0].shape.dims().map_or(Dim::Unknown, |d| d[a].clone())
        }
        None => Dim::Unknown,
    };
    Ok(TensorType::new(dtype, out))
}

/// Split sizes from the `split` input, or ONNX opset-18 equal parts: ceil-sized chunks,
/// the last one smaller when the axis does not divide evenly.
fn split_sizes(dim: usize, split: Option<&[i64]>, n_outputs: usize) -> Result<Vec<usize>> {
    ensure!(n_outputs >= 1, "Split needs at least one output");
    match split {
        Some(s) => {
            ensure!(
                s.len() == n_outputs,
                "split {s:?} has {} entries for {n_outputs} outputs",
                s.len()
            );
            let mut sizes = Vec::with_capacity(s.len());
            for &v in s {
                ensure!(v >= 0, "split {s:?} has a negative size");
                sizes.push(
                    usize::try_from(v)
                        .map_err(|_| IrError::msg(format!("split size {v} is too large")))?,
                );
            }
            let total = sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b));
            ensure!(
                total == Some(dim),
                "split {s:?} does not add up to the axis length {dim}"
            );
            Ok(sizes)
        }
        None => {
            if dim.is_multiple_of(n_outputs) {
                return Ok(vec![dim / n_outputs; n_outputs]);
            }
            let chunk = dim / n_outputs + 1;
            let used = chunk * (n_outputs - 1);
            ensure!(
                used <= dim,
                "an axis of length {dim} cannot be split into {n_outputs} ceil-sized parts"
            );
            let mut sizes = vec![chunk; n_outputs - 1];
            sizes.push(dim - used);
            Ok(sizes)
        }
    }
}

pub(super) fn eval_split(
    axis: i64,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    ensure!(x.rank() >= 1, "Split cannot split a scalar");
    let a = norm_axis(axis, x.rank())?;
    let split = opt_input(inputs, 1)
        .map(|t| int_values(t, "split"))
        .transpose()?;
    let dim = x.shape()[a];
    let sizes = split_sizes(dim, split.as_deref(), n_outputs)?;
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut outs = Vec::with_capacity(sizes.len());
    let mut start = 0usize;
    for &s in &sizes {
        let mut shape = x.shape().to_vec();
        shape[a] = s;
        let data = with_data!(x.data(), v, T => {
            let mut out: Vec<T> = Vec::with_capacity(outer * s * inner);
            for o in 0..outer {
                let from = (o * dim + start) * inner;
                out.extend_from_slice(&v[from..from + s * inner]);
            }
            <T as Storable>::wrap(out)
        });
        outs.push(Tensor::from_data(shape, data)?);
        start += s;
    }
    Ok(outs)
}

pub(super) fn infer_split(
    axis: i64,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = input_type(types, 0)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(vec![TensorType::unknown_shape(x.dtype); n_outputs]);
    };
    ensure!(!dims.is_empty(), "Split cannot split a scalar");
    let a = norm_axis(axis, dims.len())?;
    let split_given = types.get(1).copied().flatten().is_some();
    let sizes: Vec<Dim> = match (split_given, const_input(consts, 1), &dims[a]) {
        (true, Some(s), d) => {
            let s = int_values(s, "split")?;
            match d {
                Dim::Known(k) => split_sizes(*k, Some(&s), n_outputs)?
                    .into_iter()
                    .map(Dim::Known)
                    .collect(),
                _ => {
                    ensure!(
                        s.len() == n_outputs,
                        "split {s:?} has {} entries for {n_outputs} outputs",
                        s.len()
                    );
                    s.iter()
                        .map(|&v| usize::try_from(v).map_or(Dim::Unknown, Dim::Known))
                        .collect()
                }
            }
        }
        // An impossible equal split is left to run time: it may sit in an If branch that
        // is never taken (ONNX's own AffineGrid function body has one).
        (false, _, Dim::Known(k)) => match split_sizes(*k, None, n_outputs) {
            Ok(s) => s.into_iter().map(Dim::Known).collect(),
            Err(_) => vec![Dim::Unknown; n_outputs],
        },
        (false, _, d) if n_outputs == 1 => vec![d.clone()],
        _ => vec![Dim::Unknown; n_outputs],
    };
    if sizes.len() != n_outputs {
        bail!("split gives {} parts for {n_outputs} outputs", sizes.len());
    }
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut d = dims.to_vec();
            d[a] = s;
            TensorType {
                dtype: x.dtype,
                shape: Shape(Some(d)),
            }
        })
        .collect())
}
