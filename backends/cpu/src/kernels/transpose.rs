//! Transpose of an f32 tensor: dims the permutation keeps together are merged first
//! (`[0,2,1,3]` on [1,128,4,64] moves 64-float runs), then the output is written row by
//! row, each row a copy when the innermost dim stays innermost, else a strided gather.

use super::rows::collect_rows;
use crate::device::Ctx;
use kiln_ir::{Op, Result, Tensor};

pub(crate) struct Transpose {
    perm: Option<Vec<i64>>,
}

impl Transpose {
    pub fn new(op: &Op) -> Option<Transpose> {
        match op {
            Op::Transpose { perm } => Some(Transpose { perm: perm.clone() }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let rank = x.rank();
        let perm: Vec<usize> = match &self.perm {
            None => (0..rank).rev().collect(),
            Some(p) => {
                let p: Vec<usize> = p
                    .iter()
                    .map(|&a| usize::try_from(a).ok())
                    .collect::<Option<_>>()?;
                let mut seen = vec![false; rank];
                if p.len() != rank
                    || p.iter()
                        .any(|&a| a >= rank || std::mem::replace(&mut seen[a], true))
                {
                    return None;
                }
                p
            }
        };
        let shape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
        // Merge runs of output dims that are consecutive input dims; drop size-1 dims.
        let mut dims: Vec<(usize, usize)> = Vec::new(); // (input dim, size) in output order
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &a in &perm {
            if x.shape()[a] == 1 {
                continue;
            }
            match groups.last_mut() {
                Some(g)
                    if *g.last()? + 1 == a || next_nontrivial(x.shape(), *g.last()?) == Some(a) =>
                {
                    g.push(a)
                }
                _ => groups.push(vec![a]),
            }
        }
        let in_strides = {
            let mut s = vec![1usize; rank];
            for i in (0..rank.saturating_sub(1)).rev() {
                s[i] = s[i + 1] * x.shape()[i + 1];
            }
            s
        };
        for g in &groups {
            let size: usize = g.iter().map(|&a| x.shape()[a]).product();
            dims.push((*g.last()?, size));
        }
        let stride: Vec<usize> = dims.iter().map(|&(a, _)| in_strides[a]).collect();
        let sizes: Vec<usize> = dims.iter().map(|&(_, n)| n).collect();
        Some(Tensor::new(shape, gather(ctx, xv, &sizes, &stride)))
    }
}

/// The elements of `x` at the strided view `sizes`/`strides` (row-major over `sizes`), in
/// order: row by row, a row a copy where the innermost stride is 1, else a gather. The
/// view must lie inside `x` and cover `x.len()` elements or fewer. The output is written
/// once into fresh memory (a zero fill first was a wasted pass); rows are split over the
/// pool as [`super::rows::for_each_row`] does.
pub(crate) fn gather(ctx: &Ctx, x: &[f32], sizes: &[usize], strides: &[usize]) -> Vec<f32> {
    let n: usize = sizes.iter().product();
    let d = sizes.len();
    if d == 0 || n == 0 {
        return x[..n].to_vec();
    }
    let row_len = sizes[d - 1];
    let last_stride = strides[d - 1];
    #[cfg(target_arch = "x86_64")]
    if let Some(out) = tiles::gather(ctx, x, sizes, strides) {
        return out;
    }
    // SAFETY: each call writes all row_len floats of its row (a read out of bounds
    // panics before anything is returned).
    unsafe {
        collect_rows(ctx, n, row_len, 2 * n, |r, dst| {
            // Input offset of output row r: its index over the outer dims.
            let (mut rest, mut off) = (r, 0);
            for i in (0..d - 1).rev() {
                off += (rest % sizes[i]) * strides[i];
                rest /= sizes[i];
            }
            if last_stride == 1 {
                let src = &x[off..off + row_len];
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, row_len);
            } else {
                for j in 0..row_len {
                    dst.add(j).write(x[off + j * last_stride]);
                }
            }
        })
    }
}

/// The next input dim after `a` whose size is not 1 (size-1 dims between two merged dims
/// do not break the run).
fn next_nontrivial(shape: &[usize], a: usize) -> Option<usize> {
    (a + 1..shape.len()).find(|&b| shape[b] != 1)
}

/// The gather where the input's contiguous dim is the output's second-to-last (a head's
/// keys transposed for the scores, [128 tokens, 4 heads, 64] → [4, 64, 128]): the
/// element-by-element gather read one float per 1 KiB stride, 0.03 ms per head split on
/// the transformer; here blocks of 8 output rows × 8 columns are loaded as 8 contiguous
/// input runs and transposed in registers.
#[cfg(target_arch = "x86_64")]
pub(crate) mod tiles {
    use super::collect_rows;
    use crate::device::Ctx;
    use std::arch::x86_64::*;

