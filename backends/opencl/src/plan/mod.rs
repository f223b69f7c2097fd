//! A graph with concrete shapes, compiled: one OpenCL kernel per node or fused kernel, in
//! topological order over per-value buffers, and the run that enqueues them.
//!
//! Threads: a top-level run takes a command queue from the plan's pool, and every plan it
//! runs (itself, control-flow bodies on the same queue) lends it a set of kernel objects,
//! since kernel arguments are per kernel object; both are created when all are busy, so
//! requests in flight never share a queue or a kernel's arguments.

mod buffers;
mod run;

pub use buffers::{alloc, read, upload_tensor, DevTensor, Timed};
pub(crate) use buffers::cl_err;

use crate::device::ClDevice;
use crate::flow::{self, FlowStep, Rest};
use crate::gen::{self, Region};
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, Value};
use opencl3::command_queue::CommandQueue;
use opencl3::kernel::Kernel;
use opencl3::program::Program;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const DEVICE: &str = "OPENCL";

/// Every program names its kernels `k_0`, `k_1`, ...: each kernel is its own program, so the
/// names need only be unique inside it, and the same kernel in another place, another model
/// or another format of the model is the same source, built once (`ClDevice::program`).
const PREFIX: &str = "k";

/// Where a value lives during a run.
#[derive(Clone)]
pub(crate) enum Slot {
    /// Filled by the run (an input or a kernel's output), index into the run's table.
    Run(usize),
    /// A constant uploaded once at compile time.
    Const(usize),
}

struct Launch {
    program: Arc<Program>,
    kernel: String,
    elements: usize,
    /// The work-group size, for kernels whose groups share local memory (recurrent ops).
    local: Option<usize>,
    args: Vec<Slot>,
    /// Run slots of the outputs, one buffer argument each after `args`.
    outs: Vec<usize>,
    /// For profiles.
    nodes: Vec<String>,
    kind: String,
}

enum Step {
    Launch(Launch),
    /// A reshape: the output is the input's buffer.
    Alias { from: Slot, to: usize },
    /// If, Loop or Scan: sub-plans run from the host, on this run's queue.
    Flow(FlowStep),
    /// What follows a control-flow op whose output shapes only its run tells: the last
    /// step, compiled per shapes at run time.
    Rest(Rest),
}

pub struct Plan {
    device: Arc<ClDevice>,
    steps: Vec<Step>,
    consts: Vec<DevTensor>,
    /// (dtype, shape) of each run slot (the shape of a control-flow op's output is known
    /// at run time only).
    slots: Vec<(DType, Vec<usize>)>,
    inputs: Vec<usize>,
    outputs: Vec<Slot>,
    /// Command queues of top-level runs; a sub-plan runs on its caller's queue.
    queues: Mutex<Vec<CommandQueue>>,
    /// Kernel objects, one set per run in flight (kernel arguments live on the object).
    kernel_sets: Mutex<Vec<Vec<Option<Kernel>>>>,
}

pub fn err(node: &str, message: impl Into<String>) -> kiln_backends::BackendError {
    kiln_backends::BackendError { device: DEVICE.into(), node: Some(node.into()), message: message.into() }
}

/// Source names of what a step covers (a fused kernel's body nodes).
fn names(graph: &Graph, n: NodeId) -> Vec<String> {
    match &graph.node(n).op {
        Op::Fused { body } => body
            .topo_order()
            .unwrap_or_default()
            .into_iter()
            .map(|m| body.node(m))
            .filter(|m| !matches!(m.op, Op::Input | Op::Const { .. }))
            .map(|m| m.name.clone())
            .collect(),
        _ => vec![graph.node(n).name.clone()],
    }
}

fn is_view(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze | Op::Unary(kiln_ir::UnaryOp::Identity))
}

