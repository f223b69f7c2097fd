//! Control flow (If, Loop, Scan) as OpenVINO's GPU plugin runs it: each region is a graph
//! of its own, compiled into a sub-plan with the same generator, specializer and program
//! cache, and run from the host on the caller's queue over device tensors. If and Loop read
//! their condition (and Loop its trip count) back each time; carried values stay device
//! buffers; scan outputs are stacked, and scan inputs sliced, by buffer copies.
//!
//! A Loop's stacked outputs have as many rows as iterations ran, which only the run tells:
//! what follows such an op is compiled at run time (a [`Rest`]) from the shapes it gave.

use crate::device::ClDevice;
use crate::plan::{alloc, cl_err, err, read, upload_tensor, DevTensor, Slot, Timed};
use crate::shaped::Shaped;
use kiln_backends::{BackendError, Result};
use kiln_ir::{Edge, Graph, NodeId, Op, Tensor, TensorType, Value};
use opencl3::command_queue::CommandQueue;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most iterations a Loop may run, and most elements a stacked output may hold (as
/// `ir::eval`).
const LIMIT: usize = 1 << 31;

enum Kind {
    If { then_branch: Shaped, else_branch: Shaped },
    Loop { body: Shaped, carried: usize, scans: usize },
    Scan { body: Shaped, states: usize, scan_in: usize, in_axes: Vec<i64>, in_rev: Vec<bool>, out_axes: Vec<i64>, out_rev: Vec<bool> },
}

pub struct FlowStep {
    kind: Kind,
    /// The node's inputs (None: an absent optional input).
    pub args: Vec<Option<Slot>>,
    pub outs: Vec<usize>,
    pub node: String,
    /// Whether an output's shape is known only once the step has run.
    pub dynamic: bool,
    /// The region's declared output types, for empty stacked outputs.
    declared: Vec<TensorType>,
}

/// The step running node `n` of `graph`, an If, Loop or Scan.
pub fn step(device: &Arc<ClDevice>, graph: &Graph, n: NodeId, args: Vec<Option<Slot>>, outs: Vec<usize>) -> Result<FlowStep> {
    let node = graph.node(n);
    let shaped = |g: &Graph| Shaped::new(g.clone(), device.clone());
    let declared_of = |g: &Graph| g.outputs.iter().map(|(_, v)| g.value_type(*v).clone()).collect::<Vec<_>>();
    let arity = args.len();
    let (kind, declared) = match &node.op {
        Op::If { then_branch, else_branch } => {
            (Kind::If { then_branch: shaped(then_branch), else_branch: shaped(else_branch) }, declared_of(then_branch))
        }
        Op::Loop { body, num_captured } => {
            let ncap = usize::try_from(*num_captured).map_err(|_| err(&node.name, "num_captured is negative"))?;
            let carried = arity.checked_sub(2 + ncap).ok_or_else(|| err(&node.name, "fewer inputs than 2 + num_captured"))?;
            let scans = body.outputs.len().checked_sub(1 + carried).ok_or_else(|| err(&node.name, "the body gives too few outputs"))?;
            (Kind::Loop { body: shaped(body), carried, scans }, declared_of(body))
        }
        Op::Scan { body, num_scan_inputs, num_captured, scan_input_axes, scan_input_directions, scan_output_axes, scan_output_directions } => {
            let count = |v: i64, what: &str| usize::try_from(v).map_err(|_| err(&node.name, format!("{what} is negative")));
            let scan_in = count(*num_scan_inputs, "num_scan_inputs")?;
            let ncap = count(*num_captured, "num_captured")?;
            let states = arity.checked_sub(scan_in + ncap).ok_or_else(|| err(&node.name, "fewer inputs than scanned + captured"))?;
            let scan_out = body.outputs.len().checked_sub(states).ok_or_else(|| err(&node.name, "the body gives too few outputs"))?;
            if scan_in == 0 {
                return Err(err(&node.name, "num_scan_inputs must be at least 1"));
            }
            let list = |v: &[i64], k: usize| if v.is_empty() { vec![0; k] } else { v.to_vec() };
            let dirs = |v: &[i64], k: usize| list(v, k).into_iter().map(|d| d == 1).collect::<Vec<_>>();
            let (in_axes, out_axes) = (list(scan_input_axes, scan_in), list(scan_output_axes, scan_out));
            if in_axes.len() != scan_in || out_axes.len() != scan_out {
                return Err(err(&node.name, "the scan axes do not match the scanned inputs and outputs"));
            }
            let kind = Kind::Scan {
                body: shaped(body),
                states,
                scan_in,
                in_axes,
                in_rev: dirs(scan_input_directions, scan_in),
                out_axes,
                out_rev: dirs(scan_output_directions, scan_out),
            };
            (kind, declared_of(body))
        }
        op => return Err(err(&node.name, format!("`{}` is not control flow", op.name()))),
    };
    let dynamic = node.outputs.iter().any(|t| t.shape.concrete().is_none());
    Ok(FlowStep { kind, args, outs, node: node.name.clone(), dynamic, declared })
}

fn truth(queue: &CommandQueue, t: &DevTensor, what: &str, node: &str) -> Result<bool> {
    let v = read(queue, t)?.to_f64_vec();
    match v.as_slice() {
        [x] => Ok(*x != 0.0),
        _ => Err(err(node, format!("{what} must have one element, found shape {:?}", t.shape))),
    }
}

/// A scalar shaped like the body's declared input `i` (rank 1 when it declares so).
fn scalar_for(body: &Graph, i: usize, t: Tensor) -> Result<Tensor> {
    let rank1 = body.inputs.get(i).is_some_and(|&n| body.node(n).outputs[0].shape.rank() == Some(1));
    if rank1 {
        t.reshape(vec![1]).map_err(|e| BackendError::from_ir(crate::plan::DEVICE, e))
    } else {
        Ok(t)
    }
}

fn norm_axis(axis: i64, rank: usize, node: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank).ok_or_else(|| err(node, format!("axis {axis} is out of range for rank {rank}")))
}

