//! The portable microkernels in CLIF, for targets without the AVX2+FMA machine code
//! (aarch64, or x86-64 without AVX2): the same ABI and semantics as
//! [`crate::gemm::kernel_x86`] (`kernel(k, a, b, c, args: *const TileArgs)`, an r×16 tile),
//! so the drivers call either set the same way. f32x4 multiply and add, no FMA: the result
//! is the same on every target.

use super::super::{LowerCtx, Result};
use super::clif::{define, for_range, little, mem, when, I64};
use crate::gemm::{module, TileArgs, FLAG_BETA, FLAG_BIAS_COL, FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL, MR, NR};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_module::{FuncId, Module};
use std::mem::offset_of;

const F32X4: cranelift_codegen::ir::Type = types::F32X4;
/// f32x4 vectors per 16-wide row.
const VECS: usize = NR / 4;

/// Defines the six portable kernels in `ctx.module` (index r computes r + 1 rows).
pub(crate) fn define_portable<M: Module>(ctx: &mut LowerCtx<M>) -> Result<Vec<FuncId>> {
    (1..=MR)
        .map(|rows| {
            define(ctx, &format!("sgemm_portable_{rows}x16"), module::signature(), |b, _, p| {
                build(b, rows, p);
                Ok(())
            })
        })
        .collect()
}

fn field(b: &mut FunctionBuilder, args: Value, offset: usize, ty: types::Type) -> Value {
    b.ins().load(ty, mem(), args, offset as i32)
}

