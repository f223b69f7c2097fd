//! The portable microkernel: plain Rust with the machine-code kernel's ABI and semantics,
//! for CPUs without AVX2/FMA (the compiler vectorizes it to the baseline SSE2).

use super::module::Kernels;
use super::{TileArgs, FLAG_BETA, FLAG_BIAS_COL, FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL, NR};

/// The portable kernels, index `r` for `r + 1` rows.
pub const KERNELS: Kernels = [
    kernel::<1>,
    kernel::<2>,
    kernel::<3>,
    kernel::<4>,
    kernel::<5>,
    kernel::<6>,
];

/// Computes an R×16 tile.
///
/// # Safety
/// Same contract as the machine-code kernel: `a` readable at `i*rs_a + p*cs_a` for i < R,
/// p < k; `b` readable for `k*16` floats; `c` (and the residual, when flagged) readable and
/// writable for R rows of 16 at their strides; `bias` readable for 16 (per column) or R
/// (per row) floats when flagged.
pub unsafe extern "C" fn kernel<const R: usize>(
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    args: *const TileArgs,
) {
    let t = &*args;
    let mut acc = [[0f32; NR]; R];
    for p in 0..k {
        let brow: &[f32; NR] = &*(b.add(p * NR) as *const [f32; NR]);
        for (i, row) in acc.iter_mut().enumerate() {
            let av = *a.add(i * t.rs_a + p * t.cs_a);
            // Not mul_add: without hardware FMA that is a libm call per element.
            for j in 0..NR {
                row[j] += av * brow[j];
            }
        }
    }
    for (i, row) in acc.iter_mut().enumerate() {
        let crow = c.add(i * t.ldc);
        for (j, v) in row.iter_mut().enumerate() {
            let mut x = *v;
            if t.flags & FLAG_BETA != 0 {
                x += *crow.add(j);
            }
            if t.flags & FLAG_BIAS_COL != 0 {
                x += *t.bias.add(j);
            }
            if t.flags & FLAG_BIAS_ROW != 0 {
                x += *t.bias.add(i);
            }
            if t.flags & FLAG_RESIDUAL != 0 {
                x += *t.residual.add(i * t.ldr + j);
            }
            if t.flags & FLAG_CLIP != 0 {
                // Written so that NaN falls through both tests, as in the AVX2 kernel.
                if x < t.lo {
                    x = t.lo;
                } else if x > t.hi {
                    x = t.hi;
                }
            }
            *crow.add(j) = x;
        }
    }
}
