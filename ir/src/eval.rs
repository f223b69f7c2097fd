//! `ir::eval`: the reference semantics. Runs one op on concrete tensors, or a whole graph
//! node by node. Slow and plain on purpose: it is the oracle, the constant folder and the
//! REFERENCE device.

use crate::error::{IrError, Result};
use crate::graph::{Graph, Value};
use crate::op::Op;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Runs `op` on `inputs` (`None` for absent optional inputs), producing `n_outputs` tensors.
pub fn eval_op(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    match op {
        Op::Input => return Err(IrError::msg("an input node has no semantics of its own")),
        Op::Const { value } => return Ok(vec![value.clone()]),
        _ => {}
    }
    for (_, eval) in crate::ops::GROUPS {
        if let Some(r) = eval(op, inputs, n_outputs) {
            let out = r.map_err(|e| IrError::msg(format!("{}: {}", op.name(), e.message)))?;
            if out.len() != n_outputs {
                return Err(IrError::msg(format!("{} gave {} outputs, the node has {}", op.name(), out.len(), n_outputs)));
            }
            return Ok(out);
        }
    }
    Err(IrError::msg(format!("no reference implementation for op `{}`", op.name())))
}

/// Runs a whole graph on `inputs` (in signature order) and returns its outputs in order.
/// Checks each input against its declared dtype and rank, and each produced tensor's dtype
/// against the node's declared output type, so a wrong type is caught where it arises.
pub fn run_graph(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    run_graph_with(graph, inputs, &mut |_, _, _| {})
}

/// [`run_graph`], calling `observe(node name, op, outputs)` after each node runs.
pub fn run_graph_with(
    graph: &Graph,
    inputs: &[Tensor],
    observe: &mut dyn FnMut(&str, &Op, &[Tensor]),
) -> Result<Vec<Tensor>> {
    if inputs.len() != graph.inputs.len() {
        return Err(IrError::msg(format!(
            "graph {} takes {} inputs, {} were given",
            graph.name,
            graph.inputs.len(),
            inputs.len()
        )));
    }
    let order = graph.topo_order()?;
    // How many uses each value has left, so intermediate tensors are dropped as soon as possible.
    let mut remaining: HashMap<Value, usize> = HashMap::new();
    for n in &order {
        for v in graph.inputs_of(*n).into_iter().flatten() {
            *remaining.entry(v).or_insert(0) += 1;
        }
    }
    for (_, v) in &graph.outputs {
        *remaining.entry(*v).or_insert(0) += 1;
    }
    let mut values: HashMap<Value, Tensor> = HashMap::new();
    for (i, (&n, t)) in graph.inputs.iter().zip(inputs).enumerate() {
        let node = graph.node(n);
        let ty = &node.outputs[0];
        if ty.dtype != t.dtype() {
            return Err(IrError::at(node.name.clone(), format!("input {i} must be {}, was given {}", ty.dtype, t.dtype())));
        }
        if let Some(dims) = ty.shape.dims() {
            let ok = dims.len() == t.rank()
                && dims.iter().zip(t.shape()).all(|(d, &s)| d.known().map_or(true, |k| k == s));
            if !ok {
                return Err(IrError::at(
                    node.name.clone(),
                    format!("input {i} must have shape {}, was given {:?}", ty.shape, t.shape()),
                ));
            }
        }
        values.insert(Value::new(n, 0), t.clone());
    }
    for &n in &order {
        let node = graph.node(n);
        if matches!(node.op, Op::Input) {
            continue;
        }
        let ins: Vec<Option<Value>> = graph.inputs_of(n);
        let mut args = Vec::with_capacity(ins.len());
        for v in &ins {
            args.push(match v {
                None => None,
                Some(v) => {
                    let left = remaining.get_mut(v).expect("every use was counted");
                    *left -= 1;
                    let t = if *left == 0 { values.remove(v) } else { values.get(v).cloned() };
                    Some(t.ok_or_else(|| IrError::at(node.name.clone(), "an input value was never computed"))?)
                }
            });
        }
        let outs = eval_op(&node.op, &args, node.outputs.len()).map_err(|e| e.in_node(node.name.clone()))?;
        for (k, (t, ty)) in outs.iter().zip(&node.outputs).enumerate() {
            if t.dtype() != ty.dtype {
                return Err(IrError::at(
                    node.name.clone(),
                    format!("{} output {k} is {} but the graph says {}", node.op.name(), t.dtype(), ty.dtype),
                ));
            }
        }
        observe(&node.name, &node.op, &outs);
        for (k, t) in outs.into_iter().enumerate() {
            let v = Value::new(n, k);
            if remaining.get(&v).copied().unwrap_or(0) > 0 {
                values.insert(v, t);
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|(name, v)| {
            let left = remaining.get_mut(v).expect("outputs were counted");
            *left -= 1;
            let t = if *left == 0 { values.remove(v) } else { values.get(v).cloned() };
            t.ok_or_else(|| IrError::msg(format!("output {name} was never computed")))
        })
        .collect()
}
