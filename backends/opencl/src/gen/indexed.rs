//! Ops whose element is a function of its own coordinates: Range (start + i·delta), Trilu
//! (the input or 0 by the element's side of the k-th diagonal) and EyeLike (1 on the k-th
//! diagonal). Semantics follow `ir::eval`: a float Range computes start + i·delta in `M`.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::Range | Op::Trilu { .. } | Op::EyeLike { .. })
}

fn input(ins: &[Option<Value>], i: usize) -> Result<Value, String> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

/// A scalar input read at its one element.
fn scalar(g: &Gen, v: Value) -> Result<String, String> {
    let r = dims(g.graph, v)?.len();
    Ok(g.at(v, &vec!["0".to_string(); r]))
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    let ins = g.graph.inputs_of(n);
    let dtype = g.graph.node(n).outputs[0].dtype;
    Some((|| {
        let ty = ctype(dtype).ok_or("half tensors")?;
        let r = shape.len();
        match op {
            Op::Range => {
                let (s, d) = (scalar(g, input(&ins, 0)?)?, scalar(g, input(&ins, 2)?)?);
                Ok(if dtype.is_float() {
                    format!("  return ({ty})((M){s} + (M)i0 * (M){d});", ty = if dtype == kiln_ir::DType::F64 { "double" } else { ty })
                } else {
                    format!("  return ({ty})({s} + ({ty})i0 * {d});")
                })
            }
            Op::Trilu { upper } => {
                if r < 2 {
                    return Err("trilu takes a tensor of rank at least 2".into());
                }
                let k = match ins.get(1).copied().flatten() {
                    Some(v) => format!("(long){}", scalar(g, v)?),
                    None => "0L".into(),
                };
                let cmp = if *upper { ">=" } else { "<=" };
                let x = g.at_broadcast(input(&ins, 0)?, r)?;
                Ok(format!("  return (i{} - i{}) {cmp} {k} ? {x} : ({ty})0;", r - 1, r - 2))
            }
            Op::EyeLike { k, .. } => {
                if r != 2 {
                    return Err("eye_like takes a 2-D tensor".into());
                }
                Ok(format!("  return (i1 - i0) == {k}L ? ({ty})1 : ({ty})0;"))
            }
            _ => Err("not an indexed op".into()),
        }
    })())
}
