//! Softmax and LogSoftmax along one axis (f32), rows split over the pool.
//!
//! Semantics are `ir::eval`'s: the row maximum ignores NaN (and is taken as 0 when it is
//! not finite: a row of -inf, or one holding +inf), so a NaN anywhere makes the whole row
//! NaN through the sum. exp is [`exp`] below (about 2 ulp), vectorisable where the
//! standard library's is a scalar call.

use super::rows::{collect_rows, for_each_row};
use crate::device::Ctx;
use crate::gemm::Kernel;
use kiln_ir::{Op, Result, Tensor};

pub(crate) struct Softmax {
    axis: i64,
    log: bool,
}

impl Softmax {
    pub fn new(op: &Op) -> Option<Softmax> {
        match op {
            Op::Softmax { axis } => Some(Softmax {
                axis: *axis,
                log: false,
            }),
            Op::LogSoftmax { axis } => Some(Softmax {
                axis: *axis,
                log: true,
            }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let axis = super::axis_of(self.axis, x.rank())?;
        let n = x.shape()[axis];
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let vector = ctx.kernel == Kernel::Avx2Fma && Kernel::detect() == Kernel::Avx2Fma;
        if inner == 1 && n > 0 && !self.log && vector {
            return Some(Tensor::new(x.shape().to_vec(), rows_avx2(ctx, xv, n)));
        }
        let mut out = vec![0.0f32; xv.len()];
        if n == 0 || out.is_empty() {
            return Some(Tensor::new(x.shape().to_vec(), out));
        }
        if inner == 1 {
            for_each_row(ctx, &mut out, n, 4 * xv.len(), |r, o| {
                o.copy_from_slice(&xv[r * n..(r + 1) * n]);
                row(o, self.log);
            });
        } else {
            // The axis is strided: gather each lane into a row, then scatter it back.
            let block = n * inner;
            for_each_row(ctx, &mut out, block, 4 * xv.len(), |b, o| {
                let src = &xv[b * block..(b + 1) * block];
                let mut lane = vec![0.0f32; n];
                for i in 0..inner {
                    for (j, l) in lane.iter_mut().enumerate() {
                        *l = src[j * inner + i];
                    }
                    row(&mut lane, self.log);
                    for (j, l) in lane.iter().enumerate() {
                        o[j * inner + i] = *l;
                    }
                }
            });
        }
        Some(Tensor::new(x.shape().to_vec(), out))
    }
}

/// Softmax along contiguous rows of `n` with AVX2: written once into fresh memory (no
/// zero fill, no copy of the input first), exp on eight lanes with the sum taken in the
/// same pass. Rows are split over the pool as [`for_each_row`] does.
fn rows_avx2(ctx: &Ctx, xv: &[f32], n: usize) -> Vec<f32> {
    let len = xv.len();
    #[cfg(target_arch = "x86_64")]
    if super::avx512f::detected() {
        // SAFETY: AVX-512F was detected; `avx512_row` writes all n floats of its row.
        return unsafe {
            collect_rows(ctx, len, n, 2 * len, |r, dst| {
                avx512_row(&xv[r * n..(r + 1) * n], dst)
            })
        };
    }
    // SAFETY: the caller checked AVX2 and FMA; `avx2_row` writes all n floats of its row.
    unsafe {
        collect_rows(ctx, len, n, 2 * len, |r, dst| {
            avx2_row(&xv[r * n..(r + 1) * n], dst)
        })
    }
}

/// [`avx2_row`] on sixteen lanes (the exp of `gelu`'s AVX-512 lanes, masks for blends).
///
/// # Safety
/// AVX-512F must be available; `dst` valid for `x.len()` writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_row(x: &[f32], dst: *mut f32) {
    use std::arch::x86_64::*;
    let n = x.len();
    let whole = n / 16 * 16;
    let p = x.as_ptr();
    // The maximum ignoring NaN: maxps returns its second operand when either is NaN.
    let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < whole {
        mv = _mm512_max_ps(_mm512_loadu_ps(p.add(i)), mv);
        i += 16;
    }
    let mut lanes = [0.0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), mv);
    let m = lanes
        .iter()
        .chain(&x[whole..])
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if !m.is_finite() {
        std::ptr::copy_nonoverlapping(p, dst, n);
        row(std::slice::from_raw_parts_mut(dst, n), false);
        return;
    }
    let mm = _mm512_set1_ps(m);
    let mut sv = _mm512_setzero_ps();
    let mut i = 0;
    while i < whole {
        let d = _mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mm);
        let e = super::gelu::avx512::exp(d);
        let e = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(d, d), e, d);
        _mm512_storeu_ps(dst.add(i), e);
        sv = _mm512_add_ps(sv, e);
        i += 16;
    }
    _mm512_storeu_ps(lanes.as_mut_ptr(), sv);
    let h = |j: usize| lanes[j] + lanes[j + 8];
    let mut s = ((h(0) + h(4)) + (h(1) + h(5))) + ((h(2) + h(6)) + (h(3) + h(7)));
    for (k, &v) in x.iter().enumerate().skip(whole) {
        let e = exp(v - m);
        dst.add(k).write(e);
        s += e;
    }
    let out = std::slice::from_raw_parts_mut(dst, n);
    let r = 1.0 / s;
    if s.is_finite() && s > 0.0 && r.is_finite() {
        let rv = _mm512_set1_ps(r);
        let mut i = 0;
        while i < whole {
            _mm512_storeu_ps(dst.add(i), _mm512_mul_ps(_mm512_loadu_ps(dst.add(i)), rv));
            i += 16;
        }
        out[whole..].iter_mut().for_each(|e| *e *= r);
    } else {
        out.iter_mut().for_each(|e| *e /= s);
    }
}

