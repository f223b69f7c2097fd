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

use super::{clif, lower_node, Arg, External, Kernel, LowerCtx, LowerError, OutType, Operand, Result};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, Signature, StackSlotData, StackSlotKind, Value as ClifValue};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataId, FuncId, Linkage, Module};
use kiln_ir::{DType, Graph, NodeId, Op, Value};
use std::collections::HashMap;

/// Return codes of the entry (the header's `NAME_error_string` spells them out).
pub const OK: i32 = 0;
pub const ERR_SCRATCH_NULL: i32 = 1;
pub const ERR_SCRATCH_ALIGN: i32 = 2;
pub const ERR_WEIGHTS_NULL: i32 = 3;
pub const ERR_BUFFER_NULL: i32 = 4;

/// Below this many output elements a kernel runs on the calling thread even when a runner
/// is given: waking workers costs more than they save.
const PARALLEL_ELEMENTS: usize = 8192;

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
                let shape = t.shape.concrete().ok_or_else(|| LowerError::Unsupported(format!("`{name}` has shape {t}: fix its symbolic dims with --input-shape")))?;
                Ok(Port { name, dtype: t.dtype, shape })
            })
            .collect()
    };
    let inputs = ports(&g, g.inputs.iter().map(|&n| (g.node(n).name.clone(), Value::new(n, 0))).collect())?;
    bind_types(&mut g, &inputs.iter().map(|p| p.shape.clone()).collect::<Vec<_>>())?;
    let outputs = ports(&g, g.outputs.clone())?;

    // Lower every node; a fused kernel no lowering takes whole is replaced by its body,
    // whose nodes are lowered in the next round.
    let mut kernels: HashMap<NodeId, Kernel> = HashMap::new();
    let mut refused: Vec<String> = Vec::new();
    let input_shapes: Vec<Vec<usize>> = inputs.iter().map(|p| p.shape.clone()).collect();
    loop {
        bind_types(&mut g, &input_shapes)?;
        let mut to_inline = Vec::new();
        for n in g.topo_order().map_err(|e| LowerError::Unsupported(e.to_string()))? {
            let node = g.node(n);
            if matches!(node.op, Op::Input | Op::Const { .. }) || kernels.contains_key(&n) {
                continue;
            }
            let in_values = g.inputs_of(n);
            let known = in_values.iter().flatten().map(|&v| concrete(&g, v)).chain((0..node.outputs.len()).map(|o| concrete(&g, Value::new(n, o))));
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
                    v.zip(s.as_ref()).map(|(v, s)| Operand { dtype: g.value_type(v).dtype, shape: s, value: g.const_value(v) })
                })
                .collect();
            let outs: Vec<OutType> = (0..node.outputs.len())
                .map(|o| Ok(OutType { dtype: node.outputs[o].dtype, shape: concrete(&g, Value::new(n, o))? }))
                .collect::<Result<_>>()?;
            match lower_node(ctx, node, &operands, &outs) {
                Ok(k) => {
                    kernels.insert(n, k);
                }
                Err(LowerError::Unsupported(_)) if matches!(node.op, Op::Fused { .. }) => to_inline.push(n),
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

    let plan = kiln_passes::plan::plan(&g).ok_or_else(|| LowerError::Unsupported("the memory plan needs every intermediate's size".into()))?;
    let mut const_data: HashMap<NodeId, DataId> = HashMap::new();
    let mut steps: Vec<(NodeId, Kernel)> = Vec::new();
    for &n in &plan.order {
        if let Some(k) = kernels.remove(&n) {
            for a in &k.args {
                if let Arg::Input(i) = a {
                    if let Some(v) = g.inputs_of(n).get(*i).copied().flatten() {
                        if let (Some(t), false) = (g.const_value(v), const_data.contains_key(&v.node)) {
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
    let weights = ctx.external.as_ref().map(|list| layout_external(list, &mut external_offsets));

    let layout = Layout { g: &g, plan: &plan, written: &written, const_data: &const_data, external: &external_offsets };
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
    let types = kiln_passes::plan::concrete_types(g, input_shapes).map_err(|e| LowerError::Unsupported(e.to_string()))?;
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
        let v = outer_inputs.get(i).copied().flatten().ok_or_else(|| LowerError::Unsupported(format!("node {}: body input {i} has no value", g.node(n).name)))?;
        map.insert(Value::new(bn, 0), v);
    }
    for bn in body.topo_order().map_err(|e| LowerError::Unsupported(e.to_string()))? {
        let node = body.node(bn);
        match &node.op {
            Op::Input => continue,
            Op::Const { value } => {
                let v = g.add_const(node.name.clone(), value.clone());
                map.insert(Value::new(bn, 0), v);
            }
            op => {
                let ins: Vec<Option<Value>> = body.inputs_of(bn).iter().map(|v| v.and_then(|v| map.get(&v).copied())).collect();
                let new = g.add_node_typed(op.clone(), node.name.clone(), &ins, node.outputs.clone());
                for o in 0..node.outputs.len() {
                    map.insert(Value::new(bn, o), Value::new(new, o));
                }
            }
        }
    }
    for (o, (_, bv)) in body.outputs.iter().enumerate() {
        let new = *map.get(bv).ok_or_else(|| LowerError::Unsupported(format!("node {}: body output {o} is not computed", g.node(n).name)))?;
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

/// Where every value lives.
struct Layout<'a> {
    g: &'a Graph,
    plan: &'a kiln_passes::plan::MemoryPlan,
    /// Graph outputs a kernel writes: value → output position.
    written: &'a HashMap<Value, usize>,
    const_data: &'a HashMap<NodeId, DataId>,
    external: &'a HashMap<DataId, i64>,
}

/// The addresses the entry has at hand.
struct Bases {
    inputs: Vec<ClifValue>,
    outputs: Vec<ClifValue>,
    scratch: ClifValue,
    weights: ClifValue,
}

impl Layout<'_> {
    fn data_addr<M: Module>(&self, b: &mut FunctionBuilder, module: &mut M, bases: &Bases, id: DataId) -> ClifValue {
        match self.external.get(&id) {
            Some(&off) => b.ins().iadd_imm_s(bases.weights, off),
            None => {
                let gv = module.declare_data_in_func(id, b.func);
                b.ins().symbol_value(types::I64, gv)
            }
        }
    }

    fn value_addr<M: Module>(&self, b: &mut FunctionBuilder, module: &mut M, bases: &Bases, v: Value) -> Result<ClifValue> {
        let node = self.g.node(v.node);
        if let Op::Input = node.op {
            let k = self.g.inputs.iter().position(|&n| n == v.node).ok_or_else(|| LowerError::Module(format!("{} is not a graph input", node.name)))?;
            return Ok(bases.inputs[k]);
        }
        if let Some(id) = self.const_data.get(&v.node) {
            return Ok(self.data_addr(b, module, bases, *id));
        }
        if let Some(&k) = self.written.get(&v) {
            return Ok(bases.outputs[k]);
        }
        let slot = self.plan.slot(v).ok_or_else(|| LowerError::Module(format!("node {} output {} has no place in the arena", node.name, v.output)))?;
        Ok(b.ins().iadd_imm_s(bases.scratch, slot.offset as i64))
    }
}

fn define_entry<M: Module>(ctx: &mut LowerCtx<M>, layout: &Layout, steps: &[(NodeId, Kernel)], copies: &[(usize, Value)], external: bool) -> Result<FuncId> {
    let module = &mut *ctx.module;
    let ptr = types::I64;
    let mut sig = Signature::new(module.isa().default_call_conv());
    for _ in 0..5 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let name = format!("{}_run", ctx.prefix);
    let id = module.declare_function(&name, Linkage::Export, &sig).map_err(|e| LowerError::Module(format!("declaring {name}: {e}")))?;
    let kernel_sig = crate::codegen::signature(&*module);
    let mut runner_sig = Signature::new(module.isa().default_call_conv());
    for _ in 0..4 {
        runner_sig.params.push(AbiParam::new(ptr));
    }

    let mut fctx = module.make_context();
    fctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();
    let frontend = module.isa().frontend_config();
    {
        let mut b = FunctionBuilder::new(&mut fctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let &[inputs, outputs, scratch, weights, runner] = b.block_params(entry) else {
            return Err(LowerError::Module("the entry takes five parameters".into()));
        };
        let fail = |b: &mut FunctionBuilder, cond: ClifValue, code: i32| {
            let bad = b.create_block();
            let good = b.create_block();
            b.ins().brif(cond, bad, &[], good, &[]);
            b.switch_to_block(bad);
            let c = b.ins().iconst(types::I32, code as i64);
            b.ins().return_(&[c]);
            b.switch_to_block(good);
        };
        if layout.plan.arena_bytes > 0 {
            let null = b.ins().icmp_imm_s(IntCC::Equal, scratch, 0);
            fail(&mut b, null, ERR_SCRATCH_NULL);
            let low = b.ins().band_imm_s(scratch, (SCRATCH_ALIGN - 1) as i64);
            fail(&mut b, low, ERR_SCRATCH_ALIGN);
        }
        if external {
            let null = b.ins().icmp_imm_s(IntCC::Equal, weights, 0);
            fail(&mut b, null, ERR_WEIGHTS_NULL);
        }
        // Every input and output pointer must be given.
        let mut bases = Bases { inputs: Vec::new(), outputs: Vec::new(), scratch, weights };
        for (array, n, list) in [(inputs, layout.g.inputs.len(), 0), (outputs, layout.g.outputs.len(), 1)] {
            if n == 0 {
                continue;
            }
            let null = b.ins().icmp_imm_s(IntCC::Equal, array, 0);
            fail(&mut b, null, ERR_BUFFER_NULL);
            let mut any = b.ins().iconst(types::I8, 0);
            for k in 0..n {
                let p = b.ins().load(ptr, clif::mem(), array, (k * 8) as i32);
                let z = b.ins().icmp_imm_s(IntCC::Equal, p, 0);
                any = b.ins().bor(any, z);
                if list == 0 { bases.inputs.push(p) } else { bases.outputs.push(p) }
            }
            fail(&mut b, any, ERR_BUFFER_NULL);
        }
        // The runner's parallel_for, or 0.
        let pf = b.declare_var(ptr);
        let rctx = b.declare_var(ptr);
        let zero = b.ins().iconst(ptr, 0);
        b.def_var(pf, zero);
        b.def_var(rctx, zero);
        let has_runner = b.create_block();
        let go = b.create_block();
        b.ins().brif(runner, has_runner, &[], go, &[]);
        b.switch_to_block(has_runner);
        let c = b.ins().load(ptr, clif::mem(), runner, 0);
        let f = b.ins().load(ptr, clif::mem(), runner, 8);
        b.def_var(rctx, c);
        b.def_var(pf, f);
        b.ins().jump(go, &[]);
        b.switch_to_block(go);

        let max_args = steps.iter().map(|(_, k)| k.args.len()).max().unwrap_or(0).max(1);
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (max_args * 8) as u32, 4));
        let runner_sig_ref = b.import_signature(runner_sig);
        for (n, k) in steps {
            if k.units == 0 {
                continue;
            }
            let node_ins = layout.g.inputs_of(*n);
            for (j, a) in k.args.iter().enumerate() {
                let addr = match a {
                    Arg::Input(i) => {
                        let v = node_ins.get(*i).copied().flatten().ok_or_else(|| LowerError::Module(format!("node {}: kernel reads missing input {i}", layout.g.node(*n).name)))?;
                        layout.value_addr(&mut b, module, &bases, v)?
                    }
                    Arg::Output(o) => layout.value_addr(&mut b, module, &bases, Value::new(*n, *o))?,
                    Arg::Data(id) => layout.data_addr(&mut b, module, &bases, *id),
                };
                b.ins().stack_store(ptr, addr, slot, (j * 8) as i32);
            }
            let args = b.ins().stack_addr(ptr, slot, 0);
            let fref = module.declare_func_in_func(k.func, b.func);
            let out_elems: usize = layout.g.node(*n).outputs.iter().map(|t| t.shape.concrete().map_or(0, |s| s.iter().product())).sum();
            let units = b.ins().iconst(ptr, k.units as i64);
            if k.units >= 2 && out_elems >= PARALLEL_ELEMENTS {
                let threaded = b.create_block();
                let direct = b.create_block();
                let next = b.create_block();
                let f = b.use_var(pf);
                b.ins().brif(f, threaded, &[], direct, &[]);
                b.switch_to_block(threaded);
                let kaddr = b.ins().func_addr(ptr, fref);
                let c = b.use_var(rctx);
                b.ins().call_indirect(runner_sig_ref, f, &[c, kaddr, args, units]);
                b.ins().jump(next, &[]);
                b.switch_to_block(direct);
                let z = b.ins().iconst(ptr, 0);
                b.ins().call(fref, &[args, z, units]);
                b.ins().jump(next, &[]);
                b.switch_to_block(next);
            } else {
                let z = b.ins().iconst(ptr, 0);
                b.ins().call(fref, &[args, z, units]);
            }
        }
        for &(k, v) in copies {
            let t = layout.g.value_type(v);
            let bytes = t.shape.concrete().map_or(0, |s| s.iter().product::<usize>()) * t.dtype.size();
            let src = match layout.written.get(&v) {
                Some(&first) => bases.outputs[first],
                None => layout.value_addr(&mut b, module, &bases, v)?,
            };
            super::copy::copy_bytes(&mut b, src, bases.outputs[k], bytes as i64)?;
        }
        let ok = b.ins().iconst(types::I32, OK as i64);
        b.ins().return_(&[ok]);
        b.seal_all_blocks();
        b.finalize(frontend);
    }
    let _ = kernel_sig;
    module.define_function(id, &mut fctx).map_err(|e| LowerError::Module(format!("compiling {name}: {e:?}")))?;
    Ok(id)
}
