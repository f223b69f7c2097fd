//! ONNX Loop (how TensorFlow's LSTM and GRU arrive from tf2onnx: a while loop whose body
//! is one cell step) with its body compiled for this device, so each step's matmuls run
//! on the GEMM and its gates as generated code instead of `ir::eval` node by node.
//!
//! Values that do not change from one iteration to the next — captured values, and
//! carried values the body hands back untouched (the cell's weights) — that are constants
//! at the loop are written into the body as constants before it is compiled: its
//! matmuls then see constant weights, packed once.
//!
//! Semantics are `ir::eval`'s Loop; anything unusual (a loop that runs zero times, scan
//! outputs that change shape, a condition of the wrong size) goes back to `ir::eval`.

use crate::device::Ctx;
use crate::program::{compile, Plan};
use kiln_ir::{Graph, NodeId, Op, Result, Storable, Tensor, Value};
use std::collections::HashMap;

/// Iterations after which a loop is handed to `ir::eval` (which reports it).
const LIMIT: i64 = 1 << 31;

pub(crate) struct Loop {
    plan: Plan,
    carried: usize,
    scans: usize,
    /// Body inputs still passed per iteration (after 0 and 1): indices into the loop's
    /// carried-then-captured values.
    kept: Vec<usize>,
    /// Body inputs 0 and 1 declared with shape [1] rather than as scalars.
    rank1: [bool; 2],
}

impl Loop {
    pub fn new(graph: &Graph, n: NodeId, known: &HashMap<Value, Tensor>) -> Option<Loop> {
        let node = graph.node(n);
        let Op::Loop { body, num_captured } = &node.op else {
            return None;
        };
        let ins = graph.inputs_of(n);
        let ncap = usize::try_from(*num_captured).ok()?;
        let carried = ins.len().checked_sub(2 + ncap)?;
        if body.inputs.len() != 2 + carried + ncap {
            return None;
        }
        let scans = body.outputs.len().checked_sub(1 + carried)?;
        if node.outputs.len() != carried + scans {
            return None;
        }
        let mut spec: Graph = (**body).clone();
        let mut kept = Vec::new();
        for k in 0..carried + ncap {
            let input = body.inputs[2 + k];
            let at_loop = ins[2 + k].and_then(|v| known.get(&v));
            let invariant = k >= carried || body.outputs[1 + k].1 == Value::new(input, 0);
            match at_loop {
                Some(t) if invariant => {
                    let c = spec.add_const(body.node(input).name.clone(), t.clone());
                    kiln_ir::rewrite::replace_consumer_uses(&mut spec, Value::new(input, 0), c);
                    for (_, v) in spec.outputs.iter_mut() {
                        if v.node == input {
                            *v = c;
                        }
                    }
                    spec.inputs.retain(|&i| i != input);
                    spec.nodes.remove_node(input);
                }
                _ => kept.push(k),
            }
        }
        let rank1 = [0, 1].map(|i| body.node(body.inputs[i]).outputs[0].shape.rank() == Some(1));
        let plan = compile(&spec).ok()?;
        Some(Loop { plan, carried, scans, kept, rank1 })
    }

    /// The loop's outputs, or `None` to run it through `ir::eval`.
    pub fn run(&self, ctx: &Ctx, inputs: &[Option<Tensor>]) -> Option<Result<Vec<Tensor>>> {
        let max_trips = match inputs.first()? {
            Some(m) if m.len() == 1 => Some(m.to_i64_vec()[0]),
            Some(_) => return None,
            None => None,
        };
        let mut cond = match inputs.get(1)? {
            Some(c) if c.len() == 1 => c.to_f64_vec()[0] != 0.0,
            Some(_) => return None,
            None => true,
        };
        let values: Vec<Tensor> = inputs.get(2..)?.iter().cloned().collect::<Option<_>>()?;
        let mut state: Vec<Tensor> = values.get(..self.carried)?.to_vec();
        let mut scanned: Vec<Vec<Tensor>> = vec![Vec::new(); self.scans];
        let mut it: i64 = 0;
        while cond && max_trips.is_none_or(|m| it < m) {
            if it >= LIMIT {
                return None;
            }
            let shaped = |i: usize, t: Tensor| if self.rank1[i] { t.reshape(vec![1]).ok() } else { Some(t) };
            let mut args = vec![shaped(0, Tensor::scalar(it))?, shaped(1, Tensor::scalar(cond))?];
            args.extend(self.kept.iter().map(|&k| if k < self.carried { state[k].clone() } else { values[k].clone() }));
            let outs = match self.plan.run(ctx, &args, None) {
                Ok(o) => o,
                Err(e) => return Some(Err(e)),
            };
            let mut outs = outs.into_iter();
            let c = outs.next()?;
            if c.len() != 1 {
                return None;
            }
            cond = c.to_f64_vec()[0] != 0.0;
            for s in state.iter_mut() {
                *s = outs.next()?;
            }
            for sc in scanned.iter_mut() {
                sc.push(outs.next()?);
            }
            it += 1;
        }
        for sc in &scanned {
            state.push(stack(sc)?);
        }
        Some(Ok(state))
    }
}

/// Scan outputs stacked along a new first axis; `None` when there are none or they differ
/// in shape or dtype (`ir::eval` then gives the empty result or the error).
fn stack(ts: &[Tensor]) -> Option<Tensor> {
    let first = ts.first()?;
    if ts.iter().any(|t| t.shape() != first.shape() || t.dtype() != first.dtype()) {
        return None;
    }
    let mut shape = vec![ts.len()];
    shape.extend(first.shape());
    let data = kiln_ir::with_data!(first.data(), _v, T => {
        let mut all: Vec<T> = Vec::with_capacity(ts.len() * first.len());
        for t in ts {
            all.extend_from_slice(t.as_slice::<T>().ok()?);
        }
        <T as Storable>::wrap(all)
    });
    Tensor::from_data(shape, data).ok()
}