/// One row of [`rows_avx2`]: `dst[i] = softmax(x)[i]`, `row`'s semantics.
///
/// # Safety
/// AVX2 and FMA must be available; `dst` valid for `x.len()` writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_row(x: &[f32], dst: *mut f32) {
    use std::arch::x86_64::*;
    let n = x.len();
    let whole = n / 8 * 8;
    let p = x.as_ptr();
    // The maximum ignoring NaN: maxps returns its second operand when either is NaN.
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < whole {
        mv = _mm256_max_ps(_mm256_loadu_ps(p.add(i)), mv);
        i += 8;
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), mv);
    let m = lanes
        .iter()
        .chain(&x[whole..])
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if !m.is_finite() {
        // A row of -inf or holding +inf: the scalar path's special cases.
        std::ptr::copy_nonoverlapping(p, dst, n);
        row(std::slice::from_raw_parts_mut(dst, n), false);
        return;
    }
    // Every x - m is now ≤ 0 or NaN; a NaN is kept (the sum then makes the row NaN).
    let mm = _mm256_set1_ps(m);
    let mut sv = _mm256_setzero_ps();
    let mut i = 0;
    while i < whole {
        let d = _mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mm);
        let e = super::gelu::avx2::exp(d);
        let e = _mm256_blendv_ps(e, d, _mm256_cmp_ps::<_CMP_UNORD_Q>(d, d));
        _mm256_storeu_ps(dst.add(i), e);
        sv = _mm256_add_ps(sv, e);
        i += 8;
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), sv);
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (k, &v) in x.iter().enumerate().skip(whole) {
        let e = exp(v - m);
        dst.add(k).write(e);
        s += e;
    }
    let out = std::slice::from_raw_parts_mut(dst, n);
    let r = 1.0 / s;
    // Multiplying by 1/s differs from dividing by at most one rounding.
    if s.is_finite() && s > 0.0 && r.is_finite() {
        let rv = _mm256_set1_ps(r);
        let mut i = 0;
        while i < whole {
            _mm256_storeu_ps(dst.add(i), _mm256_mul_ps(_mm256_loadu_ps(dst.add(i)), rv));
            i += 8;
        }
        out[whole..].iter_mut().for_each(|e| *e *= r);
    } else {
        out.iter_mut().for_each(|e| *e /= s);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn avx2_row(x: &[f32], dst: *mut f32) {
    std::ptr::copy_nonoverlapping(x.as_ptr(), dst, x.len());
    row(std::slice::from_raw_parts_mut(dst, x.len()), false);
}

/// Softmax (or its log) of one contiguous row, in place.
fn row(v: &mut [f32], log: bool) {
    let m = v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let m = if m.is_finite() { m } else { 0.0 };
    if log {
        let mut s = 0.0f32;
        for &e in v.iter() {
            s += exp(e - m);
        }
        let ls = s.ln();
        v.iter_mut().for_each(|e| *e = *e - m - ls);
    } else {
        v.iter_mut().for_each(|e| *e = exp(*e - m));
        let s = super::pool::sum_of(v);
        let r = 1.0 / s;
        // Multiplying by 1/s differs from dividing by at most one rounding.
        if s.is_finite() && s > 0.0 && r.is_finite() {
            v.iter_mut().for_each(|e| *e *= r);
        } else {
            v.iter_mut().for_each(|e| *e /= s);
        }
    }
}

/// e^x in f32, branch-free (so loops over it vectorise): x = n·ln2 + r with |r| ≤ ln2/2,
/// e^r by a degree-6 polynomial, 2^n by building the exponent bits. Relative error about
/// 2 ulp; NaN stays NaN, below -103 gives 0, above 88.72 gives +inf.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.clamp(-103.0, 88.8);
    // Round to nearest by adding and removing 1.5·2^23 (|xc·log2 e| < 2^22): a plain
    // add where `round` is a library call on baseline x86-64.
    const SHIFT: f32 = 12_582_912.0;
    let n = (xc * LOG2E + SHIFT) - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients of e^r to r^6 (|r| ≤ 0.347: truncation below 2^-24 relative).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n as two factors so n down to -150 and up to 128 stay representable.
    let n = n as i32;
    let h = n / 2;
    let s1 = f32::from_bits(((h + 127).clamp(0, 255) as u32) << 23);
    let s2 = f32::from_bits(((n - h + 127).clamp(0, 255) as u32) << 23);
    let y = p * s1 * s2;
    let y = if x > 88.72 { f32::INFINITY } else { y };
    let y = if x < -103.0 { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}
