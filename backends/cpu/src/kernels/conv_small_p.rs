//! Convolutions with few output positions and many output channels (late layers: 7×7 = 49
//! positions, 512–2048 channels), computed transposed: `Cᵀ[P × M] = Aᵀ[P × K] · Wᵀ[K × M]`.
//!
//! As `W · patches` (conv.rs) the 49 positions are the GEMM's columns: 3 panels of 16 and
//! one narrow column, too few chunks for two threads, so B was packed whole by all threads
//! and then split by rows (two pool hand-offs per conv), and W streamed through the row
//! tiles. Transposed, the channels are the columns (512 = 32 whole panels of `Wᵀ`, packed
//! once at compile time as a [`PackedB`]) and the positions the rows (8 tiles of 6 and one
//! of 1): the threads split the channel panels, each reads its half of W once, one hand-off.
//!
//! Aᵀ (the patches, or for a 1×1 stride-1 conv the input itself) is gathered per call into
//! row tiles of 6 positions, k-major (`rs_a = 1, cs_a = 6`): with few row tiles all threads
//! take pieces of k rows from a counter into one buffer first, with more each thread
//! gathers all of it into its own ([`PRIVATE_MIN_TILES`]). It is small (49 × 4608
//! floats for resnet's 3×3 512→512); read in place instead (`cs_a = P`) a 1×1 512→2048
//! conv took 1.17 ms on one thread against 0.97 gathered. The kernel writes each channel panel's P × 16 tile into
//! per-thread scratch; the copy into the NCHW output (channel-major) adds the bias and the
//! residual and clips, as the kernel's epilogue would.

use super::im2col::{valid_range, Geometry, PatchRow};
use super::transposed_out::Transposed;
use crate::device::Ctx;
use crate::gemm::pack::AlignedBuf;
use crate::gemm::{Kernel, Kernels, PackedB, TileArgs, FLAG_BETA, MR, NR};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most output positions per image for the transposed product.
pub(crate) const MAX_POSITIONS: usize = 64;
/// Fewest output channels: the channel panels are what the threads share.
pub(crate) const MIN_CHANNELS: usize = 64;
/// Shallowest depth (K): below it the per-call gather and the transposed copy out cost
/// about what they save (inside mobilenet_v2, `kiln bench -pc` medians of two interleaved
/// runs: 1×1 160→960 0.091–0.098 ms either way, 320→1280 0.229 → 0.222 and 0.239 →
/// 0.231; before the W prefetch 160→960 lost 0.127 → 0.143 and 320→1280 0.28 → 0.29).
pub(crate) const MIN_DEPTH: usize = 256;

/// Below this many multiply-adds one thread is faster than waking another.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Most channel panels per unit of work (units are taken from a counter, so a late thread
/// leaves its share to the other): their tiles of Cᵀ, P × 16 floats each, stay in L1
/// from one k block to the next. Otherwise one unit per thread: with 4 per thread,
/// mobilenet_v2's 1×1 convs at 7×7 (10 to 20 panels) lost to imbalance (per-kernel best
/// of 8 runs in the model: 960→320 0.29 ms with 4 units per thread, 0.26 with 1).
const MAX_UNIT_PANELS: usize = 16;

/// Fewest row tiles over which the next panel's prefetch is spread: with fewer, each tile
/// issues a burst of up to 128 prefetches (a panel block is 256 lines) and the W stream
/// slowed down. inception_v3's 1×1 2048→1152 on 3×3 positions (2 tiles), per-kernel
/// medians of three interleaved `kiln bench -pc` pairs: 0.64/0.55/0.54 ms with the
/// prefetch, 0.43/0.41/0.41 without (onnxruntime 0.44); 1280→1152 0.37/0.33/0.32 →
/// 0.29/0.27/0.27. At 7×7 (9 tiles) it still pays: resnet50's conv5 3×3 1.34–1.50 with,
/// 1.43–1.78 without.
const PREFETCH_MIN_TILES: usize = 4;

