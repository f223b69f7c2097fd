//! Small edits passes make to a graph: rewire the uses of a value, remove a node, re-infer a
//! node's types after its inputs became more precise. Each one keeps the graph's signature:
//! a graph output keeps its name and its type.

use crate::error::Result;
use crate::graph::{Edge, Graph, NodeId, Value};
use crate::op::Op;
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Makes every consumer of `old` read `new` instead, and every graph output naming `old`
/// name `new` when the two have the same type (a graph output's type is part of the
/// signature). Returns false when some graph output had to stay on `old`, which then keeps
/// its node alive.
pub fn replace_uses(g: &mut Graph, old: Value, new: Value) -> bool {
    if old == new {
        return true;
    }
    replace_consumer_uses(g, old, new);
    let same_type = g.value_type(old) == g.value_type(new);
    let mut all = true;
    for (_, v) in g.outputs.iter_mut() {
        if *v == old {
            if same_type {
                *v = new;
            } else {
                all = false;
            }
        }
    }
    all
}

/// Makes every consumer node of `old` read `new` instead; graph outputs are left alone.
pub fn replace_consumer_uses(g: &mut Graph, old: Value, new: Value) {
    if old == new {
        return;
    }
    let edges: Vec<_> = g
        .nodes
        .edges_directed(old.node, Direction::Outgoing)
        .filter(|e| e.weight().output == old.output)
        .map(|e| (e.id(), e.target(), e.weight().input))
        .collect();
    for (id, target, input) in edges {
        g.nodes.remove_edge(id);
        g.nodes.add_edge(
            new.node,
            target,
            Edge {
                output: new.output,
                input,
            },
        );
    }
}

/// Makes input slot `slot` of `n` read `v` (`None`: absent).
pub fn set_input(g: &mut Graph, n: NodeId, slot: usize, v: Option<Value>) {
    let old: Vec<_> = g
        .nodes
        .edges_directed(n, Direction::Incoming)
        .filter(|e| e.weight().input == slot)
        .map(|e| e.id())
        .collect();
    for e in old {
        g.nodes.remove_edge(e);
    }
    if let Some(v) = v {
        g.nodes.add_edge(
            v.node,
            n,
            Edge {
                output: v.output,
                input: slot,
            },
        );
    }
}

/// True when some node or graph output reads `v`.
pub fn is_used(g: &Graph, v: Value) -> bool {
    g.outputs.iter().any(|(_, o)| *o == v)
        || g.nodes
            .edges_directed(v.node, Direction::Outgoing)
            .any(|e| e.weight().output == v.output)
}

/// True when no node or graph output reads any output of `n`.
pub fn is_unused(g: &Graph, n: NodeId) -> bool {
    g.outputs.iter().all(|(_, o)| o.node != n)
        && g.nodes
            .edges_directed(n, Direction::Outgoing)
            .next()
            .is_none()
}

/// Removes `n` and its edges. Graph inputs are never removed; returns whether `n` went.
pub fn remove_node(g: &mut Graph, n: NodeId) -> bool {
    if g.inputs.contains(&n) || !g.nodes.contains_node(n) {
        return false;
    }
    g.nodes.remove_node(n).is_some()
}

/// The types inference gives `n` from its current inputs (constants included).
pub fn infer_node(g: &Graph, n: NodeId) -> Result<Vec<TensorType>> {
    let node = g.node(n);
    let ins = g.inputs_of(n);
    let types: Vec<Option<&TensorType>> = ins.iter().map(|v| v.map(|v| g.value_type(v))).collect();
    let consts: Vec<Option<&Tensor>> = ins
        .iter()
        .map(|v| v.and_then(|v| g.const_value(v)))
        .collect();
    crate::infer::infer(&node.op, &types, &consts, node.outputs.len())
        .map_err(|e| e.in_node(node.name.clone()))
}

/// Re-infers the types of `n` and refines its declared ones with what inference now knows
/// (a known dim where one was symbolic or unknown, a rank where there was none). Never
/// contradicts a declared type, and never touches the type of a graph output (the
/// signature). Returns whether a type changed; an inference error leaves the node as is.
pub fn reinfer(g: &mut Graph, n: NodeId) -> bool {
    if matches!(g.node(n).op, Op::Input | Op::Const { .. }) {
        return false;
    }
    let Ok(inferred) = infer_node(g, n) else {
        return false;
    };
    let mut changed = false;
    for (k, inf) in inferred.iter().enumerate() {
        let v = Value::new(n, k);
        if g.outputs.iter().any(|(_, o)| *o == v) {
            continue;
        }
        let declared = &g.nodes[n].outputs[k];
        if let Some(better) = refine(declared, inf) {
            g.nodes[n].outputs[k] = better;
            changed = true;
        }
    }
    changed
}

/// Re-infers every node of `g` in topological order, so that precision gained at one node
/// flows to everything downstream. Returns how many nodes changed type.
pub fn reinfer_all(g: &mut Graph) -> usize {
    let Ok(order) = g.topo_order() else { return 0 };
    order.into_iter().filter(|&n| reinfer(g, n)).count()
}

/// `declared` made more precise by `inferred`, or None when inferred adds nothing or
/// disagrees (another dtype, another rank, another known size).
pub fn refine(declared: &TensorType, inferred: &TensorType) -> Option<TensorType> {
    if declared.dtype != inferred.dtype {
        return None;
    }
    let dims = match (&declared.shape.0, &inferred.shape.0) {
        (_, None) => return None,
        (None, Some(i)) => i.clone(),
        (Some(d), Some(i)) => {
            if d.len() != i.len() {
                return None;
            }
            let mut out = Vec::with_capacity(d.len());
            for (a, b) in d.iter().zip(i) {
                out.push(match (a, b) {
                    (Dim::Known(x), Dim::Known(y)) if x != y => return None,
                    (Dim::Known(_), _) => a.clone(),
                    (_, Dim::Known(_)) => b.clone(),
                    (Dim::Unknown, Dim::Sym(_)) => b.clone(),
                    _ => a.clone(),
                });
            }
            out
        }
    };
    let better = TensorType {
        dtype: declared.dtype,
        shape: Shape(Some(dims)),
    };
    (better != *declared).then_some(better)
}
