//! Stride-1 convolutions with few output channels (densenet's 3×3 128→32 at 56×56 and
//! 28×28), computed transposed as a sum over the kernel taps of products that read the
//! input in place: `Cᵀ[P × M] = Σₜ Xₜᵀ[P × C] · Wₜᵀ[C × M]`.
//!
//! As `W · patches` (conv.rs), 32 output channels are row tiles of 6 (36 rows computed for
//! 32), and every input value is copied into the patches once per tap, each copy then read
//! by only 32 rows. Here the input is copied about once, with its padding as zeros, into
//! rows `Wp` wide (for stride 1, `Wp = OW + (kw−1)·dw`): each unit of work (a run of output
//! rows) copies the rows it reads into planes of `R × Wp` (R: its rows and the kernel's
//! reach below them). Output (oh, ow) is then position `q = oh·Wp + ow` of that grid, and
//! tap (i, j) reads its channel c at `c·R·Wp + q + i·dh·Wp + j·dw`: six consecutive
//! positions are the kernel's A read in place (`rs_a = 1, cs_a = R·Wp`). The channels are
//! the columns (32 = two whole panels of `Wₜᵀ`, packed per tap at compile time), and the
//! taps are k blocks added into the same tiles. The last `(kw−1)·dw` positions of each grid
//! row lie past the output row: they are computed and dropped, as the copy into the NCHW
//! output (which adds the bias and the residual and clips) skips them.
//!
//! Inside densenet121 (`kiln bench -pc`, two threads, ms per 3×3 128→32 conv, as
//! `W · patches` → here; onnxruntime's NCHWc convs in brackets): 56×56 1.33 → 1.12 (1.01),
//! 28×28 0.36 → 0.31 (0.26), 14×14 0.115 → 0.10 (0.08), 7×7 0.059 → 0.040 (0.032).

use super::im2col::Geometry;
use super::transposed_out::Transposed;
use crate::device::Ctx;
use crate::gemm::pack::AlignedBuf;
use crate::gemm::{Kernel, Kernels, PackedB, TileArgs, FLAG_BETA, MR, NR};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most output channels: with more, `W · patches` shares each packed patch among enough
/// rows. Inside resnet50 (`kiln bench -pc`, three interleaved pairs) the 3×3 64→64 at
/// 56×56 went from 1.17–1.30 to 1.12–1.13 ms here; 128→128 at 28×28 was slower here
/// (1.16 against 1.11), 256→256 at 14×14 more so (alone, 1.46–1.52 against 1.15–1.22).
pub(crate) const MAX_CHANNELS: usize = 64;
/// Fewest input channels (the depth of each tap's product) for more than 32 output
/// channels: a kernel call's fixed cost, loading and storing its tile of Cᵀ, is spread
/// over C steps, and 48 or 64 rows already share each of `W · patches`' packed patches
/// well. The 3×3 32→64 at 147×147 of xception and inception was no faster here (alone
/// 3.95 against 3.96–4.01 ms; inside xception 1.13 → 1.16), 5×5 48→64 at 35×35 neither
/// (0.95–0.97 against 0.95–0.96).
const MIN_DEPTH_WIDE: usize = 64;
/// Narrowest output row: densenet's 3×3 128→32 at 7×7 computes 9 grid positions per 7
/// outputs here and still took 0.040 ms against 0.059 as `W · patches`.
const MIN_WIDTH: usize = 7;

/// Units of work (runs of whole output rows) per thread, taken from a counter. Each unit
/// pads its own rows and the `(kh−1)·dh` below them, so more units copy more; inside
/// densenet121 (`kiln bench -pc`, mean of each size's 3×3 convs, ms) 2 per thread
/// against 4: 56×56 1.12 / 1.12, 28×28 0.31 / 0.37, 14×14 0.10 / 0.10; alone on 28×28,
/// 1, 2, 4 and 8 per thread took 0.29, 0.29, 0.34 and 0.32 ms on two threads (0.58 on one
/// thread for all four).
const UNITS_PER_THREAD: usize = 2;

/// Row tiles (of 6 positions) that every channel panel and tap pass over before the next
/// ones, so their tiles of Cᵀ stay in cache between passes: a unit of inception's 3×3
/// 32→64 at 147×147 is 37 rows of 149 positions, 1.4 MB of Cᵀ. Alone, two threads, best
/// ms of two runs, `W · patches` → whole units / blocks of 8 / blocks of 32: that conv
/// 3.96 → 4.10 / 4.11 / 3.95; densenet's 128→32 at 56×56 1.26 → 1.10 / 1.14 / 1.09.
const BLOCK_TILES: usize = 32;

