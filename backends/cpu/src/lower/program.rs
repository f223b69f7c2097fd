//! A whole graph (every shape concrete) as kernels plus one entry function that runs them in
//! the memory plan's order:
//!
//! ```c
//! int32_t NAME_run(const void *const *inputs, void *const *outputs, void *scratch,
//!                  const void *weights, const NAME_runner *runner);
//! ```
//!
//! Intermediates live in `scratch` at the offsets of [`kiln_passes::plan::plan`]; graph
//! inputs and outputs are the caller's buffers; constants are data objects of the module,
//! or with external weights, offsets into `weights`. For each kernel the entry fills an
//! argument array in its stack frame and calls the kernel over all its units, or, when the
//! caller gave a runner with a `parallel_for`, hands the kernel to it (big kernels only).

use super::{lower_node, Arg, External, Kernel, LowerCtx, LowerError, Operand, OutType, Result};
use cranelift_module::{DataId, FuncId, Module};
use kiln_ir::{DType, Graph, NodeId, Op, Value};
use std::collections::HashMap;

use super::entry::{define_entry, Layout};
pub use super::entry::{
    ERR_BUFFER_NULL, ERR_SCRATCH_ALIGN, ERR_SCRATCH_NULL, ERR_WEIGHTS_NULL, OK,
};

/// A tensor of the program's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// What the lowering made: the entry function and what a caller needs to know to call it.
#[derive(Clone, Debug)]
pub struct Program {
    pub entry: FuncId,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// Bytes of scratch the entry needs (aligned to [`SCRATCH_ALIGN`]).
    pub scratch_bytes: usize,
    /// With external weights: the bytes the `weights` argument must point to.
    pub weights: Option<Vec<u8>>,
    /// Kernel kinds in run order, for reports.
    pub kernels: Vec<String>,
}

pub const SCRATCH_ALIGN: usize = kiln_passes::plan::ALIGN;

