//! Flatten into a dense layer: a Keras `Flatten` after NHWC conv blocks flattens in H,W,C
//! order, so the transpose back to NHWC cannot sink past it. But when the flattened rows
//! only feed a MatMul (or Gemm) with constant weights (through elementwise ops such as an inference
//! Dropout), flattening the held NCHW tensor instead just reorders the rows of the weight:
//! permuting the weight rows once removes the transpose.

use super::perm;
use super::sink::Sinker;
use crate::pattern::{pattern, Pattern};
use kiln_ir::{Dim, NodeId, Op, Result, Tensor, Value};

/// Sinks the layout of a held input through a flatten whose rows feed a constant-weight
/// MatMul or Gemm, if node `n` is one; false when it is not.
pub(crate) fn sink_flatten(s: &mut Sinker, n: NodeId) -> Result<bool> {
    let Some((x, matmul, weight)) = find(s, n) else {
        return Ok(false);
    };
    let ins = s.old.inputs_of(n);
    let mut args = Vec::with_capacity(ins.len());
    args.push(Some(s.map[&x].value));
    for v in &ins[1..] {
        args.push(match v {
            Some(v) => Some(s.materialize(*v)?),
            None => None,
        });
    }
    let node = s.old.node(n);
    let m = s
        .new
        .add_node_typed(node.op.clone(), node.name.clone(), &args, node.outputs.clone());
    s.map.insert(
        Value::new(n, 0),
        super::sink::Held {
            value: m.into(),
            perm: None,
        },
    );
    s.weights.insert(matmul, weight);
    Ok(true)
}

/// The flattened input, the MatMul and its weight with rows reordered for the held layout.
fn find(s: &Sinker, n: NodeId) -> Option<(Value, NodeId, Tensor)> {
    let g = s.old;
    let node = g.node(n);
    match &node.op {
        Op::Flatten { axis: 1 } | Op::Reshape { .. } if node.outputs.len() == 1 => {}
        _ => return None,
    }
    let x = g.inputs_of(n).first().copied().flatten()?;
    let p = s.map.get(&x)?.perm.as_ref()?;
    let in_dims = g.value_type(x).shape.dims()?;
    let out_dims = node.outputs[0].shape.dims()?;
    if p[0] != 0
        || in_dims.len() < 2
        || out_dims.len() != 2
        || in_dims[0] != out_dims[0]
        || matches!(in_dims[0], Dim::Unknown)
    {
        return None;
    }
    let rows: Vec<usize> = in_dims[1..].iter().map(|d| d.known()).collect::<Option<_>>()?;
    if out_dims[1].known()? != rows.iter().product::<usize>() {
        return None;
    }
    // Follow the single chain of uses to the MatMul.
    let mut v = Value::new(n, 0);
    let matmul = loop {
        if g.outputs.iter().any(|(_, o)| *o == v) {
            return None;
        }
        let [(user, slot)] = g.uses_of(v)[..] else { return None };
        let op = &g.node(user).op;
        if slot == 0 && matches!(op, Op::MatMul | Op::Gemm { trans_a: false, .. }) {
            break user;
        }
        if pattern(op) != Pattern::Elementwise || g.node(user).arity != 1 || g.node(user).outputs.len() != 1 {
            return None;
        }
        v = Value::new(user, 0);
    };
    // The weight's node may come after the flatten in topological order: read the old graph.
    let w = g.const_value(g.inputs_of(matmul).get(1).copied().flatten()?)?;
    // A Gemm may hold its weight transposed, [k, rows]: reorder its columns the same way.
    let trans_b = matches!(g.node(matmul).op, Op::Gemm { trans_b: true, .. });
    let w = if trans_b {
        perm::permute_tensor(w, &[1, 0]).ok()?
    } else {
        w.clone()
    };
    let [r, k] = w.shape()[..] else { return None };
    if r != out_dims[1].known()? {
        return None;
    }
    // The weight's rows indexed by the model's axes 1.., then reordered to the held axes.
    let mut shape = rows.clone();
    shape.push(k);
    let q = perm::inverse(p);
    let mut wp: Vec<usize> = (1..p.len()).map(|i| q[i] - 1).collect();
    wp.push(rows.len());
    let permuted = perm::permute_tensor(&w.reshape(shape).ok()?, &wp).ok()?;
    let permuted = permuted.reshape(vec![r, k]).ok()?;
    let permuted = if trans_b {
        perm::permute_tensor(&permuted, &[1, 0]).ok()?
    } else {
        permuted
    };
    Some((x, matmul, permuted))
}