/// Compiles `graph`, whose shapes must all be concrete (see [`crate::specialize`]).
pub fn compile(device: Arc<ClDevice>, graph: &Graph) -> Result<Plan, kiln_backends::BackendError> {
    let order = graph.topo_order().map_err(|e| kiln_backends::BackendError::from_ir(DEVICE, e))?;
    let mut slot_of: HashMap<Value, Slot> = HashMap::new();
    let mut slots: Vec<(DType, Vec<usize>)> = Vec::new();
    let mut consts: Vec<DevTensor> = Vec::new();
    let mut const_of: HashMap<Value, usize> = HashMap::new();
    let shape_of = |v: Value, name: &str| {
        graph.value_type(v).shape.concrete().ok_or_else(|| err(name, format!("shape {} is not concrete", graph.value_type(v).shape)))
    };
    let mut inputs = Vec::new();
    for &n in &graph.inputs {
        let v = Value::new(n, 0);
        slots.push((graph.value_type(v).dtype, shape_of(v, &graph.node(n).name)?));
        slot_of.insert(v, Slot::Run(slots.len() - 1));
        inputs.push(slots.len() - 1);
    }
    let mut const_slot = |v: Value, t: &Tensor, consts: &mut Vec<DevTensor>| -> Result<Slot, kiln_backends::BackendError> {
        if let Some(&k) = const_of.get(&v) {
            return Ok(Slot::Const(k));
        }
        consts.push(upload_tensor(&device, t)?);
        const_of.insert(v, consts.len() - 1);
        Ok(Slot::Const(consts.len() - 1))
    };
    let mut steps = Vec::new();
    let mut rest_outputs: Option<Vec<usize>> = None;
    for (pos, &n) in order.iter().enumerate() {
        let node = graph.node(n);
        if matches!(node.op, Op::Input | Op::Const { .. }) {
            continue;
        }
        let ins = graph.inputs_of(n);
        if crate::specialize::is_flow(&node.op) {
            let mut args = Vec::with_capacity(ins.len());
            for v in &ins {
                args.push(match v {
                    None => None,
                    Some(v) => Some(match (slot_of.get(v), graph.const_value(*v)) {
                        (Some(s), _) => s.clone(),
                        (None, Some(t)) => const_slot(*v, t, &mut consts)?,
                        (None, None) => return Err(err(&node.name, "an input was never computed")),
                    }),
                });
            }
            let mut outs = Vec::new();
            for (k, t) in node.outputs.iter().enumerate() {
                slots.push((t.dtype, t.shape.concrete().unwrap_or_default()));
                outs.push(slots.len() - 1);
                slot_of.insert(Value::new(n, k), Slot::Run(slots.len() - 1));
            }
            steps.push(Step::Flow(flow::step(&device, graph, n, args, outs)?));
            if node.outputs.iter().all(|t| t.shape.concrete().is_some()) {
                continue;
            }
            let done: std::collections::HashSet<NodeId> = order[..=pos].iter().copied().collect();
            let (rest, live) = flow::rest_graph(graph, &done);
            let args = live
                .iter()
                .map(|v| slot_of.get(v).cloned().ok_or_else(|| err(&graph.node(v.node).name, "a value was never computed")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut outs = Vec::new();
            for (_, v) in &rest.outputs {
                slots.push((rest.value_type(*v).dtype, Vec::new()));
                outs.push(slots.len() - 1);
            }
            steps.push(Step::Rest(Rest::new(rest, device.clone(), args, outs.clone())));
            rest_outputs = Some(outs);
            break;
        }
        if is_view(&node.op) {
            if let Some(x) = ins.first().copied().flatten() {
                if graph.value_type(x).dtype == node.outputs[0].dtype {
                    let from = match (slot_of.get(&x), graph.const_value(x)) {
                        (Some(s), _) => s.clone(),
                        (None, Some(t)) => const_slot(x, t, &mut consts)?,
                        (None, None) => return Err(err(&node.name, "an input was never computed")),
                    };
                    slots.push((node.outputs[0].dtype, shape_of(Value::new(n, 0), &node.name)?));
                    let to = slots.len() - 1;
                    slot_of.insert(Value::new(n, 0), Slot::Run(to));
                    steps.push(Step::Alias { from, to });
                    continue;
                }
            }
        }
        // The region to generate and the outer slot of each of its buffers.
        let (region_graph, region_nodes, buffers, outputs, outer): (&Graph, Vec<NodeId>, Vec<Value>, Vec<Value>, Vec<Slot>) =
            match &node.op {
                Op::Fused { body } => {
                    let body: &Graph = body;
                    let border = body.topo_order().map_err(|e| kiln_backends::BackendError::from_ir(DEVICE, e))?;
                    let mut buffers = Vec::new();
                    let mut outer = Vec::new();
                    for (k, &bi) in body.inputs.iter().enumerate() {
                        let v = ins.get(k).copied().flatten().ok_or_else(|| err(&node.name, format!("kernel input {k} is missing")))?;
                        let s = match (slot_of.get(&v), graph.const_value(v)) {
                            (Some(s), _) => s.clone(),
                            (None, Some(t)) => const_slot(v, t, &mut consts)?,
                            (None, None) => return Err(err(&node.name, "an input was never computed")),
                        };
                        buffers.push(Value::new(bi, 0));
                        outer.push(s);
                    }
                    for &m in &border {
                        if let Op::Const { value } = &body.node(m).op {
                            if value.len() != 1 && !body.uses_of(Value::new(m, 0)).is_empty() {
                                consts.push(upload_tensor(&device, value)?);
                                buffers.push(Value::new(m, 0));
                                outer.push(Slot::Const(consts.len() - 1));
                            }
                        }
                    }
                    let nodes = border.into_iter().filter(|&m| !matches!(body.node(m).op, Op::Input | Op::Const { .. })).collect();
                    (body, nodes, buffers, body.outputs.iter().map(|(_, v)| *v).collect(), outer)
                }
                _ => {
                    let mut buffers = Vec::new();
                    let mut outer = Vec::new();
                    for v in ins.iter().flatten() {
                        if buffers.contains(v) {
                            continue;
                        }
                        let s = match (slot_of.get(v), graph.const_value(*v)) {
                            (Some(s), _) => s.clone(),
                            (None, Some(t)) if t.len() == 1 => continue,
                            (None, Some(t)) => const_slot(*v, t, &mut consts)?,
                            (None, None) => return Err(err(&node.name, "an input was never computed")),
                        };
                        buffers.push(*v);
                        outer.push(s);
                    }
                    (graph, vec![n], buffers, (0..node.outputs.len()).map(|k| Value::new(n, k)).collect(), outer)
                }
            };
        if let Op::Rnn { .. } = node.op {
            // The recurrent kernel reads and writes its buffers in the compute type itself.
            let types = ins.iter().flatten().map(|&v| graph.value_type(v)).chain(node.outputs.iter());
            if let Some(t) = types.map(|t| t.dtype).find(|d| matches!(d, DType::F16 | DType::BF16)) {
                return Err(err(&node.name, format!("{t} tensors: the recurrent kernel computes f32/f64 only")));
            }
            let (src, spec) = gen::recurrent::generate(graph, n, &buffers, PREFIX, device.fp64, device.max_group).map_err(|m| err(&node.name, m))?;
            let program = device.program(&src).map_err(|m| err(&node.name, m))?;
            let mut outs = Vec::new();
            for (k, t) in node.outputs.iter().enumerate() {
                slots.push((t.dtype, shape_of(Value::new(n, k), &node.name)?));
                outs.push(slots.len() - 1);
                slot_of.insert(Value::new(n, k), Slot::Run(slots.len() - 1));
            }
            steps.push(Step::Launch(Launch {
                program,
                kernel: spec.name,
                elements: spec.elements,
                local: Some(spec.local),
                args: outer,
                outs,
                nodes: names(graph, n),
                kind: node.op.name().to_string(),
            }));
            continue;
        }
        let region = Region { graph: region_graph, nodes: region_nodes, buffers: buffers.clone(), outputs: outputs.clone() };
        let (src, kernels) = gen::generate(&region, PREFIX, device.fp64).map_err(|r| {
            let name = if matches!(node.op, Op::Fused { .. }) { format!("{} ({})", node.name, r.node) } else { node.name.clone() };
            err(&name, r.message)
        })?;
        let program = device.program(&src).map_err(|m| err(&node.name, m))?;
        let kind = match &node.op {
            Op::Fused { body } => body.name.clone(),
            op => op.name().to_string(),
        };
        for (k, spec) in kernels.into_iter().enumerate() {
            slots.push((spec.dtype, spec.shape.clone()));
            let out = slots.len() - 1;
            slot_of.insert(Value::new(n, k), Slot::Run(out));
            steps.push(Step::Launch(Launch {
                program: program.clone(),
                kernel: spec.name,
                elements: spec.elements,
                local: None,
                args: outer.clone(),
                outs: vec![out],
                nodes: names(graph, n),
                kind: kind.clone(),
            }));
        }
    }
    let outputs = match rest_outputs {
        Some(outs) => outs.into_iter().map(Slot::Run).collect(),
        None => {
            let mut outs = Vec::new();
            for (name, v) in &graph.outputs {
                outs.push(match (slot_of.get(v), graph.const_value(*v)) {
                    (Some(s), _) => s.clone(),
                    (None, Some(t)) => const_slot(*v, t, &mut consts)?,
                    (None, None) => return Err(err(name, "an output was never computed")),
                });
            }
            outs
        }
    };
    Ok(Plan { device, steps, consts, slots, inputs, outputs, queues: Mutex::new(Vec::new()), kernel_sets: Mutex::new(Vec::new()) })
}


#[cfg(test)]
mod tests {
    use super::*;

    /// Two kernels alike but for their node names and places are one program, built once:
    /// PoCL takes about 0.1 s per build, and a model repeats its blocks.
    #[test]
    fn alike_kernels_share_one_program() {
        let device = match crate::device::open(None) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let src = r#"graph g(%x: f32[2,3], %y: f32[2,3]) -> (%z: f32[2,3]) {
  %0 = add(%x, %y) : f32[2,3] "first"
  %1 = mul(%0, %y) : f32[2,3] "between"
  %2 = add(%1, %y) : f32[2,3] "second"
  return %2
}"#;
        let graph = kiln_ir::text::parse(src, None).expect("test graph parses");
        let plan = compile(device, &graph).expect("compiles");
        let programs: Vec<&Arc<Program>> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Launch(l) => Some(&l.program),
                _ => None,
            })
            .collect();
        assert_eq!(programs.len(), 3);
        assert!(
            Arc::ptr_eq(programs[0], programs[2]),
            "the two adds build one program"
        );
        assert!(!Arc::ptr_eq(programs[0], programs[1]), "the mul is its own");
    }
}
