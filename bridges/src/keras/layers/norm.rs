//! Batch, layer and feature normalization.

use super::super::model::Ctx;
use super::super::{KErr, KResult};
use super::*;
use kiln_ir::{BinaryOp, DType, Op, Tensor, Value};
use serde_json::Value as Json;

/// Per-channel affine constants shaped to broadcast along `axis` of a rank-`r` input.
pub(super) fn channel_shape(name: &str, axis: i64, r: usize, c: usize) -> KResult<Vec<usize>> {
    let a = if axis < 0 { axis + r as i64 } else { axis };
    if a < 0 || a as usize >= r {
        return Err(KErr::at(
            name,
            format!("axis {axis} is out of range for rank {r}"),
        ));
    }
    let mut s = vec![1; r - a as usize];
    s[0] = c;
    Ok(s)
}

pub(super) fn batch_norm(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let scale = cfg.get("scale").and_then(|b| b.as_bool()).unwrap_or(true);
    let center = cfg.get("center").and_then(|b| b.as_bool()).unwrap_or(true);
    let eps = num(cfg, "epsilon").unwrap_or(1e-3);
    let n = 2 + scale as usize + center as usize;
    let w = weights(ctx, name, "BatchNormalization", n)?;
    let c = w[0].len();
    for t in &w {
        check_shape(name, "a batch-norm weight", t, &[c])?;
    }
    let mut i = 0;
    let gamma = if scale {
        i += 1;
        w[0].to_f64_vec()
    } else {
        vec![1.0; c]
    };
    let beta = if center {
        i += 1;
        w[i - 1].to_f64_vec()
    } else {
        vec![0.0; c]
    };
    let mean = w[i].to_f64_vec();
    let var = w[i + 1].to_f64_vec();
    // Folded into one multiply-add along the channel axis, which broadcasts in NHWC.
    let mut mul = Vec::with_capacity(c);
    let mut add = Vec::with_capacity(c);
    for j in 0..c {
        let s = gamma[j] / (var[j] + eps).sqrt();
        mul.push(s as f32);
        add.push((beta[j] - mean[j] * s) as f32);
    }
    let r = ctx.rank(name, x)?;
    let axis = cfg
        .get("axis")
        .and_then(|a| {
            a.as_i64()
                .or_else(|| a.as_array().and_then(|l| l.first()?.as_i64()))
        })
        .unwrap_or(-1);
    let shape = channel_shape(name, axis, r, c)?;
    let m = ctx.const_f32(name, shape.clone(), mul)?;
    let a = ctx.const_f32(name, shape, add)?;
    let y = ctx.add(name, Op::Binary(BinaryOp::Mul), &[x, m])?;
    ctx.add(name, Op::Binary(BinaryOp::Add), &[y, a])
}

