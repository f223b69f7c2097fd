//! Elementwise groups: connected elementwise nodes of one output shape that run as one
//! generated kernel (one pass over memory, one allocation per output) instead of one
//! `ir::eval` call per node. A fused kernel's body often holds an anchor (a matmul, a
//! concat, a pool) followed by elementwise ops the epilogue matcher does not take (GELU,
//! a batch norm's scale and shift); the top-level graph at -O0 holds lone ones.

use kiln_ir::{Dim, Graph, NodeId, Tensor, Value};
use std::collections::{HashMap, HashSet};

/// A node the generated code may compute: an elementwise op the code generator lowers,
/// one output, dtypes it handles.
fn candidate(graph: &Graph, n: NodeId) -> bool {
    let node = graph.node(n);
    node.outputs.len() == 1
        && crate::codegen::covers_op(&node.op)
        && crate::codegen::supported_dtype(node.outputs[0].dtype)
        && graph
            .inputs_of(n)
            .into_iter()
            .flatten()
            .all(|v| crate::codegen::supported_dtype(graph.value_type(v).dtype))
}

/// A shape that names the same size at every run: known dims or symbols.
fn fixed(graph: &Graph, n: NodeId) -> Option<&[Dim]> {
    let dims = graph.node(n).outputs[0].shape.dims()?;
    dims.iter().all(|d| !matches!(d, Dim::Unknown)).then_some(dims)
}

/// Groups of candidate nodes (each in topological order), skipping `skip` (folded nodes,
/// epilogue chains). A node joins the group of one of its inputs when its output has the
/// group's shape and none of its other inputs depends on the group (so the group stays
/// convex: it can run as one step after all its inputs and before all its users).
pub(crate) fn find_groups(graph: &Graph, order: &[NodeId], skip: &HashSet<NodeId>) -> Vec<Vec<NodeId>> {
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    let mut group_of: HashMap<NodeId, usize> = HashMap::new();
    // Nodes outside group g that depend on it.
    let mut tainted: Vec<HashSet<NodeId>> = Vec::new();
    for &n in order {
        let producers: Vec<NodeId> = graph.inputs_of(n).into_iter().flatten().map(|v| v.node).collect();
        let mut joined = None;
        if !skip.contains(&n) && candidate(graph, n) {
            let shape = fixed(graph, n);
            for &p in &producers {
                let Some(&g) = group_of.get(&p) else { continue };
                let same_shape = shape.is_some() && fixed(graph, groups[g][0]) == shape;
                let convex = producers.iter().all(|q| !tainted[g].contains(q));
                if same_shape && convex {
                    joined = Some(g);
                    break;
                }
            }
            let g = joined.unwrap_or_else(|| {
                groups.push(Vec::new());
                tainted.push(HashSet::new());
                groups.len() - 1
            });
            groups[g].push(n);
            group_of.insert(n, g);
            joined = Some(g);
            // n may join two groups into one (GELU's `0.5·x` and `1 + erf(x/√2)`): merge
            // another producer's group when neither depends on the other through an
            // outside node, which keeps the union convex.
            for &p in &producers {
                let Some(&h) = group_of.get(&p) else { continue };
                let mergeable = h != g
                    && shape.is_some()
                    && fixed(graph, groups[h][0]) == shape
                    && !groups[h].iter().any(|m| tainted[g].contains(m))
                    && !groups[g].iter().any(|m| tainted[h].contains(m))
                    && producers.iter().all(|q| !tainted[h].contains(q));
                if mergeable {
                    let moved = std::mem::take(&mut groups[h]);
                    for &m in &moved {
                        group_of.insert(m, g);
                    }
                    groups[g].extend(moved);
                    let t = std::mem::take(&mut tainted[h]);
                    tainted[g].extend(t);
                }
            }
        }
        for (g, t) in tainted.iter_mut().enumerate() {
            if joined == Some(g) {
                continue;
            }
            if producers.iter().any(|p| group_of.get(p) == Some(&g) || t.contains(p)) {
                t.insert(n);
            }
        }
    }
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    groups.retain(|g| !g.is_empty());
    for g in &mut groups {
        g.sort_by_key(|m| position[m]);
    }
    groups
}

/// A group as a graph of its own: its external values become inputs (in the order
/// returned), constants are copied in, and every member value read outside the group
/// (or a graph output) becomes an output (in the order returned).
pub(crate) fn subgraph(
    graph: &Graph,
    members: &[NodeId],
    known: &HashMap<Value, Tensor>,
    outputs: &HashSet<Value>,
) -> (Graph, Vec<Value>, Vec<Value>) {
    let inside: HashSet<NodeId> = members.iter().copied().collect();
    let mut sub = Graph::new(graph.node(members[0]).name.clone());
    let mut map: HashMap<Value, Value> = HashMap::new();
    let mut external = Vec::new();
    for &m in members {
        let mut ins = Vec::new();
        for v in graph.inputs_of(m) {
            let Some(v) = v else {
                ins.push(None);
                continue;
            };
            if !map.contains_key(&v) {
                let name = format!("{}:{}", graph.node(v.node).name, v.output);
                let w = match known.get(&v) {
                    Some(t) => sub.add_const(name, t.clone()),
                    None => {
                        external.push(v);
                        sub.add_input(name, graph.value_type(v).clone())
                    }
                };
                map.insert(v, w);
            }
            ins.push(Some(map[&v]));
        }
        let node = graph.node(m);
        let n = sub.add_node_typed(node.op.clone(), node.name.clone(), &ins, node.outputs.clone());
        map.insert(Value::new(m, 0), Value::new(n, 0));
    }
    let mut outs = Vec::new();
    for &m in members {
        let v = Value::new(m, 0);
        let read_outside = graph.uses_of(v).iter().any(|(c, _)| !inside.contains(c));
        if read_outside || outputs.contains(&v) {
            sub.add_output(graph.node(m).name.clone(), map[&v]);
            outs.push(v);
        }
    }
    (sub, external, outs)
}
