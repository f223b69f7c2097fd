//! The memory plan: where each intermediate tensor lives in one arena, reusing the space of
//! tensors no longer needed. Device-independent: it needs only the graph's order, shapes
//! and dtypes, so every backend can use it.
//!
//! An intermediate is every node output that is not a graph input, a constant or a graph
//! output (those have buffers of their own). Each lives from the node that writes it to the
//! last node that reads it, positions in [`Graph::topo_order`]; a node's inputs and outputs
//! are live at once, so a kernel never writes over what it reads. Two intermediates whose
//! lifetimes overlap never share bytes.
//!
//! Placement is offline (every lifetime is known up front): intermediates are placed one by
//! one at the best-fitting gap among the already-placed ones whose lifetimes overlap (the
//! smallest gap that holds it, else past the highest). Two orders are tried and the smaller
//! arena kept: largest first (big tensors claim space first and small ones fill the holes),
//! and topological order (each tensor reuses what the finished ones freed). On the zoo,
//! largest-first is never worse and wins on the branching models; see passes/README.md for
//! the numbers.

use kiln_ir::{Dim, Graph, IrError, NodeId, Op, Result, Tensor, TensorType, Value};
use std::collections::HashMap;

/// One intermediate tensor's place in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub value: Value,
    /// Byte offset into the arena (aligned to [`ALIGN`]).
    pub offset: usize,
    pub bytes: usize,
    /// Positions in [`MemoryPlan::order`] of the node that writes the tensor and of the last
    /// node that reads it (the same when nothing reads it).
    pub live: (usize, usize),
}

/// Byte alignment of every slot: a cache line, enough for any vector load.
pub const ALIGN: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    pub slots: Vec<Slot>,
    /// The arena's size.
    pub arena_bytes: usize,
    /// What the intermediates would take each in their own buffer (each rounded up to
    /// [`ALIGN`], as their slots are, so that the arena never exceeds it).
    pub total_bytes: usize,
    /// The node order the lifetimes assume ([`Graph::topo_order`]): run the nodes in it.
    pub order: Vec<NodeId>,
    /// Intermediates whose size only running the graph tells (a Loop's scan outputs,
    /// NonZero's indices), left out of the arena: a backend allocates each when it is
    /// produced. Only [`plan_for_inputs`] leaves any; [`plan`] then gives no plan at all.
    pub dynamic: Vec<Value>,
}

impl MemoryPlan {
    pub fn slot(&self, v: Value) -> Option<&Slot> {
        self.slots.iter().find(|s| s.value == v)
    }
}

/// Plans `graph`'s intermediates (every node output that is not an input, a constant or a
/// graph output). `None` when some intermediate's size is not known (symbolic dims): a
/// backend then plans once the shapes are bound, with [`plan_for_inputs`].
pub fn plan(graph: &Graph) -> Option<MemoryPlan> {
    plan_with(graph, |v| bytes_of(graph.value_type(v)))
        .ok()
        .filter(|p| p.dynamic.is_empty())
}

/// Plans `graph` for inputs of these concrete shapes (in signature order): binds symbolic
/// dims by inferring every node's output type again, node by node, from the inputs' (and
/// evaluating the small shape computations on the way, as a Reshape's target shape).
/// Intermediates whose size still depends on data are listed in [`MemoryPlan::dynamic`].
pub fn plan_for_inputs(graph: &Graph, input_shapes: &[Vec<usize>]) -> Result<MemoryPlan> {
    let types = concrete_types(graph, input_shapes)?;
    plan_with(graph, |v| types.get(&v).and_then(bytes_of))
}

