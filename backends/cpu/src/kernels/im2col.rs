//! Convolution geometry (2-D; 1-D runs as 2-D with height 1) and the patches (im2col)
//! packed straight into the GEMM's panels.

use crate::gemm::{PanelSource, NR};
#[cfg(target_arch = "x86_64")]
use std::mem::MaybeUninit;
use kiln_ir::AutoPad;

/// One 2-D convolution's sizes, per image and group.
#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    /// Input channels per group, input height and width.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding before the first row and column.
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

/// The attributes as the op holds them (empty = ONNX default).
pub(crate) struct Attrs<'a> {
    pub auto_pad: AutoPad,
    pub dilations: &'a [i64],
    pub kernel_shape: &'a [i64],
    pub pads: &'a [i64],
    pub strides: &'a [i64],
}

fn positive(v: &[i64], n: usize) -> Option<Vec<usize>> {
    if v.is_empty() {
        return Some(vec![1; n]);
    }
    if v.len() != n || v.iter().any(|&x| !(1..=1 << 31).contains(&x)) {
        return None;
    }
    Some(v.iter().map(|&x| x as usize).collect())
}

/// Output size and begin padding of one spatial dim, as ONNX defines them; `None` for an
/// invalid geometry (the reference kernel then reports the error).
fn dim(
    a: &Attrs,
    i: usize,
    n: usize,
    input: usize,
    k: usize,
    s: usize,
    d: usize,
) -> Option<(usize, usize)> {
    let extent = (k.checked_sub(1)?).checked_mul(d)? + 1;
    match a.auto_pad {
        AutoPad::NotSet => {
            let pads: Vec<usize> = if a.pads.is_empty() {
                vec![0; 2 * n]
            } else if a.pads.len() == 2 * n && a.pads.iter().all(|&p| (0..=1 << 31).contains(&p)) {
                a.pads.iter().map(|&p| p as usize).collect()
            } else {
                return None;
            };
            let padded = input + pads[i] + pads[i + n];
            Some(((padded.checked_sub(extent)?) / s + 1, pads[i]))
        }
        AutoPad::Valid => Some(((input.checked_sub(extent)?) / s + 1, 0)),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(s);
            let total = ((out.max(1) - 1) * s + extent).saturating_sub(input);
            let pb = if a.auto_pad == AutoPad::SameUpper {
                total / 2
            } else {
                total - total / 2
            };
            Some((out, pb))
        }
    }
}

impl Geometry {
    /// Geometry for x [N, C, (H,) W] and w [M, C/group, (kh,) kw].
    pub fn new(a: &Attrs, xs: &[usize], ws: &[usize], group: usize) -> Option<Geometry> {
        let n = xs.len().checked_sub(2)?;
        if !(1..=2).contains(&n)
            || ws.len() != xs.len()
            || group == 0
            || ws[1].checked_mul(group)? != xs[1]
        {
            return None;
        }
        let kernel = &ws[2..];
        if !a.kernel_shape.is_empty()
            && (a.kernel_shape.len() != n
                || a.kernel_shape
                    .iter()
                    .zip(kernel)
                    .any(|(&k, &w)| k != w as i64))
        {
            return None;
        }
        if kernel.iter().any(|&k| k == 0) {
            return None;
        }
        let (strides, dilations) = (positive(a.strides, n)?, positive(a.dilations, n)?);
        let mut dims = Vec::new();
        for i in 0..n {
            dims.push(dim(
                a,
                i,
                n,
                xs[2 + i],
                kernel[i],
                strides[i],
                dilations[i],
            )?);
        }
        // 1-D: height 1, kernel height 1, stride and dilation 1, no padding.
        let (h, kh, sh, dh, (oh, ph)) = if n == 2 {
            (xs[2], kernel[0], strides[0], dilations[0], dims[0])
        } else {
            (1, 1, 1, 1, (1, 0))
        };
        let (ow, pw) = dims[n - 1];
        Some(Geometry {
            c: ws[1],
            h,
            w: xs[1 + n],
            kh,
            kw: kernel[n - 1],
            sh,
            sw: strides[n - 1],
            dh,
            dw: dilations[n - 1],
            ph,
            pw,
            oh,
            ow,
        })
    }

