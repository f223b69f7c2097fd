//! The blocking loops around the microkernel (the Rust driver of the JIT path).
//!
//! Loop order, outermost first: row blocks of [`MC`] (A's block in L2, with the block's
//! rows of C), k blocks of at most [`KC`] (as B was packed), B panels of 16 columns (one
//! panel sits in L1), row tiles of up to 6.
//! The tile grid is split between the pool's threads along its longer side.

#[cfg(target_arch = "x86_64")]
use super::narrow::NARROW_COLS;
use super::pack::{pack_a, AlignedBuf, PackedA, KC, MC};
use super::threads::Pool;
use super::{
    Bias, Epilogue, Kernel, Kernels, PackedB, ShapeError, TileArgs, FLAG_BETA, FLAG_BIAS_COL,
    FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL, MR, NR,
};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many multiply-adds one thread is faster than waking another.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Work chunks per thread: enough to even out a late or slow thread, few enough that each
/// chunk still reuses its A rows over many B panels.
const CHUNKS_PER_THREAD: usize = 4;

/// How to run a GEMM; [`Default`] is the fastest kernel on the global pool.
#[derive(Clone, Copy)]
pub struct Options<'p> {
    pub kernel: Kernel,
    /// `None`: the calling thread alone.
    pub pool: Option<&'p Pool>,
    /// Pack A into panels (true) or let the kernel read A's rows in place (false, the
    /// default: as fast or faster on every shape measured here, see README.md).
    pub pack_a: bool,
}

impl Default for Options<'static> {
    fn default() -> Self {
        Options {
            kernel: Kernel::detect(),
            pool: Some(Pool::global()),
            pack_a: false,
        }
    }
}

/// `C = epilogue(accumulate ? C + A·B : A·B)` for row-major A (m×k, row stride `lda`) and
/// C (m×n, row stride `ldc`), with B packed.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epilogue: &Epilogue,
) -> Result<(), ShapeError> {
    gemm_with(
        &Options::default(),
        m,
        a,
        lda,
        b,
        c,
        ldc,
        accumulate,
        epilogue,
    )
}

/// [`gemm`] with an explicit kernel, pool and packing choice.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    options: &Options,
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epilogue: &Epilogue,
) -> Result<(), ShapeError> {
    let (k, n) = (b.k(), b.n());
    let Some(job) = Job::new(
        options,
        m,
        k,
        n,
        a,
        lda,
        Some(b),
        Out::from(c),
        ldc,
        accumulate,
        epilogue,
    )?
    else {
        return Ok(());
    };
    let (m_tiles, n_tiles) = (m.div_ceil(MR), n.div_ceil(NR));
    let threads = options.pool.map_or(1, Pool::threads);
    let pool = match options.pool {
        Some(pool) if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS => {
            pool
        }
        _ => {
            job.run(0..m, 0..n_tiles);
            return Ok(());
        }
    };
    // Cut the longer side of the tile grid into a few chunks per thread, taken in turn from
    // a shared counter: a thread that starts late (a busy machine) or runs slow leaves its
    // share to the others instead of holding up the call.
    let split_m = m_tiles >= n_tiles;
    let tiles = if split_m { m_tiles } else { n_tiles };
    let chunks = tiles.min(threads * CHUNKS_PER_THREAD);
    let next = AtomicUsize::new(0);
    pool.run(&|_| loop {
        let chunk = next.fetch_add(1, Ordering::Relaxed);
        if chunk >= chunks {
            return;
        }
        let (t0, t1) = (tiles * chunk / chunks, tiles * (chunk + 1) / chunks);
        if split_m {
            job.run(t0 * MR..(t1 * MR).min(m), 0..n_tiles);
        } else {
            job.run(0..m, t0..t1);
        }
    });
    Ok(())
}

