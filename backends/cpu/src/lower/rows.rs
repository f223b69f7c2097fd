//! Loops over one f32 row (a softmax axis, a layer-norm row, a pooling plane): a reduction
//! and a map, each written once as a closure over [`Fx`] and emitted on f32x4 lanes while
//! four elements remain, then on single lanes. A row with a stride other than 1 runs the
//! scalar loop only.

use super::clif;
use super::Result;
use crate::codegen::emit::Fx;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// How a reduction combines, and its identity.
pub type Combine<'a> = &'a dyn Fn(&mut Fx, Value, Value) -> Value;

/// Folds `f(x)` over the `n` f32 elements at `base` (element `stride` apart) with
/// `combine`, starting from `init`; returns a scalar f32.
pub fn reduce(
    b: &mut FunctionBuilder,
    fma: bool,
    base: Value,
    n: usize,
    stride: usize,
    init: f32,
    f: &dyn Fn(&mut Fx, Value) -> Value,
    combine: Combine,
) -> Result<Value> {
    let acc = b.declare_var(types::F32);
    let init_s = b.ins().f32const(init);
    b.def_var(acc, init_s);
    let vec_n = if stride == 1 { n / 4 } else { 0 };
    if vec_n > 0 {
        let vacc = b.declare_var(types::F32X4);
        let v0 = b.ins().splat(types::F32X4, init_s);
        b.def_var(vacc, v0);
        clif::for_n(b, vec_n as u64, &mut |b, i| {
            let a = clif::index(b, base, i, 16);
            let x = b.ins().load(types::F32X4, clif::mem(), a, 0);
            let cur = b.use_var(vacc);
            let mut fx = Fx {
                b,
                vector: true,
                fma,
            };
            let y = f(&mut fx, x);
            let next = combine(&mut fx, cur, y);
            b.def_var(vacc, next);
            Ok(())
        })?;
        let v = b.use_var(vacc);
        let mut s = b.ins().extractlane(v, 0);
        for lane in 1..4u8 {
            let l = b.ins().extractlane(v, lane);
            let mut fx = Fx {
                b,
                vector: false,
                fma,
            };
            s = combine(&mut fx, s, l);
        }
        b.def_var(acc, s);
    }
    let tail = n - vec_n * 4;
    if tail > 0 {
        let first = (vec_n * 4 * stride * 4) as i64;
        let start = b.ins().iadd_imm_s(base, first);
        clif::for_n(b, tail as u64, &mut |b, i| {
            let a = clif::index(b, start, i, (stride * 4) as i64);
            let x = b.ins().load(types::F32, clif::mem(), a, 0);
            let cur = b.use_var(acc);
            let mut fx = Fx {
                b,
                vector: false,
                fma,
            };
            let y = f(&mut fx, x);
            let next = combine(&mut fx, cur, y);
            b.def_var(acc, next);
            Ok(())
        })?;
    }
    Ok(b.use_var(acc))
}

/// `dst[i] = f(src[i], i-lane-values)` over `n` f32 elements; `f` gets the element and the
/// builder on the lane width in use. `src` and `dst` may be the same row.
pub fn map(
    b: &mut FunctionBuilder,
    fma: bool,
    src: Value,
    dst: Value,
    n: usize,
    stride: usize,
    f: &dyn Fn(&mut Fx, Value) -> Value,
) -> Result<()> {
    let vec_n = if stride == 1 { n / 4 } else { 0 };
    if vec_n > 0 {
        clif::for_n(b, vec_n as u64, &mut |b, i| {
            let a = clif::index(b, src, i, 16);
            let x = b.ins().load(types::F32X4, clif::mem(), a, 0);
            let mut fx = Fx {
                b,
                vector: true,
                fma,
            };
            let y = f(&mut fx, x);
            let a = clif::index(b, dst, i, 16);
            b.ins().store(clif::mem(), y, a, 0);
            Ok(())
        })?;
    }
    let tail = n - vec_n * 4;
    if tail > 0 {
        let first = (vec_n * 4 * stride * 4) as i64;
        let s0 = b.ins().iadd_imm_s(src, first);
        let d0 = b.ins().iadd_imm_s(dst, first);
        clif::for_n(b, tail as u64, &mut |b, i| {
            let a = clif::index(b, s0, i, (stride * 4) as i64);
            let x = b.ins().load(types::F32, clif::mem(), a, 0);
            let mut fx = Fx {
                b,
                vector: false,
                fma,
            };
            let y = f(&mut fx, x);
            let a = clif::index(b, d0, i, (stride * 4) as i64);
            b.ins().store(clif::mem(), y, a, 0);
            Ok(())
        })?;
    }
    Ok(())
}

/// A scalar f32 on the lane width of `fx` (splat on vectors).
pub fn lanes(fx: &mut Fx, s: Value) -> Value {
    if fx.vector {
        fx.b.ins().splat(types::F32X4, s)
    } else {
        s
    }
}
