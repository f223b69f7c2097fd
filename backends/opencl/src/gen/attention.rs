//! ONNX Attention: (q, k, v, attn_mask?, past_key?, past_value?, nonpad_kv_seqlen?) →
//! (y, present_key?, present_value?, qk_matmul_output?), each output one kernel of the
//! node's region.
//!
//! An element of y (or of the probabilities, qk mode 3) needs its whole (batch, head, query)
//! score row: the work-item recomputes the row three times (its max, its sum of
//! exponentials, then the weighted sum over values), each score a dot product over the head
//! size. So one y element costs about 3·kv_seq·head_size multiply-adds, and a row is
//! recomputed for each of its head_size outputs: correctness first, as PoCL is not a
//! performance target. present_key/present_value are the past and current keys/values
//! concatenated along the sequence, read at moved coordinates.
//!
//! Semantics are `ir::eval`'s step by step, including where it rounds to the input's type
//! (q·√scale, k·√scale, the logits, softcap, the biased logits, the softmax steps), so f32
//! results match it bit for bit up to exp/tanh's last place. f16/bf16 rounding steps
//! (softmax_precision of a half type) are refused.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{DType, NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::Attention { .. })
}

pub fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, k, shape))
}

/// An f64 as a C literal.
fn lit(x: f64) -> String {
    if x.is_nan() {
        "NAN".into()
    } else if x.is_infinite() {
        if x < 0.0 {
            "(-INFINITY)".into()
        } else {
            "INFINITY".into()
        }
    } else {
        format!("{x:e}")
    }
}

/// The C expression rounding `x` to `d` as eval's `round_to` does: through float for f32,
/// nothing for wider types; half types are refused.
fn rounder(m: &str, d: DType) -> Result<impl Fn(&str) -> String, String> {
    let through_float = match d {
        DType::F32 => true,
        DType::F16 | DType::BF16 => {
            return Err(format!(
                "attention rounding to {d} (no half path on this device)"
            ))
        }
        _ => false,
    };
    let m = m.to_string();
    Ok(move |x: &str| {
        if through_float {
            format!("(({m})(float)({x}))")
        } else {
            format!("({x})")
        }
    })
}

/// (batch, heads, seq, size) of a q/k/v input and whether it is 3-D.
fn bhsd(g: &Gen, v: Value, heads: Option<i64>, what: &str) -> Result<[usize; 4], String> {
    let s = dims(g.graph, v)?;
    match s.len() {
        4 => Ok([s[0], s[1], s[2], s[3]]),
        3 => {
            let h =
                heads.ok_or_else(|| format!("a 3-D {what} needs q_num_heads and kv_num_heads"))?;
            let h = usize::try_from(h)
                .map_err(|_| format!("num_heads must not be negative, found {h}"))?;
            if h == 0 || s[2] % h != 0 {
                return Err(format!(
                    "{what} hidden size {} is not a multiple of {h} heads",
                    s[2]
                ));
            }
            Ok([s[0], h, s[1], s[2] / h])
        }
        r => Err(format!("{what} must have rank 3 or 4, found {r}")),
    }
}

