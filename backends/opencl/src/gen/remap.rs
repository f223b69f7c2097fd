//! Ops whose element is one input element (or a constant) chosen by its coordinates and a
//! few run-time values: OneHot (on where the index equals the coordinate on the new axis),
//! ReverseSequence (the time coordinate mirrored within the batch entry's length) and
//! CenterCropPad (the input shifted to keep the centre, zero outside), and Compress with a
//! constant condition (the plan pins a small condition given as a graph input, since it
//! decides the output shape): a table of the selected positions. Semantics follow
//! `ir::eval`; a sequence length outside [0, T] is clamped (eval reports an error).

use super::{ctype, delinearize, dims, Body, Gen};
use kiln_ir::{NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::OneHot { .. } | Op::ReverseSequence { .. } | Op::CenterCropPad { .. } | Op::Compress { .. })
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, shape))
}

fn input(ins: &[Option<Value>], i: usize) -> Result<Value, String> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// The coordinates of element `lin` (a constant) of a tensor of shape `shape`.
fn coords_of(shape: &[usize], lin: usize) -> Vec<String> {
    let mut rest = lin;
    let mut c = vec![String::new(); shape.len()];
    for (j, &d) in shape.iter().enumerate().rev() {
        c[j] = format!("{}L", rest % d.max(1));
        rest /= d.max(1);
    }
    c
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let x = input(&ins, 0)?;
    let out: Vec<String> = (0..shape.len()).map(|j| format!("i{j}")).collect();
    let ty = ctype(g.graph.node(n).outputs[0].dtype).ok_or("half tensors")?;
    match op {
        Op::OneHot { axis } => {
            let values = input(&ins, 2)?;
            let vs = dims(g.graph, values)?;
            if vs.iter().product::<usize>() != 2 {
                return Err(format!("values must hold [off, on], found shape {vs:?}"));
            }
            // The axis indexes the output, one rank above the indices.
            let a = norm_axis(*axis, shape.len())?;
            let depth = shape[a];
            let mut ic = out.clone();
            ic.remove(a);
            Ok(format!(
                "  M x = trunc((M){idx}); if (x < 0) x += {depth}.0;\n  return (x >= 0 && x < {depth}.0 && x == (M)i{a}) ? {on} : {off};",
                idx = g.at(x, &ic),
                on = g.at(values, &coords_of(&vs, 1)),
                off = g.at(values, &coords_of(&vs, 0)),
            ))
        }
        Op::ReverseSequence { batch_axis, time_axis } => {
            let r = shape.len();
            if r < 2 {
                return Err("reverse_sequence takes a tensor of rank at least 2".into());
            }
            let (b, t) = (norm_axis(*batch_axis, r)?, norm_axis(*time_axis, r)?);
            if b == t {
                return Err(format!("batch_axis and time_axis are both {b}"));
            }
            let lens = input(&ins, 1)?;
            if dims(g.graph, lens)? != [shape[b]] {
                return Err(format!("sequence_lens must have shape [{}]", shape[b]));
            }
            let nt = shape[t];
            let mut mirrored = out.clone();
            mirrored[t] = format!("(l - 1 - i{t})");
            Ok(format!(
                "  long l = (long){len}; l = l < 0 ? 0 : (l > {nt}L ? {nt}L : l);\n  return i{t} < l ? {rev} : {here};",
                len = g.at(lens, &[format!("i{b}")]),
                rev = g.at(x, &mirrored),
                here = g.at(x, &out),
            ))
        }
        Op::CenterCropPad { .. } => {
            // The output shape already holds the target sizes; only the shift is needed:
            // input position = output position + shift, negative where padding.
            let xs = dims(g.graph, x)?;
            if xs.len() != shape.len() {
                return Err("center_crop_pad keeps the rank".into());
            }
            let mut inside = Vec::new();
            let mut xc = Vec::new();
            for (j, (&i, &o)) in xs.iter().zip(shape).enumerate() {
                let (i, o) = (i as i64, o as i64);
                let shift = (i - o).div_euclid(2).max(0) - (o - i).div_euclid(2).max(0);
                let p = format!("(i{j} + {shift}L)");
                if shift != 0 || o > i {
                    inside.push(format!("{p} >= 0 && {p} < {i}L"));
                }
                xc.push(p);
            }
            let cond = if inside.is_empty() { "1".to_string() } else { inside.join(" && ") };
            Ok(format!("  return ({cond}) ? {} : ({ty})0;", g.at(x, &xc)))
        }
        Op::Compress { axis } => {
            let cond = g.graph.const_value(input(&ins, 1)?).ok_or("compress's condition must be a constant")?;
            if cond.rank() != 1 {
                return Err("compress's condition must be 1-D".into());
            }
            let pos: Vec<usize> = cond.to_f64_vec().iter().enumerate().filter(|(_, &c)| c != 0.0).map(|(i, _)| i).collect();
            let xs = dims(g.graph, x)?;
            let (a, len) = match axis {
                None => (0, xs.iter().product::<usize>()),
                Some(a) => {
                    let a = norm_axis(*a, xs.len())?;
                    if shape.len() != xs.len() {
                        return Err("compress along an axis keeps the rank".into());
                    }
                    (a, xs[a])
                }
            };
            if pos.iter().any(|&p| p >= len) || shape.get(a) != Some(&pos.len()) {
                return Err(format!("the condition selects positions beyond the {len} selectable elements"));
            }
            if pos.is_empty() {
                return Ok(format!("  return ({ty})0;"));
            }
            let table = pos.iter().map(|p| format!("{p}L")).collect::<Vec<_>>().join(", ");
            let read = match axis {
                None => {
                    let xc: Vec<String> = (0..xs.len()).map(|j| format!("x{j}")).collect();
                    format!("{}\n  return {};", delinearize(&xs, "pos[i0]", "x"), g.at(x, &xc))
                }
                Some(_) => {
                    let mut xc = out.clone();
                    xc[a] = format!("pos[i{a}]");
                    format!("return {};", g.at(x, &xc))
                }
            };
            Ok(format!("  const long pos[{}] = {{{table}}};\n  {read}", pos.len()))
        }
        _ => Err("not a remap op".into()),
    }
}
