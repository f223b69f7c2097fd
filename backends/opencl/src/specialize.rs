//! A graph with concrete input shapes: every type re-inferred, and every node whose inputs
//! are all known (shape arithmetic, `Shape` of a now-concrete tensor, weights cast from f16)
//! evaluated once on the host and turned into a constant. Kernels are then generated with
//! every shape known.

use kiln_ir::{DType, Graph, IrError, Op, Tensor, TensorType, Value};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Results above this many elements stay kernels: folding should not hold a large tensor
/// that a kernel computes as cheaply.
const FOLD_MAX_ELEMENTS: usize = 1 << 16;

/// `graph` with its inputs set to `shapes` (None: keep the declared type), and the inputs
/// given in `pinned` read as those constants (the input stays, unused), for graphs whose
/// shapes depend on input values (a Reshape's shape, a Reduce's axes, a Range's limits).
pub fn specialize(graph: &Graph, shapes: &[Option<Vec<usize>>], pinned: &[Option<Tensor>]) -> Result<Graph, IrError> {
    let mut g = graph.clone();
    for (&n, s) in graph.inputs.iter().zip(shapes) {
        if let Some(s) = s {
            let dtype = g.node(n).outputs[0].dtype;
            g.nodes[n].outputs[0] = TensorType::known(dtype, s);
        }
    }
    for (&n, t) in graph.inputs.iter().zip(pinned) {
        if let Some(t) = t {
            pin(&mut g, n, t.clone());
        }
    }
    fold(&mut g)?;
    Ok(g)
}

/// Makes the uses of input node `n` read the constant `t` instead (`n` stays, unused).
fn pin(g: &mut Graph, n: kiln_ir::NodeId, t: Tensor) {
    let name = format!("{}.pinned", g.node(n).name);
    let c = g.add_const(name, t);
    let edges: Vec<_> = g.nodes.edges_directed(n, Direction::Outgoing).map(|e| (e.id(), e.target(), *e.weight())).collect();
    for (id, target, w) in edges {
        g.nodes.remove_edge(id);
        g.nodes.add_edge(c.node, target, w);
    }
}

/// Whether every value of `g` has a concrete shape (so kernels can be generated).
pub fn concrete(g: &Graph) -> bool {
    g.nodes.node_weights().all(|n| n.outputs.iter().all(|t| t.shape.concrete().is_some()))
}

/// Whether every input that decides a kernel's code rather than its data is a constant: a
/// cumulative op's axis, dropout's ratio and training_mode. When one is a graph input, the
/// plan is specialized on its value too.
pub fn decisive_inputs_known(g: &Graph) -> bool {
    g.nodes.node_indices().all(|n| {
        let need: &[usize] = match &g.node(n).op {
            Op::CumSum { .. } | Op::CumProd { .. } => &[1],
            Op::Dropout { .. } => &[1, 2],
            Op::Fused { body } => return decisive_inputs_known(body),
            _ => &[],
        };
        let ins = g.inputs_of(n);
        need.iter().all(|&i| ins.get(i).copied().flatten().map_or(true, |v| g.const_value(v).is_some()))
    })
}

/// Pinning an input is worth it when its values can decide shapes: small integer tensors
/// (shapes, axes, pads, counts) and scalars (Range's start, limit and delta).
pub fn pinnable(t: &Tensor) -> bool {
    (t.rank() == 0) || (!t.dtype().is_float() && t.len() <= 64)
}