pub(super) fn layer_norm(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let r = ctx.rank(name, x)? as i64;
    let axes: Vec<i64> = match cfg.get("axis") {
        Some(Json::Number(a)) => vec![a.as_i64().unwrap_or(-1)],
        Some(Json::Array(a)) => a.iter().filter_map(|v| v.as_i64()).collect(),
        _ => vec![-1],
    };
    let mut axes: Vec<i64> = axes
        .into_iter()
        .map(|a| if a < 0 { a + r } else { a })
        .collect();
    axes.sort();
    let first = *axes
        .first()
        .ok_or_else(|| KErr::at(name, "LayerNormalization has no axis"))?;
    if first < 0 {
        return Err(KErr::at(
            name,
            format!("axis {first} is out of range for rank {r}"),
        ));
    }
    if axes.iter().enumerate().any(|(i, &a)| a != first + i as i64)
        || *axes.last().unwrap_or(&first) != r - 1
    {
        return Err(KErr::at(
            name,
            format!("normalizing over axes {axes:?} is not supported (only trailing axes)"),
        ));
    }
    let scale = cfg.get("scale").and_then(|b| b.as_bool()).unwrap_or(true);
    let center = cfg.get("center").and_then(|b| b.as_bool()).unwrap_or(true);
    if cfg
        .get("rms_scaling")
        .and_then(|b| b.as_bool())
        .unwrap_or(false)
    {
        return Err(KErr::at(name, "rms_scaling is not supported"));
    }
    let eps = num(cfg, "epsilon").unwrap_or(1e-3);
    let w = weights(
        ctx,
        name,
        "LayerNormalization",
        scale as usize + center as usize,
    )?;
    let dims = ctx
        .ty(x)
        .shape
        .dims()
        .map(|d| d[first as usize..].to_vec())
        .unwrap_or_default();
    let norm_shape: Option<Vec<usize>> = dims.iter().map(|d| d.known()).collect();
    let norm_shape = match (norm_shape, w.first()) {
        (Some(s), _) => s,
        (None, Some(t)) => t.shape().to_vec(),
        (None, None) => return Err(KErr::at(name, "the normalized axes have unknown sizes")),
    };
    let numel: usize = norm_shape.iter().product();
    let mut i = 0;
    let gamma = if scale {
        i += 1;
        w[0].reshape(norm_shape.clone())
            .map_err(|e| KErr::at(name, format!("gamma: {}", e.message)))?
    } else {
        Tensor::new(norm_shape.clone(), vec![1f32; numel]).map_err(|e| KErr::at(name, e.message))?
    };
    let beta = if center {
        w[i].reshape(norm_shape.clone())
            .map_err(|e| KErr::at(name, format!("beta: {}", e.message)))?
    } else {
        Tensor::new(norm_shape, vec![0f32; numel]).map_err(|e| KErr::at(name, e.message))?
    };
    let g = ctx.constant(name, gamma);
    let b = ctx.constant(name, beta);
    let op = Op::LayerNorm {
        axis: first,
        epsilon: eps as f32,
        stash_type: DType::F32,
    };
    Ok(ctx.add_n(name, op, &[Some(x), Some(g), Some(b)], 1)?[0])
}

pub(super) fn normalization(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    if cfg.get("invert").and_then(|b| b.as_bool()).unwrap_or(false) {
        return Err(KErr::at(
            name,
            "Normalization with invert=True is not supported",
        ));
    }
    let (mean, var) = match (
        cfg.get("mean").filter(|m| !m.is_null()),
        cfg.get("variance").filter(|v| !v.is_null()),
    ) {
        // Given in the config: no weights are saved, and the values broadcast along the last axis.
        (Some(m), Some(v)) => (config_vector(name, m)?, config_vector(name, v)?),
        _ => {
            let w = ctx.layer_weights(name, "Normalization")?;
            match w.as_slice() {
                [m, v, ..] => (m.clone(), v.clone()),
                _ => {
                    return Err(KErr::at(
                        name,
                        format!(
                            "expected mean and variance weights, the file has {}",
                            w.len()
                        ),
                    ))
                }
            }
        }
    };
    if mean.shape() != var.shape() {
        return Err(KErr::at(name, "mean and variance have different shapes"));
    }
    // Keras: (x - mean) / max(sqrt(var), epsilon), epsilon = 1e-7; weights are kept with
    // broadcastable (1, ..., C) shapes.
    let inv: Vec<f32> = var
        .to_f64_vec()
        .iter()
        .map(|v| (1.0 / v.sqrt().max(1e-7)) as f32)
        .collect();
    let shape = mean.shape().to_vec();
    let m = ctx.constant(name, mean);
    let s = ctx.const_f32(name, shape, inv)?;
    let y = ctx.add(name, Op::Binary(BinaryOp::Sub), &[x, m])?;
    ctx.add(name, Op::Binary(BinaryOp::Mul), &[y, s])
}

fn config_vector(name: &str, j: &Json) -> KResult<Tensor> {
    let v: Vec<f32> = match j {
        Json::Number(n) => vec![n.as_f64().unwrap_or(0.0) as f32],
        Json::Array(a) => a
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| KErr::at(name, format!("`{x}` is not a number")))
            })
            .collect::<KResult<_>>()?,
        _ => {
            return Err(KErr::at(
                name,
                "Normalization mean/variance must be numbers",
            ))
        }
    };
    let n = v.len();
    Tensor::new(vec![n], v).map_err(|e| KErr::at(name, e.message))
}
