//! Stride-2 depthwise planes with 3-wide kernels, AVX-512F, straight from the NCHW plane:
//! sixteen output columns per vector, no padded copy, no transposes. Per kernel row, a
//! pair of loads (32 input columns) is split into its even and odd columns by a permute
//! in registers, which gives taps 0 and 1 of 16 outputs, and a second pair two columns on
//! gives tap 2; columns in the padding are masked out of the loads (a masked lane reads
//! nothing and adds zero), so the edges need no copy and no scalar loop.
//!
//! Why: the 8-planes-in-lanes path ([`super::interleaved`]) transposes every plane in and
//! out (inside mobilenet_v2, `perf` on 2 threads, its `fill` and `store` took 11% of the
//! model's time against 5% for the sums themselves), and at stride 2 it reads every
//! other column. Per-kernel minimums over four interleaved `kiln bench -pc` runs of
//! mobilenet_v2: 96×112² → 56² 0.196 → 0.132 ms, 144×56² → 28² 0.075 → 0.064.
//!
//! Tried and not taken (the caller keeps these on the 8-planes path): stride 1, the taps
//! of 16 outputs from three loads per kernel row shifted in registers (`valignd`): faster
//! alone (32×112² 0.09 → 0.08 ms) but slower inside mobilenet_v2 (0.118 → 0.148, 144×56²
//! 0.110 → 0.158), and again, once the loads here were masked without a branch, as three
//! masked loads per kernel row (alone, one thread: 32×112² 0.158 → 0.231 ms, 144×56²
//! 0.171 → 0.237; each 16-lane load at an odd column crosses a cache line); 5×5 kernels
//! (efficientnet's 144×56² stride 2 0.111 → 0.140); an activation after the conv,
//! applied in registers or per row (efficientnet's swish after 96×112² stride 2 was 0.02
//! ms faster, after 3×3 stride 1 0.02–0.04 slower), where the 8-planes path applies it to
//! a whole group's sums.

use super::super::avx512f::{self, even_odd, lanes};
use super::super::im2col::Geometry;
use super::Post;

/// Column blocks of 16 summed together: one FMA chain each, so the FMA latency (4
/// cycles) overlaps across them (with one chain, stride 1 alone ran at a third of the
/// 8-planes path's speed).
const BLOCKS: usize = 4;

/// Whether a plane of this geometry runs here: AVX-512F, a kernel of 3 columns and at
/// most 7 rows, column stride 2, no dilation, rows of at least 16 outputs.
pub(super) fn takes(g: &Geometry) -> bool {
    g.ow >= 16
        && (1..=7).contains(&g.kh)
        && g.kw == 3
        && g.sw == 2
        && g.dh == 1
        && g.dw == 1
        && avx512f::detected()
}

/// One plane, as [`super::plane`] defines it without an activation:
/// `o = clip(bias + Σ taps + residual)`, `x` the input plane, `k` its `kh·3` weights,
/// `post.residual` this plane's residual.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; [`takes`] holds; `post.act` is `None`; `x` holds
/// the plane's `h·w` inputs; `o` is valid for `oh·ow` writes (it may be uninitialised).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn plane(g: &Geometry, x: &[f32], k: &[f32], bias: f32, post: &Post, o: *mut f32) {
    debug_assert!(x.len() >= g.h * g.w && k.len() >= g.kh * 3);
    let mut c = 0;
    while c < g.ow {
        let nb = (g.ow - c).div_ceil(16).min(BLOCKS);
        // One instance per block count, so the blocks' loop unrolls and the
        // accumulators stay in registers.
        match nb {
            4 => columns::<4>(g, x, k, bias, post, o, c),
            3 => columns::<3>(g, x, k, bias, post, o, c),
            2 => columns::<2>(g, x, k, bias, post, o, c),
            _ => columns::<1>(g, x, k, bias, post, o, c),
        }
        c += (g.ow - c).min(16 * nb);
    }
}

/// The epilogue of one output row's `NB` blocks from column `c`: the residual, the clip,
/// the store (masked past the row's end).
///
/// # Safety
/// As [`columns`].
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn finish<const NB: usize>(
    g: &Geometry,
    post: &Post,
    o: *mut f32,
    c: usize,
    oh: usize,
    acc: &[std::arch::x86_64::__m512; NB],
) {
    use std::arch::x86_64::*;
    let ow = g.ow;
    let orow = o.add(oh * ow);
    for (b, &a) in acc.iter().enumerate() {
        let cb = c + 16 * b;
        let m = lanes(0, (ow - cb).min(16) as isize);
        let mut a = a;
        if let Some(r) = post.residual {
            a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, r.as_ptr().add(oh * ow + cb)));
        }
        if let Some((lo, hi)) = post.clip {
            // max then min with the sum second: NaN stays NaN, as the GEMM clips.
            a = _mm512_max_ps(_mm512_set1_ps(lo), a);
            a = _mm512_min_ps(_mm512_set1_ps(hi), a);
        }
        _mm512_mask_storeu_ps(orow.add(cb), m, a);
    }
}

