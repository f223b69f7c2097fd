//! The normalization family: LpNormalization, BatchNorm (inference), InstanceNorm,
//! LayerNorm, GroupNorm (opset 21), RmsNorm (opset 23), LRN, MeanVarianceNormalization.
//! Statistics are computed in f64 whatever `stash_type` says (at least its precision).

use super::common::{axes_mask, float_type, lanes, per_channel, require_float, stat_dims, Bcast, ReducePlan};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::ops::util::{input, norm_axis, opt_input};
use crate::shape::{Shape, TensorType};
use crate::tensor::Tensor;

pub fn infer(op: &Op, types: &[Option<&TensorType>], n_outputs: usize) -> Result<Vec<TensorType>> {
    let x = float_type(types, 0)?;
    let rank = x.shape.rank();
    match op {
        Op::LayerNorm { axis, stash_type, .. } => {
            require_float("stash_type", *stash_type)?;
            let stat_shape = match x.shape.dims() {
                Some(dims) => Shape(Some(stat_dims(dims, norm_axis(*axis, dims.len())?))),
                None => Shape::unknown_rank(),
            };
            let mut out = vec![x.clone()];
            for _ in 1..n_outputs.min(3) {
                out.push(TensorType { dtype: *stash_type, shape: stat_shape.clone() });
            }
            Ok(out)
        }
        Op::RmsNorm { axis, stash_type, .. } => {
            require_float("stash_type", *stash_type)?;
            let scale = float_type(types, 1)?;
            if let Some(r) = rank {
                norm_axis(*axis, r)?;
            }
            Ok(vec![TensorType { dtype: scale.dtype, shape: x.shape.clone() }])
        }
        Op::BatchNorm { .. } if n_outputs > 1 => Err(IrError::msg("batch_norm is inference only: training mode outputs are not supported")),
        Op::LpNormalization { axis, .. } => {
            if let Some(r) = rank {
                norm_axis(*axis, r)?;
            }
            Ok(vec![x.clone()])
        }
        Op::InstanceNorm { .. } | Op::GroupNorm { .. } | Op::Lrn { .. } => {
            if rank.is_some_and(|r| r < 2) {
                return Err(IrError::msg(format!("{} needs an input of rank 2 or more, found {}", op.name(), x.shape)));
            }
            Ok(vec![x.clone()])
        }
        _ => Ok(vec![x.clone()]),
    }
}

pub fn eval(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    require_float(op.name(), x.dtype())?;
    match op {
        Op::LpNormalization { axis, p } => Ok(vec![lp_normalization(x, *axis, *p)?]),
        Op::BatchNorm { epsilon } => {
            if n_outputs > 1 {
                return Err(IrError::msg("batch_norm is inference only: training mode outputs are not supported"));
            }
            let p: Vec<&Tensor> = (1..5).map(|i| input(inputs, i)).collect::<Result<_>>()?;
            Ok(vec![batch_norm(x, p[0], p[1], p[2], p[3], *epsilon as f64)?])
        }
        Op::InstanceNorm { epsilon } => {
            // One group per channel; an input with no channels has nothing to normalize.
            let groups = channels(x, "instance_norm")?.max(1);
            Ok(vec![group_norm(x, input(inputs, 1)?, input(inputs, 2)?, groups, *epsilon as f64)?])
        }
        Op::GroupNorm { epsilon, num_groups, .. } => {
            let g = usize::try_from(*num_groups)
                .ok()
                .filter(|&g| g > 0)
                .ok_or_else(|| IrError::msg(format!("num_groups must be positive, found {num_groups}")))?;
            Ok(vec![group_norm(x, input(inputs, 1)?, input(inputs, 2)?, g, *epsilon as f64)?])
        }
        Op::LayerNorm { axis, epsilon, stash_type } => {
            require_float("stash_type", *stash_type)?;
            let (y, mean, inv) = layer_norm(x, input(inputs, 1)?, opt_input(inputs, 2), *axis, *epsilon as f64, false, x.dtype())?;
            let mut out = vec![y];
            let stat_shape: Vec<usize> = {
                let a = norm_axis(*axis, x.rank())?;
                x.shape().iter().enumerate().map(|(i, &d)| if i >= a { 1 } else { d }).collect()
            };
            if n_outputs > 1 {
                out.push(Tensor::from_f64(*stash_type, stat_shape.clone(), &mean)?);
            }
            if n_outputs > 2 {
                out.push(Tensor::from_f64(*stash_type, stat_shape, &inv)?);
            }
            Ok(out)
        }
        Op::RmsNorm { axis, epsilon, stash_type } => {
            require_float("stash_type", *stash_type)?;
            let scale = input(inputs, 1)?;
            require_float("scale", scale.dtype())?;
            let (y, _, _) = layer_norm(x, scale, None, *axis, *epsilon as f64, true, scale.dtype())?;
            Ok(vec![y])
        }
        Op::Lrn { alpha, beta, bias, size } => Ok(vec![lrn(x, *alpha as f64, *beta as f64, *bias as f64, *size)?]),
        Op::MeanVarianceNormalization { axes } => Ok(vec![mvn(x, axes)?]),
        _ => Err(IrError::msg("not a normalization")),
    }
}

