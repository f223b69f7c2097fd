//! BitCast: the element's bytes read as another type of the same size (OpenCL's `as_T`),
//! a bool being any nonzero byte, as eval's `from_le_bytes`.

use super::{ctype, Body, Gen};
use kiln_ir::{DType, NodeId, Op};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::BitCast { .. })
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    let Op::BitCast { to } = &g.graph.node(n).op else {
        return None;
    };
    Some((|| {
        let x = g.graph.inputs_of(n).first().copied().flatten().ok_or("input 0 is missing")?;
        let from = g.dtype(x);
        // Half values are computed as float, so their bits are not at hand here.
        if [from, *to].iter().any(|d| matches!(d, DType::F16 | DType::BF16)) {
            return Err(format!("bitcast between {from} and {to}: half types are computed as float"));
        }
        if from.size() != to.size() {
            return Err(format!("bitcast needs types of one size: {from} and {to}"));
        }
        let ty = ctype(*to).ok_or("half tensors")?;
        let v = g.at_broadcast(x, shape.len())?;
        Ok(if *to == DType::Bool { format!("  return ({ty})({v} != 0);") } else { format!("  return as_{ty}({v});") })
    })())
}
