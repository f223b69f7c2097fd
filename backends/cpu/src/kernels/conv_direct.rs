//! Convolutions with a shallow kernel (a network's first conv: 3 channels in, 3×3 or 7×7,
//! stride 2; unet's 3×3 48→8) as a direct loop over the NCHW output: 8 output channels ×
//! 16 positions of one output row stay in eight zmm accumulators while every tap
//! `(c, i, j)` adds its weight, broadcast from memory by the FMA itself, times 16 inputs.
//!
//! As `W · patches` (conv.rs), each of the stem's `C·kh·kw` = 27 steps of depth is a k step
//! of a 6 × 16 tile: the tile's load, store and edge handling are paid over only 27 FMAs
//! per row, 32 channels are row tiles of 6 (36 rows computed), and the patches (27 copies
//! of every input value) took 30% of the time (`perf record`). Here each unit of work (a
//! run of output rows) first copies the input rows it reads, with their padding as zeros
//! and, for stride `s`, each row split into its `s` phases (columns `q, q + s, q + 2s, …`):
//! tap column `j` of output `o` reads padded column `o·s + j·dw`, which is column
//! `o + (j·dw) div s` of phase `(j·dw) mod s`, so every tap reads 16 contiguous floats.
//!
//! AVX-512 for its 32 registers and the FMA's embedded broadcast: the same loop in AVX2
//! (6 channels × 16 positions in twelve ymm accumulators, the weights broadcast by separate
//! loads) ran resnet's 7×7 stem slower than `W · patches`, and with 4 × 24 LLVM spilled an
//! accumulator. Without AVX-512F convs take `W · patches` as before.
//!
//! Alone, two threads, mean µs of 1000 runs (best of three; two rounds, `W · patches` →
//! here, onnxruntime on the same model in brackets): mobilenet's 3×3 3→32 stride 2 at
//! 224×224 163–181 → 124–131 (163–185); resnet's 7×7 3→64 stride 2 1245–1288 → 1068–1086
//! (1153–1242); unet's 3×3 3→16 at 64×64 48–56 → 26–27 (45) and 3×3 48→8 238–260 → 169
//! (309–312); 3×3 32→64 at 77×77 1109–1129 → 1075–1087 (1015–1022).
//!
//! Tried and not taken: two tiles of positions side by side (16 accumulators, each
//! weight broadcast feeding two FMAs): slower inside the models at one thread, per-kernel
//! minimums of three interleaved runs, mobilenet_v2's stem 0.336 → 0.383 ms, resnet50's
//! 2.220 → 2.357.

use super::im2col::{valid_range, Geometry};
use super::rows::Out;
use crate::device::Ctx;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most taps (`C·kh·kw`): unet's 3×3 48→8 (432) ran here in 169 µs against 238–260 as
/// `W · patches`; with more depth and more channels, `W · patches` shares each packed
/// patch among enough rows of W (resnet's 3×3 64→64 at 56×56, 576 taps, was slower here:
/// 1.31 ms against 1.15–1.40).
pub(crate) const MAX_DEPTH: usize = 480;
/// Output channels per tile, and output positions per tile (one zmm vector).
const MB: usize = 8;
const TILE: usize = 16;
/// Units of work (runs of output rows) per thread, taken from a counter.
const UNITS_PER_THREAD: usize = 4;
/// Below this many multiply-adds one thread is faster than waking another.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Whether a conv of this shape runs here: one group, more than one tap, at most
/// [`MAX_DEPTH`] of them, and output rows of at least one tile that leave at most an
/// eighth of the last tile's lanes idle (inception's 3×3 64→96 at 17×17, half its lanes
/// idle, took 300 µs here against 185).
pub(crate) fn takes(group: usize, c: usize, kh: usize, kw: usize, ow: usize) -> bool {
    let idle = ow.div_ceil(TILE) * TILE - ow;
    group == 1 && kh * kw > 1 && c * kh * kw <= MAX_DEPTH && ow >= TILE && 8 * idle <= ow
}

/// Whether this CPU has the AVX-512F this kernel is written in (elsewhere convs take
/// `W · patches`).
pub(crate) fn available() -> bool {
    crate::gemm::Kernel::detect() == crate::gemm::Kernel::Avx2Fma && super::avx512f::detected()
}

/// Whether this conv runs here on this device: [`takes`] and [`available`], and the
/// device's kernel is the detected one (a device made for the portable kernel runs
/// `W · patches`).
pub(crate) fn applies(ctx: &Ctx, g: &Geometry, group: usize) -> bool {
    ctx.kernel == crate::gemm::Kernel::Avx2Fma
        && available()
        && takes(group, g.c, g.kh, g.kw, g.ow)
}

