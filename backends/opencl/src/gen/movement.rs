//! Data movement: each output element reads one input element at coordinates computed from
//! its own, with the constant attributes (slice starts, pads, permutations) folded into the
//! code. Indices read at run time (gather) are clamped into range: a kernel cannot fail, and
//! must not read outside its buffer.

use super::{const_ints, delinearize, dims, linear, Body, Gen};
use kiln_ir::{DepthToSpaceMode, NodeId, Op, PadMode, Value};
use std::fmt::Write;

pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Dropout { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice
            | Op::Gather { .. }
            | Op::GatherElements { .. }
            | Op::Pad { .. }
            | Op::Tile
            | Op::Expand
            | Op::DepthToSpace { .. }
            | Op::SpaceToDepth { .. }
            | Op::ConstantOfShape { .. }
            | Op::Shape { .. }
            | Op::Size
    )
}

fn coords(rank: usize) -> Vec<String> {
    (0..rank).map(|j| format!("i{j}")).collect()
}

fn input(ins: &[Option<Value>], i: usize) -> Result<Value, String> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
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
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, k: usize, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let rank = shape.len();
    let out = coords(rank);
    let ret = |e: String| Ok(format!("  return {e};"));
    match op {
        // Same elements in the same order: the output's linear index is the input's.
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze => {
            let x = input(&ins, 0)?;
            let xs = dims(g.graph, x)?;
            let lin = linear(shape, &out);
            let xc = coords(xs.len()).iter().map(|c| format!("x{}", &c[1..])).collect::<Vec<_>>();
            Ok(format!("  {}\n  return {};", delinearize(&xs, &lin, "x"), g.at(x, &xc)))
        }
        Op::Dropout { .. } if training(g, &ins)? => Err("training-mode dropout is random (REFERENCE refuses it too)".into()),
        Op::Dropout { .. } if k == 0 => ret(g.at(input(&ins, 0)?, &out)),
        Op::Dropout { .. } => ret("(uchar)1".into()),
        Op::Shape { .. } | Op::Size => {
            // Shapes are concrete here, so these are constants; a node that reaches a
            // kernel (the host folds most of them) returns its element.
            let x = dims(g.graph, input(&ins, 0)?)?;
            let vals: Vec<i64> = match op {
                Op::Size => vec![x.iter().product::<usize>() as i64],
                Op::Shape { start, end } => {
                    let r = x.len() as i64;
                    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                    let (s, e) = (clampi(*start), clampi(end.unwrap_or(r)));
                    x[s..e.max(s)].iter().map(|&d| d as i64).collect()
                }
                _ => unreachable!("matched above"),
            };
            let list = vals.iter().map(|v| format!("{v}L")).collect::<Vec<_>>().join(", ");
            let idx = if rank == 0 { "0".into() } else { "i0".to_string() };
            Ok(format!("  const long vals[{}] = {{{list}}};\n  return vals[{idx}];", vals.len().max(1)))
        }
        Op::ConstantOfShape { value } => {
            let v = super::literal(value)?;
            ret(v)
        }
        Op::Transpose { perm } => {
            let x = input(&ins, 0)?;
            let r = dims(g.graph, x)?.len();
            let perm: Vec<usize> = match perm {
                Some(p) => p.iter().map(|&a| norm(a, r)).collect::<Result<_, _>>()?,
                None => (0..r).rev().collect(),
            };
            // out[j] = in[perm[j]]: input coordinate perm[j] is output coordinate j.
            let mut xc = vec![String::new(); r];
            for (j, &p) in perm.iter().enumerate() {
                xc[p] = format!("i{j}");
            }
            ret(g.at(x, &xc))
        }
        Op::Expand => ret(g.at_broadcast(input(&ins, 0)?, rank)?),
        Op::Tile => {
            let x = input(&ins, 0)?;
            let xs = dims(g.graph, x)?;
            let xc: Vec<String> = xs.iter().enumerate().map(|(j, d)| format!("i{j} % {d}L")).collect();
            ret(g.at(x, &xc))
        }
        Op::Concat { axis } => {
            let a = norm(*axis, rank)?;
            let mut s = String::new();
            let mut off = 0usize;
            let parts: Vec<Value> = ins.iter().flatten().copied().collect();
            for (j, &p) in parts.iter().enumerate() {
                let d = dims(g.graph, p)?[a];
                let mut pc = out.clone();
                pc[a] = format!("i{a} - {off}L");
                if j + 1 == parts.len() {
                    let _ = write!(s, "  return {};", g.at(p, &pc));
                } else {
                    let _ = writeln!(s, "  if (i{a} < {}L) return {};", off + d, g.at(p, &pc));
                }
                off += d;
            }
            Ok(s)
        }
        Op::Split { axis } => {
            let a = norm(*axis, rank)?;
            let node = g.graph.node(n);
            let mut off = 0usize;
            for t in &node.outputs[..k] {
                off += t.shape.concrete().ok_or("split output shapes must be concrete")?[a];
            }
            let mut xc = out.clone();
            xc[a] = format!("i{a} + {off}L");
            ret(g.at(input(&ins, 0)?, &xc))
        }
        Op::Slice => {
            let x = input(&ins, 0)?;
            let xs = dims(g.graph, x)?;
            let r = xs.len();
            let starts = const_ints(g, ins.get(1).copied().flatten(), "slice starts")?.ok_or("slice needs starts")?;
            let axes = const_ints(g, ins.get(3).copied().flatten(), "slice axes")?
                .unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = const_ints(g, ins.get(4).copied().flatten(), "slice steps")?.unwrap_or_else(|| vec![1; starts.len()]);
            let mut xc = out.clone();
            for (j, &ax) in axes.iter().enumerate() {
                let a = norm(ax, r)?;
                let d = xs[a] as i64;
                let step = *steps.get(j).ok_or("slice steps and starts differ in length")?;
                if step == 0 {
                    return Err("slice step 0".into());
                }
                let mut s = starts[j];
                if s < 0 {
                    s += d;
                }
                let s = if step > 0 { s.clamp(0, d) } else { s.clamp(0, (d - 1).max(0)) };
                xc[a] = format!("{s}L + i{a} * {step}L");
            }
            ret(g.at(x, &xc))
        }
        Op::Gather { axis } => {
            let x = input(&ins, 0)?;
            let idx = input(&ins, 1)?;
            let xs = dims(g.graph, x)?;
            let a = norm(*axis, xs.len())?;
            let ir = dims(g.graph, idx)?.len();
            let ic: Vec<String> = (0..ir).map(|j| format!("i{}", a + j)).collect();
            let d = xs[a];
            let mut xc: Vec<String> = (0..a).map(|j| format!("i{j}")).collect();
            xc.push("t".into());
            xc.extend((a + 1..xs.len()).map(|j| format!("i{}", j - 1 + ir)));
            Ok(format!(
                "  long t = (long){}; if (t < 0) t += {d}L; t = clamp(t, 0L, {}L);\n  return {};",
                g.at(idx, &ic),
                d.saturating_sub(1),
                g.at(x, &xc)
            ))
        }
        Op::GatherElements { axis } => {
            let x = input(&ins, 0)?;
            let idx = input(&ins, 1)?;
            let xs = dims(g.graph, x)?;
            let a = norm(*axis, xs.len())?;
            let d = xs[a];
            let mut xc = out.clone();
            xc[a] = "t".into();
            Ok(format!(
                "  long t = (long){}; if (t < 0) t += {d}L; t = clamp(t, 0L, {}L);\n  return {};",
                g.at(idx, &out),
                d.saturating_sub(1),
                g.at(x, &xc)
            ))
        }
        Op::Pad { mode } => {
            let x = input(&ins, 0)?;
            let xs = dims(g.graph, x)?;
            let r = xs.len();
            let pads = const_ints(g, ins.get(1).copied().flatten(), "pads")?.ok_or("pad needs pads")?;
            let axes: Vec<usize> = match const_ints(g, ins.get(3).copied().flatten(), "pad axes")? {
                Some(a) => a.iter().map(|&v| norm(v, r)).collect::<Result<_, _>>()?,
                None => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err("pads must have two values per axis".into());
            }
            let mut begin = vec![0i64; r];
            for (j, &a) in axes.iter().enumerate() {
                begin[a] = pads[j];
            }
            let ty = super::ctype(g.dtype(x)).ok_or("half tensors")?;
            let cval = match ins.get(2).copied().flatten() {
                Some(c) if dims(g.graph, c)?.iter().product::<usize>() == 1 => {
                    let cr = dims(g.graph, c)?.len();
                    format!("({ty})({})", g.at(c, &vec!["0".to_string(); cr]))
                }
                _ => format!("({ty})0"),
            };
            let mut s = String::new();
            let mut outside = Vec::new();
            for j in 0..r {
                let d = xs[j] as i64;
                let _ = write!(s, "  long x{j} = i{j} - {}L;", begin[j]);
                match mode {
                    PadMode::Constant => outside.push(format!("x{j} < 0 || x{j} >= {d}L")),
                    _ if d == 0 => return Err(format!("cannot {mode}-pad an empty axis")),
                    PadMode::Edge => {
                        let _ = write!(s, " x{j} = clamp(x{j}, 0L, {}L);", d - 1);
                    }
                    PadMode::Wrap => {
                        let _ = write!(s, " x{j} = ((x{j} % {d}L) + {d}L) % {d}L;");
                    }
                    PadMode::Reflect if d == 1 => {
                        let _ = write!(s, " x{j} = 0;");
                    }
                    PadMode::Reflect => {
                        let p = 2 * (d - 1);
                        let _ = write!(s, " {{ long q = ((x{j} % {p}L) + {p}L) % {p}L; x{j} = q >= {d}L ? {p}L - q : q; }}");
                    }
                }
                s.push('\n');
            }
            if !outside.is_empty() {
                let _ = writeln!(s, "  if ({}) return {cval};", outside.join(" || "));
            }
            let xc: Vec<String> = (0..r).map(|j| format!("x{j}")).collect();
            let _ = write!(s, "  return {};", g.at(x, &xc));
            Ok(s)
        }
        Op::DepthToSpace { blocksize, mode } | Op::SpaceToDepth { blocksize, mode } => {
            let x = input(&ins, 0)?;
            let xs = dims(g.graph, x)?;
            if xs.len() != 4 || rank != 4 {
                return Err("depth/space moves take NCHW tensors".into());
            }
            let b = *blocksize;
            if matches!(op, Op::DepthToSpace { .. }) {
                let c = shape[1];
                let ch = match mode {
                    DepthToSpaceMode::Dcr => format!("((i2 % {b}L) * {b}L + (i3 % {b}L)) * {c}L + i1"),
                    DepthToSpaceMode::Crd => format!("i1 * {}L + (i2 % {b}L) * {b}L + (i3 % {b}L)", b * b),
                };
                ret(g.at(x, &["i0".into(), ch, format!("i2 / {b}L"), format!("i3 / {b}L")]))
            } else {
                let c = xs[1];
                // Output channel = block position and input channel, in the mode's order.
                let (bh, bw, ic) = match mode {
                    DepthToSpaceMode::Dcr => (format!("(i1 / {c}L) / {b}L"), format!("(i1 / {c}L) % {b}L"), format!("i1 % {c}L")),
                    DepthToSpaceMode::Crd => {
                        (format!("(i1 % {}L) / {b}L", b * b), format!("(i1 % {}L) % {b}L", b * b), format!("i1 / {}L", b * b))
                    }
                };
                ret(g.at(x, &["i0".into(), ic, format!("i2 * {b}L + {bh}"), format!("i3 * {b}L + {bw}")]))
            }
        }
        _ => Err(format!("{} is not data movement", op.name())),
    }
}

/// Whether a Dropout drops anything: training_mode set and a ratio above 0, as eval reads
/// them (both must be constants here).
fn training(g: &Gen, ins: &[Option<Value>]) -> Result<bool, String> {
    let Some(t) = ins.get(2).copied().flatten() else { return Ok(false) };
    let t = g.graph.const_value(t).ok_or("dropout's training_mode must be a constant")?;
    if t.to_f64_vec().first().copied().unwrap_or(0.0) == 0.0 {
        return Ok(false);
    }
    let ratio = match ins.get(1).copied().flatten() {
        None => 0.5,
        Some(r) => g.graph.const_value(r).ok_or("dropout's ratio must be a constant")?.to_f64_vec().first().copied().unwrap_or(0.5),
    };
    Ok(ratio > 0.0)
}
