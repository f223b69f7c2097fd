//! The verifier: structural checks and type re-inference. Every error names the node.

use crate::error::{IrError, Result};
use crate::graph::Graph;
use crate::op::Op;
use crate::shape::{Dim, Shape, TensorType};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Checks that `graph` is well formed: acyclic; every edge reads an existing output into an
/// existing, singly-fed input slot; inputs are exactly the `Input` nodes; outputs exist;
/// every node's declared types agree with what inference gives (dtype equal, every known
/// dim equal, ranks equal where both are known). Nested graphs are checked too.
pub fn verify(graph: &Graph) -> Result<()> {
    let order = graph.topo_order()?;
    for &n in &order {
        let node = graph.node(n);
        let at = |m: String| IrError::at(node.name.clone(), m);
        let mut fed = vec![false; node.arity];
        for e in graph.nodes.edges_directed(n, Direction::Incoming) {
            let w = e.weight();
            let src = graph.node(e.source());
            if w.input >= node.arity {
                return Err(at(format!("an edge feeds input slot {} but {} has {}", w.input, node.op.name(), node.arity)));
            }
            if fed[w.input] {
                return Err(at(format!("input slot {} is fed twice", w.input)));
            }
            fed[w.input] = true;
            if w.output >= src.outputs.len() {
                return Err(at(format!("reads output {} of node {}, which has {}", w.output, src.name, src.outputs.len())));
            }
        }
        match &node.op {
            Op::Input => {
                if !graph.inputs.contains(&n) {
                    return Err(at("an input node that is not among the graph's inputs".into()));
                }
                continue;
            }
            Op::Const { .. } => continue,
            _ => {}
        }
        let ins = graph.inputs_of(n);
        let types: Vec<Option<&TensorType>> = ins.iter().map(|v| v.map(|v| graph.value_type(v))).collect();
        let consts: Vec<_> = ins.iter().map(|v| v.and_then(|v| graph.const_value(v))).collect();
        let inferred = crate::infer::infer(&node.op, &types, &consts, node.outputs.len()).map_err(|e| e.in_node(node.name.clone()))?;
        for (k, (declared, inferred)) in node.outputs.iter().zip(&inferred).enumerate() {
            if !compatible(declared, inferred) {
                return Err(at(format!("output {k} is declared {declared} but its inputs give {inferred}")));
            }
        }
        for g in node.op.subgraphs() {
            verify(g).map_err(|e| IrError::at(node.name.clone(), format!("in a nested graph: {e}")))?;
        }
    }
    for &i in &graph.inputs {
        if !graph.nodes.contains_node(i) || !matches!(graph.node(i).op, Op::Input) {
            return Err(IrError::msg("a graph input is not an input node"));
        }
    }
    for (name, v) in &graph.outputs {
        if !graph.nodes.contains_node(v.node) || v.output >= graph.node(v.node).outputs.len() {
            return Err(IrError::msg(format!("output {name} refers to a value that does not exist")));
        }
    }
    Ok(())
}

/// Declared and inferred types agree: same dtype, and no known-vs-known disagreement.
pub fn compatible(a: &TensorType, b: &TensorType) -> bool {
    if a.dtype != b.dtype {
        return false;
    }
    match (&a.shape, &b.shape) {
        (Shape(Some(x)), Shape(Some(y))) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| match (p, q) {
                    (Dim::Known(i), Dim::Known(j)) => i == j,
                    _ => true,
                })
        }
        _ => true,
    }
}
