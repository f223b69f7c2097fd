//! Packing one k block of one 16-column B panel into a stack buffer, in the microkernel's
//! layout (`kc` rows of 16 contiguous floats, columns past n zero): from a run-time matrix,
//! or gathered from a convolution's input (im2col of 16 output positions).

use super::clif::{for_range, mem, stack_buffer, I64};
use crate::gemm::NR;
use crate::kernels::im2col::Geometry;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Zeroes the columns `cols..16` of the packed row at `dst`.
fn zero_tail(b: &mut FunctionBuilder, dst: Value, cols: usize) {
    if cols == NR {
        return;
    }
    let z = b.ins().f32const(0.0);
    for t in cols..NR {
        b.ins().store(mem(), z, dst, (t * 4) as i32);
    }
}

/// Packs rows `k0..k0+kc`, columns `16p..16p+cols` of B, element (r, j) at
/// `b0[r*rs + j*cs]`, into `buf`.
#[allow(clippy::too_many_arguments)]
pub(super) fn strided(
    b: &mut FunctionBuilder,
    buf: Value,
    b0: Value,
    rs: usize,
    cs: usize,
    k0: Value,
    kc: Value,
    p: Value,
    cols: usize,
) {
    let row0 = b.ins().imul_imm_s(k0, (rs * 4) as i64);
    let col0 = b.ins().imul_imm_s(p, (NR * cs * 4) as i64);
    let base = b.ins().iadd(b0, row0);
    let base = b.ins().iadd(base, col0);
    let zero = b.ins().iconst(I64, 0);
    for_range(b, zero, kc, 1, |b, kk| {
        let src = {
            let off = b.ins().imul_imm_s(kk, (rs * 4) as i64);
            b.ins().iadd(base, off)
        };
        let dst = {
            let off = b.ins().imul_imm_s(kk, (NR * 4) as i64);
            b.ins().iadd(buf, off)
        };
        if cs == 1 && cols == NR {
            for v in 0..NR / 4 {
                let x = b.ins().load(types::F32X4, mem(), src, (v * 16) as i32);
                b.ins().store(mem(), x, dst, (v * 16) as i32);
            }
        } else {
            for t in 0..cols {
                let x = b.ins().load(types::F32, mem(), src, (t * cs * 4) as i32);
                b.ins().store(mem(), x, dst, (t * 4) as i32);
            }
            zero_tail(b, dst, cols);
        }
    });
}

/// Kernels with more taps than this gather with bounds checks per element instead of
/// building a [`tap_table`] (7×7 has 49).
const MAX_TAPS: usize = 64;

/// For each kernel tap (i, j) and panel position t, the byte offset of its input within a
/// channel plane and an all-ones mask where it lies inside the image (offset 0 and mask 0 in
/// the padding and for positions past `cols`). They are the same for every channel, so a
/// panel builds them once and its GEMM rows gather with no bounds checks: `offsets` holds
/// taps×16 i64, `masks` taps×16 u32.
/// Where a tap of an output position reads in its input channel plane: whether input row
/// `h0 + ih_off` and column `w0 + iw_off` lie inside the image (an unsigned compare covers
/// both sides), and the byte offset of that element (meaningful only when inside).
fn tap_at(
    b: &mut FunctionBuilder,
    g: &Geometry,
    h0: Value,
    w0: Value,
    ih_off: Value,
    iw_off: Value,
) -> (Value, Value) {
    let ih = b.ins().iadd(h0, ih_off);
    let iw = b.ins().iadd(w0, iw_off);
    let ok_h = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ih, g.h as i64);
    let ok_w = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, iw, g.w as i64);
    let ok = b.ins().band(ok_h, ok_w);
    let at = b.ins().imul_imm_s(ih, g.w as i64);
    let at = b.ins().iadd(at, iw);
    (ok, b.ins().imul_imm_s(at, 4))
}

