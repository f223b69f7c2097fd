//! Graph → e-graph → graph.
//!
//! Into the e-graph: nodes in topological order; graph types are recorded on their classes
//! (they win over inferred ones); each class remembers the source node it came from.
//! Multi-output ops and ops holding graphs become opaque `Multi` nodes read through
//! `Output` projections, so no rule looks through them.
//!
//! Back: the chosen node of each class reachable from the outputs, built depth-first from
//! the outputs in order, named after its class's source node (so profiles speak the user's
//! names), with the class's types. Inputs and output names stay as they were.

use super::analysis::{KilnAnalysis, EG};
use super::lang::{ENode, Kind};
use egg::{Id, Language};
use kiln_ir::{Graph, IrError, NodeId, Op, Result, Value};
use std::collections::{HashMap, HashSet};

/// The e-graph of `g`, the class of each graph output, and the source graph's e-nodes.
pub struct Converted {
    pub egraph: EG,
    pub roots: Vec<Id>,
    pub originals: Vec<ENode>,
}

pub fn to_egraph(g: &Graph) -> Result<Converted> {
    let order = g.topo_order()?;
    let mut analysis = KilnAnalysis::default();
    analysis.inputs = g.inputs.iter().map(|&n| g.node(n).outputs[0].clone()).collect();
    let mut eg = EG::new(analysis);
    let none = eg.add(ENode::leaf(Kind::None));
    // Class of each single-output node, or of each multi-output node's tuple.
    let mut class: HashMap<NodeId, Id> = HashMap::with_capacity(order.len());
    let mut originals = Vec::with_capacity(order.len());
    let input_pos: HashMap<NodeId, usize> = g.inputs.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    for (pos, &n) in order.iter().enumerate() {
        let node = g.node(n);
        let enode = match &node.op {
            Op::Input => ENode::leaf(Kind::Input(input_pos[&n] as u32)),
            Op::Const { value } => ENode::leaf(Kind::Const(eg.analysis.intern_const(value.clone(), Some(n.index())))),
            op => {
                let mut children = Vec::with_capacity(node.arity);
                for v in g.inputs_of(n) {
                    children.push(match v {
                        None => none,
                        Some(v) => value_class(&mut eg, g, &class, v)?,
                    });
                }
                let opaque = !op.subgraphs().is_empty() || !op.is_pure();
                let identity = opaque.then_some(n.index());
                if node.outputs.len() == 1 && !opaque {
                    ENode { kind: Kind::Op(eg.analysis.intern_op(op.clone(), 1, None)), children }
                } else {
                    ENode { kind: Kind::Multi(eg.analysis.intern_op(op.clone(), node.outputs.len(), identity)), children }
                }
            }
        };
        let id = eg.add(enode.clone());
        originals.push(enode);
        let data = &mut eg[id].data;
        if !data.from_graph {
            data.types = node.outputs.clone();
            data.from_graph = true;
        }
        if data.origin.is_none() {
            data.origin = Some((pos, node.name.clone()));
        }
        data.uses = data.uses.max(if node.outputs.len() == 1 { readers(g, Value::new(n, 0)) } else { node.outputs.len() });
        class.insert(n, id);
    }
    let mut roots = Vec::with_capacity(g.outputs.len());
    for (_, v) in &g.outputs {
        roots.push(value_class(&mut eg, g, &class, *v)?);
    }
    Ok(Converted { egraph: eg, roots, originals })
}

fn value_class(eg: &mut EG, g: &Graph, class: &HashMap<NodeId, Id>, v: Value) -> Result<Id> {
    let c = *class.get(&v.node).ok_or_else(|| IrError::at(g.node(v.node).name.clone(), "used before it is defined"))?;
    if matches!(eg[c].nodes.first().map(|n| n.kind), Some(Kind::Multi(_))) {
        let id = eg.add(ENode { kind: Kind::Output(v.output as u32), children: vec![c] });
        let uses = readers(g, v);
        let data = &mut eg[id].data;
        data.uses = data.uses.max(uses);
        Ok(id)
    } else {
        Ok(c)
    }
}

/// Nodes and graph outputs reading `v`.
fn readers(g: &Graph, v: Value) -> usize {
    let mut nodes: Vec<NodeId> = g.uses_of(v).into_iter().map(|u| u.0).collect();
    nodes.dedup();
    nodes.len() + g.outputs.iter().filter(|o| o.1 == v).count()
}

/// What a class became in the new graph.
#[derive(Clone, Copy)]
enum Built {
    Value(Value),
    Tuple(NodeId),
    Absent,
}