impl FlowStep {
    fn required(&self, args: &[Option<DevTensor>], from: usize) -> Result<Vec<DevTensor>> {
        args[from.min(args.len())..].iter().map(|a| a.clone().ok_or_else(|| err(&self.node, "a required input is missing"))).collect()
    }

    pub fn run(&self, device: &Arc<ClDevice>, queue: &CommandQueue, args: Vec<Option<DevTensor>>, timed: &mut Option<Vec<Timed>>) -> Result<Vec<DevTensor>> {
        let node = self.node.as_str();
        match &self.kind {
            Kind::If { then_branch, else_branch } => {
                let c = args.first().cloned().flatten().ok_or_else(|| err(node, "the condition is missing"))?;
                let branch = if truth(queue, &c, "the condition", node)? { then_branch } else { else_branch };
                let ins = self.required(&args, 1)?;
                branch.plan_dev(queue, &ins)?.run_dev(queue, &ins, timed)
            }
            Kind::Loop { body, carried, scans } => {
                let max_trips = match args.first().cloned().flatten() {
                    Some(m) => match read(queue, &m)?.to_i64_vec().as_slice() {
                        [m] => Some(*m),
                        _ => return Err(err(node, format!("the trip count must have one element, found shape {:?}", m.shape))),
                    },
                    None => None,
                };
                let mut cond = match args.get(1).cloned().flatten() {
                    Some(c) => truth(queue, &c, "the loop condition", node)?,
                    None => true,
                };
                let mut state = self.required(&args[..(2 + carried).min(args.len())], 2)?;
                let captured = self.required(&args, 2 + carried)?;
                let mut scanned: Vec<Vec<DevTensor>> = vec![Vec::new(); *scans];
                let mut scanned_elems = 0usize;
                let mut it: i64 = 0;
                while cond && max_trips.is_none_or(|m| it < m) {
                    if it as usize >= LIMIT {
                        return Err(err(node, "the loop ran 2^31 iterations without ending"));
                    }
                    let g = body.graph();
                    let mut ins = vec![
                        upload_tensor(device, &scalar_for(g, 0, Tensor::scalar(it))?)?,
                        upload_tensor(device, &scalar_for(g, 1, Tensor::scalar(cond))?)?,
                    ];
                    ins.extend(state.iter().cloned());
                    ins.extend(captured.iter().cloned());
                    let mut outs = body.plan_dev(queue, &ins)?.run_dev(queue, &ins, timed)?.into_iter();
                    let c = outs.next().ok_or_else(|| err(node, "the body gave no condition"))?;
                    cond = truth(queue, &c, "the body's condition output", node)?;
                    for s in state.iter_mut() {
                        *s = outs.next().ok_or_else(|| err(node, "the body gave too few outputs"))?;
                    }
                    for sc in scanned.iter_mut() {
                        let o = outs.next().ok_or_else(|| err(node, "the body gave too few outputs"))?;
                        scanned_elems = scanned_elems.saturating_add(o.shape.iter().product());
                        if scanned_elems > LIMIT {
                            return Err(err(node, "the scan outputs grew past 2^31 elements"));
                        }
                        sc.push(o);
                    }
                    it += 1;
                }
                let mut res = state;
                for (k, sc) in scanned.iter().enumerate() {
                    res.push(self.stacked(device, queue, sc, 0, 1 + carried + k)?);
                }
                Ok(res)
            }
            Kind::Scan { body, states, scan_in, in_axes, in_rev, out_axes, out_rev } => {
                let all = self.required(&args, 0)?;
                let (init, rest) = all.split_at(*states);
                let (xs, captured) = rest.split_at(*scan_in);
                let mut len = None;
                let mut axes = Vec::new();
                for (i, x) in xs.iter().enumerate() {
                    let a = norm_axis(in_axes[i], x.shape.len(), node)?;
                    if len.is_some_and(|l| l != x.shape[a]) {
                        return Err(err(node, "scan inputs differ in sequence length"));
                    }
                    len = Some(x.shape[a]);
                    axes.push(a);
                }
                let len = len.unwrap_or(0);
                let mut state = init.to_vec();
                let mut scanned: Vec<Vec<DevTensor>> = vec![Vec::new(); out_axes.len()];
                let mut scanned_elems = 0usize;
                for t in 0..len {
                    let mut ins = state.clone();
                    for (i, x) in xs.iter().enumerate() {
                        let idx = if in_rev[i] { len - 1 - t } else { t };
                        ins.push(slice(device, queue, x, axes[i], idx)?);
                    }
                    ins.extend(captured.iter().cloned());
                    let mut outs = body.plan_dev(queue, &ins)?.run_dev(queue, &ins, timed)?.into_iter();
                    for s in state.iter_mut() {
                        *s = outs.next().ok_or_else(|| err(node, "the body gave too few outputs"))?;
                    }
                    for sc in scanned.iter_mut() {
                        let o = outs.next().ok_or_else(|| err(node, "the body gave too few outputs"))?;
                        scanned_elems = scanned_elems.saturating_add(o.shape.iter().product());
                        if scanned_elems > LIMIT {
                            return Err(err(node, "the scan outputs grew past 2^31 elements"));
                        }
                        sc.push(o);
                    }
                }
                let mut res = state;
                for (k, mut sc) in scanned.into_iter().enumerate() {
                    if out_rev[k] {
                        sc.reverse();
                    }
                    let rank = sc.first().map_or_else(|| self.declared[states + k].shape.rank().unwrap_or(0), |t| t.shape.len());
                    let axis = norm_axis(out_axes[k], rank + 1, node)?;
                    res.push(self.stacked(device, queue, &sc, axis, states + k)?);
                }
                Ok(res)
            }
        }
    }

