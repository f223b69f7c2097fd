//! A compiled graph: steps in topological order over a per-request table of values.
//!
//! Compiling numbers every value the run needs (graph inputs, constants that some step
//! reads, kernel outputs), folds nodes whose inputs are all constants, matches epilogues
//! (an anchor followed by bias adds, a residual add and relu/clip, see [`crate::kernels`]),
//! and records after which step each value is read for the last time, so that a run drops
//! each intermediate as soon as nothing needs it.

mod steps;

use crate::device::{Ctx, DEVICE};
use crate::kernels::{self, KernelImpl};
use kiln_backends::{BackendError, KernelTiming};
use kiln_ir::{Graph, IrError, NodeId, Op, Tensor, Value};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use steps::{chain_step, group_step, slot, sort_units, Unit};

/// Where a link of a chain takes an input from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// The previous link's result.
    Cur,
    /// The result of an earlier link (an activation reads the anchor's result twice:
    /// `mul(v, sigmoid(v))`).
    Link(usize),
    /// The step's input `i`.
    Input(usize),
    /// An absent optional input.
    Absent,
}

/// One node of a step: its op and where its inputs come from. A step's chain is the
/// anchor node followed by the nodes fused into its epilogue; replaying the chain with
/// `ir::eval` is every step's reference behaviour and its fallback.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub op: Op,
    pub args: Vec<Arg>,
    pub n_outputs: usize,
}

/// One kernel launch.
pub(crate) struct Step {
    pub kernel: KernelImpl,
    pub chain: Vec<Link>,
    /// Table slots of the step's inputs (`None`: absent optional input).
    pub inputs: Vec<Option<usize>>,
    /// Table slots for the step's outputs (`None`: an output nothing reads).
    pub outputs: Vec<Option<usize>>,
    /// Declared dtypes of the outputs, checked after fallbacks.
    pub dtypes: Vec<kiln_ir::DType>,
    /// Slots read for the last time by this step.
    pub last_use: Vec<usize>,
    /// Source names of the nodes the step covers.
    pub nodes: Vec<String>,
    /// For profiles: "conv+add+relu (gemm)", "softmax (eval)".
    pub kind: String,
}

/// A compiled graph.
pub struct Plan {
    slots: usize,
    inputs: Vec<usize>,
    consts: Vec<(usize, Tensor)>,
    pub(crate) steps: Vec<Step>,
    outputs: Vec<usize>,
}

/// Results above this many elements are not folded at compile time (a constant-shaped
/// `Expand` of a scalar to a huge tensor should cost memory only while it runs).
const FOLD_MAX_ELEMENTS: usize = 1 << 24;

fn err(node: &str, message: impl Into<String>) -> BackendError {
    BackendError {
        device: DEVICE.into(),
        node: Some(node.into()),
        message: message.into(),
    }
}

/// Compiles `graph` (the top-level program or a fused kernel's body).
pub fn compile(graph: &Graph) -> Result<Plan, BackendError> {
    compile_with(graph, true)
}

