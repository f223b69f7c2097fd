//! ONNX Attention (opsets 23–25): (q, k, v, attn_mask?, past_key?, past_value?,
//! nonpad_kv_seqlen?) → (y, present_key?, present_value?, qk_matmul_output?).
//!
//! Follows the ONNX reference implementation step by step, including where it rounds to the
//! input's type, so that f16 and bf16 results match it:
//!
//! - 3-D inputs [batch, seq, heads·size] are split into heads with `q_num_heads` and
//!   `kv_num_heads`; 4-D inputs are [batch, heads, seq, size].
//! - past_key/past_value are concatenated in front of k/v along the sequence axis; the
//!   results are present_key/present_value.
//! - q and k are each scaled by sqrt(scale) (default scale 1/sqrt(head size)).
//! - The additive bias is the sum of: the mask (bool true → 0, false → -inf; a mask shorter
//!   than the key sequence is padded with -inf), the causal term (query i sees key j iff
//!   j <= i + offset), the sliding window (offset + i - j within [-right, left]), and the
//!   padding term from nonpad_kv_seqlen (key j is visible iff j < nonpad[b]). The offset is
//!   the past length, or nonpad[b] - q_seq for an external cache, or 0.
//! - softcap (when > 0) is applied to the logits before the bias.
//! - A query row whose bias is -inf everywhere gets all-zero probabilities.
//! - With fewer kv heads than q heads (GQA), q head h uses kv head h / (q_heads / kv_heads).
//! - qk_matmul_output is the (softcapped) logits for modes 0 and 1, the biased logits for
//!   mode 2, and the probabilities for mode 3.

use super::{attr_usize, check_float, round_to};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::ops::util::{broadcast_index_map, broadcast_shapes, input, input_type, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{checked_numel, Tensor};

fn dim_mul(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => x.checked_mul(*y).map_or(Dim::Unknown, Dim::Known),
        _ => Dim::Unknown,
    }
}

fn dim_div(a: &Dim, b: usize) -> Dim {
    match a {
        Dim::Known(x) if b > 0 && x % b == 0 => Dim::Known(x / b),
        _ => Dim::Unknown,
    }
}

fn dim_add(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(0), d) | (d, Dim::Known(0)) => d.clone(),
        (Dim::Known(x), Dim::Known(y)) => Dim::Known(x + y),
        _ => Dim::Unknown,
    }
}

/// (batch, heads, seq, size) of a q/k/v type, from its 3-D or 4-D shape.
fn bhsd_dims(t: &TensorType, heads: Option<i64>, what: &str) -> Result<Option<[Dim; 4]>> {
    let Some(d) = t.shape.dims() else {
        return Ok(None);
    };
    match d.len() {
        4 => Ok(Some([
            d[0].clone(),
            d[1].clone(),
            d[2].clone(),
            d[3].clone(),
        ])),
        3 => {
            let h = heads.ok_or_else(|| {
                IrError::msg(format!("a 3-D {what} needs q_num_heads and kv_num_heads"))
            })?;
            let h = attr_usize("num_heads", h)?;
            Ok(Some([
                d[0].clone(),
                Dim::Known(h),
                d[1].clone(),
                dim_div(&d[2], h),
            ]))
        }
        r => Err(IrError::msg(format!(
            "{what} must have rank 3 or 4, found {r}"
        ))),
    }
}

