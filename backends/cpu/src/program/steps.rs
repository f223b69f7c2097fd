//! Building steps: the units a graph's nodes form (an anchor with its epilogue chain, an
//! elementwise group, a lone node), their run order, and the step each becomes.

use super::{body_names, err, Arg, Link, Step};
use crate::kernels;
use kiln_backends::BackendError;
use kiln_ir::{Graph, NodeId, Op, Tensor, Value};
use std::collections::{HashMap, HashSet};

/// What one step covers: an anchor and its epilogue chain (a lone node has an empty
/// chain), or an elementwise group run as one generated kernel.
pub(super) enum Unit {
    Chain(NodeId, Vec<NodeId>),
    Group(Vec<NodeId>),
}

impl Unit {
    fn nodes(&self) -> Vec<NodeId> {
        match self {
            Unit::Chain(a, tail) => std::iter::once(*a).chain(tail.iter().copied()).collect(),
            Unit::Group(members) => members.clone(),
        }
    }
}

pub(super) fn slot(slots: &mut HashMap<Value, usize>, v: Value) -> usize {
    let next = slots.len();
    *slots.entry(v).or_insert(next)
}

/// Units in an order where each runs after those it reads from (ties: the unit whose first
/// node comes first in `position`); `None` on a cycle.
pub(super) fn sort_units(
    graph: &Graph,
    units: &[Unit],
    unit_of: &HashMap<NodeId, usize>,
    position: &HashMap<NodeId, usize>,
) -> Option<Vec<usize>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut deps: Vec<HashSet<usize>> = vec![HashSet::new(); units.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); units.len()];
    let mut first = vec![usize::MAX; units.len()];
    for (u, unit) in units.iter().enumerate() {
        for n in unit.nodes() {
            first[u] = first[u].min(position[&n]);
            for v in graph.inputs_of(n).into_iter().flatten() {
                if let Some(&d) = unit_of.get(&v.node) {
                    if d != u && deps[u].insert(d) {
                        users[d].push(u);
                    }
                }
            }
        }
    }
    let mut missing: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..units.len())
        .filter(|&u| missing[u] == 0)
        .map(|u| Reverse((first[u], u)))
        .collect();
    let mut out = Vec::with_capacity(units.len());
    while let Some(Reverse((_, u))) = ready.pop() {
        out.push(u);
        for &w in &users[u] {
            missing[w] -= 1;
            if missing[w] == 0 {
                ready.push(Reverse((first[w], w)));
            }
        }
    }
    (out.len() == units.len()).then_some(out)
}

/// The step for `anchor` and its epilogue chain `tail` (empty for a lone node).
#[allow(clippy::too_many_arguments)]
pub(super) fn chain_step(
    graph: &Graph,
    anchor: NodeId,
    tail: &[NodeId],
    known: &HashMap<Value, Tensor>,
    uses: &HashMap<Value, usize>,
    outputs: &HashSet<Value>,
    slots: &mut HashMap<Value, usize>,
    consts: &mut Vec<(usize, Tensor)>,
    const_slots: &mut HashSet<Value>,
) -> Result<Step, BackendError> {
    let node = graph.node(anchor);
    let mut step_inputs: Vec<Value> = Vec::new();
    // `done`: the chain's nodes so far, whose results are links, not step inputs.
    fn arg_of(
        step_inputs: &mut Vec<Value>,
        v: Option<Value>,
        cur: Option<Value>,
        done: &[NodeId],
    ) -> Arg {
        match v {
            None => Arg::Absent,
            Some(v) if Some(v) == cur => Arg::Cur,
            Some(v) if v.output == 0 && done.contains(&v.node) => {
                Arg::Link(done.iter().position(|&n| n == v.node).unwrap_or(0))
            }
            Some(v) => Arg::Input(step_inputs.iter().position(|&x| x == v).unwrap_or_else(|| {
                step_inputs.push(v);
                step_inputs.len() - 1
            })),
        }
    }
    let mut chain = Vec::new();
    let mut cur = None;
    let mut done: Vec<NodeId> = Vec::new();
    for &m in std::iter::once(&anchor).chain(tail) {
        let args = graph
            .inputs_of(m)
            .into_iter()
            .map(|v| arg_of(&mut step_inputs, v, cur, &done))
            .collect();
        done.push(m);
        let mnode = graph.node(m);
        chain.push(Link {
            op: mnode.op.clone(),
            args,
            n_outputs: mnode.outputs.len(),
        });
        cur = Some(Value::new(m, 0));
    }
    let last = *tail.last().unwrap_or(&anchor);
    let last_node = graph.node(last);
    let mut inputs = Vec::new();
    for &v in &step_inputs {
        if let Some(t) = known.get(&v) {
            if const_slots.insert(v) {
                consts.push((slot(slots, v), t.clone()));
            }
        }
        inputs.push(Some(slot(slots, v)));
    }
    let outputs_of: Vec<Option<usize>> = (0..last_node.outputs.len())
        .map(|k| {
            let v = Value::new(last, k);
            (uses.contains_key(&v) || outputs.contains(&v)).then(|| slot(slots, v))
        })
        .collect();
    let nodes: Vec<NodeId> = std::iter::once(anchor)
        .chain(tail.iter().copied())
        .collect();
    let kernel = kernels::select(graph, &nodes, &step_inputs, &chain[0].args, known)
        .map_err(|e| err(&node.name, e.message))?;
    let kind = format!("{} ({})", kernels::kind_name(graph, &nodes), kernel.label());
    let names = match &node.op {
        Op::Fused { body } => body_names(body),
        _ => nodes.iter().map(|&m| graph.node(m).name.clone()).collect(),
    };
    Ok(Step {
        kernel,
        chain,
        inputs,
        outputs: outputs_of,
        dtypes: last_node.outputs.iter().map(|t| t.dtype).collect(),
        last_use: Vec::new(),
        nodes: names,
        kind,
    })
}

/// The step for an elementwise group: one generated kernel over the group as a graph.
pub(super) fn group_step(
    graph: &Graph,
    members: &[NodeId],
    known: &HashMap<Value, Tensor>,
    outputs: &HashSet<Value>,
    slots: &mut HashMap<Value, usize>,
) -> Result<Step, BackendError> {
    let (sub, external, outs) = kernels::subgraph(graph, members, known, outputs);
    let fallback = super::compile_with(&sub, false)?;
    let names: Vec<String> = members
        .iter()
        .map(|&m| graph.node(m).name.clone())
        .collect();
    let kernel = kernels::group_kernel(sub, fallback);
    let kind = format!("{} ({})", kernels::kind_name(graph, members), kernel.label());
    Ok(Step {
        kernel,
        chain: Vec::new(),
        inputs: external.iter().map(|&v| Some(slot(slots, v))).collect(),
        outputs: outs.iter().map(|&v| Some(slot(slots, v))).collect(),
        dtypes: outs.iter().map(|&v| graph.value_type(v).dtype).collect(),
        last_use: Vec::new(),
        nodes: names,
        kind,
    })
}
