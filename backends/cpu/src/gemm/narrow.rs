//! The last column panel when it holds only 1 to 4 of its 16 columns (a 7×7 output's 49
//! positions are 3 panels and 1 column, 14×14's 196 are 12 and 4): the 6×16 kernel would
//! spend a whole panel's work, a quarter of a 7×7 conv, on them. Here each column is a
//! dot product of the packed A panel (6 rows per k step) with the column of B: one 6-lane
//! FMA per column and k step, then the epilogue in the kernel's order.

use super::driver::Job;
use super::{FLAG_BETA, FLAG_BIAS_COL, FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL, MR, NR};

/// Most columns worth taking off the kernel.
pub(super) const NARROW_COLS: usize = 4;

impl Job<'_> {
    /// Rows `i..i + rows` × columns `j..j + cols` (1 ≤ `cols` ≤ NARROW_COLS) of one k block:
    /// `a` is a packed A panel (`kc` groups of [`MR`] floats), `b` a B panel.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` and `b` hold `kc` steps; (i, j) and the
    /// rows × cols block lie inside C (and the residual and bias when flagged).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn narrow_tile(
        &self,
        a: *const f32,
        b: *const f32,
        kc: usize,
        i: usize,
        rows: usize,
        j: usize,
        cols: usize,
        flags: u64,
    ) {
        let sums = match cols {
            1 => dots::<1>(a, b, kc),
            2 => dots::<2>(a, b, kc),
            3 => dots::<3>(a, b, kc),
            _ => dots::<4>(a, b, kc),
        };
        if cols == 4 {
            self.finish_rows4(&sums, i, rows, j, flags);
            return;
        }
        for (jj, col) in sums.iter().enumerate().take(cols) {
            for (r, &x) in col[..rows].iter().enumerate() {
                self.finish(i + r, j + jj, x, flags);
            }
        }
    }

    /// Writes the tile's rows of 4 columns as the kernel's epilogue would, a row per
    /// vector: the same adds in the same order and the kernel's clip (`max(lo, v)` then
    /// `min(hi, ·)`, NaN through both), so the same results as [`Job::finish`]. Element
    /// by element, with a branch per flag, it took almost as long as the dot products
    /// inside mobilenet_v2 (`perf`: `narrow_tile` 0.91% of the samples, `dots` 1.09%) and
    /// a quarter as long on xception's middle flow (1.38% against 5.48%).
    ///
    /// # Safety
    /// As [`Job::narrow_tile`], with 4 columns; AVX2 available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn finish_rows4(&self, sums: &[[f32; 8]; 4], i: usize, rows: usize, j: usize, flags: u64) {
        use std::arch::x86_64::*;
        let (lo, hi) = (_mm_set1_ps(self.lo), _mm_set1_ps(self.hi));
        let bias_col = if flags & FLAG_BIAS_COL != 0 { _mm_loadu_ps(self.bias.add(j)) } else { _mm_setzero_ps() };
        for r in 0..rows {
            let mut v = _mm_setr_ps(sums[0][r], sums[1][r], sums[2][r], sums[3][r]);
            let c = self.c.add((i + r) * self.ldc + j);
            if flags & FLAG_BETA != 0 {
                v = _mm_add_ps(v, _mm_loadu_ps(c));
            }
            if flags & FLAG_BIAS_COL != 0 {
                v = _mm_add_ps(v, bias_col);
            }
            if flags & FLAG_BIAS_ROW != 0 {
                v = _mm_add_ps(v, _mm_set1_ps(*self.bias.add(i + r)));
            }
            if flags & FLAG_RESIDUAL != 0 {
                v = _mm_add_ps(v, _mm_loadu_ps(self.residual.add((i + r) * self.ldr + j)));
            }
            if flags & FLAG_CLIP != 0 {
                v = _mm_min_ps(hi, _mm_max_ps(lo, v));
            }
            _mm_storeu_ps(c, v);
        }
    }

    /// Writes one element of C as the kernel's epilogue would: C added when accumulating,
    /// then the bias, the residual and the clip (NaN stays NaN).
    ///
    /// # Safety
    /// (i, j) lies inside C, and inside the residual and the bias when flagged.
    unsafe fn finish(&self, i: usize, j: usize, mut v: f32, flags: u64) {
        let c = self.c.add(i * self.ldc + j);
        if flags & FLAG_BETA != 0 {
            v += *c;
        }
        if flags & FLAG_BIAS_COL != 0 {
            v += *self.bias.add(j);
        }
        if flags & FLAG_BIAS_ROW != 0 {
            v += *self.bias.add(i);
        }
        if flags & FLAG_RESIDUAL != 0 {
            v += *self.residual.add(i * self.ldr + j);
        }
        if flags & FLAG_CLIP != 0 {
            v = if v < self.lo {
                self.lo
            } else if v > self.hi {
                self.hi
            } else {
                v
            };
        }
        *c = v;
    }
}

/// The first `C` columns of the B panel `b` times the A panel `a` over `kc` steps: per k
/// step one load of A's 6 rows, then one broadcast and FMA per column, in two partial
/// sums per column (the FMA latency).
///
/// # Safety
/// AVX2 and FMA must be available; `a` and `b` hold `kc` steps.
#[target_feature(enable = "avx2,fma")]
unsafe fn dots<const C: usize>(a: *const f32, b: *const f32, kc: usize) -> [[f32; 8]; 4] {
    use std::arch::x86_64::*;
    // Lanes 0..6 of a k step's A; the two past it may lie outside the buffer.
    let six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    let mut even = [_mm256_setzero_ps(); C];
    let mut odd = [_mm256_setzero_ps(); C];
    // Every k step but the last reads its 6 floats with a plain 8-lane load (lanes 6 and
    // 7 are the next step's, their sums never read): `vmaskmovps` is slow on this AMD
    // core, and the 4 columns took 6.7% of a 14×14 conv's CPU time for 2% of its work
    // (4.1% after; 7×7's one column 7.9% → 6.2%).
    let plain = |kk: usize| _mm256_loadu_ps(a.add(kk * MR));
    let masked = |kk: usize| _mm256_maskload_ps(a.add(kk * MR), six);
    let mut kk = 0;
    while kk + 3 <= kc {
        step(b, kk, plain(kk), &mut even);
        step(b, kk + 1, plain(kk + 1), &mut odd);
        kk += 2;
    }
    if kk < kc {
        step(b, kk, masked(kk), &mut even);
    }
    if kk + 1 < kc {
        step(b, kk + 1, masked(kk + 1), &mut odd);
    }
    let mut out = [[0.0f32; 8]; 4];
    for jj in 0..C {
        _mm256_storeu_ps(out[jj].as_mut_ptr(), _mm256_add_ps(even[jj], odd[jj]));
    }
    out
}

/// One k step of [`dots`] into `acc`, with `av` the step's A (lanes 0..6).
///
/// # Safety
/// As [`dots`], with `kk < kc`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn step<const C: usize>(
    b: *const f32,
    kk: usize,
    av: std::arch::x86_64::__m256,
    acc: &mut [std::arch::x86_64::__m256; C],
) {
    use std::arch::x86_64::*;
    for (jj, sum) in acc.iter_mut().enumerate() {
        let bv = _mm256_broadcast_ss(&*b.add(kk * NR + jj));
        *sum = _mm256_fmadd_ps(av, bv, *sum);
    }
}