/// Builds the graph of the chosen nodes, with `old`'s inputs and output names. Chosen
/// nodes that rules made and that compute from constants only (new weights: W·s, b·s + c)
/// are computed here, so the graph holds weights, not recipes for them.
pub fn to_graph(eg: &EG, old: &Graph, roots: &[Id], choice: &HashMap<Id, ENode>, originals: &HashSet<ENode>) -> Result<Graph> {
    let mut g = Graph::new(old.name.clone());
    let mut built: HashMap<Id, Built> = HashMap::new();
    let inputs: Vec<Value> = old.inputs.iter().map(|&n| g.add_input(old.node(n).name.clone(), old.node(n).outputs[0].clone())).collect();
    let mut names: HashSet<String> = old.inputs.iter().map(|&n| old.node(n).name.clone()).collect();
    for &root in roots {
        // Depth-first without recursion: deep graphs must not overflow the stack.
        let mut stack = vec![(eg.find(root), false)];
        while let Some((id, expanded)) = stack.pop() {
            if built.contains_key(&id) {
                continue;
            }
            let node = choice.get(&id).ok_or_else(|| IrError::msg("e-graph extraction left a needed value without a node"))?;
            if !expanded {
                stack.push((id, true));
                for &c in node.children().iter().rev() {
                    let c = eg.find(c);
                    if !built.contains_key(&c) {
                        stack.push((c, false));
                    }
                }
                continue;
            }
            let b = build(eg, &mut g, &inputs, &mut names, id, node, &built, !originals.contains(node))?;
            built.insert(id, b);
        }
    }
    for ((name, _), &root) in old.outputs.iter().zip(roots) {
        match built.get(&eg.find(root)) {
            Some(Built::Value(v)) => g.add_output(name.clone(), *v),
            _ => return Err(IrError::msg(format!("output {name} did not come back from the e-graph"))),
        }
    }
    // Constants that only fed folded constants.
    g.remove_dead();
    Ok(g)
}

#[allow(clippy::too_many_arguments)]
fn build(
    eg: &EG,
    g: &mut Graph,
    inputs: &[Value],
    names: &mut HashSet<String>,
    id: Id,
    node: &ENode,
    built: &HashMap<Id, Built>,
    made_by_rules: bool,
) -> Result<Built> {
    let data = &eg[id].data;
    let mut name = || {
        let base = data.origin.as_ref().map(|o| o.1.clone()).or_else(|| data.hint.clone()).unwrap_or_else(|| format!("egraph{id}"));
        let mut name = base.clone();
        let mut k = 1;
        while !names.insert(name.clone()) {
            k += 1;
            name = format!("{base}_{k}");
        }
        name
    };
    let kid = |c: &Id| built.get(&eg.find(*c)).copied().ok_or_else(|| IrError::msg("e-graph extraction chose a cycle"));
    Ok(match node.kind {
        Kind::Input(i) => Built::Value(inputs[i as usize]),
        Kind::None => Built::Absent,
        Kind::Const(c) => Built::Value(g.add_const(name(), eg.analysis.constant(c).clone())),
        Kind::Output(k) => match kid(&node.children[0])? {
            Built::Tuple(n) => Built::Value(Value::new(n, k as usize)),
            _ => return Err(IrError::msg("an output projection of something that is not a tuple")),
        },
        Kind::Op(o) | Kind::Multi(o) => {
            let mut ins = Vec::with_capacity(node.children.len());
            for c in &node.children {
                ins.push(match kid(c)? {
                    Built::Value(v) => Some(v),
                    Built::Absent => None,
                    Built::Tuple(_) => return Err(IrError::msg("a tuple used as a value")),
                });
            }
            let op = eg.analysis.op(o);
            if made_by_rules && matches!(node.kind, Kind::Op(_)) && op.is_pure() {
                let consts: Option<Vec<Option<kiln_ir::Tensor>>> =
                    ins.iter().map(|v| v.map_or(Some(None), |v| g.const_value(v).map(|t| Some(t.clone())))).collect();
                if let Some(args) = consts {
                    let mut out = kiln_ir::eval::eval_op(op, &args, 1).map_err(|e| e.in_node(name()))?;
                    let t = out.pop().ok_or_else(|| IrError::msg("a constant expression gave no value"))?;
                    if !data.types.first().is_some_and(|ty| kiln_ir::verify::compatible(ty, &kiln_ir::TensorType::known(t.dtype(), t.shape()))) {
                        return Err(IrError::msg("a folded constant does not have its class's type"));
                    }
                    return Ok(Built::Value(g.add_const(name(), t)));
                }
            }
            let n = g.add_node_typed(op.clone(), name(), &ins, data.types.clone());
            if matches!(node.kind, Kind::Multi(_)) {
                Built::Tuple(n)
            } else {
                Built::Value(Value::new(n, 0))
            }
        }
    })
}
