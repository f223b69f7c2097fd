//! Replacing a group of nodes by one `Op::Fused` node holding them as its body.

use super::partition::Group;
use kiln_ir::{Edge, Graph, NodeId, Op, Result, Value};
use std::collections::{HashMap, HashSet};

/// Replaces the nodes of `grp` (two or more, convex) in `g` by one fused kernel node.
pub(crate) fn fuse(g: &mut Graph, grp: &Group) -> Result<()> {
    let members: HashSet<NodeId> = grp.nodes.iter().copied().collect();
    let graph_outputs: HashSet<Value> = g.outputs.iter().map(|(_, v)| *v).collect();
    let mut body = Graph::new(kind(g, grp));
    let mut inside: HashMap<Value, Value> = HashMap::new();
    let mut kernel_inputs: Vec<Value> = Vec::new();
    let mut used_consts: Vec<NodeId> = Vec::new();
    // The kernel's inputs first, so that the body lists them in order before its nodes.
    for &m in &grp.nodes {
        for v in g.inputs_of(m).into_iter().flatten() {
            let outside =
                !members.contains(&v.node) && !matches!(g.node(v.node).op, Op::Const { .. });
            if outside && !inside.contains_key(&v) {
                kernel_inputs.push(v);
                let name = format!("x{}", kernel_inputs.len() - 1);
                inside.insert(v, body.add_input(name, g.value_type(v).clone()));
            }
        }
    }
    for &m in &grp.nodes {
        let ins = g.inputs_of(m);
        let mut body_ins = Vec::with_capacity(ins.len());
        for v in ins {
            let Some(v) = v else {
                body_ins.push(None);
                continue;
            };
            if !inside.contains_key(&v) {
                let src = g.node(v.node);
                // Only constants are left: weights and scalars go inside, where a backend
                // sees them when it compiles.
                used_consts.push(v.node);
                let b =
                    body.add_node_typed(src.op.clone(), src.name.clone(), &[], src.outputs.clone());
                inside.insert(v, b.into());
            }
            body_ins.push(Some(inside[&v]));
        }
        let node = g.node(m);
        let b = body.add_node_typed(
            node.op.clone(),
            node.name.clone(),
            &body_ins,
            node.outputs.clone(),
        );
        for k in 0..node.outputs.len() {
            inside.insert(Value::new(m, k), Value::new(b, k));
        }
    }
    // Every value read outside the kernel (or returned by the graph) is a kernel output.
    let mut kernel_outputs: Vec<Value> = Vec::new();
    for &m in &grp.nodes {
        for k in 0..g.node(m).outputs.len() {
            let v = Value::new(m, k);
            if graph_outputs.contains(&v) || g.uses_of(v).iter().any(|(c, _)| !members.contains(c))
            {
                kernel_outputs.push(v);
            }
        }
    }
    if kernel_outputs.is_empty() {
        // Dead code: keep one output so the node stays well formed; dead code elimination
        // is another pass's job.
        let last = *grp.nodes.last().expect("a group has nodes");
        kernel_outputs.push(Value::new(last, 0));
    }
    for (i, v) in kernel_outputs.iter().enumerate() {
        body.add_output(format!("y{i}"), inside[v]);
    }
    let name = g.node(grp.anchor.unwrap_or(grp.nodes[0])).name.clone();
    let types = kernel_outputs
        .iter()
        .map(|&v| g.value_type(v).clone())
        .collect();
    let ins: Vec<Option<Value>> = kernel_inputs.iter().map(|&v| Some(v)).collect();
    let fused = g.add_node_typed(
        Op::Fused {
            body: Box::new(body),
        },
        name,
        &ins,
        types,
    );
    for (i, &v) in kernel_outputs.iter().enumerate() {
        for (c, slot) in g.uses_of(v) {
            if !members.contains(&c) {
                g.nodes.add_edge(
                    fused,
                    c,
                    Edge {
                        output: i,
                        input: slot,
                    },
                );
            }
        }
        for (_, out) in g.outputs.iter_mut() {
            if *out == v {
                *out = Value::new(fused, i);
            }
        }
    }
    for &m in &grp.nodes {
        g.nodes.remove_node(m);
    }
    // Constants only the kernel used now live in its body alone.
    let outer_outputs: HashSet<NodeId> = g.outputs.iter().map(|(_, v)| v.node).collect();
    for c in used_consts {
        if g.nodes.contains_node(c)
            && !outer_outputs.contains(&c)
            && g.nodes.neighbors(c).next().is_none()
        {
            g.nodes.remove_node(c);
        }
    }
    Ok(())
}

/// The kernel's kind: its ops' names joined by '+', the anchor first, then the others in
/// topological order ("conv+add+relu").
fn kind(g: &Graph, grp: &Group) -> String {
    let mut names: Vec<&str> = Vec::with_capacity(grp.nodes.len());
    if let Some(a) = grp.anchor {
        names.push(g.node(a).op.name());
    }
    names.extend(
        grp.nodes
            .iter()
            .filter(|&&m| Some(m) != grp.anchor)
            .map(|&m| g.node(m).op.name()),
    );
    names.join("+")
}