    /// Output positions per image.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Depth of the GEMM: channels × kernel positions.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// A plain matrix product: 1×1 kernel, stride 1, no padding.
    pub fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.ph == 0
            && self.pw == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// Output positions `o < out` whose input coordinate `o·s + off` lies in `0..input`.
pub(crate) fn valid_range(out: usize, s: usize, off: isize, input: usize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 {
        0
    } else {
        ((-off + s - 1) / s) as usize
    };
    let hi = if (input as isize) <= off {
        0
    } else {
        (((input as isize - off) + s - 1) / s) as usize
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// Kernel taps (kh × kw) up to which the vector copy keeps its per-tap table on the
/// stack (11×11 and larger kernels take the portable copy).
const MAX_TABLE_TAPS: usize = 64;

/// One group's input patches (`x`: c × h × w) as the GEMM's B: row (channel, kernel row,
/// kernel column), column output position; padding reads as zero. Packed straight into
/// panels, a block of positions at a time, so the (c·kh·kw) × (oh·ow) matrix never exists.
pub(crate) struct Patches<'a> {
    g: &'a Geometry,
    x: &'a [f32],
    /// Per kernel column j: the output columns whose tap j lies inside the input width.
    cols: Vec<(usize, usize)>,
    /// Stride-1 and stride-2 runs copied with AVX-512 masked loads and stores (the CPU
    /// has them, and the kernel has at most [`MAX_TABLE_TAPS`] taps).
    vector: bool,
}

/// Row k of the patches (the GEMM's B here, the transposed convs' Aᵀ): channel c, kernel
/// row i and kernel column j, where k = (c·kh + i)·kw + j. Stepped along with k it needs no
/// division past the first row: four per row took a fifth of the transposed convs'
/// gather (`perf`, a chain of 7×1 192→192 convs at 8×8).
#[derive(Clone, Copy)]
pub(crate) struct PatchRow {
    pub c: usize,
    pub i: usize,
    pub j: usize,
}

impl PatchRow {
    pub fn at(g: &Geometry, k: usize) -> PatchRow {
        let taps = g.kh * g.kw;
        let t = k % taps;
        PatchRow {
            c: k / taps,
            i: t / g.kw,
            j: t % g.kw,
        }
    }

    /// Row k + 1.
    pub fn advance(&mut self, g: &Geometry) {
        self.j += 1;
        if self.j == g.kw {
            self.j = 0;
            self.i += 1;
            if self.i == g.kh {
                self.i = 0;
                self.c += 1;
            }
        }
    }
}

impl<'a> Patches<'a> {
    /// `None` when `x` is shorter than one group's c × h × w.
    pub fn new(g: &'a Geometry, x: &'a [f32], vector: bool) -> Option<Self> {
        if x.len() < g.c.checked_mul(g.h)?.checked_mul(g.w)? {
            return None;
        }
        let cols = (0..g.kw)
            .map(|j| valid_range(g.ow, g.sw, (j * g.dw) as isize - g.pw as isize, g.w))
            .collect();
        Some(Patches {
            g,
            x,
            cols,
            vector: vector && (g.sw == 1 || g.sw == 2) && g.kh * g.kw <= MAX_TABLE_TAPS && super::avx512f::detected(),
        })
    }

    /// Output positions `ow0..ow0 + len` of output row `oh`, rows `k0..k0 + kc` of B, into
    /// `out[kk·16 + lane]` (the lanes of one panel).
    fn segment(&self, k0: usize, kc: usize, oh: usize, ow0: usize, len: usize, out: &mut [f32]) {
        let g = self.g;
        let mut next = PatchRow::at(g, k0);
        let plane = g.h * g.w;
        for kk in 0..kc {
            let PatchRow { c: ci, i, j } = next;
            next.advance(g);
            let d = &mut out[kk * NR..kk * NR + len];
            let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
            let (lo, hi) = self.cols[j];
            let a = lo.clamp(ow0, ow0 + len) - ow0;
            let b = hi.clamp(ow0, ow0 + len) - ow0;
            if ih < 0 || ih as usize >= g.h || a >= b {
                d.fill(0.0);
            } else {
                // The input column of lane a: (ow0 + a)·sw + j·dw − pw, inside the row.
                let iw = (ow0 + a) * g.sw + j * g.dw - g.pw;
                let src = &self.x[ci * plane + ih as usize * g.w + iw..];
                if g.sw == 1 && b - a == NR {
                    let s: &[f32; NR] = src[..NR].try_into().expect("16 floats");
                    let d: &mut [f32; NR] = d.try_into().expect("16 floats");
                    *d = *s;
                } else {
                    d[..a].fill(0.0);
                    d[b..].fill(0.0);
                    if g.sw == 1 {
                        for (v, s) in d[a..b].iter_mut().zip(src) {
                            *v = *s;
                        }
                    } else {
                        for (v, s) in d[a..b].iter_mut().zip(src.iter().step_by(g.sw)) {
                            *v = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Most runs (pieces of output rows) one panel's copy takes at once: a 7-wide output
/// puts 3 in most panels, a 14-wide one 2.
#[cfg(target_arch = "x86_64")]
const MAX_RUNS: usize = 4;

/// Output positions `ow0..ow0 + len` of output row `oh`, in a panel's lanes from `lane`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Default)]
struct Run {
    oh: usize,
    ow0: usize,
    len: usize,
    lane: usize,
}

#[cfg(target_arch = "x86_64")]
impl Patches<'_> {
    /// [`Self::segment`] at stride 1 or 2 for up to [`MAX_RUNS`] runs of one panel at
    /// once, with masked loads and one masked store per kernel row: each run's lanes are
    /// loaded into the same vector. A run shorter than 16 (every run of a 7, 14 or 28
    /// wide output, the edges of the others) cost a `memmove` call and two fills per
    /// kernel row in the portable copy, 15% of a 14×14 conv's time, and a stride-2 run a
    /// scalar loop. One run per pass went over every row of a panel once per output row
    /// the panel holds, with a masked store each time: resnet50's 3×3 512→512 convs at
    /// 7×7 (three runs in most panels) took 2.11/2.32/2.33 ms, now 1.99/2.22/2.26
    /// (per-kernel minimums of three interleaved runs, one thread); `segment` went from
    /// 4.7% to 4.3% of a 3×3 256→256 conv at 14×14.
    /// Lanes outside the image read nothing (masked off) and are written as zeros.
    /// AVX-512 masks rather than AVX2's `vmaskmovps`, whose store is slow on AMD cores.
    ///
    /// # Safety
    /// AVX-512F must be available; `out` is the panel's first lane and holds
    /// `(kc - 1)·16 + l` floats, `l` the end of the last run's lanes (at most 16).
    #[target_feature(enable = "avx512f")]
    unsafe fn segment_avx512(&self, k0: usize, kc: usize, runs: &[Run], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let g = self.g;
        let taps = g.kh * g.kw;
        let plane = g.h * g.w;
        let lanes_below = |n: usize| ((1u32 << n) - 1) as __mmask16;
        // Bits 2l for lanes l < n: the input columns of a stride-2 run.
        let evens_below = |n: usize| (((1u64 << (2 * n)) - 1) & 0x5555_5555) as u32;
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let x = self.x.as_ptr();
        let mut store: __mmask16 = 0;
        for r in runs {
            store |= lanes_below(r.lane + r.len) & !lanes_below(r.lane);
        }
        // Per kernel tap (row i, column j) and run: where lane 0 reads in a channel's
        // plane, and which lanes read (none: a padding row, written as zeros). The same
        // for every channel, so each row of the panel is a load per run and one store.
        // Only the entries of this call's taps and runs are written (and read): zeroing the
        // whole 4 KB table on every call cost as many stores as the copy itself makes.
        let mut table =
            [[MaybeUninit::<(isize, u32, __mmask16)>::uninit(); MAX_RUNS]; MAX_TABLE_TAPS];
        for (t, entry) in table[..taps].iter_mut().enumerate() {
            let (i, j) = (t / g.kw, t % g.kw);
            for (e, r) in entry.iter_mut().zip(runs) {
                let ih = (r.oh * g.sh + i * g.dh) as isize - g.ph as isize;
                let (lo, hi) = self.cols[j];
                let a = lo.clamp(r.ow0, r.ow0 + r.len) - r.ow0 + r.lane;
                let b = hi.clamp(r.ow0, r.ow0 + r.len) - r.ow0 + r.lane;
                if ih < 0 || ih as usize >= g.h || a >= b {
                    e.write((0, 0, 0));
                    continue;
                }
                // Lane l reads input column (ow0 + l − lane)·sw + j·dw − pw; the address
                // of lane 0 may lie outside the row (its lane is masked off).
                let lane0 = (ih * g.w as isize) + ((r.ow0 * g.sw + j * g.dw) as isize)
                    - (r.lane * g.sw) as isize
                    - g.pw as isize;
                let lanes = lanes_below(b) & !lanes_below(a);
                let read = if g.sw == 1 { lanes as u32 } else { evens_below(b) & !evens_below(a) };
                e.write((lane0, read, lanes));
            }
        }
        let (mut ci, mut t) = (k0 / taps, k0 % taps);
        for kk in 0..kc {
            let d = out.as_mut_ptr().add(kk * NR);
            let base = x.wrapping_add(ci * plane);
            let mut v = _mm512_setzero_ps();
            for e in &table[t][..runs.len()] {
                // SAFETY: entries [..taps][..runs.len()] were all written above.
                let (lane0, read, lanes) = e.assume_init();
                let src = base.wrapping_offset(lane0);
                v = if g.sw == 1 {
                    _mm512_mask_loadu_ps(v, read as __mmask16, src)
                } else {
                    // Stride 2: the 32 columns from lane 0's, the even ones of the run
                    // read, then the even columns gathered into the 16 lanes.
                    let lo = _mm512_maskz_loadu_ps(read as __mmask16, src);
                    let hi = _mm512_maskz_loadu_ps((read >> 16) as __mmask16, src.wrapping_add(16));
                    _mm512_mask_mov_ps(v, lanes, _mm512_permutex2var_ps(lo, evens, hi))
                };
            }
            _mm512_mask_storeu_ps(d, store, v);
            t += 1;
            if t == taps {
                t = 0;
                ci += 1;
            }
        }
    }
}

impl PanelSource for Patches<'_> {
    fn pack(&self, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [f32]) {
        let g = self.g;
        if kc == 0 || cols == 0 || g.ow == 0 {
            return;
        }
        let tail = cols % NR;
        if tail != 0 {
            let last = &mut out[(cols / NR) * kc * NR..(cols / NR + 1) * kc * NR];
            for row in last.chunks_exact_mut(NR) {
                row[tail..].fill(0.0);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if self.vector {
            // Panel by panel, its runs of positions inside one output row, a few at a
            // time.
            let mut p = j0;
            while p < j0 + cols {
                let panel = (p - j0) / NR;
                let end = (j0 + (panel + 1) * NR).min(j0 + cols);
                let at = panel * kc * NR;
                let mut runs = [Run::default(); MAX_RUNS];
                let mut n = 0;
                while p < end {
                    let (oh, ow0) = (p / g.ow, p % g.ow);
                    let len = (g.ow - ow0).min(end - p);
                    runs[n] = Run { oh, ow0, len, lane: (p - j0) % NR };
                    n += 1;
                    p += len;
                    if n == MAX_RUNS || p == end {
                        let last = runs[n - 1];
                        assert!(out.len() >= at + (kc - 1) * NR + last.lane + last.len);
                        // SAFETY: `vector` is set only when the CPU has AVX-512F, and the
                        // bounds of `out` were checked above.
                        unsafe { self.segment_avx512(k0, kc, &runs[..n], &mut out[at..]) };
                        n = 0;
                    }
                }
            }
            return;
        }
        // Runs of positions inside one output row and one panel.
        let mut p = j0;
        while p < j0 + cols {
            let (oh, ow0) = (p / g.ow, p % g.ow);
            let lane = (p - j0) % NR;
            let len = (NR - lane).min(g.ow - ow0).min(j0 + cols - p);
            let at = (p - j0) / NR * kc * NR + lane;
            self.segment(k0, kc, oh, ow0, len, &mut out[at..]);
            p += len;
        }
    }
}