/// C for reading a q/k/v input at (batch, head, position, index) given as C expressions.
fn read(g: &Gen, v: Value, rank3: bool, size: usize, c: [&str; 4]) -> String {
    if rank3 {
        g.at(
            v,
            &[
                c[0].into(),
                c[2].into(),
                format!("({})*{size}L + ({})", c[1], c[3]),
            ],
        )
    } else {
        g.at(v, &c.map(String::from))
    }
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, k: usize, _shape: &[usize]) -> Body {
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
        return Err("not an attention op".into());
    };
    if !(0..=3).contains(qk_matmul_output_mode) {
        return Err(format!(
            "qk_matmul_output_mode must be 0..3, found {qk_matmul_output_mode}"
        ));
    }
    if *left_window_size < -1 || *right_window_size < -1 {
        return Err("window sizes must be -1 or non-negative".into());
    }
    let ins = g.graph.inputs_of(n);
    let input = |i: usize| ins.get(i).copied().flatten();
    let (q, kk, v) = match (input(0), input(1), input(2)) {
        (Some(q), Some(k), Some(v)) => (q, k, v),
        _ => return Err("attention needs q, k and v".into()),
    };
    let (mask, past_k, past_v, nonpad) = (input(3), input(4), input(5), input(6));
    let dt = g.dtype(q);
    if !dt.is_float() || g.dtype(kk) != dt || g.dtype(v) != dt {
        return Err(format!(
            "q, k and v must share a float type, found {dt}, {}, {}",
            g.dtype(kk),
            g.dtype(v)
        ));
    }
    let ty = ctype(dt).ok_or_else(|| format!("{dt} tensors"))?;
    let rank = dims(g.graph, q)?.len();
    if dims(g.graph, kk)?.len() != rank || dims(g.graph, v)?.len() != rank {
        return Err("q, k and v must have the same rank".into());
    }
    let rank3 = rank == 3;
    if past_k.is_some() != past_v.is_some() {
        return Err("past_key and past_value must be given together".into());
    }
    if nonpad.is_some() && past_k.is_some() {
        return Err("nonpad_kv_seqlen cannot be combined with past_key/past_value".into());
    }
    let [b, hq, sq, dq] = bhsd(g, q, *q_num_heads, "q")?;
    let [bk, hk, sk, dk] = bhsd(g, kk, *kv_num_heads, "k")?;
    let [bv, hv, sv, dv] = bhsd(g, v, *kv_num_heads, "v")?;
    let past = match past_k {
        Some(p) => {
            let (ps, pv) = (
                dims(g.graph, p)?,
                dims(g.graph, past_v.ok_or("past_value is missing")?)?,
            );
            if ps.len() != 4 || ps[0] != bk || ps[1] != hk || ps[3] != dk {
                return Err(format!(
                    "past_key has shape {ps:?}, which does not match [{bk}, {hk}, _, {dk}]"
                ));
            }
            if pv.len() != 4 || pv[0] != bv || pv[1] != hv || pv[3] != dv || pv[2] != ps[2] {
                return Err(format!(
                    "past_value has shape {pv:?}, which does not match [{bv}, {hv}, {}, {dv}]",
                    ps[2]
                ));
            }
            ps[2]
        }
        None => 0,
    };
    let skv = past
        .checked_add(sk)
        .ok_or("the key sequence length overflows")?;
    if bk != b || bv != b || dk != dq || hv != hk || sv != sk {
        return Err(format!("q [{b}, {hq}, {sq}, {dq}], k [{bk}, {hk}, {sk}, {dk}] and v [{bv}, {hv}, {sv}, {dv}] do not fit together"));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(format!(
            "{hq} query heads cannot share {hk} key/value heads"
        ));
    }
    let group = hq / hk;
    let m = g.math(dt);
    let rnd = rounder(m, dt)?;

    // present_key / present_value: past then current along the sequence.
    let present = |cur: Value, prev: Option<Value>, size: usize| -> String {
        let c = ["i0", "i1", "(i2 - (long)pos)", "i3"];
        let now = read(g, cur, rank3, size, c);
        match prev {
            Some(p) => format!(
                "  long pos = {past}L * (i2 >= {past}L);\n  return i2 < {past}L ? {} : {now};",
                g.at(p, &["i0".into(), "i1".into(), "i2".into(), "i3".into()])
            ),
            None => format!("  const long pos = 0;\n  return {now};"),
        }
    };
    match k {
        1 => return Ok(present(kk, past_k, dk)),
        2 => return Ok(present(v, past_v, dv)),
        0 | 3 => {}
        _ => return Err(format!("attention has 4 outputs, asked for output {k}")),
    }

    // The additive bias's mask term at (bt, hd, qi, kj), and the biased logits' type.
    let mut bias_dtype = dt;
    let mask_term = match mask {
        None => "0".to_string(),
        Some(mv) => {
            let ms = dims(g.graph, mv)?;
            let md = g.dtype(mv);
            let Some(&last) = ms.last() else {
                return Err("attn_mask must have rank at least 1".into());
            };
            if last > skv {
                return Err(format!(
                    "attn_mask has {last} key positions, more than the {skv} keys"
                ));
            }
            let out = [b, hq, sq, skv];
            if ms.len() > 4 {
                return Err(format!("attn_mask {ms:?} does not broadcast to {out:?}"));
            }
            // A short mask is padded to the key length with -inf (masked) keys, then
            // broadcast to [batch, heads, queries, keys].
            let names = ["bt", "hd", "qi", "kj"];
            let mut coords = Vec::new();
            for (a, &d) in ms.iter().enumerate() {
                let o = 4 - ms.len() + a;
                let padded = if a + 1 == ms.len() { skv } else { d };
                if padded != out[o] && padded != 1 {
                    return Err(format!("attn_mask {ms:?} does not broadcast to {out:?}"));
                }
                coords.push(if padded == 1 {
                    "0".to_string()
                } else {
                    names[o].to_string()
                });
            }
            if last == 0 {
                "(-INFINITY)".to_string()
            } else {
                let at = g.at(mv, &coords);
                let val = if md == DType::Bool {
                    format!("({at} ? ({m})0 : ({m})(-INFINITY))")
                } else if md.is_float() {
                    ctype(md).ok_or_else(|| format!("{md} attn_mask"))?;
                    if md.size() > dt.size() {
                        bias_dtype = md;
                    }
                    format!("(({m}){at})")
                } else {
                    return Err(format!("attn_mask must be bool or float, found {md}"));
                };
                format!("(kj < {last}L ? {val} : ({m})(-INFINITY))")
            }
        }
    };
    let rb = rounder(m, bias_dtype)?;
    let rs = rounder(m, softmax_precision.unwrap_or(bias_dtype))?;

    // The causal frontier of the batch entry: the past length, or nonpad - q_seq for an
    // external cache. Saturating arithmetic as eval's i64 math.
    let offset = match nonpad {
        Some(np) => {
            if dims(g.graph, np)? != [b] {
                return Err(format!("nonpad_kv_seqlen must have shape [{b}]"));
            }
            format!("sub_sat((long){}, {sq}L)", g.at(np, &["bt".into()]))
        }
        None => format!("{past}L"),
    };
    let mut cut = vec!["0".to_string()];
    if *is_causal {
        cut.push("diff < 0".into());
    }
    if *left_window_size >= 0 {
        cut.push(format!("diff > {}L", left_window_size));
    }
    if *right_window_size >= 0 {
        cut.push(format!("diff < {}L", -right_window_size));
    }
    if let Some(np) = nonpad {
        cut.push(format!("kj >= (long){}", g.at(np, &["bt".into()])));
    }

    let scale = scale.map_or(1.0 / (dq as f64).sqrt(), |s| s as f64);
    let ss = if dt == DType::F32 {
        scale.sqrt() as f32 as f64
    } else {
        scale.sqrt()
    };
    let ss = lit(ss);
    let kv_read = |cur: Value, prev: Option<Value>, size: usize, idx: &str| -> String {
        let now = read(g, cur, rank3, size, ["bt", "kh", "(kj - (long)pos)", idx]);
        match prev {
            Some(p) => format!(
                "(kj < {past}L ? {} : {now})",
                g.at(p, &["bt".into(), "kh".into(), "kj".into(), idx.into()])
            ),
            None => now,
        }
    };
    let qread = read(g, q, rank3, dq, ["bt", "hd", "qi", "dx"]);
    let kread = kv_read(kk, past_k, dk, "dx");
    let vread = kv_read(v, past_v, dv, "dd");
    let sc = *softcap as f64;
    let softcap_step = if sc > 0.0 {
        format!(
            " lg = {};",
            rnd(&format!(
                "{} * {}",
                rnd(&format!("tanh({})", rnd(&format!("lg / {}", lit(sc))))),
                lit(sc)
            ))
        )
    } else {
        String::new()
    };
    // Statements giving, for key kj: the logit `lg`, the bias `bs`, the biased logit `bl`.
    let score = format!(
        "long pos = {past}L * (kj >= {past}L); (void)pos;\n    {m} lg = 0; for (long dx = 0; dx < {dq}L; dx++) lg += {} * {};\n    lg = {};{softcap_step}\n    long diff = sub_sat(add_sat(qi, off), kj); (void)diff;\n    {m} bs = {mask_term} + (({}) ? ({m})(-INFINITY) : ({m})0);\n    {m} bl = {};",
        rnd(&format!("({m}){qread} * {ss}")),
        rnd(&format!("({m}){kread} * {ss}")),
        rnd("lg"),
        cut.join(" || "),
        rb("lg + bs"),
    );
    let coords = if k == 3 {
        "long bt = i0, hd = i1, qi = i2, jo = i3; (void)jo;".to_string()
    } else if rank3 {
        let w = dv.max(1);
        format!("long bt = i0, qi = i1, hd = i2 / {w}L, dd = i2 % {w}L;")
    } else {
        "long bt = i0, hd = i1, qi = i2, dd = i3;".to_string()
    };
    let head = format!(
        "  {coords}\n  long kh = hd / {group}L; (void)kh;\n  long off = {offset}; (void)off;"
    );
    if k == 3 && *qk_matmul_output_mode != 3 {
        let pick = if *qk_matmul_output_mode == 2 {
            "bl"
        } else {
            "lg"
        };
        return Ok(format!(
            "{head}\n  long kj = jo;\n  {{ {score}\n    return ({ty}){pick}; }}"
        ));
    }
    // Softmax over the row: max (NaN wins, like numpy), whether any key is unmasked, the sum.
    let e = rs(&format!("exp({})", rs(&format!("{} - sm", rs("bl")))));
    let prob = format!("(live ? {} : ({m})0)", rnd(&rs(&format!("{e} / s"))));
    let stats = format!(
        "{head}\n  {m} mx = -INFINITY; int live = 0;\n  for (long kj = 0; kj < {skv}L; kj++) {{ {score}\n    {m} x = {}; mx = (isnan(x) || isnan(mx)) ? NAN : fmax(mx, x); if (bs != -INFINITY) live = 1; }}\n  {m} sm = mx == -INFINITY ? ({m})0 : mx;\n  {m} s = 0;\n  for (long kj = 0; kj < {skv}L; kj++) {{ {score}\n    s += {e}; }}\n  s = {}; if (s == 0) s = 1;",
        rs("bl"),
        rs("s"),
    );
    if k == 3 {
        return Ok(format!(
            "{stats}\n  long kj = jo;\n  {{ {score}\n    return ({ty}){prob}; }}"
        ));
    }
    Ok(format!("{stats}\n  {m} acc = 0;\n  for (long kj = 0; kj < {skv}L; kj++) {{ {score}\n    acc += {prob} * ({m}){vread}; }}\n  return ({ty})acc;"))
}