impl<'b> Job<'b> {
    /// Checks the operands against the sizes and turns the epilogue into kernel flags;
    /// `None` for an empty C (nothing to do).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        options: &Options,
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: Option<&'b PackedB>,
        c: Out,
        ldc: usize,
        accumulate: bool,
        epilogue: &Epilogue,
    ) -> Result<Option<Job<'b>>, ShapeError> {
        check_matrix("A", a, m, k, lda)?;
        check_dims("C", c.len, m, n, ldc)?;
        let mut ep_flags = 0;
        let (mut bias, mut residual, mut ldr) = (std::ptr::null(), std::ptr::null(), 0);
        match epilogue.bias {
            Some(Bias::PerCol(v)) => {
                check_len("bias", v.len(), n)?;
                ep_flags |= FLAG_BIAS_COL;
                bias = v.as_ptr();
            }
            Some(Bias::PerRow(v)) => {
                check_len("bias", v.len(), m)?;
                ep_flags |= FLAG_BIAS_ROW;
                bias = v.as_ptr();
            }
            None => {}
        }
        if let Some((r, ld)) = epilogue.residual {
            check_matrix("residual", r, m, n, ld)?;
            ep_flags |= FLAG_RESIDUAL;
            residual = r.as_ptr();
            ldr = ld;
        }
        let (lo, hi) = epilogue.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        if epilogue.clip.is_some() {
            ep_flags |= FLAG_CLIP;
        }
        if m == 0 || n == 0 {
            return Ok(None);
        }
        Ok(Some(Job {
            kernels: options.kernel.functions(),
            rows_b: options.kernel.rows_b_functions(),
            narrow: options.kernel == Kernel::Avx2Fma,
            pack: options.pack_a,
            m,
            n,
            k,
            a: a.as_ptr(),
            lda,
            a_packed: None,
            b,
            c: c.ptr,
            ldc,
            beta: if accumulate { FLAG_BETA } else { 0 },
            ep_flags,
            bias,
            residual,
            ldr,
            lo,
            hi,
        }))
    }
}

pub(super) fn check_len(what: &str, len: usize, want: usize) -> Result<(), ShapeError> {
    if len < want {
        return Err(ShapeError(format!("{what} has {len} values, needs {want}")));
    }
    Ok(())
}

pub(super) fn check_matrix(
    what: &str,
    v: &[f32],
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), ShapeError> {
    check_dims(what, v.len(), rows, cols, ld)
}

/// Whether `rows` rows of `cols` at stride `ld` fit in `len` floats.
pub(super) fn check_dims(
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), ShapeError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if ld < cols && rows > 1 {
        return Err(ShapeError(format!(
            "{what} row stride {ld} is below its {cols} columns"
        )));
    }
    let need = (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols));
    match need {
        Some(need) if need <= len => Ok(()),
        _ => Err(ShapeError(format!(
            "{what} of {rows}×{cols} with row stride {ld} does not fit in {len} values"
        ))),
    }
}

/// C as the driver writes it: `len` floats from `ptr`, either a borrowed slice or memory
/// not yet initialised (see [`super::source::gemm_source_uninit`]): the driver reads C only
/// where the kernel flags say beta = 1, which an uninitialised C never asks for.
#[derive(Clone, Copy)]
pub(super) struct Out {
    pub ptr: *mut f32,
    pub len: usize,
}

impl From<&mut [f32]> for Out {
    fn from(c: &mut [f32]) -> Out {
        Out {
            ptr: c.as_mut_ptr(),
            len: c.len(),
        }
    }
}

/// One GEMM's operands as raw pointers, shared by the threads (each writes its own tiles).
/// `b` is `None` when the caller packs B's panels per block ([`super::source`]).
pub(super) struct Job<'b> {
    pub kernels: Kernels,
    /// The kernels reading B's rows in place (A packed), where this CPU has them.
    pub rows_b: Option<Kernels>,
    /// Edge panels of at most [`NARROW_COLS`] columns go to [`Job::narrow_tile`].
    pub narrow: bool,
    pub pack: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    /// A packed whole ahead of the call (then `a` and `pack` are not used).
    pub a_packed: Option<&'b PackedA>,
    pub b: Option<&'b PackedB>,
    pub c: *mut f32,
    pub ldc: usize,
    pub beta: u64,
    pub ep_flags: u64,
    pub bias: *const f32,
    pub residual: *const f32,
    pub ldr: usize,
    pub lo: f32,
    pub hi: f32,
}