/// Fewest row tiles for which each thread gathers all of Aᵀ into its own buffer rather
/// than a share of one buffer all read: with a shared buffer, at 2 threads the gather's
/// stores waited on the other core's copies of the lines (the gather's share of samples
/// went from 11% at 1 thread to 22%, `perf` on a chain of 7×1 192→192 convs at 8×8),
/// and half of Aᵀ then crossed to the other core again for the kernel. Per-kernel
/// minimums over five interleaved `kiln bench -pc` runs: inception_v3's convs at 8×8 (11
/// tiles) -0.36 ms in all (of 16.2), resnet50's conv5 at 7×7 (9 tiles) 3×3 1.26–1.28 →
/// 1.20–1.23 ms, 1×1 0.56–0.58 → 0.51–0.54. At 3×3 positions (2 tiles) the gather is a
/// larger part of the work and sharing it stays ahead: inception_v3's convs there, sum of
/// minimums over five interleaved runs, 1.489 ms shared against 1.513 private.
const PRIVATE_MIN_TILES: usize = 4;

/// Rows of Aᵀ gathered before they are cut into tiles (see [`gather`]).
const GATHER_BATCH: usize = 8;

/// k rows of Aᵀ gathered per piece of work: a 1×1 160→960 conv has a single k block.
const GATHER_ROWS: usize = 32;

/// Whether a conv with `positions` output positions per image, `channels` output
/// channels, depth `depth` (input channels × kernel taps) and `group` groups runs
/// transposed.
pub(crate) fn applies(positions: usize, channels: usize, depth: usize, group: usize) -> bool {
    group == 1
        && (1..=MAX_POSITIONS).contains(&positions)
        && channels >= MIN_CHANNELS
        && depth >= MIN_DEPTH
}

/// The gather buffer shared by the threads, each writing its own pieces.
struct SharedMut(*mut f32);
// SAFETY: each thread writes a disjoint range; the caller keeps it alive until they finish.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    fn at(&self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    /// The tiles of Cᵀ of one unit's channel panels, P rows of 16 per panel.
    static TILES: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(0));
    /// The gathered patches (Aᵀ): the calling thread's, which every thread writes a share
    /// of and reads, or with [`PRIVATE_MIN_TILES`] row tiles or more, each thread's own.
    static GATHERED: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(0));
}

/// One image's transposed product, shared read-only by the threads (each writes its own
/// channels of the output).
struct Job<'a> {
    kernels: Kernels,
    wt: &'a PackedB,
    p: usize,
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    clip: Option<(f32, f32)>,
    out: *mut f32,
    /// Copy the tiles out with AVX 8×8 transposes (the AVX2 kernel runs, so the CPU has
    /// AVX): scalar, the copy's stores into the fresh output took 28% of a 1×1 512→2048
    /// conv's time (`perf`).
    vector: bool,
}

// SAFETY: the pointers are read-only inputs borrowed for the call, and `out`, where each
// unit writes only its own channels' rows.
unsafe impl Sync for Job<'_> {}

/// Rows `k0..k0 + kc` of Aᵀ (P positions each) into `dst` as row tiles of 6 (`tiles`
/// of them, each kc steps of 6 floats): for each k, the positions are gathered into one
/// row (a 1×1 stride-1 conv's is the input's row), then cut into the tiles.
///
/// # Safety
/// `dst` must hold the block's `tiles·kc·6` floats; rows `kks` of it are written, which
/// nothing else may access during the call.
unsafe fn gather(
    g: &Geometry,
    x: &[f32],
    k0: usize,
    kc: usize,
    kks: Range<usize>,
    cols: &[(usize, usize)],
    vector: bool,
    dst: *mut f32,
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
    let p = g.p();
    let tiles = p.div_ceil(MR);
    let plane = g.h * g.w;
    // Rows are gathered a batch at a time, then cut into the tiles: cut right after its
    // gather, a row was read back (6 floats per tile) while its overlapping 16-lane
    // stores were still in flight, and the loads waited on them (inception_v3 at 160×160,
    // `perf`: the gather took 11% of the model's time).
    let mut rows = [[0.0f32; MAX_POSITIONS + NR]; GATHER_BATCH];
    let mut first = kks.start;
    let mut next = PatchRow::at(g, k0 + first);
    while first < kks.end {
        let n = GATHER_BATCH.min(kks.end - first);
        for (b, row) in rows.iter_mut().enumerate().take(n) {
            let k = k0 + first + b;
            if g.pointwise() {
                row[..p].copy_from_slice(&x[k * p..(k + 1) * p]);
                continue;
            }
            let PatchRow { c, i, j } = next;
            next.advance(g);
            let (lo, hi) = cols[j];
            #[cfg(target_arch = "x86_64")]
            if vector {
                row_avx512(g, x, c, i, j, (lo, hi), row);
                continue;
            }
            for oh in 0..g.oh {
                let out = &mut row[oh * g.ow..(oh + 1) * g.ow];
                let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
                if ih < 0 || ih as usize >= g.h || lo >= hi {
                    out.fill(0.0);
                    continue;
                }
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                // The input column of output column lo: lo·sw + j·dw − pw, inside the row.
                let iw = lo * g.sw + j * g.dw - g.pw;
                let src = &x[c * plane + ih as usize * g.w + iw..];
                for (o, v) in out[lo..hi].iter_mut().zip(src.iter().step_by(g.sw)) {
                    *o = *v;
                }
            }
        }
        for (b, row) in rows.iter().enumerate().take(n) {
            for t in 0..tiles {
                let at = t * kc * MR + (first + b) * MR;
                std::ptr::copy_nonoverlapping(row[t * MR..].as_ptr(), dst.add(at), MR);
            }
        }
        first += n;
    }
}

