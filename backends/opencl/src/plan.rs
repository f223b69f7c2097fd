//! A graph with concrete shapes, compiled: one OpenCL kernel per node or fused kernel, in
//! topological order over per-value buffers, and the run that enqueues them.
//!
//! Threads: a run takes a lane (a command queue with its own kernel objects, since kernel
//! arguments are per kernel object) from the plan's pool, or opens a new one when all are
//! busy, so requests in flight never share a queue or a kernel's arguments.

use crate::device::ClDevice;
use crate::gen::{self, Region};
use kiln_backends::KernelTiming;
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, Value};
use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::kernel::{ExecuteKernel, Kernel};
use opencl3::memory::{Buffer, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE};
use opencl3::program::Program;
use opencl3::types::{CL_BLOCKING, CL_NON_BLOCKING};
use std::collections::HashMap;
use std::ptr;
use std::sync::{Arc, Mutex};

pub const DEVICE: &str = "OPENCL";

/// Where a value lives during a run.
#[derive(Clone)]
enum Slot {
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
}

struct Lane {
    queue: CommandQueue,
    kernels: Vec<Option<Kernel>>,
}

pub struct Plan {
    device: Arc<ClDevice>,
    steps: Vec<Step>,
    consts: Vec<Arc<Buffer<u8>>>,
    /// (dtype, shape) of each run slot.
    slots: Vec<(DType, Vec<usize>)>,
    inputs: Vec<usize>,
    outputs: Vec<(Slot, DType, Vec<usize>, Option<Tensor>)>,
    lanes: Mutex<Vec<Lane>>,
}

pub fn err(node: &str, message: impl Into<String>) -> kiln_backends::BackendError {
    kiln_backends::BackendError { device: DEVICE.into(), node: Some(node.into()), message: message.into() }
}

fn cl_err(what: &str, e: impl std::fmt::Display) -> kiln_backends::BackendError {
    kiln_backends::BackendError::new(DEVICE, format!("{what}: {e}"))
}