/// Lowers `graph` into `ctx.module` with an exported entry called `{ctx.prefix}_run`.
pub fn lower_program<M: Module>(ctx: &mut LowerCtx<M>, graph: &Graph) -> Result<Program> {
    let mut g = graph.clone();
    let ports = |g: &Graph, ids: Vec<(String, Value)>| -> Result<Vec<Port>> {
        ids.into_iter()
            .map(|(name, v)| {
                let t = g.value_type(v);
                let shape = t.shape.concrete().ok_or_else(|| {
                    LowerError::Unsupported(format!(
                        "`{name}` has shape {t}: fix its symbolic dims with --input-shape"
                    ))
                })?;
                Ok(Port {
                    name,
                    dtype: t.dtype,
                    shape,
                })
            })
            .collect()
    };
    let inputs = ports(
        &g,
        g.inputs
            .iter()
            .map(|&n| (g.node(n).name.clone(), Value::new(n, 0)))
            .collect(),
    )?;
    bind_types(
        &mut g,
        &inputs.iter().map(|p| p.shape.clone()).collect::<Vec<_>>(),
    )?;
    let outputs = ports(&g, g.outputs.clone())?;

    // Lower every node; a fused kernel no lowering takes whole is replaced by its body,
    // whose nodes are lowered in the next round.
    let mut kernels: HashMap<NodeId, Kernel> = HashMap::new();
    let mut refused: Vec<String> = Vec::new();
    let input_shapes: Vec<Vec<usize>> = inputs.iter().map(|p| p.shape.clone()).collect();
    loop {
        bind_types(&mut g, &input_shapes)?;
        let mut to_inline = Vec::new();
        for n in g
            .topo_order()
            .map_err(|e| LowerError::Unsupported(e.to_string()))?
        {
            let node = g.node(n);
            if matches!(node.op, Op::Input | Op::Const { .. }) || kernels.contains_key(&n) {
                continue;
            }
            let in_values = g.inputs_of(n);
            let known = in_values
                .iter()
                .flatten()
                .map(|&v| concrete(&g, v))
                .chain((0..node.outputs.len()).map(|o| concrete(&g, Value::new(n, o))));
            if let Some(Err(LowerError::Unsupported(_))) = known.into_iter().find(|r| r.is_err()) {
                refused.push(format!("node {} ({}): a shape only running the graph tells (the artifact needs every shape at compile time)", node.name, node.op.name()));
                continue;
            }
            let mut shapes = Vec::new();
            for v in &in_values {
                shapes.push(v.map(|v| concrete(&g, v)).transpose()?);
            }
            let operands: Vec<Option<Operand>> = in_values
                .iter()
                .zip(&shapes)
                .map(|(v, s)| {
                    v.zip(s.as_ref()).map(|(v, s)| Operand {
                        dtype: g.value_type(v).dtype,
                        shape: s,
                        value: g.const_value(v),
                    })
                })
                .collect();
            let outs: Vec<OutType> = (0..node.outputs.len())
                .map(|o| {
                    Ok(OutType {
                        dtype: node.outputs[o].dtype,
                        shape: concrete(&g, Value::new(n, o))?,
                    })
                })
                .collect::<Result<_>>()?;
            match lower_node(ctx, node, &operands, &outs) {
                Ok(k) => {
                    kernels.insert(n, k);
                }
                Err(LowerError::Unsupported(_)) if matches!(node.op, Op::Fused { .. }) => {
                    to_inline.push(n)
                }
                Err(LowerError::Unsupported(m)) => refused.push(m),
                Err(e) => return Err(e),
            }
        }
        if to_inline.is_empty() {
            break;
        }
        for n in to_inline {
            inline(&mut g, n)?;
        }
    }
    if !refused.is_empty() {
        return Err(LowerError::Unsupported(format!(
            "{} node{} of {} have no generated kernel (the artifact has no interpreter to fall back on):\n  {}",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" },
            graph.name,
            refused.join("\n  ")
        )));
    }

    let plan = kiln_passes::plan::plan(&g).ok_or_else(|| {
        LowerError::Unsupported("the memory plan needs every intermediate's size".into())
    })?;
    let mut const_data: HashMap<NodeId, DataId> = HashMap::new();
    let mut steps: Vec<(NodeId, Kernel)> = Vec::new();
    for &n in &plan.order {
        if let Some(k) = kernels.remove(&n) {
            for a in &k.args {
                if let Arg::Input(i) = a {
                    if let Some(v) = g.inputs_of(n).get(*i).copied().flatten() {
                        if let (Some(t), false) =
                            (g.const_value(v), const_data.contains_key(&v.node))
                        {
                            const_data.insert(v.node, ctx.data("weight", t.to_le_bytes(), 64)?);
                        }
                    }
                }
            }
            steps.push((n, k));
        }
    }
    // Graph outputs that no kernel writes (an input or a constant passed through), and
    // second names of one value, are copied at the end.
    let mut copies: Vec<(usize, Value)> = Vec::new();
    let mut written: HashMap<Value, usize> = HashMap::new();
    for (k, (_, v)) in g.outputs.iter().enumerate() {
        let by_kernel = !matches!(g.node(v.node).op, Op::Input | Op::Const { .. });
        if by_kernel && !written.contains_key(v) {
            written.insert(*v, k);
        } else {
            if let Some(t) = g.const_value(*v) {
                if !const_data.contains_key(&v.node) {
                    const_data.insert(v.node, ctx.data("weight", t.to_le_bytes(), 64)?);
                }
            }
            copies.push((k, *v));
        }
    }
    let mut external_offsets: HashMap<DataId, i64> = HashMap::new();
    let weights = ctx
        .external
        .as_ref()
        .map(|list| layout_external(list, &mut external_offsets));

    let layout = Layout {
        g: &g,
        plan: &plan,
        written: &written,
        const_data: &const_data,
        external: &external_offsets,
    };
    let entry = define_entry(ctx, &layout, &steps, &copies, weights.is_some())?;
    Ok(Program {
        entry,
        inputs,
        outputs,
        scratch_bytes: plan.arena_bytes.div_ceil(SCRATCH_ALIGN) * SCRATCH_ALIGN,
        weights,
        kernels: steps.iter().map(|(_, k)| k.kind.clone()).collect(),
    })
}