fn build(b: &mut FunctionBuilder, rows: usize, p: &[Value]) {
    let (k, a, bp, c, args) = (p[0], p[1], p[2], p[3], p[4]);
    let rs = field(b, args, offset_of!(TileArgs, rs_a), I64);
    let cs = field(b, args, offset_of!(TileArgs, cs_a), I64);
    let rs_bytes = b.ins().imul_imm_s(rs, 4);
    let cs_bytes = b.ins().imul_imm_s(cs, 4);
    let zero = b.ins().f32const(0.0);
    let zero = b.ins().splat(F32X4, zero);
    let acc: Vec<Variable> = (0..rows * VECS)
        .map(|_| {
            let v = b.declare_var(F32X4);
            b.def_var(v, zero);
            v
        })
        .collect();
    // A's k-th column and B's k-th row advance by one step per iteration.
    let a_col = b.declare_var(I64);
    b.def_var(a_col, a);
    let b_row = b.declare_var(I64);
    b.def_var(b_row, bp);
    let start = b.ins().iconst(I64, 0);
    for_range(b, start, k, 1, |b, _| {
        let ac = b.use_var(a_col);
        let br = b.use_var(b_row);
        let bv: Vec<Value> = (0..VECS)
            .map(|v| b.ins().load(F32X4, mem(), br, (v * 16) as i32))
            .collect();
        let mut row = ac;
        for i in 0..rows {
            let x = b.ins().load(types::F32, mem(), row, 0);
            let x = b.ins().splat(F32X4, x);
            for (v, &bv) in bv.iter().enumerate() {
                let prod = b.ins().fmul(x, bv);
                let old = b.use_var(acc[i * VECS + v]);
                let sum = b.ins().fadd(old, prod);
                b.def_var(acc[i * VECS + v], sum);
            }
            if i + 1 < rows {
                row = b.ins().iadd(row, rs_bytes);
            }
        }
        let next_a = b.ins().iadd(ac, cs_bytes);
        b.def_var(a_col, next_a);
        let next_b = b.ins().iadd_imm_s(br, (NR * 4) as i64);
        b.def_var(b_row, next_b);
    });

    let flags = field(b, args, offset_of!(TileArgs, flags), I64);
    let ldc = field(b, args, offset_of!(TileArgs, ldc), I64);
    let ldc_bytes = b.ins().imul_imm_s(ldc, 4);
    let has = |b: &mut FunctionBuilder, flag: u64| b.ins().band_imm_s(flags, flag as i64);
    // Each flag's contribution, in the machine code's order: C, bias, residual, clip.
    let beta = has(b, FLAG_BETA);
    when(b, beta, |b| {
        for i in 0..rows {
            let ci = row_addr(b, c, ldc_bytes, i);
            add_row(b, &acc[i * VECS..(i + 1) * VECS], ci);
        }
    });
    let bias_col = has(b, FLAG_BIAS_COL);
    when(b, bias_col, |b| {
        let bias = field(b, args, offset_of!(TileArgs, bias), I64);
        for i in 0..rows {
            add_row(b, &acc[i * VECS..(i + 1) * VECS], bias);
        }
    });
    let bias_row = has(b, FLAG_BIAS_ROW);
    when(b, bias_row, |b| {
        let bias = field(b, args, offset_of!(TileArgs, bias), I64);
        for i in 0..rows {
            let x = b.ins().load(types::F32, mem(), bias, (i * 4) as i32);
            let x = b.ins().splat(F32X4, x);
            for v in &acc[i * VECS..(i + 1) * VECS] {
                let old = b.use_var(*v);
                let sum = b.ins().fadd(old, x);
                b.def_var(*v, sum);
            }
        }
    });
    let residual = has(b, FLAG_RESIDUAL);
    when(b, residual, |b| {
        let r = field(b, args, offset_of!(TileArgs, residual), I64);
        let ldr = field(b, args, offset_of!(TileArgs, ldr), I64);
        let ldr_bytes = b.ins().imul_imm_s(ldr, 4);
        for i in 0..rows {
            let ri = row_addr(b, r, ldr_bytes, i);
            add_row(b, &acc[i * VECS..(i + 1) * VECS], ri);
        }
    });
    let clip = has(b, FLAG_CLIP);
    when(b, clip, |b| {
        let lo = field(b, args, offset_of!(TileArgs, lo), types::F32);
        let hi = field(b, args, offset_of!(TileArgs, hi), types::F32);
        let (lo, hi) = (b.ins().splat(F32X4, lo), b.ins().splat(F32X4, hi));
        for v in &acc {
            let x = b.use_var(*v);
            let x = clamp(b, x, lo, hi);
            b.def_var(*v, x);
        }
    });
    for i in 0..rows {
        let ci = row_addr(b, c, ldc_bytes, i);
        for v in 0..VECS {
            let x = b.use_var(acc[i * VECS + v]);
            b.ins().store(mem(), x, ci, (v * 16) as i32);
        }
    }
}

fn row_addr(b: &mut FunctionBuilder, base: Value, stride_bytes: Value, i: usize) -> Value {
    if i == 0 {
        return base;
    }
    let off = b.ins().imul_imm_s(stride_bytes, i as i64);
    b.ins().iadd(base, off)
}

/// `acc[v] += src[4v..4v+4]` for the row's four vectors.
fn add_row(b: &mut FunctionBuilder, acc: &[Variable], src: Value) {
    for (v, var) in acc.iter().enumerate() {
        let x = b.ins().load(F32X4, mem(), src, (v * 16) as i32);
        let old = b.use_var(*var);
        let sum = b.ins().fadd(old, x);
        b.def_var(*var, sum);
    }
}

/// Lanes below `lo` raised to it, above `hi` lowered to it; NaN passes through, as in the
/// machine-code kernel (compare-and-select rather than fmin/fmax).
pub(super) fn clamp(b: &mut FunctionBuilder, x: Value, lo: Value, hi: Value) -> Value {
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let below = b.ins().bitcast(F32X4, little(), below);
    let x = b.ins().bitselect(below, lo, x);
    let above = b.ins().fcmp(FloatCC::GreaterThan, x, hi);
    let above = b.ins().bitcast(F32X4, little(), above);
    b.ins().bitselect(above, hi, x)
}
