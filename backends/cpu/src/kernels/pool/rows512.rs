//! Max pooling straight from an NCHW plane with AVX-512F, sixteen output columns per
//! vector: no padded copy of the plane, no transposes into lanes. Each output row folds
//! its window's input rows as they lie in the plane; at column stride 2 a pair of loads
//! (32 input columns) is split into its even and odd columns by a permute in registers,
//! which gives two taps of the window at once.
//!
//! Why: the padded paths ([`super::padded`]) copy every plane first (and, eight planes at
//! a time, transpose it into lanes and back). xception's 3×3/2 pools on 128×77² and
//! 256×39² took 0.19–0.23 and 0.11–0.14 ms alone that way (2 threads, `kiln bench`),
//! against onnxruntime's 0.10–0.12 and 0.055–0.07, which include its own layout
//! changes; this path takes 0.12–0.14 and 0.08.
//!
//! Order of the fold, and so the result bit for bit (NaNs included), is the scalar
//! path's: the window's rows top to bottom, each row's taps left to right, the first tap
//! kept and replaced by any later one that compares greater. Rows of the window outside
//! the input are read as the nearest input row, which is also in the window and comes
//! next to them in the fold: a repeat never compares greater than itself. Columns whose
//! window reaches outside the row (at most a few per edge) take the scalar fold over
//! their inside taps.
//!
//! Tried and not taken: four blocks of 16 columns folded side by side (four chains of
//! maxes instead of one), with every load masked as the depthwise `rows512` does. Slower
//! inside xception at one thread, per-kernel minimums of three interleaved runs:
//! block2_pool 0.187 → 0.245 ms, block3_pool 0.127 → 0.175 (the blocks' register pairs
//! went to the stack). Every load masked alone, one block at a time, was slower too
//! (block2_pool 0.193 → 0.232 ms, block3_pool 0.128 → 0.153), though the same change
//! made the depthwise `rows512` faster. One block's chain is not what a pool waits on.

use super::super::avx512f::{even_odd, lanes};
use super::Dim1;
use std::ops::Range;

/// Most window rows (a fixed array of row offsets per output row, no allocation).
const MAX_ROWS: usize = 16;

/// Whether [`plane`] handles windows of `dh` × `dw`: no dilation, column stride 1 or 2,
/// at most [`MAX_ROWS`] rows, output rows of at least 16 columns (narrower ones lost to
/// the eight planes in lanes: one masked vector per row), and every window holds an
/// input position.
pub(super) fn applies(dh: &Dim1, dw: &Dim1, cols: &[(isize, Range<usize>, usize)]) -> bool {
    dw.out >= 16
        && dh.d == 1
        && dw.d == 1
        && (1..=2).contains(&dw.s)
        && dh.k <= MAX_ROWS
        && dh.input > 0
        && dw.input > 0
        && (0..dh.out).all(|o| !dh.taps(o).1.is_empty())
        && cols.iter().all(|c| !c.1.is_empty())
}

/// One plane: `x` (dh.input rows of dw.input) into `o` (dh.out rows of dw.out). Output
/// columns `inner` have every tap inside the row; `cols` is `Dim1::taps` per column.
///
/// # Safety
/// The CPU has AVX-512F; [`applies`] holds; `x` and `o` are one whole input and output
/// plane; `inner` is the range of columns whose taps all lie inside the row.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn plane(
    dh: &Dim1,
    dw: &Dim1,
    cols: &[(isize, Range<usize>, usize)],
    inner: Range<usize>,
    x: &[f32],
    o: &mut [f32],
) {
    // The usual windows with their loops unrolled: as plain loops over kh, kw and the
    // stride, the loop control and the first-tap test took most of a 3×3/2 pool's time.
    match (dh.k, dw.k, dw.s) {
        (3, 3, 2) => window::<3, 3, 2>(dh, dw, cols, inner, x, o),
        (3, 3, 1) => window::<3, 3, 1>(dh, dw, cols, inner, x, o),
        (2, 2, 2) => window::<2, 2, 2>(dh, dw, cols, inner, x, o),
        _ => window::<0, 0, 0>(dh, dw, cols, inner, x, o),
    }
}