/// Below this many multiply-adds one thread is faster than waking another.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Whether a conv runs here: one group, stride 1, more than one tap, output rows at
/// least [`MIN_WIDTH`] wide, and 16 or 32 output channels, or 48 or 64 with at least
/// [`MIN_DEPTH_WIDE`] input channels. Other counts leave part of the last panel of 16
/// columns idle where `W · patches` fills its tiles of 6 rows better: unet's 3×3 48→8 at
/// 64×64 (half the columns idle) went from 0.25–0.27 to 0.29–0.30 ms here.
pub(crate) fn applies(
    group: usize,
    strides_one: bool,
    taps: usize,
    channels: usize,
    in_channels: usize,
    ow: usize,
) -> bool {
    let panels_full = channels % NR == 0 && (1..=MAX_CHANNELS).contains(&channels);
    let deep_enough = channels <= 2 * NR || in_channels >= MIN_DEPTH_WIDE;
    group == 1 && strides_one && taps > 1 && panels_full && deep_enough && ow >= MIN_WIDTH
}

/// The weights `[M, C, kernel…]` (row-major, `taps` kernel positions) as one `Wₜᵀ` (C × M)
/// per tap.
pub(crate) fn pack(w: &[f32], m: usize, c: usize, taps: usize) -> Option<Vec<PackedB>> {
    if m == 0 || c == 0 || taps == 0 || w.len() != m.checked_mul(c)?.checked_mul(taps)? {
        return None;
    }
    // Element (c', m') of tap t is W[m'][c'][t], at t + c'·taps + m'·c·taps.
    (0..taps)
        .map(|t| PackedB::from_strided(c, m, &w[t..], taps, c * taps).ok())
        .collect()
}

thread_local! {
    /// A unit's padded input rows.
    static PADDED: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(0));
    /// A unit's tiles of Cᵀ: its positions × the channel panels' 16 floats.
    static TILES: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(0));
}

/// One image's job, read by every thread.
struct Job<'a> {
    g: &'a Geometry,
    kernels: Kernels,
    wt: &'a [PackedB],
    /// The image's input, C planes of `h × w`.
    x: &'a [f32],
    wp: usize,
    m: usize,
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    clip: Option<(f32, f32)>,
    out: *mut f32,
    vector: bool,
}

// SAFETY: the inputs are read-only; each unit writes only its own output rows.
unsafe impl Sync for Job<'_> {}

/// The output of one image, `M × P` floats at `out`, from its input `x` (`C × H × W`) and
/// the weights packed per tap (`wt`, from [`pack`]): `clip(Wx + bias + residual)`. `None`
/// (nothing written) when the geometry is not one this kernel takes.
///
/// # Safety
/// `out` must be valid for writes of `M · g.p()` floats that nothing else accesses during
/// the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run(
    ctx: &Ctx,
    g: &Geometry,
    wt: &[PackedB],
    x: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    clip: Option<(f32, f32)>,
    out: *mut f32,
) -> Option<()> {
    let taps = g.kh * g.kw;
    let m = wt.first()?.n();
    if g.sh != 1 || g.sw != 1 || wt.len() != taps || g.oh == 0 || g.ow == 0 || g.c == 0 {
        return None;
    }
    if wt.iter().any(|b| b.k() != g.c || b.n() != m) {
        return None;
    }
    let p = g.p();
    if bias.is_some_and(|b| b.len() != m) || residual.is_some_and(|r| r.len() != m * p) {
        return None;
    }
    let wp = g.ow.checked_add((g.kw - 1).checked_mul(g.dw)?)?;
    let hp = g.oh.checked_add((g.kh - 1).checked_mul(g.dh)?)?;
    // With stride 1 the grid holds the whole input and its padding; a geometry where it
    // would not (a negative pad) is not taken.
    if g.pw + g.w > wp || g.ph + g.h > hp || x.len() < g.c.checked_mul(g.h)?.checked_mul(g.w)? {
        return None;
    }
    // A unit's padded rows are at most C planes of hp × wp: refuse a padding far past the
    // input's own size.
    if g.c.checked_mul(hp)?.checked_mul(wp)? > 4 * (g.c * g.h * g.w) + 4096 {
        return None;
    }
    let threads = match ctx.pool {
        Some(pool) if m.saturating_mul(p).saturating_mul(g.k()) >= PARALLEL_MIN_MACS => {
            pool.threads()
        }
        _ => 1,
    };
    let units = (UNITS_PER_THREAD * threads).min(g.oh);
    #[cfg(target_arch = "x86_64")]
    let vector = ctx.kernel == Kernel::Avx2Fma;
    #[cfg(not(target_arch = "x86_64"))]
    let vector = false;
    let job = Job {
        g,
        kernels: ctx.kernel.functions(),
        wt,
        x,
        wp,
        m,
        bias,
        residual,
        clip,
        out,
        vector,
    };
    let next_unit = AtomicUsize::new(0);
    let work = |_: usize| loop {
        let u = next_unit.fetch_add(1, Ordering::Relaxed);
        if u >= units {
            return;
        }
        job.unit(g.oh * u / units..g.oh * (u + 1) / units);
    };
    match ctx.pool {
        Some(pool) if threads > 1 => pool.run(&work),
        _ => work(0),
    }
    Some(())
}