// SAFETY: the pointers come from slices borrowed for the whole call, checked against the
// sizes; threads read A, B, bias and residual, and write disjoint tiles of C.
unsafe impl Sync for Job<'_> {}

/// Scratch for one thread: the packed A block, and padded copies for edge tiles.
pub(super) struct Scratch {
    a: AlignedBuf,
    tile: AlignedBuf,
    residual: AlignedBuf,
    bias: AlignedBuf,
}

thread_local! {
    pub(super) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        a: AlignedBuf::zeroed(MC * KC),
        tile: AlignedBuf::zeroed(MR * NR),
        residual: AlignedBuf::zeroed(MR * NR),
        bias: AlignedBuf::zeroed(NR),
    });
}

impl Job<'_> {
    /// Computes the tiles of rows `rows` (starting on a tile boundary) × panels `panels`.
    fn run(&self, rows: std::ops::Range<usize>, panels: std::ops::Range<usize>) {
        let Some(b) = self.b else { return };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            // Row blocks outside k blocks: the block's rows of C stay in L2 from one k block
            // to the next (B is streamed the same number of times either way).
            for i0 in rows.clone().step_by(MC) {
                let mc = MC.min(rows.end - i0);
                // k = 0 still runs one (empty) block so that the epilogue is applied.
                let mut k0 = 0;
                loop {
                    let kc = b.kc().min(self.k - k0);
                    let last = k0 + kc >= self.k;
                    let flags = self.flags(k0, kc);
                    self.block(&mut s, i0, mc, k0, kc, flags, panels.clone(), |p| {
                        (b.panel(k0, kc, p), 0)
                    });
                    k0 += kc;
                    if last {
                        break;
                    }
                }
            }
        })
    }

    /// The kernel flags of the k block `k0..k0 + kc`: the first one starts from beta,
    /// later ones accumulate, the last one applies the epilogue.
    pub(super) fn flags(&self, k0: usize, kc: usize) -> u64 {
        (if k0 == 0 { self.beta } else { FLAG_BETA })
            | if k0 + kc >= self.k { self.ep_flags } else { 0 }
    }

    /// Rows `i0..i0 + mc` × panels `panels` of one k block; `panel(p)` is B's panel p of
    /// this block and its row stride: 0 for a packed panel (kc rows of 16), otherwise B's
    /// rows read in place at that stride (only for whole panels, with A packed and the
    /// [`Job::rows_b`] kernels present).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block(
        &self,
        s: &mut Scratch,
        i0: usize,
        mc: usize,
        k0: usize,
        kc: usize,
        flags: u64,
        panels: std::ops::Range<usize>,
        panel: impl Fn(usize) -> (*const f32, usize),
    ) {
        if self.pack && self.a_packed.is_none() {
            let len = if self.k == 0 {
                0
            } else {
                (self.m - 1) * self.lda + self.k
            };
            // SAFETY: `gemm_with` checked A holds m rows of k at stride lda.
            let a = unsafe { std::slice::from_raw_parts(self.a, len) };
            pack_a(a, self.lda, self.m, i0, mc, k0, kc, s.a.as_mut_slice());
        }
        let packed = s.a.as_slice().as_ptr();
        for p in panels {
            let (b, rs_b) = panel(p);
            let j0 = p * NR;
            let cols = NR.min(self.n - j0);
            for r in (0..mc).step_by(MR) {
                let i = i0 + r;
                let (a_ptr, rs_a, cs_a) = if let Some(a) = self.a_packed {
                    (a.tile(k0, kc, i), 1, MR)
                } else if self.pack {
                    // SAFETY: the packed block holds mc rows rounded up to MR, kc deep.
                    (unsafe { packed.add(r * kc) }, 1, MR)
                } else {
                    // In place: the kernel for `rows` rows reads only rows below m.
                    // SAFETY: row i is below m, column k0 + kc at most k.
                    (unsafe { self.a.add(i * self.lda + k0) }, self.lda, 1)
                };
                let rows = MR.min(self.m - i);
                if rs_b != 0 {
                    let kernels = self
                        .rows_b
                        .expect("B in place only with the rows_b kernels");
                    debug_assert!(cols == NR && (rs_a, cs_a) == (1, MR));
                    let kernel = kernels[rows - 1];
                    self.tile_with(
                        s, kernel, a_ptr, rs_a, cs_a, b, rs_b, kc, i, rows, j0, cols, flags,
                    );
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                if self.narrow && cols <= NARROW_COLS && (rs_a, cs_a) == (1, MR) {
                    // SAFETY: `narrow` is set only with the AVX2+FMA kernel (so the CPU
                    // has both); the panels hold kc steps; the tile lies inside C.
                    unsafe { self.narrow_tile(a_ptr, b, kc, i, rows, j0, cols, flags) };
                    continue;
                }
                let kernel = self.kernels[rows - 1];
                self.tile_with(
                    s, kernel, a_ptr, rs_a, cs_a, b, 0, kc, i, rows, j0, cols, flags,
                );
            }
        }
    }

    /// One tile of `rows` (≤ 6) × 16 at (i, j), by `kernel` (the one for that many rows);
    /// a tile with fewer than 16 columns goes through a padded copy.
    #[allow(clippy::too_many_arguments)]
    fn tile_with(
        &self,
        s: &mut Scratch,
        kernel: super::KernelFn,
        a: *const f32,
        rs_a: usize,
        cs_a: usize,
        b: *const f32,
        rs_b: usize,
        kc: usize,
        i: usize,
        rows: usize,
        j: usize,
        cols: usize,
        flags: u64,
    ) {
        let mut args = TileArgs {
            rs_a,
            cs_a,
            ldc: self.ldc,
            flags,
            bias: std::ptr::null(),
            residual: std::ptr::null(),
            ldr: self.ldr,
            lo: self.lo,
            hi: self.hi,
            rs_b,
        };
        // SAFETY (all pointer arithmetic below): (i, j) is inside the m×n output, and only
        // rows × cols elements of C, residual and bias are touched outside the scratch.
        unsafe {
            if flags & FLAG_BIAS_COL != 0 {
                args.bias = self.bias.add(j);
            }
            if flags & FLAG_BIAS_ROW != 0 {
                args.bias = self.bias.add(i);
            }
            if flags & FLAG_RESIDUAL != 0 {
                args.residual = self.residual.add(i * self.ldr + j);
            }
            let c = self.c.add(i * self.ldc + j);
            if cols == NR {
                kernel(kc, a, b, c, &args);
                return;
            }
            let tile = s.tile.as_mut_slice().as_mut_ptr();
            if flags & FLAG_BETA != 0 {
                copy_tile(c, self.ldc, tile, NR, rows, cols);
            }
            if flags & FLAG_RESIDUAL != 0 {
                let r = s.residual.as_mut_slice().as_mut_ptr();
                copy_tile(args.residual, self.ldr, r, NR, rows, cols);
                args.residual = r;
                args.ldr = NR;
            }
            if flags & FLAG_BIAS_COL != 0 {
                let bias = s.bias.as_mut_slice().as_mut_ptr();
                std::ptr::copy_nonoverlapping(args.bias, bias, cols);
                args.bias = bias;
            }
            args.ldc = NR;
            kernel(kc, a, b, tile, &args);
            copy_tile(tile, NR, c, self.ldc, rows, cols);
        }
    }
}

/// Copies a rows×cols block between row-major buffers.
///
/// # Safety
/// Both buffers must hold `rows` rows of `cols` at their strides.
unsafe fn copy_tile(
    src: *const f32,
    lds: usize,
    dst: *mut f32,
    ldd: usize,
    rows: usize,
    cols: usize,
) {
    for r in 0..rows {
        std::ptr::copy_nonoverlapping(src.add(r * lds), dst.add(r * ldd), cols);
    }
}
