//! The GEMM with B packed by the caller, block by block, as the driver needs it: a
//! convolution's patches go straight from the input into the panel layout, one block of
//! output positions at a time per thread, so the im2col matrix never exists in full and a
//! block's panels stay in L2 while every row of A passes over them.
//!
//! Loop order, outermost first: chunks of [`CHUNK_PANELS`] panels (split over the
//! threads, with row ranges when there are few chunks), k blocks (the chunk's panels packed
//! for the block), row blocks of [`MC`], panels, row tiles.

use super::driver::{Job, Options, Out, SCRATCH};
use super::pack::{block_depth, AlignedBuf, PackedA, MC};
use super::{Epilogue, ShapeError, MR, NR};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Panels packed together: 16 × 16 columns × a k block of up to 256 = 256 KiB, a quarter
/// of the L2, so the block of A (read in place) and of C fit beside it.
pub const CHUNK_PANELS: usize = 16;

/// Fewest panels per chunk when the work is cut for the threads. Every chunk reads all of
/// A: a 14×14 output's 12 whole panels as 2 chunks of 6 rather than 4 of 3 read resnet's
/// 2.4 MB of 3×3 256→256 weights half as often (best of 300 runs, four interleaved pairs:
/// 1.11–1.13 → 1.10 ms; 1×1 1024→256 0.49 → 0.48 ms).
const MIN_CHUNK_PANELS: usize = 6;

/// Below this many multiply-adds one thread is faster than waking another.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Chunks per thread where there are enough positions: evens out a late or slow thread.
const UNITS_PER_THREAD: usize = 4;

/// Produces B (k × n) a block at a time in [`super::PackedB`]'s panel layout.
pub trait PanelSource: Sync {
    /// Writes rows `k0..k0 + kc` of columns `j0..j0 + cols` (`j0` a multiple of 16) into
    /// `out`: panel q (columns `j0 + 16q..`) at `q·kc·16`, its row kk at `+ kk·16`; the
    /// lanes of the last panel past `cols` must be written as zeros.
    fn pack(&self, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [f32]);

    /// B as a row-major k×n matrix in memory, when it is one: its first element and row
    /// stride, valid for k rows of n at that stride while `self` lives. Whole panels are
    /// then read in place by the kernels that take B's rows (A packed), not packed.
    fn rows(&self) -> Option<(*const f32, usize)> {
        None
    }
}

thread_local! {
    /// One chunk of packed panels per thread.
    static PANELS: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(0));
    /// All of B, packed by the caller when there are fewer chunks than threads.
    static FULL: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(0));
}

/// Where a work unit's panels come from.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// Packed by the unit, per k block.
    Source(&'a dyn PanelSource),
    /// Already packed whole (`PackedB`'s layout) with this many panels.
    Packed(*const f32, usize),
}

/// The packed B shared by the threads, which only read it.
struct Shared(*const f32);
// SAFETY: read-only while the threads run; the caller keeps it alive until they finish.
unsafe impl Sync for Shared {}

impl Shared {
    fn at(&self) -> *const f32 {
        self.0
    }
}

/// The buffer the threads pack B into, each its own k blocks.
struct SharedMut(*mut f32);
// SAFETY: each thread writes a disjoint range; the caller keeps it alive until they finish.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    fn at(&self) -> *mut f32 {
        self.0
    }
}

/// `C = epilogue(accumulate ? C + A·B : A·B)` for row-major A (m×k, row stride `lda`) and
/// C (m×n, row stride `ldc`), with B (k×n) packed by `b` per block.
#[allow(clippy::too_many_arguments)]
pub fn gemm_source(
    options: &Options,
    m: usize,
    a: &[f32],
    lda: usize,
    k: usize,
    n: usize,
    b: &dyn PanelSource,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epilogue: &Epilogue,
) -> Result<(), ShapeError> {
    let Some(job) = Job::new(
        options,
        m,
        k,
        n,
        a,
        lda,
        None,
        Out::from(c),
        ldc,
        accumulate,
        epilogue,
    )?
    else {
        return Ok(());
    };
    run_source(options, &job, b)
}

/// [`gemm_source`] with A packed ahead of the call ([`PackedA`]: convolution weights,
/// packed when the program is compiled).
#[allow(clippy::too_many_arguments)]
pub fn gemm_source_packed(
    options: &Options,
    a: &PackedA,
    n: usize,
    b: &dyn PanelSource,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epilogue: &Epilogue,
) -> Result<(), ShapeError> {
    let (m, k) = (a.m(), a.k());
    // The packed buffer holds at least m×k floats, which is all the check needs; the
    // kernels read the panels through `a_packed`.
    let Some(mut job) = Job::new(
        options,
        m,
        k,
        n,
        a.as_slice(),
        k,
        None,
        Out::from(c),
        ldc,
        accumulate,
        epilogue,
    )?
    else {
        return Ok(());
    };
    job.a_packed = Some(a);
    run_source(options, &job, b)
}

