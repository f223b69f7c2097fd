//! The entry function `NAME_run` (see [`super::program`]): checks its pointers, then for
//! each kernel in order fills the argument array in its stack frame and calls the kernel,
//! or hands it to the caller's `parallel_for`.

use super::program::SCRATCH_ALIGN;
use super::{clif, Arg, Kernel, LowerCtx, LowerError, Result};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, InstBuilder, Signature, StackSlotData, StackSlotKind, Value as ClifValue,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataId, FuncId, Linkage, Module};
use kiln_ir::{Graph, NodeId, Op, Value};
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

/// Where every value lives.
pub(super) struct Layout<'a> {
    pub g: &'a Graph,
    pub plan: &'a kiln_passes::plan::MemoryPlan,
    /// Graph outputs a kernel writes: value → output position.
    pub written: &'a HashMap<Value, usize>,
    pub const_data: &'a HashMap<NodeId, DataId>,
    pub external: &'a HashMap<DataId, i64>,
}

/// The addresses the entry has at hand.
struct Bases {
    inputs: Vec<ClifValue>,
    outputs: Vec<ClifValue>,
    scratch: ClifValue,
    weights: ClifValue,
}

impl Layout<'_> {
    fn data_addr<M: Module>(
        &self,
        b: &mut FunctionBuilder,
        module: &mut M,
        bases: &Bases,
        id: DataId,
    ) -> ClifValue {
        match self.external.get(&id) {
            Some(&off) => b.ins().iadd_imm_s(bases.weights, off),
            None => {
                let gv = module.declare_data_in_func(id, b.func);
                b.ins().symbol_value(types::I64, gv)
            }
        }
    }

    fn value_addr<M: Module>(
        &self,
        b: &mut FunctionBuilder,
        module: &mut M,
        bases: &Bases,
        v: Value,
    ) -> Result<ClifValue> {
        let node = self.g.node(v.node);
        if let Op::Input = node.op {
            let k = self
                .g
                .inputs
                .iter()
                .position(|&n| n == v.node)
                .ok_or_else(|| LowerError::Module(format!("{} is not a graph input", node.name)))?;
            return Ok(bases.inputs[k]);
        }
        if let Some(id) = self.const_data.get(&v.node) {
            return Ok(self.data_addr(b, module, bases, *id));
        }
        if let Some(&k) = self.written.get(&v) {
            return Ok(bases.outputs[k]);
        }
        let slot = self.plan.slot(v).ok_or_else(|| {
            LowerError::Module(format!(
                "node {} output {} has no place in the arena",
                node.name, v.output
            ))
        })?;
        Ok(b.ins().iadd_imm_s(bases.scratch, slot.offset as i64))
    }
}

pub(super) fn define_entry<M: Module>(
    ctx: &mut LowerCtx<M>,
    layout: &Layout,
    steps: &[(NodeId, Kernel)],
    copies: &[(usize, Value)],
    external: bool,
) -> Result<FuncId> {
    let module = &mut *ctx.module;
    let ptr = types::I64;
    let mut sig = Signature::new(module.isa().default_call_conv());
    for _ in 0..5 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let name = format!("{}_run", ctx.prefix);
    let id = module
        .declare_function(&name, Linkage::Export, &sig)
        .map_err(|e| LowerError::Module(format!("declaring {name}: {e}")))?;
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
        let mut bases = Bases {
            inputs: Vec::new(),
            outputs: Vec::new(),
            scratch,
            weights,
        };
        for (array, n, list) in [
            (inputs, layout.g.inputs.len(), 0),
            (outputs, layout.g.outputs.len(), 1),
        ] {
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
                if list == 0 {
                    bases.inputs.push(p)
                } else {
                    bases.outputs.push(p)
                }
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

        let max_args = steps
            .iter()
            .map(|(_, k)| k.args.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (max_args * 8) as u32,
            4,
        ));
        let runner_sig_ref = b.import_signature(runner_sig);
        for (n, k) in steps {
            if k.units == 0 {
                continue;
            }
            let node_ins = layout.g.inputs_of(*n);
            for (j, a) in k.args.iter().enumerate() {
                let addr = match a {
                    Arg::Input(i) => {
                        let v = node_ins.get(*i).copied().flatten().ok_or_else(|| {
                            LowerError::Module(format!(
                                "node {}: kernel reads missing input {i}",
                                layout.g.node(*n).name
                            ))
                        })?;
                        layout.value_addr(&mut b, module, &bases, v)?
                    }
                    Arg::Output(o) => {
                        layout.value_addr(&mut b, module, &bases, Value::new(*n, *o))?
                    }
                    Arg::Data(id) => layout.data_addr(&mut b, module, &bases, *id),
                };
                b.ins().stack_store(ptr, addr, slot, (j * 8) as i32);
            }
            let args = b.ins().stack_addr(ptr, slot, 0);
            let fref = module.declare_func_in_func(k.func, b.func);
            let out_elems: usize = layout
                .g
                .node(*n)
                .outputs
                .iter()
                .map(|t| t.shape.concrete().map_or(0, |s| s.iter().product()))
                .sum();
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
                b.ins()
                    .call_indirect(runner_sig_ref, f, &[c, kaddr, args, units]);
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
            let bytes = t
                .shape
                .concrete()
                .map_or(0, |s| s.iter().product::<usize>())
                * t.dtype.size();
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
    module
        .define_function(id, &mut fctx)
        .map_err(|e| LowerError::Module(format!("compiling {name}: {e:?}")))?;
    Ok(id)
}