/// [`plane`] for a `KH` × `KW` window at column stride `S`, or any window (from `dh` and
/// `dw`) when they are 0.
///
/// # Safety
/// As [`plane`]; the constants, when not 0, are `dh.k`, `dw.k` and `dw.s`.
#[target_feature(enable = "avx512f")]
unsafe fn window<const KH: usize, const KW: usize, const S: usize>(
    dh: &Dim1,
    dw: &Dim1,
    cols: &[(isize, Range<usize>, usize)],
    inner: Range<usize>,
    x: &[f32],
    o: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() == dh.input * dw.input && o.len() == dh.out * dw.out);
    let pick = |fixed: usize, given: usize| if fixed == 0 { given } else { fixed };
    let (width, kh, kw, s) = (dw.input, pick(KH, dh.k), pick(KW, dw.k), pick(S, dw.s));
    let (even, odd) = even_odd();
    let mut rows = [0usize; MAX_ROWS];
    let xp = x.as_ptr();
    for oh in 0..dh.out {
        let h0 = (oh * dh.s) as isize - dh.pb as isize;
        for (i, r) in rows.iter_mut().enumerate().take(kh) {
            *r = (h0 + i as isize).clamp(0, dh.input as isize - 1) as usize * width;
        }
        let orow = &mut o[oh * dw.out..(oh + 1) * dw.out];
        let mut ow = inner.start;
        while ow < inner.end {
            let n = 16.min(inner.end - ow);
            // Inner columns: tap 0 of column ow starts at or after column 0.
            let c0 = ow * s - dw.pb;
            let mut acc = _mm512_setzero_ps();
            let mut first = true;
            // The window's next tap: kept if first, else taken where it compares greater
            // (vmaxps returns its second operand, the running value, on NaN or a tie).
            macro_rules! fold {
                ($t:expr) => {{
                    let t = $t;
                    acc = if first { t } else { _mm512_max_ps(t, acc) };
                    first = false;
                }};
            }
            for &r in &rows[..kh] {
                if s == 1 {
                    for j in 0..kw {
                        // Columns c0 + j .. + n lie inside the row (inner columns).
                        let at = xp.add(r + c0 + j);
                        fold!(if n == 16 { _mm512_loadu_ps(at) } else { _mm512_maskz_loadu_ps(lanes(0, n as isize), at) });
                    }
                } else {
                    for j in (0..kw).step_by(2) {
                        // Columns from `base` to the row's end, at most 32: every column
                        // an even or odd tap of these n outputs reads lies among them.
                        let base = c0 + j;
                        let m = width - base;
                        let at = xp.add(r + base);
                        // Plain loads where the 32 columns are all in the row (masked
                        // ones cost more on this AMD core).
                        let (lo, hi) = if m >= 32 {
                            (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)))
                        } else if m > 16 {
                            (_mm512_loadu_ps(at), _mm512_maskz_loadu_ps(lanes(0, (m - 16) as isize), at.add(16)))
                        } else {
                            (_mm512_maskz_loadu_ps(lanes(0, m as isize), at), _mm512_setzero_ps())
                        };
                        fold!(_mm512_permutex2var_ps(lo, even, hi));
                        if j + 1 < kw {
                            fold!(_mm512_permutex2var_ps(lo, odd, hi));
                        }
                    }
                }
            }
            _mm512_mask_storeu_ps(orow.as_mut_ptr().add(ow), lanes(0, n as isize), acc);
            ow += n;
        }
        for ow in (0..inner.start).chain(inner.end..dw.out) {
            let (start, ref taps, _) = cols[ow];
            let mut best: Option<f32> = None;
            for &r in &rows[..kh] {
                for j in taps.clone() {
                    let e = x[r + (start + j as isize) as usize];
                    best = Some(match best {
                        Some(b) if e > b => e,
                        Some(b) => b,
                        None => e,
                    });
                }
            }
            orow[ow] = best.unwrap_or(0.0);
        }
    }
}
