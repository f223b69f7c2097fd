//! The run of a compiled plan: enqueued on an in-order queue over device tensors.

use super::{cl_err, err, read, upload_tensor, alloc, DevTensor, Plan, Slot, Step, Timed, DEVICE};
use kiln_backends::KernelTiming;
use kiln_ir::Tensor;
use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::kernel::{ExecuteKernel, Kernel};
use std::sync::Arc;

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
                        let kernel = match &mut kernels[i] {
                            Some(k) => &*k,
                            slot => &*slot.insert(Kernel::create(&l.program, &l.kernel).map_err(|e| cl_err("cannot create a kernel", e))?),
                        };
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