/// `groups`: whether elementwise nodes are grouped into generated kernels (a group's own
/// fallback plan is compiled without, one `ir::eval` step per node).
pub(crate) fn compile_with(graph: &Graph, groups: bool) -> Result<Plan, BackendError> {
    let order = graph
        .topo_order()
        .map_err(|e| BackendError::from_ir(DEVICE, e))?;
    let known = fold_constants(graph, &order);

    // How many times each value is read by nodes that will run, and by the outputs.
    let mut uses: HashMap<Value, usize> = HashMap::new();
    for &n in &order {
        if is_folded(graph, &known, n) || matches!(graph.node(n).op, Op::Input) {
            continue;
        }
        for v in graph.inputs_of(n).into_iter().flatten() {
            *uses.entry(v).or_insert(0) += 1;
        }
    }
    let outputs: HashSet<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();

    // Epilogue chains: anchor node → the nodes fused after it.
    let mut chains: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    let mut absorbed: HashSet<NodeId> = HashSet::new();
    for &n in &order {
        if is_folded(graph, &known, n) {
            continue;
        }
        let mut tail = kernels::match_epilogue(graph, n, &known, &uses, &outputs);
        // An add of two anchors' results belongs to the first anchor's chain only.
        if let Some(taken) = tail.iter().position(|m| absorbed.contains(m)) {
            tail.truncate(taken);
        } else if kernels::takes_activation(graph, n, &known) {
            // A kernel that applies an activation in registers takes it after its epilogue.
            let last = Value::new(*tail.last().unwrap_or(&n), 0);
            let reads =
                |v: Value| uses.get(&v).copied().unwrap_or(0) + outputs.contains(&v) as usize;
            if let Some((_, nodes)) = kernels::recognise_activation(graph, last, &known, &reads) {
                if !nodes.iter().any(|m| absorbed.contains(m)) {
                    tail.extend(nodes);
                }
            }
        }
        if !tail.is_empty() {
            absorbed.extend(tail.iter().copied());
            chains.insert(n, tail);
        }
    }

    // The steps' units, then their order: a unit runs when every unit it reads from has.
    let mut units: Vec<Unit> = Vec::new();
    let mut unit_of: HashMap<NodeId, usize> = HashMap::new();
    if groups {
        let skip: HashSet<NodeId> = order
            .iter()
            .copied()
            .filter(|&n| {
                is_folded(graph, &known, n) || chains.contains_key(&n) || absorbed.contains(&n)
            })
            .collect();
        for members in kernels::find_groups(graph, &order, &skip) {
            for &m in &members {
                unit_of.insert(m, units.len());
            }
            units.push(Unit::Group(members));
        }
    }
    for &n in &order {
        let node = graph.node(n);
        if matches!(node.op, Op::Input)
            || is_folded(graph, &known, n)
            || absorbed.contains(&n)
            || unit_of.contains_key(&n)
        {
            continue;
        }
        let tail = chains.get(&n).cloned().unwrap_or_default();
        unit_of.insert(n, units.len());
        for &m in &tail {
            unit_of.insert(m, units.len());
        }
        units.push(Unit::Chain(n, tail));
    }
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let Some(sorted) = sort_units(graph, &units, &unit_of, &position) else {
        // Groups are convex by construction; should one not be, steps without groups
        // are always in order.
        return if groups {
            compile_with(graph, false)
        } else {
            Err(err(
                &graph.name,
                "the steps of this graph cannot be ordered",
            ))
        };
    };

    let mut slots: HashMap<Value, usize> = HashMap::new();
    let mut plan = Plan {
        slots: 0,
        inputs: Vec::new(),
        consts: Vec::new(),
        steps: Vec::new(),
        outputs: Vec::new(),
    };
    for &n in &graph.inputs {
        plan.inputs.push(slot(&mut slots, Value::new(n, 0)));
    }
    let mut const_slots = HashSet::new();
    for u in sorted {
        let step = match &units[u] {
            Unit::Chain(anchor, tail) => chain_step(
                graph,
                *anchor,
                tail,
                &known,
                &uses,
                &outputs,
                &mut slots,
                &mut plan.consts,
                &mut const_slots,
            )?,
            Unit::Group(members) => group_step(graph, members, &known, &outputs, &mut slots)?,
        };
        plan.steps.push(step);
    }
    for (_, v) in &graph.outputs {
        if let Some(t) = known.get(v) {
            if const_slots.insert(*v) {
                plan.consts.push((slot(&mut slots, *v), t.clone()));
            }
        }
        plan.outputs.push(slot(&mut slots, *v));
    }
    plan.slots = slots.len();
    plan.mark_last_uses();
    Ok(plan)
}

/// The names of a fused body's computing nodes, in order.
fn body_names(body: &Graph) -> Vec<String> {
    let order = body.topo_order().unwrap_or_default();
    order
        .into_iter()
        .map(|n| body.node(n))
        .filter(|n| !matches!(n.op, Op::Input | Op::Const { .. }))
        .map(|n| n.name.clone())
        .collect()
}

fn is_folded(graph: &Graph, known: &HashMap<Value, Tensor>, n: NodeId) -> bool {
    !matches!(graph.node(n).op, Op::Input) && known.contains_key(&Value::new(n, 0))
}