/// Row (channel c, kernel row i, kernel column j) of Aᵀ at stride 1 or 2 with output rows
/// of at most 16: one or two masked loads per output row (lanes outside the input read
/// nothing and are zero; at stride 2 the even columns are then gathered by a permute, as
/// in `Patches`) and one store that the next row overwrites past its end. The scalar copy of
/// 7-float runs took 8.8% of a 3×3 512→512 conv's time on 7×7 (`perf`).
///
/// # Safety
/// AVX-512F must be available; `x` holds channel c's plane; `sw` is 1 or 2, `ow ≤ 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(
    g: &Geometry,
    x: &[f32],
    c: usize,
    i: usize,
    j: usize,
    (lo, hi): (usize, usize),
    row: &mut [f32; MAX_POSITIONS + NR],
) {
    use std::arch::x86_64::*;
    // Lane l reads input column l·sw + j·dw − pw: bit l (stride 1) or 2l (stride 2) of
    // the columns from lane 0's.
    let bits = |n: usize| -> u32 {
        if g.sw == 1 {
            (1u32 << n) - 1
        } else {
            (((1u64 << (2 * n)) - 1) & 0x5555_5555) as u32
        }
    };
    let read = if lo < hi { bits(hi) & !bits(lo) } else { 0 };
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let base = x.as_ptr().add(c * g.h * g.w);
    for oh in 0..g.oh {
        let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
        let v = if ih < 0 || ih as usize >= g.h || read == 0 {
            _mm512_setzero_ps()
        } else {
            // Lane 0's address may lie outside the row when its lane is masked off.
            let at = ih * g.w as isize + (j * g.dw) as isize - g.pw as isize;
            let src = base.wrapping_offset(at);
            if g.sw == 1 {
                _mm512_maskz_loadu_ps(read as __mmask16, src)
            } else {
                // The 32 columns from lane 0's, then the even ones gathered into 16 lanes.
                let lo = _mm512_maskz_loadu_ps(read as __mmask16, src);
                let hi = _mm512_maskz_loadu_ps((read >> 16) as __mmask16, src.wrapping_add(16));
                _mm512_permutex2var_ps(lo, evens, hi)
            }
        };
        // Lanes past ow are zero: the next row's start, or past P (the tiles' padding).
        _mm512_storeu_ps(row.as_mut_ptr().add(oh * g.ow), v);
    }
}