/// Every value's type in `graph` once its inputs have these concrete shapes.
pub fn concrete_types(
    graph: &Graph,
    input_shapes: &[Vec<usize>],
) -> Result<HashMap<Value, TensorType>> {
    if input_shapes.len() != graph.inputs.len() {
        return Err(IrError::msg(format!(
            "graph {} takes {} inputs, {} shapes were given",
            graph.name,
            graph.inputs.len(),
            input_shapes.len()
        )));
    }
    let mut bound: HashMap<&str, usize> = HashMap::new();
    let mut types = Vec::with_capacity(input_shapes.len());
    for (&n, dims) in graph.inputs.iter().zip(input_shapes) {
        let node = graph.node(n);
        let declared = &node.outputs[0];
        let fits = match declared.shape.dims() {
            None => true,
            Some(ds) => {
                ds.len() == dims.len()
                    && ds.iter().zip(dims).all(|(d, &k)| match d {
                        Dim::Known(j) => *j == k,
                        Dim::Sym(s) => *bound.entry(s.as_str()).or_insert(k) == k,
                        Dim::Unknown => true,
                    })
            }
        };
        if !fits {
            return Err(IrError::at(node.name.clone(), format!("input of shape {dims:?} does not fit its declared type {declared} (or binds a symbol two ways)")));
        }
        types.push(TensorType::known(declared.dtype, dims));
    }
    let values = vec![None; types.len()];
    Ok(bind(graph, &types, &values)?.0)
}

/// The types (and the values, where small and computable) of every value of `graph` given
/// its inputs' types and known values.
#[allow(clippy::type_complexity)]
fn bind(
    graph: &Graph,
    inputs: &[TensorType],
    input_values: &[Option<Tensor>],
) -> Result<(HashMap<Value, TensorType>, HashMap<Value, Tensor>)> {
    // Values up to this many elements are computed when all their inputs are: shape
    // arithmetic, never real work.
    const SMALL: usize = 4096;
    let mut types: HashMap<Value, TensorType> = HashMap::new();
    let mut values: HashMap<Value, Tensor> = HashMap::new();
    for n in graph.topo_order()? {
        let node = graph.node(n);
        let at = |e: IrError| e.in_node(node.name.clone());
        let out = |k: usize| Value::new(n, k);
        match &node.op {
            Op::Input => {
                let i = graph.inputs.iter().position(|&m| m == n).ok_or_else(|| {
                    IrError::at(node.name.clone(), "an input node that is not a graph input")
                })?;
                let t = inputs.get(i).ok_or_else(|| {
                    IrError::at(node.name.clone(), "no type given for this input")
                })?;
                types.insert(out(0), t.clone());
                if let Some(Some(v)) = input_values.get(i) {
                    values.insert(out(0), v.clone());
                }
                continue;
            }
            Op::Const { value } => {
                types.insert(out(0), node.outputs[0].clone());
                values.insert(out(0), value.clone());
                continue;
            }
            _ => {}
        }
        let ins = graph.inputs_of(n);
        let in_types: Vec<Option<TensorType>> = ins
            .iter()
            .map(|v| v.and_then(|v| types.get(&v).cloned()))
            .collect();
        let in_values: Vec<Option<Tensor>> = ins
            .iter()
            .map(|v| v.and_then(|v| values.get(&v).cloned()))
            .collect();
        let (outs, outs_values): (Vec<TensorType>, Vec<Option<Tensor>>) = match &node.op {
            Op::Fused { body } => {
                let body_types: Vec<TensorType> = in_types
                    .iter()
                    .cloned()
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                    IrError::at(node.name.clone(), "a kernel input is missing")
                })?;
                let (bt, bv) = bind(body, &body_types, &in_values).map_err(at)?;
                body.outputs
                    .iter()
                    .map(|(_, v)| (bt[v].clone(), bv.get(v).cloned()))
                    .unzip()
            }
            Op::Shape { start, end } => {
                let t = in_types.first().cloned().flatten();
                match t.as_ref().and_then(|t| t.shape.concrete()) {
                    Some(dims) => {
                        let (s, e) = shape_range(*start, *end, dims.len());
                        let v: Vec<i64> = dims[s..e].iter().map(|&d| d as i64).collect();
                        let value = Tensor::new(vec![v.len()], v).map_err(at)?;
                        (
                            vec![TensorType::known(kiln_ir::DType::I64, value.shape())],
                            vec![Some(value)],
                        )
                    }
                    None => (vec![node.outputs[0].clone()], vec![None]),
                }
            }
            op => {
                let tr: Vec<Option<&TensorType>> = in_types.iter().map(|t| t.as_ref()).collect();
                let cr: Vec<Option<&Tensor>> = in_values.iter().map(|t| t.as_ref()).collect();
                let outs = kiln_ir::infer::infer(op, &tr, &cr, node.outputs.len()).map_err(at)?;
                let all_known = ins
                    .iter()
                    .zip(&in_values)
                    .all(|(v, t)| v.is_none() || t.as_ref().is_some_and(|t| t.len() <= SMALL));
                let small = outs
                    .iter()
                    .all(|t| t.shape.numel().is_some_and(|k| k <= SMALL));
                let computed = if all_known && small && op.is_pure() && op.subgraphs().is_empty() {
                    kiln_ir::eval::eval_op(op, &in_values, outs.len()).ok()
                } else {
                    None
                };
                let vals = match computed {
                    Some(vs) => vs.into_iter().map(Some).collect(),
                    None => vec![None; outs.len()],
                };
                (outs, vals)
            }
        };
        for (k, (t, v)) in outs.into_iter().zip(outs_values).enumerate() {
            types.insert(out(k), t);
            if let Some(v) = v {
                values.insert(out(k), v);
            }
        }
    }
    Ok((types, values))
}