pub(super) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let Op::Attention {
        q_num_heads,
        kv_num_heads,
        ..
    } = op
    else {
        return Err(IrError::msg("not an attention op"));
    };
    if !(1..=4).contains(&n_outputs) {
        return Err(IrError::msg(format!(
            "attention has 1 to 4 outputs, the node has {n_outputs}"
        )));
    }
    let q = input_type(types, 0)?;
    let k = input_type(types, 1)?;
    let v = input_type(types, 2)?;
    check_float("q", q.dtype)?;
    let dt = q.dtype;
    let qd = bhsd_dims(q, *q_num_heads, "q")?;
    let kd = bhsd_dims(k, *kv_num_heads, "k")?;
    let vd = bhsd_dims(v, *kv_num_heads, "v")?;
    let past = match types.get(4).copied().flatten().and_then(|t| t.shape.dims()) {
        Some(d) if d.len() == 4 => d[2].clone(),
        Some(_) => return Err(IrError::msg("past_key must have rank 4")),
        None if types.get(4).copied().flatten().is_some() => Dim::Unknown,
        None => Dim::Known(0),
    };
    let unknown4 = || Shape::of_rank(4);
    let y = match (&qd, &vd, q.shape.rank()) {
        (Some(qd), Some(vd), Some(4)) => Shape(Some(vec![
            qd[0].clone(),
            qd[1].clone(),
            qd[2].clone(),
            vd[3].clone(),
        ])),
        (Some(qd), Some(vd), Some(3)) => Shape(Some(vec![
            qd[0].clone(),
            qd[2].clone(),
            dim_mul(&qd[1], &vd[3]),
        ])),
        (_, _, Some(r)) => Shape::of_rank(r),
        _ => Shape::unknown_rank(),
    };
    let total = kd
        .as_ref()
        .map_or(Dim::Unknown, |kd| dim_add(&past, &kd[2]));
    let present_k = kd.as_ref().map_or_else(unknown4, |kd| {
        Shape(Some(vec![
            kd[0].clone(),
            kd[1].clone(),
            total.clone(),
            kd[3].clone(),
        ]))
    });
    let present_v = match (&kd, &vd) {
        (Some(kd), Some(vd)) => Shape(Some(vec![
            kd[0].clone(),
            kd[1].clone(),
            total.clone(),
            vd[3].clone(),
        ])),
        _ => unknown4(),
    };
    let qk = qd.as_ref().map_or_else(unknown4, |qd| {
        Shape(Some(vec![
            qd[0].clone(),
            qd[1].clone(),
            qd[2].clone(),
            total.clone(),
        ]))
    });
    let all = [y, present_k, present_v, qk];
    Ok(all
        .into_iter()
        .take(n_outputs)
        .map(|s| TensorType::new(dt, s))
        .collect())
}

/// A q/k/v tensor as f64 in [batch, heads, seq, size] order, with its dims.
fn to_bhsd(t: &Tensor, heads: Option<i64>, what: &str) -> Result<(Vec<f64>, [usize; 4])> {
    let s = t.shape();
    let v = t.to_f64_vec();
    match s.len() {
        4 => Ok((v, [s[0], s[1], s[2], s[3]])),
        3 => {
            let h = heads.ok_or_else(|| {
                IrError::msg(format!("a 3-D {what} needs q_num_heads and kv_num_heads"))
            })?;
            let h = attr_usize("num_heads", h)?;
            if h == 0 || s[2] % h != 0 {
                return Err(IrError::msg(format!(
                    "{what} hidden size {} is not a multiple of {h} heads",
                    s[2]
                )));
            }
            let (b, n, d) = (s[0], s[1], s[2] / h);
            let mut out = vec![0.0; v.len()];
            for bi in 0..b {
                for hi in 0..h {
                    for si in 0..n {
                        for di in 0..d {
                            out[((bi * h + hi) * n + si) * d + di] =
                                v[(bi * n + si) * h * d + hi * d + di];
                        }
                    }
                }
            }
            Ok((out, [b, h, n, d]))
        }
        r => Err(IrError::msg(format!(
            "{what} must have rank 3 or 4, found {r}"
        ))),
    }
}