fn fold(g: &mut Graph) -> Result<(), IrError> {
    for n in g.topo_order()? {
        let node = g.node(n);
        if matches!(node.op, Op::Input | Op::Const { .. }) {
            continue;
        }
        let ins = g.inputs_of(n);
        let name = node.name.clone();
        if let Op::Fused { body } = &node.op {
            let mut body = (**body).clone();
            for (&bi, v) in body.inputs.clone().iter().zip(&ins) {
                if let Some(v) = v {
                    body.nodes[bi].outputs[0] = g.value_type(*v).clone();
                    // A constant outside (shape arithmetic folded above) is a constant
                    // inside too, so the body's own shape arithmetic folds.
                    if let Some(t) = g.const_value(*v) {
                        pin(&mut body, bi, t.clone());
                    }
                }
            }
            fold(&mut body).map_err(|e| if e.node.is_some() { e } else { e.in_node(name.clone()) })?;
            // A body whose one output folded to a constant is that constant (a kernel of
            // shape arithmetic whose input shapes are now known).
            if let [(_, v)] = body.outputs.as_slice() {
                if let Some(t) = body.const_value(*v).cloned() {
                    make_const(g, n, t);
                    continue;
                }
            }
            if hoist_constant_outputs(g, n, &mut body) {
                continue;
            }
            let outs: Vec<TensorType> = body.outputs.iter().map(|(_, v)| body.value_type(*v).clone()).collect();
            g.nodes[n].op = Op::Fused { body: Box::new(body) };
            g.nodes[n].outputs = outs;
            continue;
        }
        let types: Vec<Option<TensorType>> = ins.iter().map(|v| v.map(|v| g.value_type(v).clone())).collect();
        let consts: Vec<Option<Tensor>> = ins.iter().map(|v| v.and_then(|v| g.const_value(v).cloned())).collect();
        let node = g.node(n);
        // Shapes are concrete now, so Shape and Size are constants.
        let known = match &node.op {
            Op::Shape { .. } | Op::Size => types.first().cloned().flatten().is_some_and(|t| t.shape.concrete().is_some()),
            op => op.is_pure() && ins.iter().zip(&consts).all(|(v, c)| v.is_none() || c.is_some()) && !ins.is_empty(),
        };
        let type_refs: Vec<Option<&TensorType>> = types.iter().map(|t| t.as_ref()).collect();
        let const_refs: Vec<Option<&Tensor>> = consts.iter().map(|t| t.as_ref()).collect();
        // Inferred before folding: a model's declared type is often unknown where the
        // known inputs now fix it (shape arithmetic at -O0), and the fold needs the size.
        let inferred = kiln_ir::infer::infer(&node.op, &type_refs, &const_refs, node.outputs.len()).map_err(|e| e.in_node(name.clone()));
        if known && node.outputs.len() == 1 {
            let in_dims = types.first().cloned().flatten().and_then(|t| t.shape.concrete()).unwrap_or_default();
            let out_type = inferred.as_ref().ok().and_then(|o| o.first()).unwrap_or(&node.outputs[0]);
            let small = out_type.shape.numel().is_some_and(|k| k <= FOLD_MAX_ELEMENTS);
            // Weights stored as f16/bf16 (`--fp16`) have no kernel here: decompress them once.
            let from_half = matches!(node.op, Op::Cast { .. })
                && types.first().cloned().flatten().is_some_and(|t| matches!(t.dtype, DType::F16 | DType::BF16));
            if small || from_half || matches!(node.op, Op::Shape { .. } | Op::Size) {
                if let Ok(mut outs) = shape_or_eval(&node.op, &in_dims, &consts) {
                    if let Some(t) = outs.pop().filter(|t| t.dtype() == node.outputs[0].dtype) {
                        make_const(g, n, t);
                        continue;
                    }
                }
            }
        }
        g.nodes[n].outputs = inferred?;
    }
    Ok(())
}

/// Shape and Size from the input's dims (its values are not needed); anything else
/// through `ir::eval`.
fn shape_or_eval(op: &Op, dims: &[usize], args: &[Option<Tensor>]) -> Result<Vec<Tensor>, IrError> {
    match op {
        Op::Shape { start, end } => {
            let r = dims.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clampi(*start), clampi(end.unwrap_or(r)));
            let d: Vec<i64> = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
            Ok(vec![Tensor::new(vec![d.len()], d)?])
        }
        Op::Size => Ok(vec![Tensor::scalar(dims.iter().product::<usize>() as i64)]),
        _ => kiln_ir::eval::eval_op(op, args, 1),
    }
}

/// The outputs of fused kernel `n` (with folded `body`) that are constants become
/// top-level constants read by the kernel's users, and leave the body: a kernel computes
/// only what it must. Returns true when no output is left and the kernel is gone.
fn hoist_constant_outputs(g: &mut Graph, n: kiln_ir::NodeId, body: &mut Graph) -> bool {
    if !body.outputs.iter().any(|(_, v)| body.const_value(*v).is_some()) {
        return false;
    }
    let name = g.node(n).name.clone();
    // The new index of each output, None for a hoisted one.
    let mut index = Vec::with_capacity(body.outputs.len());
    let mut kept = Vec::new();
    for (j, (out_name, v)) in body.outputs.iter().enumerate() {
        let Some(t) = body.const_value(*v).cloned() else {
            index.push(Some(kept.len()));
            kept.push((out_name.clone(), *v));
            continue;
        };
        index.push(None);
        let c = g.add_const(format!("{name}.{j}"), t);
        let edges: Vec<_> =
            g.nodes.edges_directed(n, Direction::Outgoing).filter(|e| e.weight().output == j).map(|e| (e.id(), e.target(), *e.weight())).collect();
        for (id, target, w) in edges {
            g.nodes.remove_edge(id);
            g.nodes.add_edge(c.node, target, kiln_ir::Edge { output: 0, input: w.input });
        }
        for (_, gv) in g.outputs.iter_mut() {
            if *gv == Value::new(n, j) {
                *gv = c;
            }
        }
    }
    let edges: Vec<_> = g.nodes.edges_directed(n, Direction::Outgoing).map(|e| e.id()).collect();
    for id in edges {
        if let Some(w) = g.nodes.edge_weight_mut(id) {
            w.output = index[w.output].unwrap_or(w.output);
        }
    }
    for (_, gv) in g.outputs.iter_mut() {
        if gv.node == n {
            gv.output = index[gv.output].unwrap_or(gv.output);
        }
    }
    body.outputs = kept;
    if body.outputs.is_empty() {
        g.nodes.remove_node(n);
        return true;
    }
    false
}

/// Replaces node `n` by the constant `t`, dropping its input edges.
fn make_const(g: &mut Graph, n: kiln_ir::NodeId, t: Tensor) {
    let edges: Vec<_> = g.nodes.edges_directed(n, Direction::Incoming).map(|e| e.id()).collect();
    for e in edges {
        g.nodes.remove_edge(e);
    }
    g.nodes[n].outputs = vec![TensorType::known(t.dtype(), t.shape())];
    g.nodes[n].op = Op::Const { value: t };
    g.nodes[n].arity = 0;
}
