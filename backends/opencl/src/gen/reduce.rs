//! Reductions, softmax and layer norms: each output element loops over the input elements
//! it reduces, accumulating in M (f64 where the device has it), as `ir::eval` does in f64.

use super::{const_ints, ctype, dims, Body, Gen};
use kiln_ir::{NodeId, Op, ReduceKind, Value};
use std::fmt::Write;

pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::Reduce { .. } | Op::ArgReduce { .. } | Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::LayerNorm { .. } | Op::RmsNorm { .. }
    )
}

pub fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, k, shape))
}

fn norm(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Loops over the axes in `mask` of `xs`; inside, `x` (the input's coordinate list) holds
/// `r{j}` for a looped axis and `fixed[j]` otherwise. Returns (loop heads, closing braces).
fn loops(xs: &[usize], mask: &[bool], fixed: &[String], var: &str) -> (String, String, Vec<String>) {
    let mut head = String::new();
    let mut tail = String::new();
    let mut coords = Vec::new();
    for (j, &d) in xs.iter().enumerate() {
        if mask[j] {
            let _ = write!(head, "for (long {var}{j} = 0; {var}{j} < {d}L; {var}{j}++) ");
            coords.push(format!("{var}{j}"));
        } else {
            coords.push(fixed[j].clone());
        }
    }
    head.push('{');
    tail.push('}');
    (head, tail, coords)
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, k: usize, _shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let x: Value = ins.first().copied().flatten().ok_or("input 0 is missing")?;
    let xs = dims(g.graph, x)?;
    let r = xs.len();
    let xd = g.dtype(x);
    let out_ty = ctype(g.graph.node(n).outputs[k].dtype).ok_or("half tensors")?;
    let m = g.math(xd);
    let ident: Vec<String> = (0..r).map(|j| format!("i{j}")).collect();
    match op {
        Op::Reduce { kind, keepdims, noop_with_empty_axes } => {
            let axes = const_ints(g, ins.get(1).copied().flatten(), "reduce axes")?.unwrap_or_default();
            let mut mask = vec![axes.is_empty() && !noop_with_empty_axes; r];
            for &a in &axes {
                mask[norm(a, r)?] = true;
            }
            // Output coordinate of each kept input axis.
            let mut fixed = Vec::with_capacity(r);
            let mut o = 0;
            for j in 0..r {
                if mask[j] {
                    fixed.push(String::new());
                    if *keepdims {
                        o += 1;
                    }
                } else {
                    fixed.push(format!("i{o}"));
                    o += 1;
                }
            }
            let count: usize = xs.iter().zip(&mask).filter(|(_, &m)| m).map(|(d, _)| d).product();
            let (head, tail, xc) = loops(&xs, &mask, &fixed, "r");
            let v = format!("(({m}){})", g.at(x, &xc));
            let float = xd.is_float() || matches!(kind, ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp);
            if !float {
                let t = ctype(xd).ok_or("half tensors")?;
                let w = g.at(x, &xc);
                let (init, step) = match kind {
                    ReduceKind::Sum | ReduceKind::Mean => ("0".to_string(), format!("a += {w};")),
                    ReduceKind::Prod => ("1".into(), format!("a *= {w};")),
                    ReduceKind::Max => (format!("({t})0"), format!("{{ {t} e = {w}; if (first || e > a) a = e; first = 0; }}")),
                    ReduceKind::Min => (format!("({t})0"), format!("{{ {t} e = {w}; if (first || e < a) a = e; first = 0; }}")),
                    ReduceKind::L1 => ("0".into(), format!("{{ {t} e = {w}; a += e < 0 ? -e : e; }}")),
                    ReduceKind::SumSquare => ("0".into(), format!("{{ {t} e = {w}; a += e * e; }}")),
                    _ => return Err(format!("reduce {kind} on {xd}")),
                };
                let fin = if *kind == ReduceKind::Mean { format!("({count}L == 0 ? 0 : a / {count}L)") } else { "a".into() };
                return Ok(format!("  {t} a = {init}; int first = 1; (void)first;\n  {head} {step} {tail}\n  return ({out_ty})({fin});"));
            }
            let s = match kind {
                ReduceKind::Sum | ReduceKind::Mean | ReduceKind::LogSum => format!("{m} a = 0; {head} a += {v}; {tail}"),
                ReduceKind::Prod => format!("{m} a = 1; {head} a *= {v}; {tail}"),
                ReduceKind::L1 => format!("{m} a = 0; {head} a += fabs({v}); {tail}"),
                ReduceKind::L2 | ReduceKind::SumSquare => format!("{m} a = 0; {head} {{ {m} e = {v}; a += e * e; }} {tail}"),
                ReduceKind::Max => format!("{m} a = -INFINITY; {head} {{ {m} e = {v}; a = (isnan(e) || isnan(a)) ? NAN : fmax(a, e); }} {tail}"),
                ReduceKind::Min => format!("{m} a = INFINITY; {head} {{ {m} e = {v}; a = (isnan(e) || isnan(a)) ? NAN : fmin(a, e); }} {tail}"),
                ReduceKind::LogSumExp => format!(
                    "{m} mx = -INFINITY; {head} {{ {m} e = {v}; if (isfinite(e)) mx = fmax(mx, e); }} {tail}\n  if (!isfinite(mx)) mx = 0;\n  {m} a = 0; {head} a += exp({v} - mx); {tail}"
                ),
            };
            let fin = match kind {
                ReduceKind::Mean => format!("a / {count}"),
                ReduceKind::L2 => "sqrt(a)".into(),
                ReduceKind::LogSum => "log(a)".into(),
                ReduceKind::LogSumExp => "mx + log(a)".into(),
                _ => "a".into(),
            };
            Ok(format!("  {s}\n  return ({out_ty})({fin});"))
        }
        Op::ArgReduce { max, axis, keepdims, select_last_index } => {
            let a = norm(*axis, r)?;
            let mut xc: Vec<String> = Vec::with_capacity(r);
            let mut o = 0;
            for j in 0..r {
                if j == a {
                    xc.push("t".into());
                    if *keepdims {
                        o += 1;
                    }
                } else {
                    xc.push(format!("i{o}"));
                    o += 1;
                }
            }
            let cmp = match (max, select_last_index) {
                (true, false) => ">",
                (true, true) => ">=",
                (false, false) => "<",
                (false, true) => "<=",
            };
            let t = ctype(xd).ok_or("half tensors")?;
            // NaN counts as the largest value for max and as the smallest for min, as
            // eval's comparison does; a NaN found first is kept.
            let _ = t;
            Ok(format!(
                "  long best = 0; {t} bv = {first};\n  for (long t = 1; t < {d}L; t++) {{ {t} e = {at}; if ({nan_wins} || (!({nan_best}) && e {cmp} bv)) {{ bv = e; best = t; }} }}\n  return best;",
                first = g.at(x, &xc.iter().map(|c| if c == "t" { "0".to_string() } else { c.clone() }).collect::<Vec<_>>()),
                d = xs[a],
                at = g.at(x, &xc),
                nan_wins = if xd.is_float() { format!("(isnan(e) && !isnan(bv) && {})", if *max { 1 } else { 0 }) } else { "0".into() },
                nan_best = if xd.is_float() { "isnan(bv)".to_string() } else { "0".into() },
            ))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let a = norm(*axis, r)?;
            let mut mask = vec![false; r];
            mask[a] = true;
            let (head, tail, xc) = loops(&xs, &mask, &ident, "r");
            let v = format!("(({m}){})", g.at(x, &xc));
            let me = format!("(({m}){})", g.at(x, &ident));
            let fin = if matches!(op, Op::LogSoftmax { .. }) { format!("{me} - mx - log(s)") } else { format!("exp({me} - mx) / s") };
            Ok(format!(
                "  {m} mx = -INFINITY; {head} mx = fmax(mx, {v}); {tail}\n  if (!isfinite(mx)) mx = 0;\n  {m} s = 0; {head} s += exp({v} - mx); {tail}\n  return ({out_ty})({fin});"
            ))
        }
        Op::LayerNorm { axis, epsilon, .. } | Op::RmsNorm { axis, epsilon, .. } => {
            let rms = matches!(op, Op::RmsNorm { .. });
            let a = norm(*axis, r)?;
            let mask: Vec<bool> = (0..r).map(|j| j >= a).collect();
            let cols: usize = xs[a..].iter().product();
            let (head, tail, xc) = loops(&xs, &mask, &ident, "r");
            let v = format!("(({m}){})", g.at(x, &xc));
            let me = format!("(({m}){})", g.at(x, &ident));
            let scale = ins.get(1).copied().flatten().ok_or("layer_norm needs a scale")?;
            let s = format!("(({m}){})", g.at_broadcast(scale, r)?);
            let b = match ins.get(2).copied().flatten() {
                Some(b) if !rms => format!("(({m}){})", g.at_broadcast(b, r)?),
                _ => "0".into(),
            };
            let stats = if rms {
                format!("{m} mean = 0; {m} q = 0; {head} {{ {m} e = {v}; q += e * e; }} {tail} {m} var = q / {cols};")
            } else {
                format!(
                    "{m} mean = 0; {head} mean += {v}; {tail} mean /= {cols};\n  {m} var = 0; {head} {{ {m} e = {v} - mean; var += e * e; }} {tail} var /= {cols};"
                )
            };
            // Outputs 1 and 2 (layer_norm's mean and inverse standard deviation) have the
            // normalized axes kept as size 1, so the same coordinates address them.
            let result = match k {
                0 => format!("({me} - mean) * inv * {s} + {b}"),
                1 => "mean".into(),
                _ => "inv".into(),
            };
            Ok(format!("  {stats}\n  {m} inv = 1 / sqrt(var + ({m}){:e});\n  return ({out_ty})({result});", *epsilon as f64))
        }
        _ => Err(format!("{} is not a reduction", op.name())),
    }
}
