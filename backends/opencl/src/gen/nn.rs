//! Convolution, matmul, gemm and pooling, one output element per work-item: a direct
//! convolution (any rank, stride, dilation, padding and group, so depthwise too), the dot
//! product of a matmul row and column, a pooling window. Accumulation is in the tensor's
//! type (f32 sums as the CPU GEMM does); epilogues fused after them run on the result.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{AutoPad, NodeId, Op, PoolKind, Value};
use std::fmt::Write;

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::Conv { .. } | Op::MatMul | Op::Gemm { .. } | Op::Pool { .. } | Op::GlobalPool { .. })
}

pub fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, k, shape))
}

fn input(ins: &[Option<Value>], i: usize) -> Result<Value, String> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

pub(super) fn attr(v: &[i64], i: usize, default: usize) -> usize {
    v.get(i).map(|&x| x.max(0) as usize).unwrap_or(default)
}

/// Begin padding of spatial dim `i`, as `ir`'s window geometry computes it.
pub(super) fn pad_begin(auto_pad: AutoPad, pads: &[i64], i: usize, input: usize, out: usize, stride: usize, extent: usize) -> usize {
    match auto_pad {
        AutoPad::NotSet => attr(pads, i, 0),
        AutoPad::Valid => 0,
        AutoPad::SameUpper | AutoPad::SameLower => {
            let total = ((out.max(1) - 1) * stride + extent).saturating_sub(input);
            if auto_pad == AutoPad::SameUpper {
                total / 2
            } else {
                total - total / 2
            }
        }
    }
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, k: usize, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let out_dtype = g.graph.node(n).outputs[k].dtype;
    let ty = ctype(out_dtype).ok_or("half tensors")?;
    let acc = if out_dtype.is_float() { ty } else { "long" };
    let r = shape.len();
    match op {
        Op::Conv { auto_pad, dilations, group, kernel_shape: _, pads, strides } => {
            let (x, w) = (input(&ins, 0)?, input(&ins, 1)?);
            let (xs, ws) = (dims(g.graph, x)?, dims(g.graph, w)?);
            if xs.len() < 3 || ws.len() != xs.len() {
                return Err("conv takes N, C and spatial dims".into());
            }
            if !out_dtype.is_float() {
                return Err(format!("conv on {out_dtype}"));
            }
            let groups = (*group).max(1) as usize;
            let cpg = ws[1];
            let mpg = shape[1] / groups;
            let nsp = xs.len() - 2;
            let mut s = String::new();
            let _ = writeln!(s, "  long gi = i1 / {mpg}L;");
            let bias = match ins.get(2).copied().flatten() {
                Some(b) => g.at(b, &["i1".into()]),
                None => "0".into(),
            };
            let _ = writeln!(s, "  {acc} a = 0;");
            let _ = write!(s, "  for (long c = 0; c < {cpg}L; c++) ");
            let mut xc = vec!["i0".to_string(), format!("gi * {cpg}L + c")];
            let mut wc = vec!["i1".to_string(), "c".to_string()];
            let mut guard = Vec::new();
            for i in 0..nsp {
                let (st, di) = (attr(strides, i, 1), attr(dilations, i, 1));
                let kk = ws[2 + i];
                let extent = if kk == 0 { 0 } else { (kk - 1) * di + 1 };
                let pb = pad_begin(*auto_pad, pads, i, xs[2 + i], shape[2 + i], st, extent);
                let _ = write!(s, "for (long k{i} = 0; k{i} < {kk}L; k{i}++) ");
                xc.push(format!("p{i}"));
                wc.push(format!("k{i}"));
                guard.push((i, format!("i{} * {st}L - {pb}L + k{i} * {di}L", 2 + i), xs[2 + i]));
            }
            s.push_str("{\n");
            for (i, e, d) in &guard {
                let _ = writeln!(s, "    long p{i} = {e}; if (p{i} < 0 || p{i} >= {d}L) continue;");
            }
            let _ = writeln!(s, "    a += ({acc}){} * ({acc}){};\n  }}", g.at(x, &xc), g.at(w, &wc));
            let _ = write!(s, "  return ({ty})(a + ({acc}){bias});");
            Ok(s)
        }
        Op::MatMul => {
            let (a, b) = (input(&ins, 0)?, input(&ins, 1)?);
            let (as_, bs) = (dims(g.graph, a)?, dims(g.graph, b)?);
            let kk = *as_.last().ok_or("matmul of a scalar")?;
            // Output coordinates: batch dims, then M (unless A is 1-D), then N (unless B is).
            let n_dims = (as_.len() >= 2) as usize + (bs.len() >= 2) as usize;
            let batch = r - n_dims;
            let bcast = |s: &[usize], keep: usize| -> Vec<String> {
                let nb = s.len() - keep;
                (0..nb).map(|j| if s[j] == 1 { "0".into() } else { format!("i{}", batch - nb + j) }).collect()
            };
            let mut ac = if as_.len() >= 2 { bcast(&as_, 2) } else { vec![] };
            if as_.len() >= 2 {
                ac.push(format!("i{batch}"));
            }
            ac.push("t".into());
            let mut bc = if bs.len() >= 2 { bcast(&bs, 2) } else { vec![] };
            bc.push("t".into());
            if bs.len() >= 2 {
                bc.push(format!("i{}", r - 1));
            }
            Ok(format!(
                "  {acc} s = 0;\n  for (long t = 0; t < {kk}L; t++) s += ({acc}){} * ({acc}){};\n  return ({ty})s;",
                g.at(a, &ac),
                g.at(b, &bc)
            ))
        }
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let (a, b) = (input(&ins, 0)?, input(&ins, 1)?);
            let as_ = dims(g.graph, a)?;
            if as_.len() != 2 || r != 2 {
                return Err("gemm takes 2-D matrices".into());
            }
            let kk = if *trans_a { as_[0] } else { as_[1] };
            let ac = if *trans_a { ["t", "i0"] } else { ["i0", "t"] };
            let bc = if *trans_b { ["i1", "t"] } else { ["t", "i1"] };
            let ac: Vec<String> = ac.iter().map(|s| s.to_string()).collect();
            let bc: Vec<String> = bc.iter().map(|s| s.to_string()).collect();
            let c = match ins.get(2).copied().flatten() {
                Some(c) => format!(" + ({acc}){:e} * ({acc}){}", *beta as f64, g.at_broadcast(c, 2)?),
                None => String::new(),
            };
            Ok(format!(
                "  {acc} s = 0;\n  for (long t = 0; t < {kk}L; t++) s += ({acc}){} * ({acc}){};\n  return ({ty})(({acc}){:e} * s{c});",
                g.at(a, &ac),
                g.at(b, &bc),
                *alpha as f64
            ))
        }
        Op::Pool { kind, auto_pad, ceil_mode: _, count_include_pad, dilations, kernel_shape, pads, strides, storage_order, p } => {
            if k != 0 && *kind != PoolKind::Max {
                return Err("only max pooling has an indices output".into());
            }
            let x = input(&ins, 0)?;
            let xs = dims(g.graph, x)?;
            let nsp = xs.len().checked_sub(2).ok_or("pooling takes N, C and spatial dims")?;
            if kernel_shape.len() != nsp {
                return Err("kernel_shape does not match the input".into());
            }
            let m = g.math(g.dtype(x));
            let mut s = String::new();
            let mut head = String::new();
            let mut xc = vec!["i0".to_string(), "i1".to_string()];
            let mut guards = String::new();
            let mut padded = Vec::new();
            for i in 0..nsp {
                let (st, di, kk) = (attr(strides, i, 1), attr(dilations, i, 1), attr(kernel_shape, i, 1));
                let extent = if kk == 0 { 0 } else { (kk - 1) * di + 1 };
                let input = xs[2 + i];
                let pb = pad_begin(*auto_pad, pads, i, input, shape[2 + i], st, extent);
                let pe = match auto_pad {
                    AutoPad::NotSet => attr(pads, i + nsp, 0),
                    AutoPad::Valid => 0,
                    _ => ((shape[2 + i].max(1) - 1) * st + extent).saturating_sub(input) - pb,
                };
                let _ = write!(head, "for (long k{i} = 0; k{i} < {kk}L; k{i}++) ");
                let _ = write!(
                    guards,
                    "    long p{i} = i{} * {st}L - {pb}L + k{i} * {di}L; if (p{i} < 0 || p{i} >= {input}L) continue;\n",
                    2 + i
                );
                padded.push(format!(
                    "long n{i} = 0; for (long k = 0; k < {kk}L; k++) {{ long q = i{} * {st}L - {pb}L + k * {di}L; if (q >= -{pb}L && q < {}L) n{i}++; }}",
                    2 + i,
                    input + pe
                ));
                xc.push(format!("p{i}"));
            }
            let v = g.at(x, &xc);
            match kind {
                PoolKind::Max => {
                    let t = ctype(g.dtype(x)).ok_or("half tensors")?;
                    // Output 1 is the first maximum's flat index into x, its spatial part
                    // column-major when storage_order is 1; -1 when the window is empty.
                    let plane: usize = xs[2..].iter().product();
                    let mut stride = 1usize;
                    let mut sp = Vec::new();
                    for i in (0..nsp).rev() {
                        if *storage_order == 0 {
                            sp.push(format!("p{i} * {stride}L"));
                            stride *= xs[2 + i];
                        }
                    }
                    if *storage_order != 0 {
                        for i in 0..nsp {
                            sp.push(format!("p{i} * {stride}L"));
                            stride *= xs[2 + i];
                        }
                    }
                    let sp = if sp.is_empty() { "0".to_string() } else { sp.join(" + ") };
                    let ret = if k == 0 { "best".to_string() } else { format!("any ? (i0 * {}L + i1) * {plane}L + bi : -1L", xs[1]) };
                    let _ = write!(
                        s,
                        "  {t} best = 0; int any = 0; long bi = 0; (void)bi;\n  {head}{{\n{guards}    {t} e = {v}; if (!any || e > best) {{ best = e; any = 1; bi = {sp}; }}\n  }}\n  return {ret};"
                    );
                }
                PoolKind::Average | PoolKind::Lp => {
                    let body = if *kind == PoolKind::Average {
                        format!("sum += ({m}){v};")
                    } else {
                        format!("sum += pow(fabs(({m}){v}), ({m}){p});")
                    };
                    let _ = write!(s, "  {m} sum = 0; long cnt = 0;\n  {head}{{\n{guards}    {body} cnt++;\n  }}\n");
                    if *kind == PoolKind::Lp {
                        let _ = write!(s, "  return ({ty})pow(sum, 1 / ({m}){p});");
                    } else if *count_include_pad {
                        let total: Vec<String> = (0..nsp).map(|i| format!("n{i}")).collect();
                        let total = total.join(" * ");
                        let _ = write!(s, "  {}\n", padded.join("\n  "));
                        let _ = write!(s, "  return ({ty})(sum / ({m})({total}));");
                    } else {
                        let _ = write!(s, "  return ({ty})(sum / ({m})cnt);");
                    }
                }
            }
            Ok(s)
        }
        Op::GlobalPool { kind, p } => {
            let x = input(&ins, 0)?;
            let xs = dims(g.graph, x)?;
            let m = g.math(g.dtype(x));
            let nsp = xs.len().checked_sub(2).ok_or("pooling takes N, C and spatial dims")?;
            let mut head = String::new();
            let mut xc = vec!["i0".to_string(), "i1".to_string()];
            for i in 0..nsp {
                let _ = write!(head, "for (long k{i} = 0; k{i} < {}L; k{i}++) ", xs[2 + i]);
                xc.push(format!("k{i}"));
            }
            let count: usize = xs[2..].iter().product();
            let v = format!("(({m}){})", g.at(x, &xc));
            Ok(match kind {
                PoolKind::Max => format!("  {m} a = -INFINITY; {head}{{ {m} e = {v}; a = (isnan(e) || isnan(a)) ? NAN : fmax(a, e); }}\n  return ({ty})a;"),
                PoolKind::Average => format!("  {m} a = 0; {head}{{ a += {v}; }}\n  return ({ty})(a / {count});"),
                PoolKind::Lp => format!("  {m} a = 0; {head}{{ a += pow(fabs({v}), ({m}){p}); }}\n  return ({ty})pow(a, 1 / ({m}){p});"),
            })
        }
        _ => Err(format!("{} is not a conv, matmul or pool", op.name())),
    }
}