/// Constants, and the outputs of nodes whose inputs are all constants, evaluated once
/// here (weights stored as f16 and cast back, transposed or reshaped weights). A node
/// whose evaluation fails is left to fail at run time, where the error belongs.
fn fold_constants(graph: &Graph, order: &[NodeId]) -> HashMap<Value, Tensor> {
    let mut known = HashMap::new();
    for &n in order {
        let node = graph.node(n);
        match &node.op {
            Op::Input => continue,
            Op::Const { value } => {
                known.insert(Value::new(n, 0), value.clone());
                continue;
            }
            op if !op.is_pure() => continue,
            _ => {}
        }
        let ins = graph.inputs_of(n);
        if ins.is_empty() || ins.iter().flatten().any(|v| !known.contains_key(v)) {
            continue;
        }
        let small_inputs = ins.iter().flatten().all(|v| known[v].len() <= 4096);
        let bounded = node
            .outputs
            .iter()
            .all(|t| t.shape.numel().is_some_and(|k| k <= FOLD_MAX_ELEMENTS));
        if !(bounded || small_inputs) {
            continue;
        }
        let args: Vec<Option<Tensor>> = ins.iter().map(|v| v.map(|v| known[&v].clone())).collect();
        let Ok(outs) = kiln_ir::eval::eval_op(&node.op, &args, node.outputs.len()) else {
            continue;
        };
        let fits = outs.len() == node.outputs.len()
            && outs
                .iter()
                .zip(&node.outputs)
                .all(|(t, ty)| t.dtype() == ty.dtype && t.len() <= FOLD_MAX_ELEMENTS);
        if fits {
            for (k, t) in outs.into_iter().enumerate() {
                known.insert(Value::new(n, k), t);
            }
        }
    }
    known
}

impl Plan {
    fn mark_last_uses(&mut self) {
        let kept: HashSet<usize> = self.outputs.iter().copied().collect();
        let mut seen = HashSet::new();
        for step in self.steps.iter_mut().rev() {
            for s in step.inputs.iter().flatten() {
                if !kept.contains(s) && seen.insert(*s) {
                    step.last_use.push(*s);
                }
            }
        }
    }

    /// Number of steps (kernel launches).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Each step's kind, in order ("conv+relu (gemm)", "softmax (eval)").
    pub fn kinds(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.kind.clone()).collect()
    }

    /// Runs the plan on `inputs` (graph input order), appending one timing per step.
    pub(crate) fn run(
        &self,
        ctx: &Ctx,
        inputs: &[Tensor],
        mut profile: Option<&mut Vec<KernelTiming>>,
    ) -> Result<Vec<Tensor>, IrError> {
        if inputs.len() != self.inputs.len() {
            return Err(IrError::msg(format!(
                "the graph takes {} inputs, {} were given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut table: Vec<Option<Tensor>> = vec![None; self.slots];
        for (slot, t) in &self.consts {
            table[*slot] = Some(t.clone());
        }
        for (&slot, t) in self.inputs.iter().zip(inputs) {
            table[slot] = Some(t.clone());
        }
        for step in &self.steps {
            let start = profile.as_ref().map(|_| Instant::now());
            let mut args = Vec::with_capacity(step.inputs.len());
            for s in &step.inputs {
                args.push(match s {
                    None => None,
                    Some(s) => Some(table[*s].clone().ok_or_else(|| {
                        IrError::at(
                            step.nodes.first().cloned().unwrap_or_default(),
                            "an input value was never computed",
                        )
                    })?),
                });
            }
            // Dropped before the kernel runs: the kernel then holds the only reference.
            for &s in &step.last_use {
                table[s] = None;
            }
            let outs = kernels::run(step, ctx, &args).map_err(|e| match e.node {
                Some(_) => e,
                None => e.in_node(step.nodes.last().cloned().unwrap_or_default()),
            })?;
            if outs.len() != step.outputs.len() {
                return Err(IrError::msg(format!(
                    "{} gave {} outputs, expected {}",
                    step.kind,
                    outs.len(),
                    step.outputs.len()
                )));
            }
            for (k, (t, slot)) in outs.into_iter().zip(&step.outputs).enumerate() {
                if t.dtype() != step.dtypes[k] {
                    return Err(IrError::at(
                        step.nodes.last().cloned().unwrap_or_default(),
                        format!(
                            "output {k} is {} but the graph says {}",
                            t.dtype(),
                            step.dtypes[k]
                        ),
                    ));
                }
                if let Some(slot) = slot {
                    table[*slot] = Some(t);
                }
            }
            if let (Some(p), Some(start)) = (profile.as_deref_mut(), start) {
                p.push(KernelTiming {
                    nodes: step.nodes.clone(),
                    kind: step.kind.clone(),
                    device: DEVICE.into(),
                    nanos: start.elapsed().as_nanos() as u64,
                });
            }
        }
        self.outputs
            .iter()
            .map(|&s| {
                table[s]
                    .clone()
                    .ok_or_else(|| IrError::msg("an output was never computed"))
            })
            .collect()
    }
}