/// Grid rows `rows` of channel plane `x` (`h × w`) into `dst`, `wp` floats each: grid row
/// r is input row `r − ph` after `pw` zeros and followed by zeros, or zeros where that row
/// lies outside the input.
///
/// `g.pw + g.w ≤ wp` (checked by `run`).
fn pad_rows(
    g: &Geometry,
    x: &[f32],
    wp: usize,
    rows: std::ops::Range<usize>,
    dst: &mut [f32],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: the vector path runs with the AVX2 kernel (so the CPU has AVX).
        unsafe { pad_rows_avx(g, x, wp, rows, dst) };
        return;
    }
    let _ = vector;
    for (r, row) in rows.zip(dst.chunks_exact_mut(wp)) {
        match r.checked_sub(g.ph).filter(|&i| i < g.h) {
            Some(i) => {
                row[..g.pw].fill(0.0);
                row[g.pw..g.pw + g.w].copy_from_slice(&x[i * g.w..(i + 1) * g.w]);
                row[g.pw + g.w..].fill(0.0);
            }
            None => row.fill(0.0),
        }
    }
}

/// [`pad_rows`] with 8-wide moves: rows are short (28 or 14 floats), and three `memset`
/// and `memcpy` calls per row cost about as much as the copy.
///
/// # Safety
/// The CPU must have AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn pad_rows_avx(
    g: &Geometry,
    x: &[f32],
    wp: usize,
    rows: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_ps();
    for (r, row) in rows.zip(dst.chunks_exact_mut(wp)) {
        let d = row.as_mut_ptr();
        match r.checked_sub(g.ph).filter(|&i| i < g.h) {
            Some(i) => {
                let src = &x[i * g.w..(i + 1) * g.w];
                row[..g.pw].iter_mut().for_each(|v| *v = 0.0);
                let mut c = 0;
                while c + 8 <= g.w {
                    _mm256_storeu_ps(d.add(g.pw + c), _mm256_loadu_ps(src.as_ptr().add(c)));
                    c += 8;
                }
                row[g.pw + c..g.pw + g.w]
                    .iter_mut()
                    .zip(&src[c..])
                    .for_each(|(o, v)| *o = *v);
                row[g.pw + g.w..].iter_mut().for_each(|v| *v = 0.0);
            }
            None => {
                let mut c = 0;
                while c + 8 <= wp {
                    _mm256_storeu_ps(d.add(c), zero);
                    c += 8;
                }
                row[c..].iter_mut().for_each(|v| *v = 0.0);
            }
        }
    }
}