fn tap_table(
    b: &mut FunctionBuilder,
    g: &Geometry,
    hb: &[Value],
    wb: &[Value],
    cols: usize,
) -> (Value, Value) {
    let taps = g.kh * g.kw;
    let offsets = stack_buffer(b, taps * NR * 8);
    let masks = stack_buffer(b, taps * NR * 4);
    let zero = b.ins().iconst(I64, 0);
    let end = b.ins().iconst(I64, taps as i64);
    for_range(b, zero, end, 1, |b, tap| {
        let i = b.ins().udiv_imm_s(tap, g.kw as i64);
        let j = b.ins().urem_imm_s(tap, g.kw as i64);
        let ih_off = b.ins().imul_imm_s(i, g.dh as i64);
        let iw_off = b.ins().imul_imm_s(j, g.dw as i64);
        let o_row = {
            let off = b.ins().imul_imm_s(tap, (NR * 8) as i64);
            b.ins().iadd(offsets, off)
        };
        let m_row = {
            let off = b.ins().imul_imm_s(tap, (NR * 4) as i64);
            b.ins().iadd(masks, off)
        };
        let z64 = b.ins().iconst(I64, 0);
        let z32 = b.ins().iconst(types::I32, 0);
        let ones = b.ins().iconst(types::I32, -1);
        for t in 0..NR {
            let (at, m) = if t < cols {
                let (ok, at) = tap_at(b, g, hb[t], wb[t], ih_off, iw_off);
                (b.ins().select(ok, at, z64), b.ins().select(ok, ones, z32))
            } else {
                (z64, z32)
            };
            b.ins().store(mem(), at, o_row, (t * 8) as i32);
            b.ins().store(mem(), m, m_row, (t * 4) as i32);
        }
    });
    (offsets, masks)
}

