//! Depthwise convolution (one input and one output channel per group) as a direct loop,
//! one work unit per output plane: the plane is set to the bias, then each kernel tap adds
//! its weight times the input rows it sees (f32x4 for stride 1). The rows and columns a tap
//! reaches inside the image are computed at compile time, so the loops have no bounds
//! checks. The residual and clip run in a last pass over the plane, still in cache.

use super::clif::{for_const, for_range, mem, I64};
use super::driver::clamp_scalar;
use super::portable::clamp;
use crate::kernels::im2col::{valid_range, Geometry};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Argument indices of a depthwise kernel.
pub(super) struct Args {
    pub x: usize,
    pub w: usize,
    pub bias: Option<usize>,
    pub residual: Option<usize>,
    pub out: usize,
}

/// `len` elements from byte offset `start`: f32x4 steps, then up to three single floats.
/// `body(b, offset_bytes, vector)` emits one step.
fn span(
    b: &mut FunctionBuilder,
    len: usize,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value, bool),
) {
    let vecs = len / 4;
    if vecs > 0 {
        for_const(b, 0, (vecs * 16) as i64, 16, |b, off| body(b, off, true));
    }
    for t in vecs * 4..len {
        let off = b.ins().iconst(I64, (t * 4) as i64);
        body(b, off, false);
    }
}

/// Emits output plane `u` (image × channel) of a depthwise convolution over `channels`.
pub(super) fn emit_unit(
    b: &mut FunctionBuilder,
    g: &Geometry,
    channels: usize,
    clip: Option<(f32, f32)>,
    args: &Args,
    ptrs: &[Value],
    u: Value,
) {
    let (p, taps) = (g.p(), g.kh * g.kw);
    let at = |b: &mut FunctionBuilder, base: Value, index: Value, scale: usize| {
        let off = b.ins().imul_imm_s(index, (scale * 4) as i64);
        b.ins().iadd(base, off)
    };
    let x = at(b, ptrs[args.x], u, g.h * g.w);
    let o = at(b, ptrs[args.out], u, p);
    let ch = b.ins().urem_imm_s(u, channels as i64);
    let w = at(b, ptrs[args.w], ch, taps);
    let bias = match args.bias {
        Some(i) => {
            let bp = at(b, ptrs[i], ch, 1);
            b.ins().load(types::F32, mem(), bp, 0)
        }
        None => b.ins().f32const(0.0),
    };
    let bias4 = b.ins().splat(types::F32X4, bias);
    span(b, p, &mut |b, off, vector| {
        let dst = b.ins().iadd(o, off);
        b.ins()
            .store(mem(), if vector { bias4 } else { bias }, dst, 0);
    });
    for i in 0..g.kh {
        let off_h = (i * g.dh) as isize - g.ph as isize;
        let (h_lo, h_hi) = valid_range(g.oh, g.sh, off_h, g.h);
        for j in 0..g.kw {
            let off_w = (j * g.dw) as isize - g.pw as isize;
            let (w_lo, w_hi) = valid_range(g.ow, g.sw, off_w, g.w);
            if h_lo >= h_hi || w_lo >= w_hi {
                continue;
            }
            let wt = b
                .ins()
                .load(types::F32, mem(), w, ((i * g.kw + j) * 4) as i32);
            let wt4 = b.ins().splat(types::F32X4, wt);
            let first = (w_lo as isize * g.sw as isize + off_w) as usize;
            let len = w_hi - w_lo;
            for_const(b, h_lo as i64, h_hi as i64, 1, |b, oh| {
                // ih = oh·sh + off_h ≥ 0 for oh in the valid range.
                let ih = b.ins().imul_imm_s(oh, g.sh as i64);
                let ih = b.ins().iadd_imm_s(ih, off_h as i64);
                let src = at(b, x, ih, g.w);
                let src = b.ins().iadd_imm_s(src, (first * 4) as i64);
                let dst = at(b, o, oh, g.ow);
                let dst = b.ins().iadd_imm_s(dst, (w_lo * 4) as i64);
                if g.sw == 1 {
                    span(b, len, &mut |b, off, vector| {
                        let ty = if vector { types::F32X4 } else { types::F32 };
                        let (s, d) = (b.ins().iadd(src, off), b.ins().iadd(dst, off));
                        let xv = b.ins().load(ty, mem(), s, 0);
                        let acc = b.ins().load(ty, mem(), d, 0);
                        let prod = b.ins().fmul(xv, if vector { wt4 } else { wt });
                        let sum = b.ins().fadd(acc, prod);
                        b.ins().store(mem(), sum, d, 0);
                    });
                } else {
                    let zero = b.ins().iconst(I64, 0);
                    let end = b.ins().iconst(I64, len as i64);
                    for_range(b, zero, end, 1, |b, t| {
                        let s = at(b, src, t, g.sw);
                        let d = at(b, dst, t, 1);
                        let xv = b.ins().load(types::F32, mem(), s, 0);
                        let acc = b.ins().load(types::F32, mem(), d, 0);
                        let prod = b.ins().fmul(xv, wt);
                        let sum = b.ins().fadd(acc, prod);
                        b.ins().store(mem(), sum, d, 0);
                    });
                }
            });
        }
    }
    if args.residual.is_none() && clip.is_none() {
        return;
    }
    let r = args.residual.map(|i| at(b, ptrs[i], u, p));
    let bounds = clip.map(|(lo, hi)| {
        let (lo, hi) = (b.ins().f32const(lo), b.ins().f32const(hi));
        let (lo4, hi4) = (
            b.ins().splat(types::F32X4, lo),
            b.ins().splat(types::F32X4, hi),
        );
        (lo, hi, lo4, hi4)
    });
    span(b, p, &mut |b, off, vector| {
        let ty = if vector { types::F32X4 } else { types::F32 };
        let d = b.ins().iadd(o, off);
        let mut v = b.ins().load(ty, mem(), d, 0);
        if let Some(r) = r {
            let s = b.ins().iadd(r, off);
            let x = b.ins().load(ty, mem(), s, 0);
            v = b.ins().fadd(v, x);
        }
        if let Some((lo, hi, lo4, hi4)) = bounds {
            v = if vector {
                clamp(b, v, lo4, hi4)
            } else {
                clamp_scalar(b, v, lo, hi)
            };
        }
        b.ins().store(mem(), v, d, 0);
    });
}
