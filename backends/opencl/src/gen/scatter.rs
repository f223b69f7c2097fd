//! ScatterElements, ScatterND and GatherND. A scatter's work-item owns one output element:
//! it starts from the data and applies, in eval's order, every update whose index hits it
//! (O(updates) per element, no atomics, and duplicate indices combine in the same order as
//! `ir::eval`). Reductions combine in the element type, as eval does (f32 adds in f32).
//! An out-of-range index hits nothing in a scatter and is clamped in a gather (eval reports
//! an error for both): a kernel cannot fail and must not read outside its buffer.

use super::{ctype, delinearize, dims, Body, Gen};
use kiln_ir::{DType, NodeId, Op, ScatterReduction, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::ScatterElements { .. } | Op::ScatterNd { .. } | Op::GatherNd { .. })
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

/// `r` combined with the update `u` (both C variables of storage type), as eval's
/// `combine`: bools or/and, max and min take a NaN update. Half types are computed as
/// float, and eval rounds each sum or product to the half type: refused for those.
fn combine(r: ScatterReduction, d: DType) -> Result<String, String> {
    if matches!(d, DType::F16 | DType::BF16) && matches!(r, ScatterReduction::Add | ScatterReduction::Mul) {
        return Err(format!("scatter with reduction {r} on {d} rounds every step"));
    }
    Ok(combine_as(r, d))
}

fn combine_as(r: ScatterReduction, d: DType) -> String {
    let nan = if d.is_float() { "u != u || " } else { "" };
    match (r, d) {
        (ScatterReduction::None, _) => "r = u;".into(),
        (ScatterReduction::Add, DType::Bool) => "r = r | u;".into(),
        (ScatterReduction::Mul, DType::Bool) => "r = r & u;".into(),
        (ScatterReduction::Add, _) => "r = r + u;".into(),
        (ScatterReduction::Mul, _) => "r = r * u;".into(),
        (ScatterReduction::Max, _) => format!("if ({nan}u > r) r = u;"),
        (ScatterReduction::Min, _) => format!("if ({nan}u < r) r = u;"),
    }
}

/// Statements declaring `long {var}` as the index read by `idx` normalized into [0, dim)
/// (negative indices count from the end), or -1 when out of range.
fn norm_index(var: &str, idx: &str, dim: usize) -> String {
    format!("long {var} = (long){idx}; if ({var} < 0) {var} += {dim}L; if ({var} < 0 || {var} >= {dim}L) {var} = -1;")
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let data = input(&ins, 0)?;
    let ind = input(&ins, 1)?;
    let dt = g.dtype(data);
    let ty = ctype(dt).ok_or("half tensors")?;
    let ds = dims(g.graph, data)?;
    let is = dims(g.graph, ind)?;
    if g.dtype(ind).is_float() {
        return Err("indices must be integers".into());
    }
    let out: Vec<String> = (0..shape.len()).map(|j| format!("i{j}")).collect();
    match op {
        Op::ScatterElements { axis, reduction } => {
            let upd = input(&ins, 2)?;
            let r = ds.len();
            let a = norm_axis(*axis, r)?;
            if is.len() != r || dims(g.graph, upd)? != is {
                return Err(format!("indices {is:?} and updates must have data's rank {r} and one shape"));
            }
            // Only indices positions sharing this element's coordinates off the axis can
            // hit it; walking them along the axis is eval's order for this element.
            let guard: Vec<String> = (0..r).filter(|&j| j != a).map(|j| format!("i{j} < {}L", is[j])).collect();
            let guard = if guard.is_empty() { "1".to_string() } else { guard.join(" && ") };
            let uc: Vec<String> = (0..r).map(|j| if j == a { "q".into() } else { format!("i{j}") }).collect();
            Ok(format!(
                "  {ty} r = {here};\n  if ({guard}) for (long q = 0; q < {na}L; q++) {{ {norm} if (t == i{a}) {{ {ty} u = {u}; {comb} }} }}\n  return r;",
                here = g.at(data, &out),
                na = is[a],
                norm = norm_index("t", &g.at(ind, &uc), ds[a]),
                u = g.at(upd, &uc),
                comb = combine(*reduction, dt)?,
            ))
        }
        Op::ScatterNd { reduction } => {
            let upd = input(&ins, 2)?;
            let q = is.len();
            let k = *is.last().ok_or("indices must have rank at least 1")?;
            if q == 0 || k > ds.len() {
                return Err(format!("index tuples of length {k} are too long for data of rank {}", ds.len()));
            }
            let lead = &is[..q - 1];
            let mut want = lead.to_vec();
            want.extend_from_slice(&ds[k..]);
            if dims(g.graph, upd)? != want {
                return Err(format!("updates must have shape {want:?}"));
            }
            let count: usize = lead.iter().product();
            let mc: Vec<String> = (0..q - 1).map(|j| format!("m{j}")).collect();
            let mut hit = String::new();
            for j in 0..k {
                let mut c = mc.clone();
                c.push(format!("{j}L"));
                hit.push_str(&format!(" {{ {} if (t != i{j}) continue; }}", norm_index("t", &g.at(ind, &c), ds[j])));
            }
            let mut uc = mc.clone();
            uc.extend((k..ds.len()).map(|j| format!("i{j}")));
            Ok(format!(
                "  {ty} r = {here};\n  for (long p = 0; p < {count}L; p++) {{ {split}\n {hit}\n  {{ {ty} u = {u}; {comb} }} }}\n  return r;",
                here = g.at(data, &out),
                split = delinearize(lead, "p", "m"),
                u = g.at(upd, &uc),
                comb = combine(*reduction, dt)?,
            ))
        }
        Op::GatherNd { batch_dims } => {
            let b = usize::try_from(*batch_dims).map_err(|_| format!("batch_dims {batch_dims} is negative"))?;
            let q = is.len();
            let k = *is.last().ok_or("indices must have rank at least 1")?;
            if b >= q || b + k > ds.len() || is[..b] != ds[..b] {
                return Err(format!("indices {is:?} do not fit data {ds:?} with {b} batch dims"));
            }
            if shape.len() + b + k != q - 1 + ds.len() {
                return Err(format!("the output rank {} does not fit indices {is:?} and data {ds:?}", shape.len()));
            }
            if ds[b..b + k].contains(&0) && shape.iter().product::<usize>() > 0 {
                return Err("gather_nd indexes an axis of size 0".into());
            }
            let lead: Vec<String> = out[..q - 1].to_vec();
            let mut s = String::new();
            let mut xc: Vec<String> = out[..b].to_vec();
            for j in 0..k {
                let mut c = lead.clone();
                c.push(format!("{j}L"));
                let d = ds[b + j];
                s.push_str(&format!(
                    "  long x{j} = (long){}; if (x{j} < 0) x{j} += {d}L; x{j} = x{j} < 0 ? 0 : (x{j} >= {d}L ? {}L : x{j});\n",
                    g.at(ind, &c),
                    d.saturating_sub(1)
                ));
                xc.push(format!("x{j}"));
            }
            xc.extend(out[q - 1..].iter().cloned());
            Ok(format!("{s}  return {};", g.at(data, &xc)))
        }
        _ => Err("not a scatter or gather".into()),
    }
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}