/// The channel count: dim 1 (dim 0 for a rank-1 input, as numpy's reshape makes it).
fn channels(x: &Tensor, what: &str) -> Result<usize> {
    match x.shape() {
        [] => Err(IrError::msg(format!("{what} needs an input of rank 1 or more"))),
        [c] => Ok(*c),
        s => Ok(s[1]),
    }
}

/// `x / ||x||_p` along `axis`; a zero norm gives 0.
pub fn lp_normalization(x: &Tensor, axis: i64, p: i64) -> Result<Tensor> {
    if p != 1 && p != 2 {
        return Err(IrError::msg(format!("lp_normalization supports p = 1 or 2, found {p}")));
    }
    let a = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = lanes(x.shape(), a);
    let mut v = x.to_f64_vec();
    for o in 0..outer {
        for i in 0..inner {
            let idx = |j: usize| (o * n + j) * inner + i;
            let norm = if p == 1 {
                (0..n).map(|j| v[idx(j)].abs()).sum::<f64>()
            } else {
                (0..n).map(|j| v[idx(j)] * v[idx(j)]).sum::<f64>().sqrt()
            };
            for j in 0..n {
                v[idx(j)] = if norm == 0.0 { 0.0 } else { v[idx(j)] / norm };
            }
        }
    }
    Tensor::from_f64(x.dtype(), x.shape().to_vec(), &v)
}

/// Inference batch norm with per-channel statistics.
pub fn batch_norm(x: &Tensor, scale: &Tensor, bias: &Tensor, mean: &Tensor, var: &Tensor, eps: f64) -> Result<Tensor> {
    let c = channels(x, "batch_norm")?;
    let spatial: usize = x.shape().iter().skip(2).product();
    let s = per_channel(scale, c, "scale")?;
    let b = per_channel(bias, c, "bias")?;
    let m = per_channel(mean, c, "mean")?;
    let vr = per_channel(var, c, "var")?;
    let mut v = x.to_f64_vec();
    for (k, e) in v.iter_mut().enumerate() {
        let ch = (k / spatial.max(1)) % c.max(1);
        *e = s[ch] * (*e - m[ch]) / (vr[ch] + eps).sqrt() + b[ch];
    }
    Tensor::from_f64(x.dtype(), x.shape().to_vec(), &v)
}

/// Mean and variance (population) of `v`.
fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / n;
    (mean, var)
}

/// Normalizes each of `groups` channel groups of each instance, then applies the
/// per-channel scale and bias. InstanceNorm is the case groups = C.
pub fn group_norm(x: &Tensor, scale: &Tensor, bias: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
    let c = channels(x, "group_norm")?;
    if x.rank() < 2 {
        return Err(IrError::msg(format!("group_norm needs an input of rank 2 or more, found {:?}", x.shape())));
    }
    if groups == 0 || c % groups != 0 {
        return Err(IrError::msg(format!("{groups} groups do not divide {c} channels")));
    }
    let s = per_channel(scale, c, "scale")?;
    let b = per_channel(bias, c, "bias")?;
    let spatial: usize = x.shape().iter().skip(2).product();
    let chunk = (c / groups) * spatial;
    let mut v = x.to_f64_vec();
    if chunk > 0 {
        for (g, part) in v.chunks_mut(chunk).enumerate() {
            let (mean, var) = moments(part);
            let inv = 1.0 / (var + eps).sqrt();
            let first_channel = (g % groups) * (c / groups);
            for (k, e) in part.iter_mut().enumerate() {
                let ch = first_channel + k / spatial;
                *e = (*e - mean) * inv * s[ch] + b[ch];
            }
        }
    }
    Tensor::from_f64(x.dtype(), x.shape().to_vec(), &v)
}