/// Infers every value's type again from the concrete input shapes (an importer may leave a
/// dim unknown that the inputs fix) and keeps each that came out concrete.
fn bind_types(g: &mut Graph, input_shapes: &[Vec<usize>]) -> Result<()> {
    let types = kiln_passes::plan::concrete_types(g, input_shapes)
        .map_err(|e| LowerError::Unsupported(e.to_string()))?;
    for (v, t) in types {
        if t.shape.concrete().is_some() && v.output < g.node(v.node).outputs.len() {
            g.nodes[v.node].outputs[v.output] = t;
        }
    }
    Ok(())
}

fn concrete(g: &Graph, v: Value) -> Result<Vec<usize>> {
    let t = g.value_type(v);
    t.shape.concrete().ok_or_else(|| {
        LowerError::Unsupported(format!(
            "node {} output {} has shape {t}: every shape must be known (fix symbolic input dims with --input-shape)",
            g.node(v.node).name,
            v.output
        ))
    })
}

/// Replaces fused node `n` by the nodes of its body.
fn inline(g: &mut Graph, n: NodeId) -> Result<()> {
    let Op::Fused { body } = g.node(n).op.clone() else {
        return Ok(());
    };
    let outer_inputs = g.inputs_of(n);
    let mut map: HashMap<Value, Value> = HashMap::new();
    for (i, &bn) in body.inputs.iter().enumerate() {
        let v = outer_inputs.get(i).copied().flatten().ok_or_else(|| {
            LowerError::Unsupported(format!(
                "node {}: body input {i} has no value",
                g.node(n).name
            ))
        })?;
        map.insert(Value::new(bn, 0), v);
    }
    for bn in body
        .topo_order()
        .map_err(|e| LowerError::Unsupported(e.to_string()))?
    {
        let node = body.node(bn);
        match &node.op {
            Op::Input => continue,
            Op::Const { value } => {
                let v = g.add_const(node.name.clone(), value.clone());
                map.insert(Value::new(bn, 0), v);
            }
            op => {
                let ins: Vec<Option<Value>> = body
                    .inputs_of(bn)
                    .iter()
                    .map(|v| v.and_then(|v| map.get(&v).copied()))
                    .collect();
                let new =
                    g.add_node_typed(op.clone(), node.name.clone(), &ins, node.outputs.clone());
                for o in 0..node.outputs.len() {
                    map.insert(Value::new(bn, o), Value::new(new, o));
                }
            }
        }
    }
    for (o, (_, bv)) in body.outputs.iter().enumerate() {
        let new = *map.get(bv).ok_or_else(|| {
            LowerError::Unsupported(format!(
                "node {}: body output {o} is not computed",
                g.node(n).name
            ))
        })?;
        kiln_ir::rewrite::replace_consumer_uses(g, Value::new(n, o), new);
        for (_, v) in g.outputs.iter_mut() {
            if *v == Value::new(n, o) {
                *v = new;
            }
        }
    }
    g.nodes.remove_node(n);
    Ok(())
}

/// Places external data one after the other at their alignments; returns the blob.
fn layout_external(list: &[External], offsets: &mut HashMap<DataId, i64>) -> Vec<u8> {
    let mut blob = Vec::new();
    for e in list {
        let align = e.align.max(1) as usize;
        blob.resize(blob.len().div_ceil(align) * align, 0);
        offsets.insert(e.id, blob.len() as i64);
        blob.extend_from_slice(&e.bytes);
    }
    blob
}