/// Output columns `c..` (`NB` blocks of 16, the last one possibly partial) of every
/// output row.
///
/// # Safety
/// As [`plane`], with `NB` blocks starting at `c` inside the row (the last reaching at
/// least one column).
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn columns<const NB: usize>(
    g: &Geometry,
    x: &[f32],
    k: &[f32],
    bias: f32,
    post: &Post,
    o: *mut f32,
    c: usize,
) {
    use std::arch::x86_64::*;
    let w = g.w as isize;
    let (even, odd) = even_odd();
    let xp = x.as_ptr();
    // Per block, for the pair of loads of taps 0 and 1 (`[0]`) and of tap 2 (`[1]`): the
    // first input column, and the masks of its two loads (lanes outside the row stay
    // zero). Output lane t reads column start + 2t, and start + 2t + 1 for tap 1.
    let mut start = [[0isize; 2]; NB];
    let mut masks = [[(0u16, 0u16); 2]; NB];
    for b in 0..NB {
        for (p, j) in [0, 2].into_iter().enumerate() {
            let c0 = (2 * (c + 16 * b) + j) as isize - g.pw as isize;
            start[b][p] = c0;
            masks[b][p] = (lanes(-c0, w - c0), lanes(-c0 - 16, w - c0 - 16));
        }
    }
    // Every load of 16 columns is masked (lanes outside the row read nothing). Choosing
    // a plain load where the mask is full put a branch before each of the row's loads,
    // and those cost more than the masked loads (one thread, alone, minimum of four
    // interleaved runs: 96×112² → 56² 0.215 → 0.187 ms, 144×56² → 28² 0.083 → 0.075).
    // Kernel row i's three taps of the `NB` blocks, added into `acc`.
    let row = |i: usize, ih0: isize, acc: &mut [__m512; NB]| {
        let ih = ih0 + i as isize;
        if ih < 0 || ih >= g.h as isize {
            return;
        }
        let input = xp.add(ih as usize * g.w);
        let kr = k.as_ptr().add(i * 3);
        let (w0, w1, w2) = (_mm512_set1_ps(*kr), _mm512_set1_ps(*kr.add(1)), _mm512_set1_ps(*kr.add(2)));
        for b in 0..NB {
            let at = input.wrapping_offset(start[b][0]);
            let (m_lo, m_hi) = masks[b][0];
            let lo = _mm512_maskz_loadu_ps(m_lo, at);
            let hi = _mm512_maskz_loadu_ps(m_hi, at.wrapping_add(16));
            acc[b] = _mm512_fmadd_ps(_mm512_permutex2var_ps(lo, even, hi), w0, acc[b]);
            acc[b] = _mm512_fmadd_ps(_mm512_permutex2var_ps(lo, odd, hi), w1, acc[b]);
            let at = input.wrapping_offset(start[b][1]);
            let (m_lo, m_hi) = masks[b][1];
            let lo = _mm512_maskz_loadu_ps(m_lo, at);
            let hi = _mm512_maskz_loadu_ps(m_hi, at.wrapping_add(16));
            acc[b] = _mm512_fmadd_ps(_mm512_permutex2var_ps(lo, even, hi), w2, acc[b]);
        }
    };
    for oh in 0..g.oh {
        let ih0 = (oh * g.sh) as isize - g.ph as isize;
        // Even and odd kernel rows in separate sums: twice the FMA chains in flight (with
        // a block or two per row, one chain per block waited on the FMA's latency). Rows
        // go in pairs, each into its own named array: picking the array by `i & 1` made
        // it an indexed one, kept on the stack, and every FMA waited on a store and a
        // reload (one thread, alone, per-kernel minimum of four interleaved runs:
        // 96×112² → 56² 0.229 → 0.215 ms, 144×56² → 28² 0.094 → 0.085).
        let mut acc = [_mm512_set1_ps(bias); NB];
        let mut odd_rows = [_mm512_setzero_ps(); NB];
        for i in (0..g.kh).step_by(2) {
            row(i, ih0, &mut acc);
            if i + 1 < g.kh {
                row(i + 1, ih0, &mut odd_rows);
            }
        }
        for (a, o) in acc.iter_mut().zip(odd_rows) {
            *a = _mm512_add_ps(*a, o);
        }
        finish::<NB>(g, post, o, c, oh, &acc);
    }
}
