//! A product with a constant B cut, at compile time, into slices of whole column panels,
//! each packed on its own, so that the pool's threads split the work by columns and each
//! can finish its slice (a GELU) while it is in cache: each slice of B is read once per
//! call, and A (a transformer's 128 tokens × 256, 128 KiB) stays in each core's L2. Split
//! by rows instead (whole row tiles, the only split `gemm_with` can hand back per chunk),
//! every chunk streams the whole of B (1 MiB for 256×1024, more than L2) again.
//!
//! Each slice is computed into a per-thread scratch C (m × slice width), the GELU (if any)
//! applied there while it is in L1/L2, then its rows are copied into the result.

use super::gelu::{self, Gelu};
use super::rows::Out;
use crate::device::Ctx;
use crate::gemm::{gemm_with, Bias, Epilogue, Kernel, Options, PackedB, NR};
use kiln_ir::{IrError, Result};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Slices per product: a few per thread of a two-core pool, so a late thread leaves its
/// share to the other.
const SLICES: usize = 8;

/// Below this many multiply-adds the caller runs every slice alone.
const PARALLEL_MIN_MACS: usize = 1 << 18;

thread_local! {
    /// The slice's C before it is copied into the result (grown, never shrunk).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(crate) struct Columns {
    k: usize,
    n: usize,
    /// First column and the packed k × width slice of B.
    slices: Vec<(usize, PackedB)>,
}

impl Columns {
    /// `b` row-major k×n; `None` for an empty B.
    pub fn new(k: usize, n: usize, b: &[f32]) -> Option<Columns> {
        if k == 0 || n == 0 || b.len() < k.checked_mul(n)? {
            return None;
        }
        let panels = n.div_ceil(NR);
        let width = panels.div_ceil(SLICES) * NR;
        let slices = (0..n)
            .step_by(width)
            .map(|c0| {
                let w = width.min(n - c0);
                PackedB::from_strided(k, w, &b[c0..], n, 1)
                    .ok()
                    .map(|p| (c0, p))
            })
            .collect::<Option<_>>()?;
        Some(Columns { k, n, slices })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// `gelu(clip(A·B + bias + residual))` for A row-major m×k, as a fresh m×n result.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        ctx: &Ctx,
        m: usize,
        a: &[f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        clip: Option<(f32, f32)>,
        act: Option<&Gelu>,
    ) -> Result<Vec<f32>> {
        let (k, n) = (self.k, self.n);
        let len = m
            .checked_mul(n)
            .ok_or_else(|| IrError::msg("matmul: the result's size overflows"))?;
        let short = a.len() < m.saturating_mul(k)
            || bias.is_some_and(|b| b.len() != n)
            || residual.is_some_and(|r| r.len() < len);
        if short {
            return Err(IrError::msg(
                "matmul: the operands are smaller than their shapes",
            ));
        }
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if m == 0 {
            return Ok(out);
        }
        let threads = ctx.pool.map_or(1, |p| p.threads());
        let parallel =
            threads > 1 && self.slices.len() > 1 && len.saturating_mul(k) >= PARALLEL_MIN_MACS;
        let vector = ctx.kernel == Kernel::Avx2Fma && Kernel::detect() == Kernel::Avx2Fma;
        let alone = Options {
            pool: None,
            ..ctx.gemm()
        };
        let base = Out(out.as_mut_ptr());
        let next = AtomicUsize::new(0);
        let failed = std::sync::Mutex::new(None);
        let body = |_thread: usize| loop {
            let s = next.fetch_add(1, Ordering::Relaxed);
            let Some((c0, b)) = self.slices.get(s) else {
                return;
            };
            let (c0, w) = (*c0, b.n());
            let epi = Epilogue {
                bias: bias.map(|v| Bias::PerCol(&v[c0..c0 + w])),
                residual: residual.map(|r| (&r[c0..], n)),
                clip,
            };
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < m * w {
                    scratch.resize(m * w, 0.0);
                }
                let c = &mut scratch[..m * w];
                // accumulate = false: the GEMM writes every element of c.
                match gemm_with(&alone, m, a, k, b, c, w, false, &epi) {
                    Ok(()) => {
                        if let Some(g) = act {
                            gelu::apply(g, c, vector);
                        }
                        for (i, row) in c.chunks_exact(w).enumerate() {
                            // SAFETY: row i's columns c0..c0 + w lie inside the result's
                            // capacity (c0 + w ≤ n) and only this slice writes them.
                            unsafe {
                                std::ptr::copy_nonoverlapping(row.as_ptr(), base.at(i * n + c0), w)
                            };
                        }
                    }
                    Err(e) => *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e),
                }
            });
        };
        match ctx.pool {
            Some(pool) if parallel => pool.run(&body),
            _ => body(0),
        }
        if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(IrError::msg(e.to_string()));
        }
        // SAFETY: the slices cover columns 0..n, and each wrote its columns of all m rows.
        unsafe { out.set_len(len) };
        Ok(out)
    }
}
