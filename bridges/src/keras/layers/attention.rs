//! MultiHeadAttention as projections, scaled dot products and a softmax.

use super::super::model::Ctx;
use super::super::{KErr, KResult};
use super::*;
use kiln_ir::{BinaryOp, Op, Value};
use serde_json::Value as Json;

/// MultiHeadAttention over the last axis (attention_axes = the sequence axis), with the
/// query scaled by 1/sqrt(key_dim) as Keras does.
pub(crate) fn attention(
    ctx: &mut Ctx,
    name: &str,
    cfg: &Json,
    ins: &[Value],
    kwargs: &Json,
) -> KResult<Value> {
    if kwargs.get("attention_mask").is_some_and(|m| !m.is_null()) {
        return Err(KErr::at(
            name,
            "MultiHeadAttention with an attention_mask is not supported",
        ));
    }
    if kwargs
        .get("use_causal_mask")
        .and_then(|m| m.as_bool())
        .unwrap_or(false)
    {
        return Err(KErr::at(
            name,
            "MultiHeadAttention with use_causal_mask is not supported",
        ));
    }
    let (q, v, k) = match ins {
        [q, v] => (*q, *v, *v),
        [q, v, k] => (*q, *v, *k),
        _ => {
            return Err(KErr::at(
                name,
                format!(
                    "MultiHeadAttention takes query, value and key, it got {} inputs",
                    ins.len()
                ),
            ))
        }
    };
    let r = ctx.rank(name, q)?;
    if r != 3 {
        return Err(KErr::at(
            name,
            "only rank-3 (batch, sequence, features) attention is supported",
        ));
    }
    let heads = cfg
        .get("num_heads")
        .and_then(|h| h.as_u64())
        .ok_or_else(|| KErr::at(name, "no `num_heads`"))? as usize;
    let kd = cfg
        .get("key_dim")
        .and_then(|h| h.as_u64())
        .ok_or_else(|| KErr::at(name, "no `key_dim`"))? as usize;
    let bias = use_bias(cfg);
    let w = weights(ctx, name, "MultiHeadAttention", if bias { 8 } else { 4 })?;
    let step = if bias { 2 } else { 1 };
    // Projects (N, T, D) by a (D, H, K) kernel into (N, H, T, K).
    let project = |ctx: &mut Ctx, x: Value, i: usize| -> KResult<Value> {
        let kern = &w[i * step];
        let s = kern.shape().to_vec();
        if s.len() != 3 || s[1] != heads {
            return Err(KErr::at(
                name,
                format!("projection kernel has shape {s:?}, expected (dim, {heads}, head_dim)"),
            ));
        }
        let flat = kern
            .reshape(vec![s[0], s[1] * s[2]])
            .map_err(|e| KErr::at(name, e.message))?;
        let kv = ctx.constant(name, flat);
        let mut y = ctx.add(name, Op::MatMul, &[x, kv])?;
        if bias {
            let b = w[i * step + 1]
                .reshape(vec![s[1] * s[2]])
                .map_err(|e| KErr::at(name, format!("bias: {}", e.message)))?;
            let bv = ctx.constant(name, b);
            y = ctx.add(name, Op::Binary(BinaryOp::Add), &[y, bv])?;
        }
        let shape = ctx.const_i64(name, &[0, 0, heads as i64, s[2] as i64])?;
        let y = ctx.add(name, Op::Reshape { allowzero: false }, &[y, shape])?;
        ctx.add(
            name,
            Op::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            },
            &[y],
        )
    };
    let qh = project(ctx, q, 0)?;
    let kh = project(ctx, k, 1)?;
    let vh = project(ctx, v, 2)?;
    let scale = ctx.const_f32(name, vec![], vec![(1.0 / (kd as f64).sqrt()) as f32])?;
    let qh = ctx.add(name, Op::Binary(BinaryOp::Mul), &[qh, scale])?;
    let kt = ctx.add(
        name,
        Op::Transpose {
            perm: Some(vec![0, 1, 3, 2]),
        },
        &[kh],
    )?;
    let scores = ctx.add(name, Op::MatMul, &[qh, kt])?;
    let probs = ctx.add(name, Op::Softmax { axis: -1 }, &[scores])?;
    let ctxv = ctx.add(name, Op::MatMul, &[probs, vh])?;
    let ctxv = ctx.add(
        name,
        Op::Transpose {
            perm: Some(vec![0, 2, 1, 3]),
        },
        &[ctxv],
    )?;
    let ok = &w[3 * step];
    let os = ok.shape().to_vec();
    if os.len() != 3 || os[0] != heads {
        return Err(KErr::at(
            name,
            format!("output kernel has shape {os:?}, expected ({heads}, head_dim, dim)"),
        ));
    }
    let shape = ctx.const_i64(name, &[0, 0, (os[0] * os[1]) as i64])?;
    let flat = ctx.add(name, Op::Reshape { allowzero: false }, &[ctxv, shape])?;
    let okf = ok
        .reshape(vec![os[0] * os[1], os[2]])
        .map_err(|e| KErr::at(name, e.message))?;
    let okv = ctx.constant(name, okf);
    let mut y = ctx.add(name, Op::MatMul, &[flat, okv])?;
    if bias {
        let bv = ctx.constant(name, w[3 * step + 1].clone());
        y = ctx.add(name, Op::Binary(BinaryOp::Add), &[y, bv])?;
    }
    Ok(y)
}