thread_local! {
    /// A unit's padded, phase-split input rows.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Where a unit's copy of the input lies: `C` channels of `rows` padded rows, each row as
/// `s` phases of `cols` columns.
struct Layout {
    rows: usize,
    cols: usize,
}

impl Layout {
    fn new(g: &Geometry, out_rows: usize) -> Layout {
        let ow_tiles = g.ow.div_ceil(TILE) * TILE;
        Layout {
            rows: (out_rows - 1) * g.sh + (g.kh - 1) * g.dh + 1,
            // The last tile's reads, past the output row, land in zeros.
            cols: ow_tiles + (g.kw - 1) * g.dw / g.sw + 1,
        }
    }

    fn len(&self, g: &Geometry) -> usize {
        g.c * self.rows * g.sw * self.cols
    }

    /// Each tap's offset in the copy from the unit's first output row and column, in tap
    /// order (c, i, j) as the weights hold them: tap column j of output o reads padded
    /// column o·s + j·dw, column o + (j·dw) div s of phase (j·dw) mod s.
    fn taps(&self, g: &Geometry) -> Vec<usize> {
        let s = g.sw;
        let mut taps = Vec::with_capacity(g.c * g.kh * g.kw);
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let (phase, col) = ((j * g.dw) % s, (j * g.dw) / s);
                    taps.push(((c * self.rows + i * g.dh) * s + phase) * self.cols + col);
                }
            }
        }
        taps
    }
}

/// One image: `out[m, oh, ow] = clip(bias[m] + Σ w[m, c, i, j] · x[c, oh·sh + i·dh − ph,
/// ow·sw + j·dw − pw] + residual[m, oh, ow])`, zeros outside the input.
///
/// # Safety
/// `applies` must hold; `x` must hold the image (`c·h·w`), `w` the weights
/// (`m·c·kh·kw`), `bias` and the residual (`m·oh·ow`) when present their sizes, and `out`
/// must be valid for `m·oh·ow` writes (it may be uninitialised).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run(
    ctx: &Ctx,
    g: &Geometry,
    m: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    clip: Option<(f32, f32)>,
    out: *mut f32,
) -> Option<()> {
    let depth = g.c * g.kh * g.kw;
    if x.len() < g.c * g.h * g.w
        || w.len() < m * depth
        || bias.is_some_and(|b| b.len() < m)
        || residual.is_some_and(|r| r.len() < m * g.p())
    {
        return None;
    }
    if g.oh == 0 {
        return Some(());
    }
    let threads = ctx.pool.map_or(1, |p| p.threads());
    let parallel = threads > 1 && m * g.p() * depth >= PARALLEL_MIN_MACS;
    let units = if parallel { (threads * UNITS_PER_THREAD).min(g.oh) } else { 1 };
    let rows_per_unit = g.oh.div_ceil(units);
    let units = g.oh.div_ceil(rows_per_unit);
    // Every unit's copy has the same layout (a last, shorter unit's rows past the image
    // are padding rows), so the taps' offsets in it are computed once.
    let layout = Layout::new(g, rows_per_unit);
    let taps = layout.taps(g);
    let out = Out(out);
    let next = AtomicUsize::new(0);
    let (lo, hi) = clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let work = |_thread: usize| {
        ROWS.with(|rows| {
            let mut rows = rows.borrow_mut();
            loop {
                let u = next.fetch_add(1, Ordering::Relaxed);
                if u >= units {
                    return;
                }
                let oh0 = u * rows_per_unit;
                let oh1 = (oh0 + rows_per_unit).min(g.oh);
                // Every float of the copy is written below (input or padding zeros).
                rows.resize(layout.len(g), 0.0);
                copy_rows(g, x, oh0 * g.sh, &layout, &mut rows);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX-512F; the sizes were checked above and
                // output rows oh0..oh1 of every channel are this unit's alone.
                unsafe {
                    x86::rows(g, m, &layout, &taps, &rows, w, bias, residual, (lo, hi), oh0..oh1, out.at(0))
                };
            }
        })
    };
    match ctx.pool {
        Some(pool) if parallel => pool.run(&work),
        _ => work(0),
    }
    Some(())
}

