//! The last column panel when it holds only 1 or 2 of its 16 columns (a 7×7 output's 49
//! positions are 3 panels and 1 column; 17×17's 289 are 18 and 1): the 6×16 kernel would
//! spend a whole panel's work, a quarter of a 7×7 conv, on them. Here each column is a
//! dot product of the packed A panel (6 rows per k step) with the column of B: one 6-lane
//! FMA per k step, in 4 partial sums, then the epilogue in the kernel's order.

use super::driver::Job;
use super::{FLAG_BETA, FLAG_BIAS_COL, FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL, MR, NR};

/// Most columns worth taking off the kernel.
pub(super) const NARROW_COLS: usize = 2;

impl Job<'_> {
    /// Rows `i..i + rows` × columns `j..j + cols` (`cols ≤ NARROW_COLS`) of one k block:
    /// `a` is a packed A panel (`kc` groups of [`MR`] floats), `b` a B panel.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` and `b` hold `kc` steps; (i, j) and the
    /// rows × cols block lie inside C (and the residual and bias when flagged).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
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
        use std::arch::x86_64::*;
        // Lanes 0..6 of a k step's A; the two past it may lie outside the buffer.
        let six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        for jj in 0..cols {
            let mut acc = [_mm256_setzero_ps(); 4];
            let col = b.add(jj);
            let mut kk = 0;
            while kk + 4 <= kc {
                for (u, sum) in acc.iter_mut().enumerate() {
                    let av = _mm256_maskload_ps(a.add((kk + u) * MR), six);
                    let bv = _mm256_broadcast_ss(&*col.add((kk + u) * NR));
                    *sum = _mm256_fmadd_ps(av, bv, *sum);
                }
                kk += 4;
            }
            while kk < kc {
                let av = _mm256_maskload_ps(a.add(kk * MR), six);
                let bv = _mm256_broadcast_ss(&*col.add(kk * NR));
                acc[0] = _mm256_fmadd_ps(av, bv, acc[0]);
                kk += 1;
            }
            let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut v = [0.0f32; 8];
            _mm256_storeu_ps(v.as_mut_ptr(), total);
            for (r, &x) in v[..rows].iter().enumerate() {
                self.finish(i + r, j + jj, x, flags);
            }
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