fn upload(device: &ClDevice, t: &Tensor) -> Result<Buffer<u8>, kiln_backends::BackendError> {
    let mut bytes = t.to_le_bytes();
    if bytes.is_empty() {
        bytes.push(0);
    }
    // SAFETY: COPY_HOST_PTR copies `bytes` during the call; the buffer does not keep it.
    unsafe { Buffer::<u8>::create(&device.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes.len(), bytes.as_mut_ptr().cast()) }
        .map_err(|e| cl_err("cannot create a buffer", e))
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
    let mut consts: Vec<Arc<Buffer<u8>>> = Vec::new();
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
    let mut const_slot = |v: Value, t: &Tensor, consts: &mut Vec<Arc<Buffer<u8>>>| -> Result<Slot, kiln_backends::BackendError> {
        if let Some(&k) = const_of.get(&v) {
            return Ok(Slot::Const(k));
        }
        consts.push(Arc::new(upload(&device, t)?));
        const_of.insert(v, consts.len() - 1);
        Ok(Slot::Const(consts.len() - 1))
    };
    let mut steps = Vec::new();
    let mut sources = 0usize;
    for &n in &order {
        let node = graph.node(n);
        if matches!(node.op, Op::Input | Op::Const { .. }) {
            continue;
        }
        let ins = graph.inputs_of(n);
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
                                consts.push(Arc::new(upload(&device, value)?));
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
            let prefix = format!("k{sources}");
            sources += 1;
            let (src, spec) = gen::recurrent::generate(graph, n, &buffers, &prefix, device.fp64, device.max_group).map_err(|m| err(&node.name, m))?;
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
        let prefix = format!("k{sources}");
        sources += 1;
        let (src, kernels) = gen::generate(&region, &prefix, device.fp64).map_err(|r| {
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
    let mut outs = Vec::new();
    for (name, v) in &graph.outputs {
        let ty = graph.value_type(*v);
        let shape = shape_of(*v, name)?;
        match (slot_of.get(v), graph.const_value(*v)) {
            (Some(s), _) => outs.push((s.clone(), ty.dtype, shape, None)),
            (None, Some(t)) => outs.push((Slot::Const(0), ty.dtype, shape, Some(t.clone()))),
            (None, None) => return Err(err(name, "an output was never computed")),
        }
    }
    Ok(Plan { device, steps, consts, slots, inputs, outputs: outs, lanes: Mutex::new(Vec::new()) })
}

impl Plan {
    fn lane(&self) -> Result<Lane, kiln_backends::BackendError> {
        if let Some(l) = self.lanes.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(l);
        }
        #[allow(deprecated)]
        let queue = CommandQueue::create_default(&self.device.context, CL_QUEUE_PROFILING_ENABLE)
            .map_err(|e| cl_err("cannot create a command queue", e))?;
        Ok(Lane { queue, kernels: self.steps.iter().map(|_| None).collect() })
    }

    /// Runs on `inputs` (graph order): enqueues every upload and kernel on the lane's
    /// in-order queue without waiting, then reads the outputs.
    pub fn run(&self, inputs: &[Tensor], profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>, kiln_backends::BackendError> {
        let mut lane = self.lane()?;
        let r = self.run_on(&mut lane, inputs, profile);
        // A lane whose run failed may hold a broken queue: only a good one goes back.
        if r.is_ok() {
            self.lanes.lock().unwrap_or_else(|e| e.into_inner()).push(lane);
        }
        r
    }

    fn run_on(&self, lane: &mut Lane, inputs: &[Tensor], mut profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>, kiln_backends::BackendError> {
        if inputs.len() != self.inputs.len() {
            return Err(kiln_backends::BackendError::new(DEVICE, format!("the graph takes {} inputs, {} were given", self.inputs.len(), inputs.len())));
        }
        let mut table: Vec<Option<Arc<Buffer<u8>>>> = vec![None; self.slots.len()];
        for (&s, t) in self.inputs.iter().zip(inputs) {
            table[s] = Some(Arc::new(upload(&self.device, t)?));
        }
        let mut events = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let get = |s: &Slot, table: &Vec<Option<Arc<Buffer<u8>>>>| -> Result<Arc<Buffer<u8>>, kiln_backends::BackendError> {
                match s {
                    Slot::Run(k) => table[*k].clone().ok_or_else(|| kiln_backends::BackendError::new(DEVICE, "a value was never computed")),
                    Slot::Const(k) => Ok(self.consts[*k].clone()),
                }
            };
            match step {
                Step::Alias { from, to } => table[*to] = Some(get(from, &table)?),
                Step::Launch(l) => {
                    let mut outs = Vec::with_capacity(l.outs.len());
                    for &o in &l.outs {
                        let (dtype, shape) = &self.slots[o];
                        let bytes = (shape.iter().product::<usize>() * dtype.size()).max(1);
                        // SAFETY: a fresh device allocation, no host pointer.
                        let buf = unsafe { Buffer::<u8>::create(&self.device.context, CL_MEM_READ_WRITE, bytes, ptr::null_mut()) }
                            .map_err(|e| cl_err("cannot allocate a buffer", e))?;
                        outs.push(buf);
                    }
                    if l.elements > 0 {
                        if lane.kernels[i].is_none() {
                            lane.kernels[i] = Some(Kernel::create(&l.program, &l.kernel).map_err(|e| cl_err("cannot create a kernel", e))?);
                        }
                        let kernel = lane.kernels[i].as_ref().expect("created above");
                        let args: Vec<Arc<Buffer<u8>>> = l.args.iter().map(|s| get(s, &table)).collect::<Result<_, _>>()?;
                        let mut exec = ExecuteKernel::new(kernel);
                        for a in &args {
                            // SAFETY: every kernel parameter is a global buffer, in this order.
                            unsafe { exec.set_arg(a.as_ref()) };
                        }
                        for o in &outs {
                            // SAFETY: as above; the output buffers are the last parameters.
                            unsafe { exec.set_arg(o) };
                        }
                        exec.set_global_work_size(l.elements);
                        if let Some(local) = l.local {
                            exec.set_local_work_size(local);
                        }
                        // SAFETY: every argument is set above.
                        let ev = unsafe { exec.enqueue_nd_range(&lane.queue) }
                            .map_err(|e| err(l.nodes.last().map(String::as_str).unwrap_or(""), format!("cannot launch {}: {e}", l.kernel)))?;
                        if profile.is_some() {
                            events.push((i, ev));
                        }
                    }
                    for (&o, buf) in l.outs.iter().zip(outs) {
                        table[o] = Some(Arc::new(buf));
                    }
                }
            }
        }
        let mut results = Vec::with_capacity(self.outputs.len());
        for (slot, dtype, shape, host) in &self.outputs {
            if let Some(t) = host {
                results.push(t.clone());
                continue;
            }
            let buf = match slot {
                Slot::Run(k) => table[*k].clone().ok_or_else(|| kiln_backends::BackendError::new(DEVICE, "an output was never computed"))?,
                Slot::Const(k) => self.consts[*k].clone(),
            };
            let n: usize = shape.iter().product::<usize>() * dtype.size();
            let mut bytes = vec![0u8; n];
            if n > 0 {
                // SAFETY: `bytes` holds exactly the buffer's n bytes; the read blocks.
                unsafe { lane.queue.enqueue_read_buffer(&buf, CL_BLOCKING, 0, &mut bytes, &[]) }.map_err(|e| cl_err("cannot read an output", e))?;
            }
            results.push(Tensor::from_le_bytes(*dtype, shape.clone(), &bytes).map_err(|e| kiln_backends::BackendError::from_ir(DEVICE, e))?);
        }
        lane.queue.finish().map_err(|e| cl_err("the queue failed", e))?;
        if let Some(p) = profile.as_deref_mut() {
            for (i, ev) in events {
                if let Step::Launch(l) = &self.steps[i] {
                    let nanos = match (ev.profiling_command_start(), ev.profiling_command_end()) {
                        (Ok(s), Ok(e)) => e.saturating_sub(s),
                        _ => 0,
                    };
                    p.push(KernelTiming { nodes: l.nodes.clone(), kind: l.kind.clone(), device: DEVICE.into(), nanos });
                }
            }
        }
        let _ = CL_NON_BLOCKING;
        Ok(results)
    }
}