    /// `None` where the view is not of that kind, or the CPU has no AVX.
    pub(super) fn gather(
        ctx: &Ctx,
        x: &[f32],
        sizes: &[usize],
        strides: &[usize],
    ) -> Option<Vec<f32>> {
        let d = sizes.len();
        if d < 2 || strides[d - 2] != 1 || sizes[d - 2] % 8 != 0 || strides[d - 1] < 8 {
            return None;
        }
        if !std::is_x86_feature_detected!("avx") {
            return None;
        }
        // Every element the view reads lies inside x (the tiles read through pointers).
        let last = sizes
            .iter()
            .zip(strides)
            .try_fold(0usize, |acc, (&n, &s)| {
                acc.checked_add((n - 1).checked_mul(s)?)
            })?;
        if last >= x.len() {
            return None;
        }
        let (row_len, s) = (sizes[d - 1], strides[d - 1]);
        let n: usize = sizes.iter().product();
        let block = 8 * row_len;
        // SAFETY: each call writes all 8 rows of its block (`block` floats); the reads
        // are elements of the view, inside x (checked above).
        let out = unsafe {
            collect_rows(ctx, n, block, 2 * n, |b, dst| {
                // Input offset of the block's first row (rows 8b..8b+8 differ only in the
                // second-to-last index, 8 | its size, stride 1).
                let (mut rest, mut off) = (8 * b, 0);
                for i in (0..d - 1).rev() {
                    off += (rest % sizes[i]) * strides[i];
                    rest /= sizes[i];
                }
                let src = x.as_ptr().add(off);
                let whole = row_len / 8 * 8;
                for j in (0..whole).step_by(8) {
                    tile(src.add(j * s), s, dst.add(j), row_len);
                }
                for j in whole..row_len {
                    for i in 0..8 {
                        dst.add(i * row_len + j).write(*src.add(i + j * s));
                    }
                }
            })
        };
        Some(out)
    }

    /// dst[i·ld + j] = src[i + j·s] for i, j < 8.
    ///
    /// # Safety
    /// AVX; those elements readable and writable.
    #[target_feature(enable = "avx")]
    unsafe fn tile(src: *const f32, s: usize, dst: *mut f32, ld: usize) {
        let mut r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(src.add(j * s)));
        transpose8(&mut r);
        for (i, v) in r.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * ld), v);
        }
    }

    /// Transposes the 8 vectors `r` (row `i` = `r[i]`) in place: afterwards `r[j]` holds
    /// lane `j` of every input vector. The depthwise kernel's 8-plane groups use it too.
    ///
    /// # Safety
    /// AVX must be available.
    #[inline]
    #[target_feature(enable = "avx")]
    pub(crate) unsafe fn transpose8(r: &mut [__m256; 8]) {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        r[0] = _mm256_permute2f128_ps::<0x20>(u0, u4);
        r[1] = _mm256_permute2f128_ps::<0x20>(u1, u5);
        r[2] = _mm256_permute2f128_ps::<0x20>(u2, u6);
        r[3] = _mm256_permute2f128_ps::<0x20>(u3, u7);
        r[4] = _mm256_permute2f128_ps::<0x31>(u0, u4);
        r[5] = _mm256_permute2f128_ps::<0x31>(u1, u5);
        r[6] = _mm256_permute2f128_ps::<0x31>(u2, u6);
        r[7] = _mm256_permute2f128_ps::<0x31>(u3, u7);
    }
}