/// Packs the patches of output positions `16p..16p+cols` for GEMM rows (input channel,
/// kernel row, kernel column) `k0..k0+kc` from the image-and-group input `x0`: element
/// (r, t) is `x[c, oh·sh − ph + i·dh, ow·sw − pw + j·dw]`, zero in the padding.
#[allow(clippy::too_many_arguments)]
pub(super) fn im2col(
    b: &mut FunctionBuilder,
    buf: Value,
    x0: Value,
    g: &Geometry,
    k0: Value,
    kc: Value,
    p: Value,
    cols: usize,
) {
    let pos0 = b.ins().imul_imm_s(p, NR as i64);
    // Each position's window origin (may be negative: in the padding).
    let mut hb = Vec::with_capacity(cols);
    let mut wb = Vec::with_capacity(cols);
    for t in 0..cols {
        let pos = b.ins().iadd_imm_s(pos0, t as i64);
        let oh = b.ins().udiv_imm_s(pos, g.ow as i64);
        let ow = b.ins().urem_imm_s(pos, g.ow as i64);
        let h = b.ins().imul_imm_s(oh, g.sh as i64);
        hb.push(b.ins().iadd_imm_s(h, -(g.ph as i64)));
        let w = b.ins().imul_imm_s(ow, g.sw as i64);
        wb.push(b.ins().iadd_imm_s(w, -(g.pw as i64)));
    }
    let table = (g.kh * g.kw <= MAX_TAPS).then(|| tap_table(b, g, &hb, &wb, cols));
    // A panel inside one output row reads 16 inputs `sw` apart per GEMM row: wherever its
    // window is inside the image, they are copied with no bounds checks (four vector copies
    // at stride 1).
    let same_row = if cols == NR && g.sw <= 1 << 16 {
        let ow0 = b.ins().urem_imm_s(pos0, g.ow as i64);
        let last = b.ins().iadd_imm_s(ow0, (NR - 1) as i64);
        Some(b.ins().icmp_imm_s(IntCC::SignedLessThan, last, g.ow as i64))
    } else {
        None
    };
    // (channel, kernel row, kernel column) of row k0, then carried along without division.
    let taps = (g.kh * g.kw) as i64;
    let var = |b: &mut FunctionBuilder, v: Value| {
        let x = b.declare_var(I64);
        b.def_var(x, v);
        x
    };
    let c0 = b.ins().udiv_imm_s(k0, taps);
    let r0 = b.ins().urem_imm_s(k0, taps);
    let i0 = b.ins().udiv_imm_s(r0, g.kw as i64);
    let j0 = b.ins().urem_imm_s(r0, g.kw as i64);
    let (cv, iv, jv) = (var(b, c0), var(b, i0), var(b, j0));
    let zero = b.ins().iconst(I64, 0);
    let plane = (g.h * g.w * 4) as i64;
    for_range(b, zero, kc, 1, |b, kk| {
        let (c, i, j) = (b.use_var(cv), b.use_var(iv), b.use_var(jv));
        let xc = {
            let off = b.ins().imul_imm_s(c, plane);
            b.ins().iadd(x0, off)
        };
        let dst = {
            let off = b.ins().imul_imm_s(kk, (NR * 4) as i64);
            b.ins().iadd(buf, off)
        };
        let ih_off = b.ins().imul_imm_s(i, g.dh as i64);
        let iw_off = b.ins().imul_imm_s(j, g.dw as i64);
        let gather = |b: &mut FunctionBuilder| {
            if let Some((offsets, masks)) = table {
                let tap = b.ins().imul_imm_s(i, g.kw as i64);
                let tap = b.ins().iadd(tap, j);
                let o_row = {
                    let off = b.ins().imul_imm_s(tap, (NR * 8) as i64);
                    b.ins().iadd(offsets, off)
                };
                let m_row = {
                    let off = b.ins().imul_imm_s(tap, (NR * 4) as i64);
                    b.ins().iadd(masks, off)
                };
                for t in 0..cols {
                    let at = b.ins().load(I64, mem(), o_row, (t * 8) as i32);
                    let addr = b.ins().iadd(xc, at);
                    let x = b.ins().load(types::F32, mem(), addr, 0);
                    b.ins().store(mem(), x, dst, (t * 4) as i32);
                }
                // Lanes in the padding or past `cols` have an all-zero mask.
                for v in 0..NR / 4 {
                    let x = b.ins().load(types::F32X4, mem(), dst, (v * 16) as i32);
                    let m = b.ins().load(types::F32X4, mem(), m_row, (v * 16) as i32);
                    let x = b.ins().band(x, m);
                    b.ins().store(mem(), x, dst, (v * 16) as i32);
                }
                return;
            }
            let fz = b.ins().f32const(0.0);
            for t in 0..cols {
                let (ok, at) = tap_at(b, g, hb[t], wb[t], ih_off, iw_off);
                let addr = b.ins().iadd(xc, at);
                // Outside the image the load reads the channel's first element instead.
                let addr = b.ins().select(ok, addr, xc);
                let x = b.ins().load(types::F32, mem(), addr, 0);
                let x = b.ins().select(ok, x, fz);
                b.ins().store(mem(), x, dst, (t * 4) as i32);
            }
            zero_tail(b, dst, cols);
        };
        match same_row {
            None => gather(b),
            Some(same_row) => {
                let ih = b.ins().iadd(hb[0], ih_off);
                let iw = b.ins().iadd(wb[0], iw_off);
                let ok_h = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ih, g.h as i64);
                let ok_lo = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, iw, 0);
                let iw_last = b.ins().iadd_imm_s(iw, ((NR - 1) * g.sw) as i64);
                let ok_hi = b
                    .ins()
                    .icmp_imm_s(IntCC::SignedLessThan, iw_last, g.w as i64);
                let ok = b.ins().band(same_row, ok_h);
                let ok = b.ins().band(ok, ok_lo);
                let ok = b.ins().band(ok, ok_hi);
                let fast = b.create_block();
                let slow = b.create_block();
                let done = b.create_block();
                b.ins().brif(ok, fast, &[], slow, &[]);
                b.switch_to_block(fast);
                let at = b.ins().imul_imm_s(ih, g.w as i64);
                let at = b.ins().iadd(at, iw);
                let at = b.ins().imul_imm_s(at, 4);
                let src = b.ins().iadd(xc, at);
                if g.sw == 1 {
                    for v in 0..NR / 4 {
                        let x = b.ins().load(types::F32X4, mem(), src, (v * 16) as i32);
                        b.ins().store(mem(), x, dst, (v * 16) as i32);
                    }
                } else {
                    for t in 0..NR {
                        let x = b.ins().load(types::F32, mem(), src, (t * g.sw * 4) as i32);
                        b.ins().store(mem(), x, dst, (t * 4) as i32);
                    }
                }
                b.ins().jump(done, &[]);
                b.switch_to_block(slow);
                gather(b);
                b.ins().jump(done, &[]);
                b.switch_to_block(done);
            }
        }
        // Next GEMM row: kernel column, then row, then channel.
        let j1 = b.ins().iadd_imm_s(j, 1);
        let wrap_j = b.ins().icmp_imm_s(IntCC::Equal, j1, g.kw as i64);
        let zero = b.ins().iconst(I64, 0);
        let j2 = b.ins().select(wrap_j, zero, j1);
        let i_inc = b.ins().iadd_imm_s(i, 1);
        let i1 = b.ins().select(wrap_j, i_inc, i);
        let wrap_i = b.ins().icmp_imm_s(IntCC::Equal, i1, g.kh as i64);
        let i2 = b.ins().select(wrap_i, zero, i1);
        let c_inc = b.ins().iadd_imm_s(c, 1);
        let c2 = b.ins().select(wrap_i, c_inc, c);
        b.def_var(jv, j2);
        b.def_var(iv, i2);
        b.def_var(cv, c2);
    });
}
