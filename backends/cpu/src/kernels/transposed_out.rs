//! The copy of tiles of a transposed product `Cᵀ` (positions × channels, as the GEMM kernel
//! writes them) into an NCHW output (channels × positions), with the epilogue the kernel
//! would have applied: bias per channel, then the residual, then the clip (NaN stays NaN).
//! Shared by the convolutions computed transposed (`conv_small_p`, `conv_taps`).

use std::ops::Range;

/// Where the copy reads and writes: channel j's position x comes from
/// `src[x·lds + j − first]` and goes to `out[j·ldo + at + x]`, for the channels `channels`
/// and positions `x < n`. The residual, if any, is indexed as the output.
pub(crate) struct Transposed<'a> {
    pub src: &'a [f32],
    pub lds: usize,
    /// The channel of `src`'s column 0.
    pub first: usize,
    pub n: usize,
    pub channels: Range<usize>,
    pub out: *mut f32,
    pub ldo: usize,
    pub at: usize,
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub clip: Option<(f32, f32)>,
}

impl Transposed<'_> {
    /// The copy, eight positions × eight channels at a time transposed in AVX registers
    /// where `vector` (the caller runs the AVX2 kernel, so the CPU has AVX): scalar, the
    /// stores into the fresh output took 28% of a 1×1 512→2048 conv's time (`perf`).
    ///
    /// # Safety
    /// `out` must be valid for writes at every `j·ldo + at + x` above, which nothing else
    /// accesses during the call; `src` must hold `(n − 1)·lds + 8` floats past each
    /// 8-channel group's first column when `vector` (the source row is read 8 channels at a
    /// time, so `lds` must leave room for them), else `(n − 1)·lds + channels.len()`;
    /// `bias` and `residual` must hold every index above.
    pub unsafe fn write(&self, vector: bool) {
        #[cfg(target_arch = "x86_64")]
        if vector {
            self.write_avx();
            return;
        }
        let _ = vector;
        for j in self.channels.clone() {
            let base = j * self.ldo + self.at;
            let bias = self.bias.map(|b| b[j]);
            for x in 0..self.n {
                let mut v = self.src[x * self.lds + j - self.first];
                if let Some(b) = bias {
                    v += b;
                }
                if let Some(r) = self.residual {
                    v += r[base + x];
                }
                if let Some((lo, hi)) = self.clip {
                    if v < lo {
                        v = lo;
                    } else if v > hi {
                        v = hi;
                    }
                }
                self.out.add(base + x).write(v);
            }
        }
    }

    /// # Safety
    /// As [`Self::write`] with `vector`; the CPU must have AVX.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    unsafe fn write_avx(&self) {
        use std::arch::x86_64::*;
        let (lo, hi) = self.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let s = self.src.as_ptr();
        for c0 in self.channels.clone().step_by(8) {
            let col = c0 - self.first;
            for x0 in (0..self.n).step_by(8) {
                let n = 8.min(self.n - x0);
                let mut r = [_mm256_setzero_ps(); 8];
                for (q, v) in r.iter_mut().enumerate().take(n) {
                    *v = _mm256_loadu_ps(s.add((x0 + q) * self.lds + col));
                }
                super::transpose::tiles::transpose8(&mut r);
                for (c, mut v) in r.into_iter().enumerate().take(self.channels.end - c0) {
                    let j = c0 + c;
                    let at = j * self.ldo + self.at + x0;
                    if let Some(b) = self.bias {
                        v = _mm256_add_ps(v, _mm256_set1_ps(b[j]));
                    }
                    let mut part = [0.0f32; 8];
                    if let Some(res) = self.residual {
                        let rv = if n == 8 {
                            _mm256_loadu_ps(res[at..at + 8].as_ptr())
                        } else {
                            part[..n].copy_from_slice(&res[at..at + n]);
                            _mm256_loadu_ps(part.as_ptr())
                        };
                        v = _mm256_add_ps(v, rv);
                    }
                    // max(lo, v) and min(hi, v) return v when it is NaN; no clip is the
                    // infinite bounds.
                    v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
                    if n == 8 {
                        _mm256_storeu_ps(self.out.add(at), v);
                    } else {
                        _mm256_storeu_ps(part.as_mut_ptr(), v);
                        std::ptr::copy_nonoverlapping(part.as_ptr(), self.out.add(at), n);
                    }
                }
            }
        }
    }
}
