//! Small CLIF building blocks shared by the GEMM drivers: counted loops, conditionals,
//! stack buffers, and defining a kernel function in the module.

use super::super::{LowerCtx, LowerError, Result};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

pub(super) const I64: cranelift_codegen::ir::Type = types::I64;

/// Loads and stores here never trap (every address is in bounds by construction) and are
/// not assumed aligned: rows and panels start anywhere.
pub(super) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags for a bitcast between vector types (Cranelift asks for the byte order).
pub(super) fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// `for i in start..end { body(i) }` (`step` > 0); the body may emit any control flow.
pub(super) fn for_range(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    body: impl FnOnce(&mut FunctionBuilder, Value),
) {
    let i = b.declare_var(I64);
    b.def_var(i, start);
    let head = b.create_block();
    let inner = b.create_block();
    let exit = b.create_block();
    b.ins().jump(head, &[]);
    b.switch_to_block(head);
    let iv = b.use_var(i);
    let more = b.ins().icmp(IntCC::SignedLessThan, iv, end);
    b.ins().brif(more, inner, &[], exit, &[]);
    b.switch_to_block(inner);
    body(b, iv);
    let next = b.ins().iadd_imm_s(iv, step);
    b.def_var(i, next);
    b.ins().jump(head, &[]);
    b.switch_to_block(exit);
}

/// [`for_range`] over constant bounds.
pub(super) fn for_const(
    b: &mut FunctionBuilder,
    start: i64,
    end: i64,
    step: i64,
    body: impl FnOnce(&mut FunctionBuilder, Value),
) {
    let s = b.ins().iconst(I64, start);
    let e = b.ins().iconst(I64, end);
    for_range(b, s, e, step, body);
}

/// `if cond != 0 { body() }`.
pub(super) fn when(b: &mut FunctionBuilder, cond: Value, body: impl FnOnce(&mut FunctionBuilder)) {
    let then = b.create_block();
    let done = b.create_block();
    b.ins().brif(cond, then, &[], done, &[]);
    b.switch_to_block(then);
    body(b);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
}

/// A 16-byte aligned stack buffer of `bytes`; its address.
pub(super) fn stack_buffer(b: &mut FunctionBuilder, bytes: usize) -> Value {
    let slot = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        bytes as u32,
        4,
    ));
    b.ins().stack_addr(I64, slot, 0)
}

/// `min(a, b)` of signed integers.
pub(super) fn smin(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    b.ins().smin(x, y)
}

/// The kernel ABI's signature (`args, start, end`) in the module's calling convention.
pub(super) fn kernel_signature<M: Module>(module: &M) -> Signature {
    crate::codegen::signature(module)
}

/// Declares a local function named after `what` with `sig`, builds its body with `build`
/// (given the function's parameters) and defines it.
pub(super) fn define<M: Module>(
    ctx: &mut LowerCtx<M>,
    what: &str,
    sig: Signature,
    build: impl FnOnce(&mut FunctionBuilder, &mut LowerCtx<M>, &[Value]) -> Result<()>,
) -> Result<FuncId> {
    let name = ctx.fresh_name(what);
    let id = ctx
        .module
        .declare_function(&name, Linkage::Local, &sig)
        .map_err(|e| LowerError::Module(format!("declaring {name}: {e}")))?;
    let mut func = ctx.module.make_context();
    func.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut func.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        build(&mut b, ctx, &params)?;
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(ctx.module.isa().frontend_config());
    }
    ctx.module
        .define_function(id, &mut func)
        .map_err(|e| LowerError::Module(format!("compiling {name}: {e:?}")))?;
    Ok(id)
}