/// The GEMM's A for [`gemm_source_uninit`]: row-major in place (m×k, row stride `lda`) or
/// packed ahead of the call.
#[derive(Clone, Copy)]
pub enum SourceA<'a> {
    InPlace {
        m: usize,
        k: usize,
        a: &'a [f32],
        lda: usize,
    },
    Packed(&'a PackedA),
}

/// `C = epilogue(A·B)` into `c_len` floats at `c` that need not be initialised: every
/// element of the m×n block at row stride `ldc` is written and none is read first, so an
/// output can go into a `Vec`'s spare capacity instead of being zero-filled first (a
/// whole pass over the output, 4.8% of mobilenet_v2's time in `memset`).
///
/// # Safety
/// `c` must be valid for writes of `c_len` floats, and nothing else may access them
/// during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_source_uninit(
    options: &Options,
    a: SourceA,
    n: usize,
    b: &dyn PanelSource,
    c: *mut f32,
    c_len: usize,
    ldc: usize,
    epilogue: &Epilogue,
) -> Result<(), ShapeError> {
    let c = Out { ptr: c, len: c_len };
    let (m, k, a_slice, lda, packed) = match a {
        SourceA::InPlace { m, k, a, lda } => (m, k, a, lda, None),
        // The packed buffer holds at least m×k floats, which is all the check needs; the
        // kernels read the panels through `a_packed`.
        SourceA::Packed(p) => (p.m(), p.k(), p.as_slice(), p.k(), Some(p)),
    };
    let Some(mut job) = Job::new(
        options, m, k, n, a_slice, lda, None, c, ldc, false, epilogue,
    )?
    else {
        return Ok(());
    };
    job.a_packed = packed;
    run_source(options, &job, b)
}

/// The chunks of one GEMM over the pool.
fn run_source(options: &Options, job: &Job, b: &dyn PanelSource) -> Result<(), ShapeError> {
    let (m, k, n) = (job.m, job.k, job.n);
    let panels = n.div_ceil(NR);
    let m_tiles = m.div_ceil(MR);
    let threads = match options.pool {
        Some(pool) if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS => pool.threads(),
        _ => 1,
    };
    // A few chunks per thread, so a late thread leaves its share to the others; but no
    // fewer than MIN_CHUNK_PANELS panels per chunk, since every chunk reads all of A.
    let chunk_panels =
        (panels / (threads * UNITS_PER_THREAD)).clamp(MIN_CHUNK_PANELS, CHUNK_PANELS);
    let chunks = panels.div_ceil(chunk_panels);
    // Fewer chunks than threads (a late layer: few positions, many channels): B is small,
    // so the caller packs all of it once, and the threads share it, taking row parts from
    // the counter (a late thread leaves its share to the other).
    if chunks < threads {
        let kc_max = block_depth(k);
        return FULL.with(|full| {
            let mut full = full.borrow_mut();
            full.at_least(k.max(1) * panels * NR);
            // The k blocks are packed by all the threads (one alone left the other idle
            // for 3–6% of a 7×7 conv), then every thread reads all of them.
            let blocks = k.div_ceil(kc_max);
            let dst = SharedMut(full.as_mut_slice().as_mut_ptr());
            let next_block = AtomicUsize::new(0);
            let pack = |_: usize| loop {
                let block = next_block.fetch_add(1, Ordering::Relaxed);
                if block >= blocks {
                    return;
                }
                let k0 = block * kc_max;
                let kc = kc_max.min(k - k0);
                // SAFETY: the block's floats k0·panels·16 .. (k0 + kc)·panels·16 lie in the
                // buffer (k·panels·16 long), and only this unit writes them.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(dst.at().add(k0 * panels * NR), kc * panels * NR)
                };
                b.pack(k0, kc, 0, n, out);
            };
            match options.pool {
                Some(pool) if threads > 1 && blocks > 1 => pool.run(&pack),
                _ => pack(0),
            }
            let base = Shared(full.as_slice().as_ptr());
            let parts = (threads * UNITS_PER_THREAD).min(m_tiles);
            let next = AtomicUsize::new(0);
            let work = |_: usize| loop {
                let part = next.fetch_add(1, Ordering::Relaxed);
                if part >= parts {
                    return;
                }
                let (t0, t1) = (m_tiles * part / parts, m_tiles * (part + 1) / parts);
                run_unit(
                    job,
                    Panels::Packed(base.at(), panels),
                    t0 * MR..(t1 * MR).min(m),
                    0..panels,
                );
            };
            match options.pool {
                Some(pool) if threads > 1 && parts > 1 => pool.run(&work),
                _ => work(0),
            }
            Ok(())
        });
    }
    let split = Split::new(panels, m_tiles, chunk_panels, threads);
    let next = AtomicUsize::new(0);
    let work = |_: usize| loop {
        let unit = next.fetch_add(1, Ordering::Relaxed);
        let Some((tiles, p)) = split.unit(unit) else {
            return;
        };
        run_unit(
            job,
            Panels::Source(b),
            tiles.start * MR..(tiles.end * MR).min(m),
            p,
        );
    };
    match options.pool {
        Some(pool) if threads > 1 && split.units() > 1 => pool.run(&work),
        _ => work(0),
    }
    Ok(())
}