/// The output of one image, `M × P` floats at `out`, from its input `x` (`C × H × W`) and
/// the weights packed transposed (`wt`: K × M): `clip(Wx + bias + residual)`.
///
/// # Safety
/// `out` must be valid for writes of `wt.n() · g.p()` floats that nothing else accesses
/// during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run(
    ctx: &Ctx,
    g: &Geometry,
    wt: &PackedB,
    x: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    clip: Option<(f32, f32)>,
    out: *mut f32,
) -> Option<()> {
    let (p, k, m) = (g.p(), g.k(), wt.n());
    if wt.k() != k || k == 0 || p == 0 || p > MAX_POSITIONS {
        return None;
    }
    if bias.is_some_and(|b| b.len() != m) || residual.is_some_and(|r| r.len() != m * p) {
        return None;
    }
    let threads = match ctx.pool {
        Some(pool) if m.saturating_mul(p).saturating_mul(k) >= PARALLEL_MIN_MACS => pool.threads(),
        _ => 1,
    };
    let panels = m.div_ceil(NR);
    // Equal shares, one per thread, unless a share's tiles of Cᵀ would outgrow L1.
    let units = panels
        .div_ceil(MAX_UNIT_PANELS)
        .next_multiple_of(threads)
        .min(panels);
    let kc_max = wt.kc();
    let blocks = k.div_ceil(kc_max);
    // The gather in pieces of k rows, so both threads share even a single k block.
    let per_block = kc_max.div_ceil(GATHER_ROWS);
    let pieces = blocks * per_block;
    let next_piece = AtomicUsize::new(0);
    let gathered = AtomicUsize::new(0);
    let next_unit = AtomicUsize::new(0);
    if x.len() < g.c.checked_mul(g.h)?.checked_mul(g.w)? {
        return None;
    }
    // Per kernel column: the output columns whose input column lies inside the row.
    let cols: Vec<(usize, usize)> = (0..g.kw)
        .map(|j| valid_range(g.ow, g.sw, (j * g.dw) as isize - g.pw as isize, g.w))
        .collect();
    let tiles = p.div_ceil(MR);
    #[cfg(target_arch = "x86_64")]
    let vector = ctx.kernel == Kernel::Avx2Fma
        && (g.sw == 1 || g.sw == 2)
        && g.ow <= NR
        && super::avx512f::detected();
    #[cfg(not(target_arch = "x86_64"))]
    let vector = false;
    let need = k * tiles * MR;
    let job = Job {
        kernels: ctx.kernel.functions(),
        wt,
        p,
        bias,
        residual,
        clip,
        out,
        vector: ctx.kernel == Kernel::Avx2Fma,
    };
    // Every k block of Aᵀ, rows `kks` of each, into `dst` (the whole gathered Aᵀ).
    let gather_rows = |block: usize, kks: Range<usize>, dst: *mut f32| {
        let k0 = block * kc_max;
        let kc = kc_max.min(k - k0);
        let kks = kks.start.min(kc)..kks.end.min(kc);
        // SAFETY: block k0's floats k0·tiles·6 .. (k0 + kc)·tiles·6 lie in the buffer
        // (k·tiles·6 long), and only this thread writes rows `kks` of it.
        unsafe { gather(g, x, k0, kc, kks, &cols, vector, dst.add(k0 * tiles * MR)) };
    };
    let units_from = |a: *const f32| loop {
        let unit = next_unit.fetch_add(1, Ordering::Relaxed);
        if unit >= units {
            return;
        }
        job.unit(panels * unit / units..panels * (unit + 1) / units, a);
    };
    if threads > 1 && tiles >= PRIVATE_MIN_TILES {
        // Each thread gathers all of Aᵀ into its own buffer (see PRIVATE_MIN_TILES).
        let private = |_: usize| {
            GATHERED.with(|buf| {
                let base = buf.borrow_mut().at_least(need).as_mut_slice().as_mut_ptr();
                for block in 0..blocks {
                    gather_rows(block, 0..kc_max, base);
                }
                units_from(base);
            })
        };
        match ctx.pool {
            Some(pool) => pool.run(&private),
            None => private(0),
        }
        return Some(());
    }
    GATHERED.with(|buf| {
        let dst = SharedMut(buf.borrow_mut().at_least(need).as_mut_slice().as_mut_ptr());
        let work = |_: usize| {
            loop {
                let piece = next_piece.fetch_add(1, Ordering::Relaxed);
                if piece >= pieces {
                    break;
                }
                let (block, part) = (piece / per_block, piece % per_block);
                gather_rows(block, part * GATHER_ROWS..(part + 1) * GATHER_ROWS, dst.at());
                gathered.fetch_add(1, Ordering::Release);
            }
            // Every piece is claimed; those claimed by another thread are being written now
            // (a thread run alone claims them all first, so this never waits on one that
            // has not started).
            while gathered.load(Ordering::Acquire) < pieces {
                std::hint::spin_loop();
            }
            units_from(dst.at());
        };
        match ctx.pool {
            Some(pool) if threads > 1 => pool.run(&work),
            _ => work(0),
        }
    });
    Some(())
}