impl Job<'_> {
    /// Output rows `rows`: their padded input rows (and the kernel's reach below them) are
    /// copied into this thread's buffer, then every tap and channel block passes over the
    /// unit's tiles of Cᵀ, one channel panel at a time (its packed `Wₜᵀ` panel stays in
    /// L1), then they go to the output. Each unit pads the rows it reads, in its thread's
    /// buffer, so the threads never read rows the other just wrote.
    fn unit(&self, rows: std::ops::Range<usize>) {
        let (g, wp) = (self.g, self.wp);
        let panels = self.m.div_ceil(NR);
        let ldc = panels * NR;
        // Positions from the first row's start to the last row's last output, on the grid.
        let n = (rows.len() - 1) * wp + g.ow;
        let tiles = n.div_ceil(MR);
        let grid_rows = rows.start..rows.end + (g.kh - 1) * g.dh;
        let plane = grid_rows.len() * wp;
        let (x, hw) = (self.x, g.h * g.w);
        PADDED.with(|xp| {
            TILES.with(|t| {
                let mut xp = xp.borrow_mut();
                xp.at_least(g.c * plane);
                for (c, dst) in xp
                    .as_mut_slice()
                    .chunks_exact_mut(plane)
                    .take(g.c)
                    .enumerate()
                {
                    pad_rows(
                        g,
                        &x[c * hw..(c + 1) * hw],
                        wp,
                        grid_rows.clone(),
                        dst,
                        self.vector,
                    );
                }
                let xp = xp.as_slice().as_ptr();
                let mut t = t.borrow_mut();
                let need = rows.len() * wp * ldc;
                let scratch = t.at_least(need).as_mut_slice().as_mut_ptr();
                for first in (0..tiles).step_by(BLOCK_TILES) {
                    for panel in 0..panels {
                        for (tap, wt) in self.wt.iter().enumerate() {
                            let (i, j) = (tap / g.kw, tap % g.kw);
                            let shift = i * g.dh * wp + j * g.dw;
                            let kc_max = wt.kc();
                            let mut c0 = 0;
                            while c0 < g.c {
                                let kc = kc_max.min(g.c - c0);
                                let b = wt.panel(c0, kc, panel);
                                let args = TileArgs {
                                    rs_a: 1,
                                    cs_a: plane,
                                    ldc,
                                    flags: if tap == 0 && c0 == 0 { 0 } else { FLAG_BETA },
                                    bias: std::ptr::null(),
                                    residual: std::ptr::null(),
                                    ldr: 0,
                                    lo: 0.0,
                                    hi: 0.0,
                                    rs_b: 0,
                                };
                                for tile in first..(first + BLOCK_TILES).min(tiles) {
                                    let at = tile * MR;
                                    let rows = MR.min(n - at);
                                    // SAFETY: channels c0..c0 + kc of positions at.. (+ rows)
                                    // shifted by the tap lie inside the padded planes (the last
                                    // position of the last row reads the plane's last float); the
                                    // scratch holds n positions of ldc floats; B's panel kc rows.
                                    unsafe {
                                        (self.kernels[rows - 1])(
                                            kc,
                                            xp.add(c0 * plane + at + shift),
                                            b,
                                            scratch.add(at * ldc + panel * NR),
                                            &args,
                                        )
                                    };
                                }
                                c0 += kc;
                            }
                        }
                    }
                }
                let tile = &t.as_slice()[..need];
                for r in rows.clone() {
                    let copy = Transposed {
                        src: &tile[(r - rows.start) * wp * ldc..],
                        lds: ldc,
                        first: 0,
                        n: g.ow,
                        channels: 0..self.m,
                        out: self.out,
                        ldo: g.p(),
                        at: r * g.ow,
                        bias: self.bias,
                        residual: self.residual,
                        clip: self.clip,
                    };
                    // SAFETY: row r of every channel lies in the output, written only by
                    // this unit; the row's ow positions of ldc floats (a multiple of 16 ≥ M)
                    // lie in the scratch; the vector copy only with the AVX2 kernel.
                    unsafe { copy.write(self.vector) };
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::threads::Pool;
    use crate::kernels::im2col::Attrs;
    use kiln_ir::AutoPad;

    /// Values in [-1, 1) from a xorshift, so every case is reproducible.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The convolution by its definition, in f64, and the bound Σ|w||x| per output.
    fn naive(g: &Geometry, m: usize, x: &[f32], w: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (mut out, mut bound) = (vec![0.0; m * g.p()], vec![0.0; m * g.p()]);
        for o in 0..m {
            for (oh, ow) in (0..g.oh).flat_map(|a| (0..g.ow).map(move |b| (a, b))) {
                let at = o * g.p() + oh * g.ow + ow;
                for c in 0..g.c {
                    for (i, j) in (0..g.kh).flat_map(|i| (0..g.kw).map(move |j| (i, j))) {
                        let ih = (oh + i * g.dh) as isize - g.ph as isize;
                        let iw = (ow + j * g.dw) as isize - g.pw as isize;
                        if ih < 0 || iw < 0 || ih as usize >= g.h || iw as usize >= g.w {
                            continue;
                        }
                        let xv = x[c * g.h * g.w + ih as usize * g.w + iw as usize] as f64;
                        let wv = w[((o * g.c + c) * g.kh + i) * g.kw + j] as f64;
                        out[at] += xv * wv;
                        bound[at] += (xv * wv).abs();
                    }
                }
            }
        }
        (out, bound)
    }

    /// Runs (whether or not `applies` would take it) `[c, h, w]` ⊛ `m × [c, kh, kw]` with `pads` [top, left, bottom, right] and
    /// `dilation`, adding a bias and a residual and clipping to [-0.5, 0.5] when `epilogue`,
    /// on `kernel` alone and with the pool, against [`naive`].
    fn check(
        c: usize,
        hw: [usize; 2],
        m: usize,
        k: [usize; 2],
        pads: [i64; 4],
        dilation: i64,
        epilogue: bool,
    ) {
        let xs = [1, c, hw[0], hw[1]];
        let ws = [m, c, k[0], k[1]];
        let attrs = Attrs {
            auto_pad: AutoPad::NotSet,
            dilations: &[dilation, dilation],
            kernel_shape: &[],
            pads: &pads,
            strides: &[1, 1],
        };
        let g = Geometry::new(&attrs, &xs, &ws, 1).unwrap();
        let case = format!("{xs:?} ⊛ {ws:?}, pads {pads:?}, dilation {dilation}");
        let x = values(c * hw[0] * hw[1], 1);
        let w = values(m * c * k[0] * k[1], 2);
        let bias = values(m, 3);
        let residual = values(m * g.p(), 4);
        let (want, bound) = naive(&g, m, &x, &w);
        let wt = pack(&w, m, c, k[0] * k[1]).unwrap();
        for kernel in [Kernel::detect(), Kernel::Portable] {
            for pool in [None, Some(Pool::global())] {
                let ctx = Ctx { kernel, pool };
                let mut out = vec![f32::NAN; m * g.p()];
                let (b, r, clip) = match epilogue {
                    true => (Some(&bias[..]), Some(&residual[..]), Some((-0.5, 0.5))),
                    false => (None, None, None),
                };
                // SAFETY: `out` holds m·p floats.
                let done = unsafe { run(&ctx, &g, &wt, &x, b, r, clip, out.as_mut_ptr()) };
                assert!(done.is_some(), "{case}: declined");
                for (i, &got) in out.iter().enumerate() {
                    let mut v = want[i];
                    if epilogue {
                        v = (v + bias[i / g.p()] as f64 + residual[i] as f64).clamp(-0.5, 0.5);
                    }
                    let tol = 1e-5 * (bound[i] + 3.0);
                    assert!(
                        (got as f64 - v).abs() <= tol,
                        "{case}, {kernel:?}, threads {}: output {i} is {got}, expected {v}",
                        pool.map_or(1, |p| p.threads())
                    );
                }
            }
        }
    }

    #[test]
    fn densenet_3x3_on_every_grid_size() {
        for hw in [56, 28, 14, 7] {
            check(128, [hw, hw], 32, [3, 3], [1; 4], 1, false);
        }
    }

    /// Channels not a multiple of 16 (a partial last panel of Wᵀ), one output channel, 64,
    /// and a depth past one k block (300 channels: two blocks per tap).
    #[test]
    fn channel_counts_and_k_blocks() {
        check(20, [9, 11], 20, [3, 3], [1; 4], 1, true);
        check(7, [8, 7], 1, [3, 3], [1; 4], 1, true);
        check(6, [12, 12], 64, [3, 3], [1; 4], 1, true);
        check(300, [9, 9], 17, [3, 3], [1; 4], 1, true);
    }

    /// Asymmetric and absent padding, even and one-sided kernels, dilation, a single output
    /// row and more units than rows.
    #[test]
    fn windows_pads_and_dilation() {
        check(5, [10, 12], 9, [2, 4], [0, 1, 2, 3], 1, true);
        check(8, [10, 10], 16, [3, 3], [0; 4], 1, false);
        check(4, [11, 10], 8, [5, 5], [2; 4], 1, true);
        check(6, [12, 12], 12, [3, 3], [2; 4], 2, true);
        check(4, [12, 9], 8, [1, 3], [0, 1, 0, 1], 1, false);
        check(4, [12, 9], 8, [3, 1], [1, 0, 1, 0], 1, false);
        check(6, [1, 30], 5, [1, 3], [0, 1, 0, 1], 1, true);
        check(3, [2, 40], 4, [3, 3], [1; 4], 1, true);
    }

    #[test]
    fn takes_stride_one_whole_panels_of_few_channels_and_rows_of_seven() {
        assert!(applies(1, true, 9, 32, 128, 7), "densenet's 3×3 at 7×7");
        assert!(applies(1, true, 9, 16, 3, 64));
        assert!(applies(1, true, 9, 64, 64, 56), "resnet's 3×3 64→64");
        assert!(!applies(1, true, 9, 64, 32, 147), "32→64");
        assert!(!applies(1, true, 9, 80, 128, 56), "80 channels");
        assert!(!applies(1, true, 9, 8, 48, 64), "8 channels");
        assert!(!applies(1, true, 9, 24, 48, 64), "24 channels");
        assert!(!applies(1, true, 9, 32, 128, 6), "6-wide rows");
        assert!(!applies(1, false, 9, 32, 128, 56), "stride 2");
        assert!(!applies(2, true, 9, 32, 128, 56), "groups");
        assert!(!applies(1, true, 1, 32, 128, 56), "1×1");
    }
}