/// How the positions (panels) and rows of C are cut into work units when every unit packs
/// its own panels: each thread gets the same number of whole panels, in chunks of equal
/// size taken from the counter, and the panels left over (fewer than threads) are shared
/// by rows, so no thread works a panel longer than the others. A 14×14 output's 13
/// panels as 4 chunks of 3 or 4 kept one thread for 7 panels and the other for 6 (the
/// first idle 14% of the conv); 56×56's 196 panels as 13 chunks of 15 or 16 did the same.
/// The rows of a leftover panel are split at tile boundaries; each such unit packs the
/// panel whole, which costs 1/m of its multiply-adds.
struct Split {
    /// Whole-row chunks over the first `main` panels.
    chunks: usize,
    main: usize,
    /// Leftover panels `main..panels`, each unit taking all of them for a part of the rows.
    panels: usize,
    row_parts: usize,
    m_tiles: usize,
}

impl Split {
    fn new(panels: usize, m_tiles: usize, chunk_panels: usize, threads: usize) -> Split {
        let threads = threads.max(1);
        let main = panels / threads * threads;
        let chunks = if main == 0 {
            0
        } else {
            main.div_ceil(chunk_panels)
                .next_multiple_of(threads)
                .min(main)
        };
        let row_parts = if main < panels {
            threads.min(m_tiles)
        } else {
            0
        };
        Split {
            chunks,
            main,
            panels,
            row_parts,
            m_tiles,
        }
    }

    fn units(&self) -> usize {
        self.chunks + self.row_parts
    }

    /// Unit `u`'s row tiles and panels, or `None` past the last unit.
    fn unit(&self, u: usize) -> Option<(Range<usize>, Range<usize>)> {
        if u < self.chunks {
            let (c, n) = (u, self.chunks);
            return Some((0..self.m_tiles, self.main * c / n..self.main * (c + 1) / n));
        }
        let part = u - self.chunks;
        if part >= self.row_parts {
            return None;
        }
        let (t0, t1) = (
            self.m_tiles * part / self.row_parts,
            self.m_tiles * (part + 1) / self.row_parts,
        );
        Some((t0..t1, self.main..self.panels))
    }
}

/// Rows `rows` × panels `panels` of C: per k block, the panels are packed and every row
/// block of A passes over them.
fn run_unit(job: &Job, b: Panels, rows: std::ops::Range<usize>, panels: std::ops::Range<usize>) {
    let kc_max = block_depth(job.k);
    let (full, all) = match b {
        Panels::Packed(full, all) => (full, all),
        Panels::Source(b) => return run_chunk(job, b, rows, panels),
    };
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        // B packed whole: row blocks outside k blocks, as in the driver, so each row tile
        // reads its rows of A front to back (A is large here and streams from memory).
        for i0 in rows.clone().step_by(MC) {
            let mc = MC.min(rows.end - i0);
            // k = 0 still runs one (empty) block so that the epilogue is applied.
            let mut k0 = 0;
            loop {
                let kc = kc_max.min(job.k - k0);
                // SAFETY: the k block starts inside the buffer packed whole.
                let base = unsafe { full.add(k0 * all * NR) };
                let flags = job.flags(k0, kc);
                job.block(&mut s, i0, mc, k0, kc, flags, panels.clone(), |p| {
                    // SAFETY: panel p of the block lies inside the buffer.
                    (unsafe { base.add(p * kc * NR) }, 0)
                });
                k0 += kc;
                if k0 >= job.k {
                    break;
                }
            }
        }
    })
}

