//! Conv, MatMul and Gemm (and fused kernels anchored on them) as CLIF GEMM drivers around
//! the microkernels, with every size known at compile time.
//!
//! | file | what |
//! |---|---|
//! | `anchor.rs` | reading the node: anchor op, input sources, fused epilogue |
//! | `conv.rs` | Conv as `out[M×P] = W[M×K] · patches[K×P]` per image and group |
//! | `matmul.rs` | MatMul and Gemm: constant B packed at compile time, run-time B per panel |
//! | `driver.rs` | the blocking loops around the microkernels, one work unit at a time |
//! | `pack.rs` | B panels packed on the fly (run-time matrices, convolution patches) |
//! | `depthwise.rs` | depthwise convolution as a direct f32x4 loop |
//! | `portable.rs` | microkernels in CLIF for targets without the AVX2 machine code |
//! | `clif.rs` | loops, conditionals, stack buffers, function definition |

mod anchor;
mod clif;
mod conv;
mod depthwise;
mod driver;
mod matmul;
mod pack;
mod portable;

use super::{Arg, Kernel, LowerCtx, LowerError, OutType, Operand, Result};
use anchor::Src;
use clif::{define, for_range, kernel_signature, I64};
use cranelift_codegen::ir::InstBuilder;
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};
use kiln_ir::{DType, Node, Op};

pub(crate) use portable::define_portable;

/// `Ok(None)` when `node` is not an op this lowering covers.
pub(crate) fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    outputs: &[OutType],
) -> Result<Option<Kernel>> {
    let [out] = outputs else {
        return Ok(None);
    };
    if out.dtype != DType::F32 {
        return Ok(None);
    }
    let Some(anchor) = anchor::read(node, inputs, &out.shape) else {
        return Ok(None);
    };
    match anchor.op {
        Op::Conv { .. } => conv::lower(ctx, node, &anchor, &out.shape),
        Op::MatMul | Op::Gemm { .. } => matmul::lower(ctx, node, &anchor, &out.shape),
        _ => Ok(None),
    }
}

/// The kernel's argument list, built as sources are needed.
#[derive(Default)]
struct Args {
    list: Vec<Arg>,
}

impl Args {
    fn push(&mut self, arg: Arg) -> usize {
        if let Some(i) = self.list.iter().position(|a| *a == arg) {
            return i;
        }
        self.list.push(arg);
        self.list.len() - 1
    }

    /// A node input, or a constant from a fused body placed in the kernel's own data.
    fn src<M: Module>(&mut self, ctx: &mut LowerCtx<M>, s: &Src) -> Result<usize> {
        match (s.input, s.value) {
            (Some(i), _) => Ok(self.push(Arg::Input(i))),
            (None, Some(t)) => {
                let id = ctx.data("const", t.to_le_bytes(), 64)?;
                Ok(self.push(Arg::Data(id)))
            }
            (None, None) => Err(LowerError::Module("an anchor input with no source".into())),
        }
    }

    /// f32 values in the kernel's own read-only data.
    fn floats<M: Module>(&mut self, ctx: &mut LowerCtx<M>, what: &str, v: &[f32]) -> Result<usize> {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let id = ctx.data(what, bytes, 64)?;
        Ok(self.push(Arg::Data(id)))
    }
}

/// The microkernels of the module: the AVX2 ones the caller defined, or the portable CLIF
/// ones, defined on first use and kept in `ctx.microkernels` for the next kernels.
fn microkernels<M: Module>(ctx: &mut LowerCtx<M>) -> Result<Vec<FuncId>> {
    if let Some(ids) = &ctx.microkernels {
        return Ok(ids.clone());
    }
    let ids = define_portable(ctx)?;
    ctx.microkernels = Some(ids.clone());
    Ok(ids)
}

/// Defines the kernel function: the argument addresses loaded once, then `unit` emitted
/// inside the loop over the call's work units.
fn define_kernel<M: Module>(
    ctx: &mut LowerCtx<M>,
    what: &str,
    args: &Args,
    uses_microkernels: bool,
    unit: impl Fn(&mut FunctionBuilder, &[cranelift_codegen::ir::FuncRef], &[cranelift_codegen::ir::Value], cranelift_codegen::ir::Value),
) -> Result<FuncId> {
    let ids = if uses_microkernels { microkernels(ctx)? } else { Vec::new() };
    let sig = kernel_signature(ctx.module);
    let n_args = args.list.len();
    define(ctx, what, sig, |b, ctx, params| {
        let (argv, start, end) = (params[0], params[1], params[2]);
        let ptrs: Vec<_> = (0..n_args)
            .map(|i| b.ins().load(I64, clif::mem(), argv, (i * 8) as i32))
            .collect();
        let refs = driver::kernel_refs(ctx.module, b, &ids);
        for_range(b, start, end, 1, |b, u| unit(b, &refs, &ptrs, u));
        Ok(())
    })
}

/// `conv+add+relu (gemm)`: the anchor's name, the chain's ops, the method.
fn kind(anchor: &str, epi: &anchor::Epilogue, how: &str) -> String {
    let mut s = anchor.to_string();
    for n in &epi.names {
        s.push('+');
        s.push_str(n);
    }
    format!("{s} ({how})")
}
