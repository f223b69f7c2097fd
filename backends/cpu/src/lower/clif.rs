//! Small CLIF building blocks the hand-written lowerings share: defining a kernel with the
//! ABI of [`super`], counted loops, and turning a unit number into a multi-index. They keep
//! each lowering about *what* it computes rather than about block plumbing.

use super::{LowerCtx, LowerError, Result};
use crate::codegen::signature;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::DType;

/// The three parameters every kernel receives.
#[derive(Clone, Copy)]
pub struct Params {
    pub args: Value,
    pub start: Value,
    pub end: Value,
}

/// Declares a fresh local kernel named after `what` and defines its body with `body`, which
/// gets the builder positioned in the entry block; a return is added after it.
pub fn define<M: Module>(
    ctx: &mut LowerCtx<M>,
    what: &str,
    body: impl FnOnce(&mut FunctionBuilder, Params) -> Result<()>,
) -> Result<FuncId> {
    let name = ctx.fresh_name(what);
    let sig = signature(&*ctx.module);
    let id = ctx
        .module
        .declare_function(&name, Linkage::Local, &sig)
        .map_err(|e| LowerError::Module(format!("declaring {name}: {e}")))?;
    let mut fctx = ctx.module.make_context();
    fctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();
    let frontend = ctx.module.isa().frontend_config();
    {
        let mut b = FunctionBuilder::new(&mut fctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let &[args, start, end] = b.block_params(entry) else {
            return Err(LowerError::Module("a kernel takes three parameters".into()));
        };
        body(&mut b, Params { args, start, end })?;
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(frontend);
    }
    ctx.module
        .define_function(id, &mut fctx)
        .map_err(|e| LowerError::Module(format!("compiling {name}: {e:?}")))?;
    Ok(id)
}

/// Memory flags for every access: buffers are valid (the entry's contract), but rows start
/// anywhere, so no alignment is promised.
pub fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The address in slot `k` of the kernel's argument array.
pub fn arg(b: &mut FunctionBuilder, p: Params, k: usize) -> Value {
    b.ins().load(types::I64, mem(), p.args, (k * 8) as i32)
}

/// Emits `for i in lo..hi { body(i) }` (unsigned bounds); the builder ends after the loop.
pub fn for_range(
    b: &mut FunctionBuilder,
    lo: Value,
    hi: Value,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value) -> Result<()>,
) -> Result<()> {
    let head = b.create_block();
    let inner = b.create_block();
    let exit = b.create_block();
    let i = b.declare_var(types::I64);
    b.def_var(i, lo);
    b.ins().jump(head, &[]);
    b.switch_to_block(head);
    let iv = b.use_var(i);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, iv, hi);
    b.ins().brif(more, inner, &[], exit, &[]);
    b.switch_to_block(inner);
    let iv = b.use_var(i);
    body(b, iv)?;
    let next = b.ins().iadd_imm_s(iv, 1);
    b.def_var(i, next);
    b.ins().jump(head, &[]);
    b.switch_to_block(exit);
    Ok(())
}

/// `for i in 0..n` with a compile-time count.
pub fn for_n(
    b: &mut FunctionBuilder,
    n: u64,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value) -> Result<()>,
) -> Result<()> {
    let lo = b.ins().iconst(types::I64, 0);
    let hi = b.ins().iconst(types::I64, n as i64);
    for_range(b, lo, hi, body)
}

/// The units of this call: `for u in start..end`.
pub fn for_units(
    b: &mut FunctionBuilder,
    p: Params,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value) -> Result<()>,
) -> Result<()> {
    for_range(b, p.start, p.end, body)
}

/// `Σ index_d · strides[d]` for `u` read as a row-major index over `dims`: the byte offset
/// of unit `u` in a view with those strides (one division per dim, once per unit).
pub fn unravel_offset(b: &mut FunctionBuilder, u: Value, dims: &[usize], strides: &[i64]) -> Value {
    let mut off = b.ins().iconst(types::I64, 0);
    let mut rest = u;
    for d in (0..dims.len()).rev() {
        let size = dims[d] as i64;
        let (idx, next) = if d == 0 {
            (rest, rest)
        } else {
            let idx = b.ins().urem_imm_s(rest, size);
            let next = b.ins().udiv_imm_s(rest, size);
            (idx, next)
        };
        if strides[d] != 0 {
            let t = b.ins().imul_imm_s(idx, strides[d]);
            off = b.ins().iadd(off, t);
        }
        rest = next;
    }
    off
}

/// `base + i·scale` as an address.
pub fn index(b: &mut FunctionBuilder, base: Value, i: Value, scale: i64) -> Value {
    let off = b.ins().imul_imm_s(i, scale);
    b.ins().iadd(base, off)
}

/// The CLIF integer type that moves one element of `dtype` (bit-exact copies).
pub fn bits_type(dtype: DType) -> Option<Type> {
    match dtype.size() {
        1 => Some(types::I8),
        2 => Some(types::I16),
        4 => Some(types::I32),
        8 => Some(types::I64),
        _ => None,
    }
}

/// Row-major element strides of `shape`.
pub fn dense_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut step = 1i64;
    for d in (0..shape.len()).rev() {
        s[d] = step;
        step *= shape[d] as i64;
    }
    s
}

/// Normalizes a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize) -> Option<usize> {
    let a = if a < 0 { a + rank as i64 } else { a };
    (0..rank as i64).contains(&a).then_some(a as usize)
}
