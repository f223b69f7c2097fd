//! Packed operand layouts: B (weights) once per model, A panels per call.

use super::{ShapeError, MR, NR};
use std::alloc::{alloc_zeroed, dealloc, Layout};

/// Largest depth of one k block: a B panel (KC×16 floats = 16 KiB) stays in the 32 KiB L1
/// while the kernel walks down the A block. k is cut into equal blocks no deeper than this
/// (576 = 3 × 192 rather than 256 + 256 + 64), so no block is left with a short loop.
pub const KC: usize = 256;
/// Rows of one A block: MC×KC floats (144 KiB) stay in the 1 MiB L2 of each core.
pub const MC: usize = 144;

/// A zeroed f32 buffer aligned to a cache line, so kernel loads never split lines.
pub struct AlignedBuf {
    ptr: *mut f32,
    len: usize,
}

// The buffer owns its memory like a Vec does.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Self {
        if len == 0 {
            return AlignedBuf {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: the layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) } as *mut f32;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len * 4, 64).expect("buffer size fits in isize")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The buffer, first replaced by a zeroed one of `len` floats if it holds fewer: a
    /// scratch buffer kept across calls only grows.
    pub fn at_least(&mut self, len: usize) -> &mut Self {
        if self.len < len {
            *self = AlignedBuf::zeroed(len);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: ptr is valid for len initialized (zeroed) floats.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { dealloc(self.ptr as *mut u8, Self::layout(self.len)) }
        }
    }
}

/// B (k×n) cut into k blocks of `kc` rows (the last may be shorter), each block into panels
/// of [`NR`] columns, each panel stored k-major (`kc` rows of 16 contiguous floats), the
/// last panel padded with zeros. The driver takes the block depth from here.
pub struct PackedB {
    k: usize,
    n: usize,
    kc: usize,
    data: AlignedBuf,
}

/// The k block depth for depth k: equal blocks of at most [`KC`], a multiple of 4 (the
/// kernel's unrolling) where possible.
pub(crate) fn block_depth(k: usize) -> usize {
    let blocks = k.div_ceil(KC).max(1);
    k.div_ceil(blocks).next_multiple_of(4).clamp(4, KC)
}

impl PackedB {
    /// Packs a row-major k×n matrix with row stride `ldb` (`b[p*ldb + j]`).
    pub fn new(k: usize, n: usize, b: &[f32], ldb: usize) -> Result<Self, ShapeError> {
        Self::from_strided(k, n, b, ldb, 1)
    }

    /// Packs B given as its transpose, an n×k row-major matrix (`bt[j*ld + p]`): ONNX Gemm
    /// with transB, or convolution weights `[out_channels, in_channels·kh·kw]`.
    pub fn from_transposed(k: usize, n: usize, bt: &[f32], ld: usize) -> Result<Self, ShapeError> {
        Self::from_strided(k, n, bt, 1, ld)
    }