    /// `parts` stacked along a new `axis`; with no parts, the empty tensor of the region's
    /// declared output `decl` (unknown dims count 0, as `ir::eval`).
    fn stacked(&self, device: &ClDevice, queue: &CommandQueue, parts: &[DevTensor], axis: usize, decl: usize) -> Result<DevTensor> {
        let Some(first) = parts.first() else {
            let ty = &self.declared[decl];
            let mut shape: Vec<usize> = ty.shape.dims().map(|d| d.iter().map(|d| d.known().unwrap_or(0)).collect()).unwrap_or_default();
            shape.insert(axis.min(shape.len()), 0);
            return Ok(DevTensor { buf: Arc::new(alloc(device, 0)?), dtype: ty.dtype, shape });
        };
        if parts.iter().any(|p| p.shape != first.shape || p.dtype != first.dtype) {
            return Err(err(&self.node, "iterations gave scan outputs of different shapes; they must keep one shape"));
        }
        stack(device, queue, parts, axis).map_err(|m| err(&self.node, m))
    }
}

/// Copies a `rows` × `row_bytes` block between buffers whose rows are `src_pitch` and
/// `dst_pitch` bytes apart, starting `src_at` and `dst_at` bytes into a row.
#[allow(clippy::too_many_arguments)]
fn copy_rows(
    queue: &CommandQueue,
    src: &opencl3::memory::Buffer<u8>,
    dst: &mut opencl3::memory::Buffer<u8>,
    rows: usize,
    row_bytes: usize,
    (src_at, src_pitch): (usize, usize),
    (dst_at, dst_pitch): (usize, usize),
) -> Result<()> {
    if rows == 0 || row_bytes == 0 {
        return Ok(());
    }
    // SAFETY: both regions lie inside their buffers (callers size them from the shapes);
    // the origin and region arrays outlive the call, which copies them.
    let r = unsafe {
        if rows == 1 {
            queue.enqueue_copy_buffer(src, dst, src_at, dst_at, row_bytes, &[])
        } else {
            let (so, dst_o, region) = ([src_at, 0, 0], [dst_at, 0, 0], [row_bytes, rows, 1]);
            queue.enqueue_copy_buffer_rect(src, dst, so.as_ptr(), dst_o.as_ptr(), region.as_ptr(), src_pitch, src_pitch * rows, dst_pitch, dst_pitch * rows, &[])
        }
    };
    r.map(|_| ()).map_err(|e| cl_err("cannot copy between buffers", e))
}

