//! Ops that read a whole lane along one axis for each element: CumSum/CumProd (the lane up
//! to the element, in eval's order), Hardmax (1 where the element is the lane's first
//! maximum, NaN counting as largest) and LpNormalization (the element over the lane's L1 or
//! L2 norm, 0 when the norm is 0). Float math in `M`, integer sums in wrapping long, as
//! `ir::eval`.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::CumSum { .. } | Op::CumProd { .. } | Op::Hardmax { .. } | Op::LpNormalization { .. })
}

fn axis_of(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, shape))
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let x: Value = ins.first().copied().flatten().ok_or("input 0 is missing")?;
    let xd = g.dtype(x);
    let ty = ctype(xd).ok_or("half tensors")?;
    let r = shape.len();
    let lane = |a: usize, var: &str| -> Vec<String> { (0..r).map(|j| if j == a { var.to_string() } else { format!("i{j}") }).collect() };
    match op {
        Op::CumSum { exclusive, reverse } | Op::CumProd { exclusive, reverse } => {
            if xd == kiln_ir::DType::Bool {
                return Err("cumulative ops do not take bool tensors".into());
            }
            let product = matches!(op, Op::CumProd { .. });
            let axis = ins.get(1).copied().flatten().and_then(|v| g.graph.const_value(v)).ok_or("the axis must be a constant")?;
            let a = axis_of(axis.to_i64_vec().first().copied().ok_or("the axis is empty")?, r)?;
            let n = dims(g.graph, x)?[a];
            let acc = if xd.is_float() { g.math(xd) } else { "long" };
            let (init, op) = if product { ("1", "*") } else { ("0", "+") };
            // Forward: from 0 up to i_a; reverse: from the end down to i_a.
            let (from, cond, step) = if *reverse { (format!("{}L", n as i64 - 1), format!("j {} i{a}", if *exclusive { ">" } else { ">=" }), "j--") } else { ("0L".to_string(), format!("j {} i{a}", if *exclusive { "<" } else { "<=" }), "j++") };
            Ok(format!(
                "  {acc} s = {init};\n  for (long j = {from}; {cond}; {step}) s = s {op} ({acc}){};\n  return ({ty})s;",
                g.at(x, &lane(a, "j"))
            ))
        }
        Op::Hardmax { axis } => {
            if !xd.is_float() {
                return Err(format!("hardmax does not take {xd} tensors"));
            }
            let a = axis_of(*axis, r)?;
            let n = dims(g.graph, x)?[a];
            let (at_j, at_b) = (g.at(x, &lane(a, "j")), g.at(x, &lane(a, "best")));
            Ok(format!(
                "  long best = 0;\n  for (long j = 1; j < {n}L; j++) {{ {ty} v = {at_j}, b = {at_b}; if (v > b || (isnan(v) && !isnan(b))) best = j; }}\n  return i{a} == best ? ({ty})1 : ({ty})0;"
            ))
        }
        Op::LpNormalization { axis, p } => {
            if !xd.is_float() {
                return Err(format!("lp_normalization does not take {xd} tensors"));
            }
            let term = match p {
                1 => "fabs(v)",
                2 => "v * v",
                _ => return Err(format!("lp_normalization supports p = 1 or 2, found {p}")),
            };
            let a = axis_of(*axis, r)?;
            let n = dims(g.graph, x)?[a];
            let m = g.math(xd);
            let root = if *p == 2 { "sqrt(s)" } else { "s" };
            let here: Vec<String> = (0..r).map(|j| format!("i{j}")).collect();
            Ok(format!(
                "  {m} s = 0;\n  for (long j = 0; j < {n}L; j++) {{ {m} v = ({m}){}; s += {term}; }}\n  {m} nrm = {root};\n  return nrm == 0 ? ({ty})0 : ({ty})(({m}){} / nrm);",
                g.at(x, &lane(a, "j")),
                g.at(x, &here)
            ))
        }
        _ => Err("not a lane op".into()),
    }
}
