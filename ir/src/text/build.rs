//! Syntax to graph.

use super::lex::{error_at, Label, Pos};
use super::parse::{Param, Ref, Stmt};
use crate::error::Result;
use crate::graph::{Graph, Node, NodeId, Value};
use crate::op::Op;
use std::collections::{HashMap, HashSet};

/// Syntax to graph: names resolved in order (a value is used after its definition), input
/// nodes first except those placed by `input` lines, types as written.
pub(super) fn build(
    name: String,
    inputs: Vec<Param>,
    outputs: Vec<Param>,
    stmts: Vec<Stmt>,
    rets: Vec<Ref>,
    ret_pos: Pos,
) -> Result<Graph> {
    let mut g = Graph::new(name);
    let mut sig: HashMap<&str, usize> = HashMap::new();
    for (i, p) in inputs.iter().enumerate() {
        if sig.insert(p.name.as_str(), i).is_some() {
            return Err(error_at(
                p.pos,
                format!("two graph inputs are named {}", Label::Name(p.name.clone())),
            ));
        }
    }
    let mut placed = HashSet::new();
    for s in &stmts {
        if let Stmt::Input { name, pos } = s {
            if !sig.contains_key(name.as_str()) {
                return Err(error_at(
                    *pos,
                    format!("%{} is not an input of this graph", Label::Name(name.clone())),
                ));
            }
            if !placed.insert(name.as_str()) {
                return Err(error_at(
                    *pos,
                    format!("input %{} is placed twice", Label::Name(name.clone())),
                ));
            }
        }
    }

    // (node, number of outputs) for each `%` and `@` label defined so far.
    let mut values: HashMap<(char, Label), (NodeId, usize)> = HashMap::new();
    let mut input_nodes: Vec<Option<NodeId>> = vec![None; inputs.len()];
    let add_input = |g: &mut Graph, p: &Param| {
        g.nodes.add_node(Node {
            op: Op::Input,
            name: p.name.clone(),
            outputs: vec![p.ty.clone()],
            arity: 0,
        })
    };
    for (i, p) in inputs.iter().enumerate() {
        if !placed.contains(p.name.as_str()) {
            let n = add_input(&mut g, p);
            input_nodes[i] = Some(n);
            values.insert(('%', Label::Name(p.name.clone())), (n, 1));
        }
    }

    for s in stmts {
        match s {
            Stmt::Input { name, .. } => {
                let Some(&i) = sig.get(name.as_str()) else { continue };
                let Some(p) = inputs.get(i) else { continue };
                let n = add_input(&mut g, p);
                if let Some(slot) = input_nodes.get_mut(i) {
                    *slot = Some(n);
                }
                values.insert(('%', Label::Name(name)), (n, 1));
            }
            Stmt::Const {
                label,
                value,
                name,
                pos,
            } => {
                if values.contains_key(&('@', label.clone())) {
                    return Err(error_at(pos, format!("@{label} is defined twice")));
                }
                let name = name.unwrap_or_else(|| match &label {
                    Label::Name(s) => s.clone(),
                    Label::Id(_) => String::new(),
                });
                let n = g.add_const(name, value).node;
                values.insert(('@', label), (n, 1));
            }
            Stmt::Node {
                id,
                op,
                args,
                outputs,
                name,
                pos,
            } => {
                if values.contains_key(&('%', Label::Id(id))) {
                    return Err(error_at(pos, format!("%{id} is defined twice")));
                }
                let ins = args
                    .iter()
                    .map(|a| a.as_ref().map(|r| resolve(&values, r)).transpose())
                    .collect::<Result<Vec<_>>>()?;
                let n_out = outputs.len();
                let n = g.add_node_typed(op, name, &ins, outputs);
                values.insert(('%', Label::Id(id)), (n, n_out));
            }
        }
    }
    g.inputs = input_nodes.into_iter().flatten().collect();

    if rets.len() != outputs.len() {
        return Err(error_at(
            ret_pos,
            format!(
                "the graph declares {} outputs but returns {} values",
                outputs.len(),
                rets.len()
            ),
        ));
    }
    for (p, r) in outputs.into_iter().zip(&rets) {
        let v = resolve(&values, r)?;
        let ty = g.value_type(v);
        if *ty != p.ty {
            return Err(error_at(
                r.pos,
                format!(
                    "output %{} is declared {} but {r} is {}",
                    Label::Name(p.name.clone()),
                    super::print::type_text(&p.ty),
                    super::print::type_text(ty)
                ),
            ));
        }
        g.add_output(p.name, v);
    }
    Ok(g)
}

fn resolve(values: &HashMap<(char, Label), (NodeId, usize)>, r: &Ref) -> Result<Value> {
    let Some(&(node, n_out)) = values.get(&(r.sigil, r.label.clone())) else {
        return Err(error_at(r.pos, format!("{r} is not defined before this point")));
    };
    match r.index {
        None if n_out == 1 => Ok(Value::new(node, 0)),
        None => Err(error_at(
            r.pos,
            format!("{r} has {n_out} outputs; say which one, as in {r}.0"),
        )),
        Some(i) if i < n_out => Ok(Value::new(node, i)),
        Some(i) => Err(error_at(
            r.pos,
            format!("{r} asks for output {i} but the node has {n_out}"),
        )),
    }
}