/// Stacks same-shaped tensors along a new axis.
fn stack(device: &ClDevice, queue: &CommandQueue, parts: &[DevTensor], axis: usize) -> std::result::Result<DevTensor, String> {
    let s = &parts[0].shape;
    let esize = parts[0].dtype.size();
    let mut shape = s.clone();
    shape.insert(axis, parts.len());
    let total = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= LIMIT).ok_or("a stacked output is over 2^31 elements")?;
    let outer: usize = s[..axis].iter().product();
    let row = s[axis..].iter().product::<usize>() * esize;
    let mut dst = alloc(device, total * esize).map_err(|e| e.message)?;
    for (k, p) in parts.iter().enumerate() {
        copy_rows(queue, &p.buf, &mut dst, outer, row, (0, row), (k * row, row * parts.len())).map_err(|e| e.message)?;
    }
    Ok(DevTensor { buf: Arc::new(dst), dtype: parts[0].dtype, shape })
}

/// Row `idx` of `t` along `axis`, with that axis removed.
fn slice(device: &ClDevice, queue: &CommandQueue, t: &DevTensor, axis: usize, idx: usize) -> Result<DevTensor> {
    let len = t.shape[axis];
    let outer: usize = t.shape[..axis].iter().product();
    let row = t.shape[axis + 1..].iter().product::<usize>() * t.dtype.size();
    let mut shape = t.shape.clone();
    shape.remove(axis);
    let mut dst = alloc(device, outer * row)?;
    copy_rows(queue, &t.buf, &mut dst, outer, row, (idx * row, len * row), (0, row))?;
    Ok(DevTensor { buf: Arc::new(dst), dtype: t.dtype, shape })
}

/// What follows a control-flow op with run-time shapes: a graph whose inputs are the
/// values computed before it, compiled per their shapes.
pub struct Rest {
    shaped: Shaped,
    pub args: Vec<Slot>,
    pub outs: Vec<usize>,
}

impl Rest {
    pub fn new(graph: Graph, device: Arc<ClDevice>, args: Vec<Slot>, outs: Vec<usize>) -> Rest {
        Rest { shaped: Shaped::new(graph, device), args, outs }
    }

    pub fn run(&self, queue: &CommandQueue, args: &[DevTensor], timed: &mut Option<Vec<Timed>>) -> Result<Vec<DevTensor>> {
        self.shaped.plan_dev(queue, args)?.run_dev(queue, args, timed)
    }
}

/// `graph` without the nodes in `done` (constants stay): each value of theirs read by
/// what remains, or a graph output, becomes an input. Gives the graph and, per input,
/// the value of `graph` it stands for.
pub fn rest_graph(graph: &Graph, done: &HashSet<NodeId>) -> (Graph, Vec<Value>) {
    let mut g = graph.clone();
    g.inputs.clear();
    // Graph inputs count as done wherever the topological order placed them: the rest reads
    // them as its own inputs, like every other value computed before the cut.
    let kept = |n: NodeId| match graph.node(n).op {
        Op::Const { .. } => true,
        Op::Input => false,
        _ => !done.contains(&n),
    };
    let mut input_of: HashMap<Value, Value> = HashMap::new();
    let mut live = Vec::new();
    let mut input = |g: &mut Graph, v: Value| -> Value {
        *input_of.entry(v).or_insert_with(|| {
            live.push(v);
            g.add_input(format!("{}.{}", graph.node(v.node).name, v.output), graph.value_type(v).clone())
        })
    };
    for e in (&graph.nodes).edge_references() {
        if kept(e.source()) || !kept(e.target()) {
            continue;
        }
        let w = *e.weight();
        let new = input(&mut g, Value::new(e.source(), w.output));
        g.nodes.remove_edge(e.id());
        g.nodes.add_edge(new.node, e.target(), Edge { output: 0, input: w.input });
    }
    for k in 0..g.outputs.len() {
        let v = g.outputs[k].1;
        if !kept(v.node) {
            g.outputs[k].1 = input(&mut g, v);
        }
    }
    for &n in done {
        if !kept(n) {
            g.nodes.remove_node(n);
        }
    }
    g.remove_dead();
    (g, live)
}