/// Input rows `first..first + layout.rows` of the padded image (padded row `r` is input row
/// `r − ph`) into `dst`, each row split into its phases, and zeros everywhere else (the
/// buffer is reused: every float is written).
fn copy_rows(g: &Geometry, x: &[f32], first: usize, layout: &Layout, dst: &mut [f32]) {
    let (s, cols) = (g.sw, layout.cols);
    for c in 0..g.c {
        for r in 0..layout.rows {
            let row = &mut dst[(c * layout.rows + r) * s * cols..(c * layout.rows + r + 1) * s * cols];
            let Some(ih) = (first + r).checked_sub(g.ph).filter(|&ih| ih < g.h) else {
                row.fill(0.0); // a padding row
                continue;
            };
            let src = &x[(c * g.h + ih) * g.w..(c * g.h + ih + 1) * g.w];
            for (q, phase) in row.chunks_exact_mut(cols).enumerate() {
                // Column t of phase q is padded column t·s + q, input column t·s + q − pw.
                let (t0, t1) = valid_range(cols, s, q as isize - g.pw as isize, g.w);
                phase[..t0].fill(0.0);
                phase[t1..].fill(0.0);
                if t0 == t1 {
                    continue;
                }
                let (run, src) = (&mut phase[t0..t1], &src[t0 * s + q - g.pw..]);
                match s {
                    1 => run.copy_from_slice(&src[..run.len()]),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `applies` checked AVX-512F.
                    2 => unsafe { x86::every_second(src, run) },
                    _ => run.iter_mut().zip(src.iter().step_by(s)).for_each(|(d, v)| *d = *v),
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Geometry, Layout, MB, TILE};
    use std::arch::x86_64::*;

    /// `dst[t] = src[2t]`, sixteen at a time.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn every_second(src: &[f32], dst: &mut [f32]) {
        let n = dst.len().min(src.len().div_ceil(2));
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let mut t = 0;
        while t + 16 <= n && 2 * t + 32 <= src.len() {
            let lo = _mm512_loadu_ps(src.as_ptr().add(2 * t));
            let hi = _mm512_loadu_ps(src.as_ptr().add(2 * t + 16));
            _mm512_storeu_ps(dst.as_mut_ptr().add(t), _mm512_permutex2var_ps(lo, evens, hi));
            t += 16;
        }
        for (d, v) in dst[t..n].iter_mut().zip(src[2 * t..].iter().step_by(2)) {
            *d = *v;
        }
    }

    /// Output rows `oh` of all `m` channels from a unit's copy of the input.
    ///
    /// # Safety
    /// AVX-512F; `rows` laid out as `layout` for the unit's first output row `oh.start`,
    /// `taps` its [`Layout::taps`]; `w`, `bias`, `residual` and `out` as [`super::run`]
    /// requires.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(
        g: &Geometry,
        m: usize,
        layout: &Layout,
        taps: &[usize],
        rows: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        clip: (f32, f32),
        oh: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let depth = g.c * g.kh * g.kw;
        let (s, cols) = (g.sw, layout.cols);
        let p = g.p();
        for (local, oh) in oh.enumerate() {
            let row = rows.as_ptr().add(local * g.sh * s * cols);
            let mut m0 = 0;
            while m0 < m {
                let mb = (m - m0).min(MB);
                let mut ow0 = 0;
                while ow0 < g.ow {
                    let t = Tile {
                        row: row.add(ow0),
                        taps,
                        w: w.as_ptr().add(m0 * depth),
                        depth,
                        out: out.add(m0 * p + oh * g.ow + ow0),
                        residual: residual.map(|r| r.as_ptr().add(m0 * p + oh * g.ow + ow0)),
                        plane: p,
                        lanes: (g.ow - ow0).min(TILE),
                    };
                    let b = bias.map(|b| &b[m0..m0 + mb]);
                    match mb {
                        8 => t.run::<8>(b, clip),
                        7 => t.run::<7>(b, clip),
                        6 => t.run::<6>(b, clip),
                        5 => t.run::<5>(b, clip),
                        4 => t.run::<4>(b, clip),
                        3 => t.run::<3>(b, clip),
                        2 => t.run::<2>(b, clip),
                        _ => t.run::<1>(b, clip),
                    }
                    ow0 += TILE;
                }
                m0 += MB;
            }
        }
    }

    /// `K` output channels × up to [`TILE`] positions of one output row.
    struct Tile<'a> {
        /// The copy at the tile's first position.
        row: *const f32,
        taps: &'a [usize],
        /// The first channel's weights; channel k's are `depth` floats further.
        w: *const f32,
        depth: usize,
        out: *mut f32,
        residual: Option<*const f32>,
        /// Floats per output channel.
        plane: usize,
        /// Valid positions (the rest of the tile is computed and dropped).
        lanes: usize,
    }

    impl Tile<'_> {
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const K: usize>(&self, bias: Option<&[f32]>, (lo, hi): (f32, f32)) {
            let _: () = assert!(K <= MB);
            let mut acc: [__m512; K] =
                std::array::from_fn(|k| _mm512_set1_ps(bias.map_or(0.0, |b| b[k])));
            for (t, &off) in self.taps.iter().enumerate() {
                let x = _mm512_loadu_ps(self.row.add(off));
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*self.w.add(k * self.depth + t)), x, *a);
                }
            }
            let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            let mask: __mmask16 = if self.lanes >= TILE { !0 } else { (1 << self.lanes) - 1 };
            for (k, mut y) in acc.into_iter().enumerate() {
                let o = self.out.add(k * self.plane);
                if let Some(r) = self.residual {
                    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, r.add(k * self.plane)));
                }
                // max(lo, v) then min(hi, ·), the value second: NaN stays NaN.
                _mm512_mask_storeu_ps(o, mask, _mm512_min_ps(hi, _mm512_max_ps(lo, y)));
            }
        }
    }

    const _: () = assert!(TILE == 16);
}