/// LayerNorm (or RmsNorm when `rms`: no centering) over the axes from `axis` on. Returns y
/// (of dtype `out`) and the per-row mean and inverse standard deviation.
pub fn layer_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    axis: i64,
    eps: f64,
    rms: bool,
    out: DType,
) -> Result<(Tensor, Vec<f64>, Vec<f64>)> {
    let a = norm_axis(axis, x.rank())?;
    let cols: usize = x.shape()[a..].iter().product();
    let rows: usize = x.shape()[..a].iter().product();
    let s = Bcast::new(scale, x.shape())?;
    let b = bias.map(|b| Bcast::new(b, x.shape())).transpose()?;
    let mut v = x.to_f64_vec();
    let mut means = Vec::with_capacity(rows);
    let mut invs = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &mut v[r * cols..(r + 1) * cols];
        let (mean, var) = if rms { (0.0, row.iter().map(|e| e * e).sum::<f64>() / cols as f64) } else { moments(row) };
        let inv = 1.0 / (var + eps).sqrt();
        for (k, e) in row.iter_mut().enumerate() {
            let i = r * cols + k;
            *e = (*e - mean) * inv * s.at(i) + b.as_ref().map_or(0.0, |b| b.at(i));
        }
        means.push(mean);
        invs.push(inv);
    }
    Ok((Tensor::from_f64(out, x.shape().to_vec(), &v)?, means, invs))
}

/// Local response normalization across channels (dim 1).
pub fn lrn(x: &Tensor, alpha: f64, beta: f64, bias: f64, size: i64) -> Result<Tensor> {
    if x.rank() < 2 {
        return Err(IrError::msg(format!("lrn needs an input of rank 2 or more, found {:?}", x.shape())));
    }
    let size = usize::try_from(size).ok().filter(|&s| s > 0).ok_or_else(|| IrError::msg(format!("size must be positive, found {size}")))?;
    let (outer, c, inner) = lanes(x.shape(), 1);
    let xs = x.to_f64_vec();
    let mut out = vec![0.0; xs.len()];
    let below = (size - 1) / 2;
    let above = size / 2; // ceil((size - 1) / 2)
    for o in 0..outer {
        for i in 0..inner {
            let idx = |j: usize| (o * c + j) * inner + i;
            for ch in 0..c {
                let lo = ch.saturating_sub(below);
                let hi = ch.saturating_add(above).min(c - 1);
                let sq: f64 = (lo..=hi).map(|j| xs[idx(j)] * xs[idx(j)]).sum();
                out[idx(ch)] = xs[idx(ch)] / (bias + alpha / size as f64 * sq).powf(beta);
            }
        }
    }
    Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)
}

/// (x - E[x]) / (sqrt(Var[x]) + 1e-9) over `axes` (empty: ONNX's default [0, 2, 3]).
pub fn mvn(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let axes: &[i64] = if axes.is_empty() { &[0, 2, 3] } else { axes };
    let mask = axes_mask(axes, x.rank())?;
    let plan = ReducePlan::new(x.shape(), &mask)?;
    let mut v = x.to_f64_vec();
    let n = plan.offsets.len() as f64;
    for &base in &plan.bases {
        let mean = plan.offsets.iter().map(|&o| v[base + o]).sum::<f64>() / n;
        let var = plan.offsets.iter().map(|&o| (v[base + o] - mean).powi(2)).sum::<f64>() / n;
        let den = var.sqrt() + 1e-9;
        for &o in &plan.offsets {
            v[base + o] = (v[base + o] - mean) / den;
        }
    }
    Tensor::from_f64(x.dtype(), x.shape().to_vec(), &v)
}
