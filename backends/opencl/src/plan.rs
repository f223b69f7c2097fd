//! A graph with concrete shapes, compiled: one OpenCL kernel per node or fused kernel, in
//! topological order over per-value buffers, and the run that enqueues them.
//!
//! Threads: a run takes a lane (a command queue with its own kernel objects, since kernel
//! arguments are per kernel object) from the plan's pool, or opens a new one when all are
//! busy, so requests in flight never share a queue or a kernel's arguments.

use crate::device::ClDevice;
use crate::flow::{self, FlowStep, Rest};
use crate::gen::{self, Region};
use kiln_backends::KernelTiming;
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, Value};
use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::event::Event;
use opencl3::kernel::{ExecuteKernel, Kernel};
use opencl3::memory::{Buffer, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE};
use opencl3::program::Program;
use opencl3::types::CL_BLOCKING;
use std::collections::HashMap;
use std::ptr;
use std::sync::{Arc, Mutex};

pub const DEVICE: &str = "OPENCL";

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

/// A tensor on the device during a run. Buffers are written once (every kernel writes
/// fresh ones), so tensors share them freely.
#[derive(Clone)]
pub struct DevTensor {
    pub buf: Arc<Buffer<u8>>,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// A launch's event, resolved into a timing once the run's queue has finished.
pub(crate) type Timed = (Vec<String>, String, Event);

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

fn cl_err(what: &str, e: impl std::fmt::Display) -> kiln_backends::BackendError {
    kiln_backends::BackendError::new(DEVICE, format!("{what}: {e}"))
}

pub(crate) fn cl_error(what: &str, e: impl std::fmt::Display) -> kiln_backends::BackendError {
    cl_err(what, e)
}

/// A device tensor holding `t` (copied during the call).
pub fn upload_tensor(device: &ClDevice, t: &Tensor) -> Result<DevTensor, kiln_backends::BackendError> {
    Ok(DevTensor { buf: Arc::new(upload(device, t)?), dtype: t.dtype(), shape: t.shape().to_vec() })
}

/// An uninitialized device buffer of `bytes` (at least one: OpenCL has no empty buffers).
pub fn alloc(device: &ClDevice, bytes: usize) -> Result<Buffer<u8>, kiln_backends::BackendError> {
    // SAFETY: a fresh device allocation, no host pointer.
    unsafe { Buffer::<u8>::create(&device.context, CL_MEM_READ_WRITE, bytes.max(1), ptr::null_mut()) }.map_err(|e| cl_err("cannot allocate a buffer", e))
}

/// `t` read back to the host (blocking: the queue runs up to here).
pub fn read(queue: &CommandQueue, t: &DevTensor) -> Result<Tensor, kiln_backends::BackendError> {
    let n: usize = t.shape.iter().product::<usize>() * t.dtype.size();
    let mut bytes = vec![0u8; n];
    if n > 0 {
        // SAFETY: `bytes` holds exactly the tensor's n bytes; the read blocks.
        unsafe { queue.enqueue_read_buffer(&t.buf, CL_BLOCKING, 0, &mut bytes, &[]) }.map_err(|e| cl_err("cannot read a tensor back", e))?;
    }
    Tensor::from_le_bytes(t.dtype, t.shape.clone(), &bytes).map_err(|e| kiln_backends::BackendError::from_ir(DEVICE, e))
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
    let mut sources = 0usize;
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

impl Plan {
    fn queue(&self) -> Result<CommandQueue, kiln_backends::BackendError> {
        if let Some(q) = self.queues.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(q);
        }
        #[allow(deprecated)]
        let queue = CommandQueue::create_default(&self.device.context, CL_QUEUE_PROFILING_ENABLE)
            .map_err(|e| cl_err("cannot create a command queue", e))?;
        Ok(queue)
    }

    /// Runs on `inputs` (graph order): enqueues every upload and kernel on an in-order
    /// queue without waiting (control flow reads its conditions back), then reads the
    /// outputs.
    pub fn run(&self, inputs: &[Tensor], profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>, kiln_backends::BackendError> {
        if inputs.len() != self.inputs.len() {
            return Err(kiln_backends::BackendError::new(DEVICE, format!("the graph takes {} inputs, {} were given", self.inputs.len(), inputs.len())));
        }
        let queue = self.queue()?;
        let r = self.run_host(&queue, inputs, profile);
        // A queue whose run failed may be broken: only a good one goes back.
        if r.is_ok() {
            self.queues.lock().unwrap_or_else(|e| e.into_inner()).push(queue);
        }
        r
    }

    fn run_host(&self, queue: &CommandQueue, inputs: &[Tensor], profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>, kiln_backends::BackendError> {
        let ins = inputs.iter().map(|t| upload_tensor(&self.device, t)).collect::<Result<Vec<_>, _>>()?;
        let mut timed = profile.is_some().then(Vec::new);
        let outs = self.run_dev(queue, &ins, &mut timed)?;
        let results = outs.iter().map(|t| read(queue, t)).collect::<Result<Vec<_>, _>>()?;
        queue.finish().map_err(|e| cl_err("the queue failed", e))?;
        if let (Some(p), Some(timed)) = (profile, timed) {
            for (nodes, kind, ev) in timed {
                let nanos = match (ev.profiling_command_start(), ev.profiling_command_end()) {
                    (Ok(s), Ok(e)) => e.saturating_sub(s),
                    _ => 0,
                };
                p.push(KernelTiming { nodes, kind, device: DEVICE.into(), nanos });
            }
        }
        Ok(results)
    }

    /// Enqueues this plan on `queue` over device tensors and gives its outputs (a sub-plan
    /// runs so, on its caller's queue, without copies to the host).
    pub fn run_dev(&self, queue: &CommandQueue, inputs: &[DevTensor], timed: &mut Option<Vec<Timed>>) -> Result<Vec<DevTensor>, kiln_backends::BackendError> {
        let popped = self.kernel_sets.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut kernels = popped.unwrap_or_else(|| self.steps.iter().map(|_| None).collect());
        let r = self.enqueue(queue, &mut kernels, inputs, timed);
        self.kernel_sets.lock().unwrap_or_else(|e| e.into_inner()).push(kernels);
        r
    }

    fn enqueue(
        &self,
        queue: &CommandQueue,
        kernels: &mut [Option<Kernel>],
        inputs: &[DevTensor],
        timed: &mut Option<Vec<Timed>>,
    ) -> Result<Vec<DevTensor>, kiln_backends::BackendError> {
        if inputs.len() != self.inputs.len() {
            return Err(kiln_backends::BackendError::new(DEVICE, format!("the graph takes {} inputs, {} were given", self.inputs.len(), inputs.len())));
        }
        let mut table: Vec<Option<DevTensor>> = vec![None; self.slots.len()];
        for (&s, t) in self.inputs.iter().zip(inputs) {
            let (dtype, shape) = &self.slots[s];
            if t.dtype != *dtype || t.shape != *shape {
                return Err(kiln_backends::BackendError::new(DEVICE, format!("an input is {}{:?}, the plan takes {dtype}{shape:?}", t.dtype, t.shape)));
            }
            table[s] = Some(t.clone());
        }
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Alias { from, to } => {
                    let t = self.typed(from, &table)?;
                    let (dtype, shape) = self.slots[*to].clone();
                    table[*to] = Some(DevTensor { buf: t.buf, dtype, shape });
                }
                Step::Flow(f) => {
                    let args = f.args.iter().map(|a| a.as_ref().map(|s| self.typed(s, &table)).transpose()).collect::<Result<Vec<_>, _>>()?;
                    let outs = f.run(&self.device, queue, args, timed)?;
                    for (&o, t) in f.outs.iter().zip(outs) {
                        let (dtype, shape) = &self.slots[o];
                        // Kernels after a flow op were generated for the shape inferred at
                        // compile time; a run that gives another is an error, not a misread.
                        if t.dtype != *dtype || (!f.dynamic && t.shape != *shape) {
                            return Err(err(&f.node, format!("gave {}{:?} where {dtype}{shape:?} was planned", t.dtype, t.shape)));
                        }
                        table[o] = Some(t);
                    }
                }
                Step::Rest(r) => {
                    let args = r.args.iter().map(|s| self.typed(s, &table)).collect::<Result<Vec<_>, _>>()?;
                    let outs = r.run(queue, &args, timed)?;
                    for (&o, t) in r.outs.iter().zip(outs) {
                        table[o] = Some(t);
                    }
                }
                Step::Launch(l) => {
                    let mut outs = Vec::with_capacity(l.outs.len());
                    for &o in &l.outs {
                        let (dtype, shape) = &self.slots[o];
                        outs.push(alloc(&self.device, shape.iter().product::<usize>() * dtype.size())?);
                    }
                    if l.elements > 0 {
                        if kernels[i].is_none() {
                            kernels[i] = Some(Kernel::create(&l.program, &l.kernel).map_err(|e| cl_err("cannot create a kernel", e))?);
                        }
                        let kernel = kernels[i].as_ref().expect("created above");
                        let args: Vec<DevTensor> = l.args.iter().map(|s| self.typed(s, &table)).collect::<Result<_, _>>()?;
                        let mut exec = ExecuteKernel::new(kernel);
                        for a in &args {
                            // SAFETY: every kernel parameter is a global buffer, in this order.
                            unsafe { exec.set_arg(a.buf.as_ref()) };
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
                        let ev = unsafe { exec.enqueue_nd_range(queue) }
                            .map_err(|e| err(l.nodes.last().map(String::as_str).unwrap_or(""), format!("cannot launch {}: {e}", l.kernel)))?;
                        if let Some(t) = timed.as_mut() {
                            t.push((l.nodes.clone(), l.kind.clone(), ev));
                        }
                    }
                    for (&o, buf) in l.outs.iter().zip(outs) {
                        let (dtype, shape) = self.slots[o].clone();
                        table[o] = Some(DevTensor { buf: Arc::new(buf), dtype, shape });
                    }
                }
            }
        }
        self.outputs.iter().map(|s| self.typed(s, &table)).collect()
    }

    /// The device tensor in slot `s`, with its type (a constant's from the slot table).
    fn typed(&self, s: &Slot, table: &[Option<DevTensor>]) -> Result<DevTensor, kiln_backends::BackendError> {
        match s {
            Slot::Run(k) => table[*k].clone().ok_or_else(|| kiln_backends::BackendError::new(DEVICE, "a value was never computed")),
            Slot::Const(k) => Ok(self.consts[*k].clone()),
        }
    }
}
