//! TopK: output position r along the axis holds the lane element ranked r, where an
//! element's rank is how many lane elements order before it (by value, NaN above every
//! number as eval's `cmp_nan`, then by lower index: eval's total order, so ties and the
//! `sorted` choice come out as eval's). O(n²) per output element; lanes here are short.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{DType, NodeId, Op};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::TopK { .. })
}

pub fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Option<Body> {
    let Op::TopK { axis, largest, .. } = &g.graph.node(n).op else {
        return None;
    };
    Some((|| {
        let x = g.graph.inputs_of(n).first().copied().flatten().ok_or("input 0 is missing")?;
        let xd = g.dtype(x);
        if xd == DType::Bool {
            return Err("topk does not take bool tensors".to_string());
        }
        let ty = ctype(xd).ok_or("half tensors")?;
        let xs = dims(g.graph, x)?;
        let r = xs.len();
        let a = if *axis < 0 { *axis + r as i64 } else { *axis };
        if a < 0 || a as usize >= r || shape.len() != r {
            return Err(format!("axis {axis} is out of range for rank {r}"));
        }
        let a = a as usize;
        let lane = |var: &str| -> Vec<String> { (0..r).map(|j| if j == a { var.to_string() } else { format!("i{j}") }).collect() };
        // a above b / a below b in eval's cmp_nan order (NaN high).
        let (gt, lt) =
            if xd.is_float() { ("((isnan(vp) && !isnan(vj)) || vp > vj)", "((!isnan(vp) && isnan(vj)) || vp < vj)") } else { ("(vp > vj)", "(vp < vj)") };
        let before = if *largest { format!("{gt} || (!{lt} && p < j)") } else { format!("{lt} || (!{gt} && p < j)") };
        let result = if k == 0 { "vj" } else { "j" };
        Ok(format!(
            "  for (long j = 0; j < {n}L; j++) {{\n    {ty} vj = {at_j}; long rank = 0;\n    for (long p = 0; p < {n}L && rank <= i{a}; p++) {{ {ty} vp = {at_p}; if ({before}) rank++; }}\n    if (rank == i{a}) return {result};\n  }}\n  return 0;",
            n = xs[a],
            at_j = g.at(x, &lane("j")),
            at_p = g.at(x, &lane("p")),
        ))
    })())
}