/// A chunk of panels packed per k block by the unit; every row block passes over it.
/// When B is a row-major matrix in memory and A is packed, the chunk's whole panels are
/// read in place and only a last partial panel is packed.
fn run_chunk(
    job: &Job,
    b: &dyn PanelSource,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
) {
    let kc_max = block_depth(job.k);
    let j0 = panels.start * NR;
    let cols = (panels.end * NR).min(job.n) - j0;
    // In place only for few rows (m ≤ 32: mobilenet's projections such as 32→16 and 96→24),
    // where each packed element would serve few multiply-adds. Alone, more shapes win
    // (bench `gemm -- pointwise`, best ms packed → in place: 96→24 on 56² 0.088 → 0.075,
    // 144→32 on 28² 0.042 → 0.035, 256→64 on 56² 0.503 → 0.467), but inside the models,
    // the same process alternating the two ways run by run, in place for every m ≤ k made
    // mobilenet_v2 3% and resnet50 1.5% slower (best of 150: 11.31 → 11.80 ms on a loaded
    // host, 43.60 → 44.26), while m ≤ 32 alone made mobilenet_v2 1% faster (11.56 → 11.34,
    // 10.98 → 10.80, 11.36 → 11.30 in three runs). Not yet understood; a guess: the input
    // was just written by the previous layer on both cores, and packing reads it once in
    // order where in place every row tile reads rows far apart.
    let in_place = match (job.a_packed, job.rows_b) {
        (Some(_), Some(_)) if job.m <= 32 => b.rows(),
        _ => None,
    };
    // Panels from `whole` on are packed (all of them when B is not read in place).
    let whole = match in_place {
        Some(_) => (job.n / NR).clamp(panels.start, panels.end),
        None => panels.start,
    };
    PANELS.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.at_least(CHUNK_PANELS * NR * kc_max);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            // k = 0 still runs one (empty) block so that the epilogue is applied.
            let mut k0 = 0;
            loop {
                let kc = kc_max.min(job.k - k0);
                if whole < panels.end {
                    let from = whole * NR;
                    b.pack(k0, kc, from, j0 + cols - from, buf.as_mut_slice());
                }
                let base = buf.as_slice().as_ptr();
                let flags = job.flags(k0, kc);
                for i0 in rows.clone().step_by(MC) {
                    let mc = MC.min(rows.end - i0);
                    job.block(&mut s, i0, mc, k0, kc, flags, panels.clone(), |p| {
                        match in_place {
                            // SAFETY: whole panel p's rows k0..k0 + kc lie inside B.
                            Some((b, ld)) if p < whole => (unsafe { b.add(k0 * ld + p * NR) }, ld),
                            // SAFETY: panel p of the packed ones lies inside the buffer.
                            _ => (unsafe { base.add((p - whole) * kc * NR) }, 0),
                        }
                    });
                }
                k0 += kc;
                if k0 >= job.k {
                    break;
                }
            }
        })
    })
}

/// B given as a row-major k×n matrix (row stride `ldb`) packed block by block: the
/// [`PanelSource`] of a 1×1 stride-1 convolution, whose input is B itself.
pub struct RowMajor<'a> {
    b: &'a [f32],
    ldb: usize,
}

impl<'a> RowMajor<'a> {
    /// Checks that k rows of n fit in `b` at row stride `ldb`.
    pub fn new(b: &'a [f32], k: usize, n: usize, ldb: usize) -> Result<Self, ShapeError> {
        super::driver::check_matrix("B", b, k, n, ldb)?;
        Ok(RowMajor { b, ldb })
    }
}

impl PanelSource for RowMajor<'_> {
    fn rows(&self) -> Option<(*const f32, usize)> {
        Some((self.b.as_ptr(), self.ldb))
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [f32]) {
        if kc == 0 {
            return;
        }
        for (q, panel) in out[..cols.div_ceil(NR) * kc * NR]
            .chunks_exact_mut(kc * NR)
            .enumerate()
        {
            let c0 = j0 + q * NR;
            let nr = NR.min(j0 + cols - c0);
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                let at = (k0 + kk) * self.ldb + c0;
                if nr == NR {
                    let src: &[f32; NR] = self.b[at..at + NR].try_into().expect("16 floats");
                    let dst: &mut [f32; NR] = row.try_into().expect("16 floats");
                    *dst = *src;
                } else {
                    row[..nr].copy_from_slice(&self.b[at..at + nr]);
                    row[nr..].fill(0.0);
                }
            }
        }
    }
}