    /// Packs B where element (p, j) is `b[p*rs + j*cs]`.
    pub fn from_strided(
        k: usize,
        n: usize,
        b: &[f32],
        rs: usize,
        cs: usize,
    ) -> Result<Self, ShapeError> {
        if k > 0 && n > 0 {
            let last = (k - 1)
                .checked_mul(rs)
                .and_then(|r| (n - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
            match last {
                Some(last) if last < b.len() => {}
                _ => {
                    return Err(ShapeError(format!(
                        "B of {k}×{n} with strides ({rs}, {cs}) does not fit in {} floats",
                        b.len()
                    )))
                }
            }
        }
        let panels = n.div_ceil(NR);
        let block = block_depth(k);
        let mut data = AlignedBuf::zeroed(k * panels * NR);
        let out = data.as_mut_slice();
        for k0 in (0..k).step_by(block) {
            let kc = block.min(k - k0);
            for p in 0..panels {
                let base = Self::offset(k0, kc, panels, p);
                let j0 = p * NR;
                let nr = NR.min(n - j0);
                for kk in 0..kc {
                    let row = &mut out[base + kk * NR..base + kk * NR + nr];
                    if cs == 1 {
                        // Row-major B (activations as B): each panel row is one copy.
                        let at = (k0 + kk) * rs + j0;
                        row.copy_from_slice(&b[at..at + nr]);
                        continue;
                    }
                    for (jj, v) in row.iter_mut().enumerate() {
                        *v = b[(k0 + kk) * rs + (j0 + jj) * cs];
                    }
                }
            }
        }
        Ok(PackedB {
            k,
            n,
            kc: block,
            data,
        })
    }

    fn offset(k0: usize, kc: usize, panels: usize, p: usize) -> usize {
        k0 * panels * NR + p * kc * NR
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Depth of the k blocks (the last one may be shorter).
    pub fn kc(&self) -> usize {
        self.kc
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// The packed floats, for writing into an artifact's read-only data.
    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }

    /// Start of panel `p` of the k block starting at `k0` (of depth `kc`).
    pub(crate) fn panel(&self, k0: usize, kc: usize, p: usize) -> *const f32 {
        let off = Self::offset(k0, kc, self.panels(), p);
        debug_assert!(off + kc * NR <= self.data.len());
        // SAFETY: in bounds by construction of the layout.
        unsafe { self.data.as_slice().as_ptr().add(off) }
    }
}

/// A (m×k) packed whole, once, into the layout the kernel reads fastest: k blocks of
/// [`block_depth`]`(k)` (as the driver cuts k), each block into panels of [`MR`] rows stored
/// k-major (`kc` groups of 6 floats), the last panel padded with zero rows. Convolution
/// weights are packed like this when the program is compiled: read in place, a row tile
/// walks 6 rows up to 18 KiB apart (resnet's 3×3 512→512 weights: 9 MB streamed from
/// memory per call), packed it reads one contiguous run.
pub struct PackedA {
    m: usize,
    k: usize,
    data: AlignedBuf,
}

impl PackedA {
    /// Packs a row-major m×k matrix with row stride `lda` (`a[i*lda + p]`).
    pub fn new(m: usize, k: usize, a: &[f32], lda: usize) -> Result<Self, ShapeError> {
        super::driver::check_matrix("A", a, m, k, lda)?;
        let rows = m.div_ceil(MR) * MR;
        let len = rows
            .checked_mul(k)
            .ok_or_else(|| ShapeError(format!("A of {m}×{k} is too large to pack")))?;
        let mut data = AlignedBuf::zeroed(len);
        let out = data.as_mut_slice();
        let block = block_depth(k);
        for k0 in (0..k).step_by(block) {
            let kc = block.min(k - k0);
            pack_a(a, lda, m, 0, m, k0, kc, &mut out[k0 * rows..]);
        }
        Ok(PackedA { m, k, data })
    }

    pub fn m(&self) -> usize {
        self.m
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The packed floats (at least m×k of them).
    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }

    /// Start of the panel holding row `i` (a multiple of [`MR`]) in the k block starting
    /// at `k0` of depth `kc`; the kernel reads it with `rs_a = 1`, `cs_a = MR`.
    pub(crate) fn tile(&self, k0: usize, kc: usize, i: usize) -> *const f32 {
        debug_assert!(i % MR == 0 && i < self.m);
        let off = k0 * self.m.div_ceil(MR) * MR + i * kc;
        debug_assert!(off + MR * kc <= self.data.len());
        // SAFETY: in bounds by construction of the layout.
        unsafe { self.data.as_slice().as_ptr().add(off) }
    }
}

/// Packs rows `i0..i0+mc` and columns `k0..k0+kc` of row-major A into `MR`-row panels,
/// each k-major (`kc` groups of 6 floats), padding missing rows with zeros.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_a(
    a: &[f32],
    lda: usize,
    m: usize,
    i0: usize,
    mc: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) {
    if kc == 0 {
        return;
    }
    for (r, panel) in out[..mc.div_ceil(MR) * MR * kc]
        .chunks_exact_mut(MR * kc)
        .enumerate()
    {
        let row0 = i0 + r * MR;
        let rows = MR.min(m.saturating_sub(row0));
        if rows == MR {
            let src: [&[f32]; MR] =
                std::array::from_fn(|i| &a[(row0 + i) * lda + k0..(row0 + i) * lda + k0 + kc]);
            for (kk, dst) in panel.chunks_exact_mut(MR).enumerate() {
                for i in 0..MR {
                    dst[i] = src[i][kk];
                }
            }
        } else {
            for (kk, dst) in panel.chunks_exact_mut(MR).enumerate() {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = if i < rows {
                        a[(row0 + i) * lda + k0 + kk]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
