//! ONNX RotaryEmbedding (opset 23): (x, cos_cache, sin_cache, position_ids?).
//!
//! x is [batch, heads, seq, head_size], or [batch, seq, hidden] with `num_heads`. Each head
//! vector's first `rotary_embedding_dim` entries (all of them when 0) are rotated in pairs:
//! halves (x[j], x[j + d/2]) or, `interleaved`, neighbours (x[2j], x[2j + 1]); the rest pass
//! through. With position_ids [batch, seq] the caches are [max_position, d/2] tables indexed
//! by position; without, they are [batch, seq, d/2].

use super::{attr_usize, check_float};
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::ops::util::{input, input_type, opt_input};
use crate::shape::TensorType;
use crate::tensor::Tensor;

pub(super) fn infer(types: &[Option<&TensorType>], n_outputs: usize) -> Result<Vec<TensorType>> {
    if n_outputs != 1 {
        return Err(IrError::msg(format!(
            "rotary_embedding has one output, the node has {n_outputs}"
        )));
    }
    let x = input_type(types, 0)?;
    check_float("x", x.dtype)?;
    if let Some(r) = x.shape.rank() {
        if r != 3 && r != 4 {
            return Err(IrError::msg(format!("x must have rank 3 or 4, found {r}")));
        }
    }
    Ok(vec![x.clone()])
}

pub(super) fn eval(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let Op::RotaryEmbedding {
        interleaved,
        num_heads,
        rotary_embedding_dim,
    } = op
    else {
        return Err(IrError::msg("not a rotary_embedding op"));
    };
    if n_outputs != 1 {
        return Err(IrError::msg(format!(
            "rotary_embedding has one output, the node has {n_outputs}"
        )));
    }
    let x = input(inputs, 0)?;
    let cos = input(inputs, 1)?;
    let sin = input(inputs, 2)?;
    check_float("x", x.dtype())?;
    check_float("cos_cache", cos.dtype())?;
    check_float("sin_cache", sin.dtype())?;
    let s = x.shape();
    // (batch, heads, seq, head_size) and the flat offset of one head vector.
    let (batch, heads, seq, head) = match (s.len(), num_heads) {
        (4, _) => (s[0], s[1], s[2], s[3]),
        (3, Some(n)) => {
            let n = attr_usize("num_heads", *n)?;
            if n == 0 || s[2] % n != 0 {
                return Err(IrError::msg(format!(
                    "hidden size {} is not a multiple of num_heads {n}",
                    s[2]
                )));
            }
            (s[0], n, s[1], s[2] / n)
        }
        (3, None) => return Err(IrError::msg("a 3-D input needs the num_heads attribute")),
        (r, _) => return Err(IrError::msg(format!("x must have rank 3 or 4, found {r}"))),
    };
    let offset = |b: usize, n: usize, t: usize| {
        if s.len() == 4 {
            ((b * heads + n) * seq + t) * head
        } else {
            (b * seq + t) * heads * head + n * head
        }
    };
    let rot = if *rotary_embedding_dim == 0 {
        head
    } else {
        attr_usize("rotary_embedding_dim", *rotary_embedding_dim)?
    };
    if rot > head || rot % 2 != 0 {
        return Err(IrError::msg(format!(
            "rotary_embedding_dim {rot} must be even and at most the head size {head}"
        )));
    }
    let half = rot / 2;
    let cv = cos.to_f64_vec();
    let sv = sin.to_f64_vec();
    if cos.shape() != sin.shape() {
        return Err(IrError::msg(format!(
            "cos_cache {:?} and sin_cache {:?} differ in shape",
            cos.shape(),
            sin.shape()
        )));
    }
    // Row of the caches for (batch, position in sequence).
    let rows: Vec<usize> = match opt_input(inputs, 3) {
        Some(p) => {
            if p.shape() != [batch, seq] {
                return Err(IrError::msg(format!(
                    "position_ids must have shape [{batch}, {seq}], found {:?}",
                    p.shape()
                )));
            }
            let cs = cos.shape();
            if cs.len() != 2 || cs[1] != half {
                return Err(IrError::msg(format!(
                    "with position_ids the caches must be [max_position, {half}], found {cs:?}"
                )));
            }
            p.to_i64_vec()
                .into_iter()
                .map(|v| match usize::try_from(v) {
                    Ok(v) if v < cs[0] => Ok(v),
                    _ => Err(IrError::msg(format!(
                        "position id {v} is outside the cache of {} positions",
                        cs[0]
                    ))),
                })
                .collect::<Result<_>>()?
        }
        None => {
            if cos.shape() != [batch, seq, half] {
                return Err(IrError::msg(format!(
                    "without position_ids the caches must be [{batch}, {seq}, {half}], found {:?}",
                    cos.shape()
                )));
            }
            (0..batch * seq).collect()
        }
    };
    let xv = x.to_f64_vec();
    let mut out = xv.clone();
    for b in 0..batch {
        for t in 0..seq {
            let row = rows[b * seq + t] * half;
            for n in 0..heads {
                let o = offset(b, n, t);
                for j in 0..half {
                    let (i1, i2) = if *interleaved {
                        (o + 2 * j, o + 2 * j + 1)
                    } else {
                        (o + j, o + half + j)
                    };
                    let (c, sn) = (cv[row + j], sv[row + j]);
                    out[i1] = c * xv[i1] - sn * xv[i2];
                    out[i2] = sn * xv[i1] + c * xv[i2];
                }
            }
        }
    }
    Ok(vec![Tensor::from_f64(x.dtype(), s.to_vec(), &out)?])
}