/// ONNX Shape's start and end: negative counts from the back, both clamped to the rank.
fn shape_range(start: i64, end: Option<i64>, rank: usize) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let s = clamp(start);
    (s, clamp(end.unwrap_or(r)).max(s))
}

fn bytes_of(t: &TensorType) -> Option<usize> {
    t.shape.numel()?.checked_mul(t.dtype.size())
}

/// An intermediate to place: its size and lifetime.
#[derive(Clone, Copy, Debug)]
struct Interval {
    value: Value,
    bytes: usize,
    first: usize,
    last: usize,
}

impl Interval {
    fn overlaps(&self, o: &Interval) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// Plans with each value's byte size given by `bytes`; values of unknown size go to
/// `dynamic`.
fn plan_with(graph: &Graph, bytes: impl Fn(Value) -> Option<usize>) -> Result<MemoryPlan> {
    let order = graph.topo_order()?;
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let outputs: std::collections::HashSet<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();
    let mut intervals = Vec::new();
    let mut dynamic = Vec::new();
    for (i, &n) in order.iter().enumerate() {
        let node = graph.node(n);
        if matches!(node.op, Op::Input | Op::Const { .. }) {
            continue;
        }
        for k in 0..node.outputs.len() {
            let value = Value::new(n, k);
            if outputs.contains(&value) {
                continue;
            }
            let Some(size) = bytes(value) else {
                dynamic.push(value);
                continue;
            };
            let last = graph
                .uses_of(value)
                .iter()
                .map(|(c, _)| pos[c])
                .max()
                .unwrap_or(i);
            intervals.push(Interval {
                value,
                bytes: size,
                first: i,
                last,
            });
        }
    }
    let total_bytes = intervals.iter().map(|s| align_up(s.bytes)).sum();
    let mut by_size = intervals.clone();
    by_size.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.first.cmp(&b.first))
            .then(a.value.cmp(&b.value))
    });
    let a = place(&by_size);
    let b = place(&intervals);
    let (mut slots, arena_bytes) = if b.1 < a.1 { b } else { a };
    slots.sort_by_key(|s| (s.live.0, s.value));
    Ok(MemoryPlan {
        slots,
        arena_bytes,
        total_bytes,
        order,
        dynamic,
    })
}

/// Places the intervals in the given order, each at the smallest gap that holds it among
/// the placed intervals it overlaps in time (else past the highest of them). Returns the
/// slots in the given order and the arena size.
fn place(intervals: &[Interval]) -> (Vec<Slot>, usize) {
    let mut slots: Vec<Slot> = Vec::with_capacity(intervals.len());
    let mut placed: Vec<Interval> = Vec::with_capacity(intervals.len());
    let mut arena = 0;
    for iv in intervals {
        // (offset, end) of every placed tensor live at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .zip(&slots)
            .filter(|(p, _)| p.overlaps(iv))
            .map(|(_, s)| (s.offset, s.offset + s.bytes))
            .collect();
        busy.sort_unstable();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0;
        for &(start, end) in &busy {
            if start >= cursor + iv.bytes {
                let gap = start - cursor;
                if best.map_or(true, |(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(align_up(end));
        }
        let offset = best.map_or(cursor, |(_, o)| o);
        arena = arena.max(align_up(offset + iv.bytes));
        slots.push(Slot {
            value: iv.value,
            offset,
            bytes: iv.bytes,
            live: (iv.first, iv.last),
        });
        placed.push(*iv);
    }
    (slots, arena)
}

fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}