impl Job<'_> {
    /// Channel panels `panels`: every k block of A passes over them, the tiles of Cᵀ
    /// stay in scratch until the last, then go to the output.
    /// `a` is Aᵀ gathered: per k block (at `k0·tiles·6`), row tiles of 6 positions (at
    /// `+ t·kc·6`), each kc steps of 6 floats; positions past P are zeros.
    fn unit(&self, panels: Range<usize>, a: *const f32) {
        let kc_max = self.wt.kc();
        let k = self.wt.k();
        let tile_len = self.p * NR;
        TILES.with(|t| {
            let mut t = t.borrow_mut();
            let scratch = t.at_least(panels.len() * tile_len).as_mut_slice().as_mut_ptr();
            let mut k0 = 0;
            while k0 < k {
                let kc = kc_max.min(k - k0);
                let args = TileArgs {
                    rs_a: 1,
                    cs_a: MR,
                    ldc: NR,
                    flags: if k0 == 0 { 0 } else { FLAG_BETA },
                    bias: std::ptr::null(),
                    residual: std::ptr::null(),
                    ldr: 0,
                    lo: 0.0,
                    hi: 0.0,
                    rs_b: 0,
                };
                for (q, panel) in panels.clone().enumerate() {
                    let b = self.wt.panel(k0, kc, panel);
                    // The panel after this one: the next of this k block, or the unit's
                    // first of the next block.
                    let next = if panel + 1 < panels.end {
                        Some((self.wt.panel(k0, kc, panel + 1), kc))
                    } else if k0 + kc < k {
                        let kc2 = kc_max.min(k - k0 - kc);
                        Some((self.wt.panel(k0 + kc, kc2, panels.start), kc2))
                    } else {
                        None
                    };
                    let tiles = self.p.div_ceil(MR);
                    for t in 0..tiles {
                        let (i, rows) = (t * MR, MR.min(self.p - t * MR));
                        // W streams from memory inside a model (the other layers' weights
                        // evict it): the next panel is fetched into L2 a share per tile
                        // while this one is multiplied. resnet50's conv5 3×3 went from
                        // 1.38–1.42 to 1.29–1.34 ms, its 1×1s from 0.61–0.63 to 0.57–0.60
                        // (`kiln bench -pc` medians, two interleaved runs each).
                        #[cfg(target_arch = "x86_64")]
                        if let (Some((nb, nkc)), true) = (next, tiles >= PREFETCH_MIN_TILES) {
                            // A line is 16 floats; the panel nkc rows of 16.
                            let lines = nkc;
                            for l in lines * t / tiles..lines * (t + 1) / tiles {
                                // SAFETY: a prefetch of an address inside the packed panel.
                                unsafe {
                                    use std::arch::x86_64::*;
                                    _mm_prefetch::<_MM_HINT_T1>(nb.add(l * NR) as *const i8);
                                }
                            }
                        }
                        // SAFETY: tile t of the k block lies inside the gathered buffer.
                        let a = unsafe { a.add(k0 * self.p.div_ceil(MR) * MR + t * kc * MR) };
                        // SAFETY: A holds `rows` positions from i for kc steps at these
                        // strides, B's panel kc rows of 16, the scratch P rows of 16 per
                        // panel.
                        unsafe {
                            (self.kernels[rows - 1])(
                                kc,
                                a,
                                b,
                                scratch.add(q * tile_len + i * NR),
                                &args,
                            )
                        };
                    }
                }
                k0 += kc;
            }
            for (q, panel) in panels.enumerate() {
                let tile = &t.as_slice()[q * tile_len..(q + 1) * tile_len];
                let j0 = panel * NR;
                let copy = Transposed {
                    src: tile,
                    lds: NR,
                    first: j0,
                    n: self.p,
                    channels: j0..(j0 + NR).min(self.wt.n()),
                    out: self.out,
                    ldo: self.p,
                    at: 0,
                    bias: self.bias,
                    residual: self.residual,
                    clip: self.clip,
                };
                // SAFETY: the unit's channels lie in the output, written only by it; the
                // tile holds P rows of 16; the vector copy only with the AVX2 kernel.
                unsafe { copy.write(self.vector) };
            }
        })
    }
}