/// Concatenates `past` [b, h, p, d] in front of `cur` [b, h, s, d] along the sequence axis.
fn concat_seq(
    past: Option<&Tensor>,
    cur: (Vec<f64>, [usize; 4]),
    what: &str,
) -> Result<(Vec<f64>, [usize; 4])> {
    let Some(past) = past else { return Ok(cur) };
    let (cv, [b, h, s, d]) = cur;
    let ps = past.shape();
    if ps.len() != 4 || ps[0] != b || ps[1] != h || ps[3] != d {
        return Err(IrError::msg(format!(
            "{what} has shape {ps:?}, which does not match [{b}, {h}, _, {d}]"
        )));
    }
    let p = ps[2];
    let pv = past.to_f64_vec();
    let mut out = Vec::with_capacity(b * h * (p + s) * d);
    for bh in 0..b * h {
        out.extend_from_slice(&pv[bh * p * d..(bh + 1) * p * d]);
        out.extend_from_slice(&cv[bh * s * d..(bh + 1) * s * d]);
    }
    Ok((out, [b, h, p + s, d]))
}

pub(super) fn eval(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let Op::Attention {
        is_causal,
        kv_num_heads,
        q_num_heads,
        qk_matmul_output_mode,
        scale,
        softcap,
        softmax_precision,
        left_window_size,
        right_window_size,
    } = op
    else {
        return Err(IrError::msg("not an attention op"));
    };
    if !(1..=4).contains(&n_outputs) {
        return Err(IrError::msg(format!(
            "attention has 1 to 4 outputs, the node has {n_outputs}"
        )));
    }
    if !(0..=3).contains(qk_matmul_output_mode) {
        return Err(IrError::msg(format!(
            "qk_matmul_output_mode must be 0..3, found {qk_matmul_output_mode}"
        )));
    }
    if *left_window_size < -1 || *right_window_size < -1 {
        return Err(IrError::msg("window sizes must be -1 or non-negative"));
    }
    let q_t = input(inputs, 0)?;
    let k_t = input(inputs, 1)?;
    let v_t = input(inputs, 2)?;
    let dt = q_t.dtype();
    check_float("q", dt)?;
    if k_t.dtype() != dt || v_t.dtype() != dt {
        return Err(IrError::msg(format!(
            "q, k and v must share a type, found {dt}, {}, {}",
            k_t.dtype(),
            v_t.dtype()
        )));
    }
    if q_t.rank() != k_t.rank() || q_t.rank() != v_t.rank() {
        return Err(IrError::msg("q, k and v must have the same rank"));
    }
    let rank3 = q_t.rank() == 3;
    let mask_t = opt_input(inputs, 3);
    let past_k = opt_input(inputs, 4);
    let past_v = opt_input(inputs, 5);
    let nonpad_t = opt_input(inputs, 6);
    if past_k.is_some() != past_v.is_some() {
        return Err(IrError::msg(
            "past_key and past_value must be given together",
        ));
    }
    if nonpad_t.is_some() && past_k.is_some() {
        return Err(IrError::msg(
            "nonpad_kv_seqlen cannot be combined with past_key/past_value",
        ));
    }
    let (qv, [b, hq, sq, dq]) = to_bhsd(q_t, *q_num_heads, "q")?;
    let (kv, kshape) = concat_seq(past_k, to_bhsd(k_t, *kv_num_heads, "k")?, "past_key")?;
    let (vv, [bv, hv, skv, dv]) =
        concat_seq(past_v, to_bhsd(v_t, *kv_num_heads, "v")?, "past_value")?;
    let [bk, hk, _, dk] = kshape;
    if bk != b || bv != b || dk != dq || hv != hk || kshape[2] != skv {
        return Err(IrError::msg(format!(
            "q [{b}, {hq}, {sq}, {dq}], k {kshape:?} and v [{bv}, {hv}, {skv}, {dv}] do not fit together"
        )));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(IrError::msg(format!(
            "{hq} query heads cannot share {hk} key/value heads"
        )));
    }
    let group = hq / hk;
    let past_len = past_k.map_or(0, |p| p.shape()[2]);
    let nonpad: Option<Vec<i64>> = match nonpad_t {
        Some(t) => {
            if t.shape() != [b] {
                return Err(IrError::msg(format!(
                    "nonpad_kv_seqlen must have shape [{b}], found {:?}",
                    t.shape()
                )));
            }
            Some(t.to_i64_vec())
        }
        None => None,
    };
    // The causal and window frontier of each batch entry.
    let offset = |bi: usize| -> i64 {
        match &nonpad {
            Some(n) => n[bi].saturating_sub(sq as i64),
            None => past_len as i64,
        }
    };

    let scale = match scale {
        Some(s) => *s as f64,
        None => 1.0 / (dq as f64).sqrt(),
    };
    let sqrt_scale = round_to(dt, scale.sqrt());
    let rnd = |x: f64| round_to(dt, x);
    let qs: Vec<f64> = qv.iter().map(|&x| rnd(x * sqrt_scale)).collect();
    let ks: Vec<f64> = kv.iter().map(|&x| rnd(x * sqrt_scale)).collect();

    // The additive bias, materialised to [b, hq, sq, skv].
    let out_shape = [b, hq, sq, skv];
    let n = checked_numel(&out_shape)?;
    if n > super::MAX_ELEMENTS {
        return Err(IrError::msg(format!(
            "attention scores {out_shape:?} are over 2^31 elements"
        )));
    }
    let mut bias = vec![0.0f64; n];
    let mut bias_dtype = dt;
    if let Some(m) = mask_t {
        let ms = m.shape();
        if ms.is_empty() {
            return Err(IrError::msg("attn_mask must have rank at least 1"));
        }
        let last = ms[ms.len() - 1];
        if last > skv {
            return Err(IrError::msg(format!(
                "attn_mask has {last} key positions, more than the {skv} keys"
            )));
        }
        let vals: Vec<f64> = if m.dtype() == DType::Bool {
            m.as_slice::<bool>()?
                .iter()
                .map(|&x| if x { 0.0 } else { f64::NEG_INFINITY })
                .collect()
        } else {
            check_float("attn_mask", m.dtype())?;
            if m.dtype().size() > dt.size() {
                bias_dtype = m.dtype();
            }
            m.to_f64_vec()
        };
        // A short mask is padded with -inf (masked) keys.
        let mut padded_shape = ms.to_vec();
        padded_shape[ms.len() - 1] = skv;
        let mut padded = vec![f64::NEG_INFINITY; checked_numel(&padded_shape)?];
        for row in 0..vals.len() / last.max(1) {
            padded[row * skv..row * skv + last]
                .copy_from_slice(&vals[row * last..(row + 1) * last]);
        }
        if padded_shape.len() > 4 || broadcast_shapes(&padded_shape, &out_shape)? != out_shape {
            return Err(IrError::msg(format!(
                "attn_mask {ms:?} does not broadcast to {out_shape:?}"
            )));
        }
        let map = broadcast_index_map(&padded_shape, &out_shape);
        for (o, &i) in bias.iter_mut().zip(&map) {
            *o = padded[i];
        }
    }
    let window = *left_window_size >= 0 || *right_window_size >= 0;
    if *is_causal || window || nonpad.is_some() {
        for bi in 0..b {
            let off = offset(bi);
            for hi in 0..hq {
                for i in 0..sq {
                    for j in 0..skv {
                        let diff = (i as i64).saturating_add(off).saturating_sub(j as i64);
                        let mut add = 0.0;
                        if *is_causal && diff < 0 {
                            add = f64::NEG_INFINITY;
                        }
                        if window
                            && ((*left_window_size >= 0 && diff > *left_window_size)
                                || (*right_window_size >= 0 && diff < -*right_window_size))
                        {
                            add = f64::NEG_INFINITY;
                        }
                        if let Some(np) = &nonpad {
                            if j as i64 >= np[bi] {
                                add = f64::NEG_INFINITY;
                            }
                        }
                        bias[((bi * hq + hi) * sq + i) * skv + j] += add;
                    }
                }
            }
        }
    }

    let softcap = *softcap as f64;
    let mut logits = vec![0.0f64; n];
    for bi in 0..b {
        for hi in 0..hq {
            let kh = hi / group;
            for i in 0..sq {
                let qrow = &qs[((bi * hq + hi) * sq + i) * dq..][..dq];
                for j in 0..skv {
                    let krow = &ks[((bi * hk + kh) * skv + j) * dq..][..dq];
                    let mut x = rnd(qrow.iter().zip(krow).map(|(a, c)| a * c).sum());
                    if softcap > 0.0 {
                        x = rnd(rnd(rnd(x / softcap).tanh()) * softcap);
                    }
                    logits[((bi * hq + hi) * sq + i) * skv + j] = x;
                }
            }
        }
    }
    let biased: Vec<f64> = logits
        .iter()
        .zip(&bias)
        .map(|(x, m)| round_to(bias_dtype, x + m))
        .collect();

    // Softmax over each row, in softmax_precision when given, else in the biased logits' type.
    let sm_dtype = softmax_precision.unwrap_or(bias_dtype);
    let srnd = |x: f64| round_to(sm_dtype, x);
    let mut probs = vec![0.0f64; n];
    for r in 0..n / skv.max(1) {
        let row: Vec<f64> = biased[r * skv..(r + 1) * skv]
            .iter()
            .map(|&x| srnd(x))
            .collect();
        // Like numpy's max: NaN wins.
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &x| {
            if x.is_nan() || a.is_nan() {
                f64::NAN
            } else {
                a.max(x)
            }
        });
        let all_masked_bias = bias[r * skv..(r + 1) * skv]
            .iter()
            .all(|&x| x == f64::NEG_INFINITY);
        if all_masked_bias {
            continue;
        }
        let safe_max = if max == f64::NEG_INFINITY { 0.0 } else { max };
        let e: Vec<f64> = row
            .iter()
            .map(|&x| srnd(srnd(x - safe_max).exp()))
            .collect();
        // numpy sums bf16 (an ml_dtypes type) one element at a time, rounding each partial
        // sum; its own float types accumulate in f32 or wider and round once.
        let mut s = if sm_dtype == DType::BF16 {
            e.iter().fold(0.0, |a, &x| srnd(a + x))
        } else {
            srnd(e.iter().sum())
        };
        if s == 0.0 {
            s = 1.0;
        }
        for (j, x) in e.iter().enumerate() {
            probs[r * skv + j] = rnd(srnd(x / s));
        }
    }

    let mut y = vec![0.0f64; b * hq * sq * dv];
    for bi in 0..b {
        for hi in 0..hq {
            let kh = hi / group;
            for i in 0..sq {
                let prow = &probs[((bi * hq + hi) * sq + i) * skv..][..skv];
                for d in 0..dv {
                    let mut acc = 0.0;
                    for (j, p) in prow.iter().enumerate() {
                        acc += p * vv[((bi * hk + kh) * skv + j) * dv + d];
                    }
                    // 3-D output is [b, sq, hq·dv]; 4-D is [b, hq, sq, dv].
                    let o = if rank3 {
                        (bi * sq + i) * hq * dv + hi * dv + d
                    } else {
                        ((bi * hq + hi) * sq + i) * dv + d
                    };
                    y[o] = acc;
                }
            }
        }
    }
    let y_shape = if rank3 {
        vec![b, sq, hq * dv]
    } else {
        vec![b, hq, sq, dv]
    };
    let mut out = vec![Tensor::from_f64(dt, y_shape, &y)?];
    if n_outputs > 1 {
        out.push(Tensor::from_f64(dt, kshape.to_vec(), &kv)?);
    }
    if n_outputs > 2 {
        out.push(Tensor::from_f64(dt, vec![b, hk, skv, dv], &vv)?);
    }
    if n_outputs > 3 {
        let qk = match qk_matmul_output_mode {
            2 => &biased,
            3 => &probs,
            _ => &logits,
        };
        out.push(Tensor::from_f64(dt, out_shape.to_vec(), qk)?);
    }
    Ok(out)
}
