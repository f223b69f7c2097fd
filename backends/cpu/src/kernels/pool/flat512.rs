//! Average pooling at stride 1 whose output is the input's size ("same" windows, such as
//! inception's 3×3 pools), with AVX-512F: a plane is read as one flat run of floats, and
//! each window tap is one masked load of 16 consecutive positions at a fixed offset in
//! that run. Output position `p` and input position `p` are the same index, so a tap
//! (i, j) of 16 outputs is the 16 inputs from `p + (i - pb_h)·w + (j - pb_w)`; the lanes
//! whose tap lies outside the plane (a row above or below, or a column that wrapped to
//! the next row) are masked out and read as 0.
//!
//! Why: the planes are small (inception's 17², 8² and 3²), so rows of 16 do not apply,
//! and the padded path copies every plane and transposes eight of them into lanes and
//! back. Per-kernel minimums over five interleaved `kiln bench -pc` runs of inception_v3
//! (2 threads), before → after, ms: 288×17² 0.055 → 0.028, 768×8² 0.033 → 0.020,
//! 2048×3² 0.028 → 0.009; its nine pools 0.346 → 0.175 (onnxruntime's profile: 0.134).
//!
//! The masks and the divisors depend only on the position in the plane, so they are made
//! once for every block of 16 positions ([`Flat::new`]; the kernel keeps the plan of the
//! last geometry it ran), and every plane reuses them. Planes of fewer than 16 positions go several to a run, as many as make a whole
//! number of blocks (16 of inception's 3×3 planes make 9 blocks): one plane per call
//! left most of a block's lanes and the call's set-up on each plane.
//!
//! Results are bit-identical to the scalar path: each lane sums its taps in the same
//! order (rows top to bottom, columns left to right) from 0.0, a masked-out tap adds
//! +0.0 (which changes no sum that starts from +0.0, NaN and infinities included), and
//! the sum is divided by the same count.

use super::super::avx512f::lanes;
use super::Dim1;
use std::ops::Range;

/// Most window taps (a 7×7 window).
const MAX_TAPS: usize = 49;

/// The plan of one geometry: per block of 16 positions, which lanes each tap reads and
/// what each lane divides by.
pub(super) struct Flat {
    /// Offset of each tap from the output position, in floats.
    offsets: Vec<isize>,
    /// Per block, per tap: the lanes whose tap lies inside the plane.
    masks: Vec<u16>,
    /// Per block: each lane's divisor (1 past the run's end).
    counts: Vec<[f32; 16]>,
    /// Planes in a run.
    planes: usize,
    /// The geometry this plan is for.
    geometry: (Dim1, Dim1),
}

/// Whether [`Flat`] handles this geometry: stride 1 and no dilation in both dims, the
/// output as large as the input, at most [`MAX_TAPS`] taps, and a non-empty plane.
pub(super) fn applies(dh: &Dim1, dw: &Dim1) -> bool {
    let same = |d: &Dim1| d.s == 1 && d.d == 1 && d.out == d.input && d.input > 0;
    same(dh) && same(dw) && dh.k * dw.k <= MAX_TAPS
}

impl Flat {
    /// The plan for [`applies`]' geometries; `rows` and `cols` are `Dim1::taps` per output
    /// row and column, and the divisor is their product of taps inside the input, or with
    /// `count_include_pad`, inside the padded extent (as the scalar path divides).
    pub fn new(
        dh: &Dim1,
        dw: &Dim1,
        rows: &[(isize, Range<usize>, usize)],
        cols: &[(isize, Range<usize>, usize)],
        count_include_pad: bool,
    ) -> Flat {
        let (h, w) = (dh.input, dw.input);
        let hw = h * w;
        let planes = if hw < 16 { 16 / gcd(hw, 16) } else { 1 };
        let len = planes * hw;
        let blocks = len.div_ceil(16);
        let taps = dh.k * dw.k;
        let offsets = (0..dh.k)
            .flat_map(|i| (0..dw.k).map(move |j| (i as isize - dh.pb as isize) * w as isize + j as isize - dw.pb as isize))
            .collect();
        let mut masks = vec![0u16; blocks * taps];
        let mut counts = vec![[1.0f32; 16]; blocks];
        for p in 0..len {
            let (b, lane, r, c) = (p / 16, p % 16, p % hw / w, p % w);
            let (rows_in, cols_in) = (&rows[r].1, &cols[c].1);
            for i in rows_in.clone() {
                for j in cols_in.clone() {
                    masks[b * taps + i * dw.k + j] |= 1 << lane;
                }
            }
            counts[b][lane] = if count_include_pad {
                (rows[r].2 * cols[c].2) as f32
            } else {
                (rows_in.len() * cols_in.len()) as f32
            };
        }
        Flat { offsets, masks, counts, planes, geometry: (*dh, *dw) }
    }

    /// The rows' and the columns' geometry this plan is for.
    pub fn geometry(&self) -> (Dim1, Dim1) {
        self.geometry
    }

    /// Planes in a run: [`Flat::run`] takes this many (fewer at the end).
    pub fn planes(&self) -> usize {
        self.planes
    }

    /// One run of planes: `x` the inputs of at most [`Flat::planes`] whole planes, `o`
    /// valid for as many outputs (which may be uninitialised).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds whole planes of the geometry this plan was made
    /// for, at most [`Flat::planes`] of them; `o` is valid for `x.len()` writes.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn run(&self, x: &[f32], o: *mut f32) {
        use std::arch::x86_64::*;
        let taps = self.offsets.len();
        debug_assert!(x.len() <= self.counts.len() * 16);
        let (xp, len) = (x.as_ptr(), x.len());
        for (b, (masks, count)) in self.masks.chunks_exact(taps).zip(&self.counts).enumerate() {
            let p = 16 * b;
            if p >= len {
                break;
            }
            // Lanes past the last plane (a run's last, short block) read nothing.
            let n = (len - p).min(16);
            let valid = if n == 16 { u16::MAX } else { lanes(0, n as isize) };
            let at = xp.wrapping_add(p);
            let acc = if n == 16 { self.sum(at, masks, u16::MAX) } else { self.sum(at, masks, valid) };
            let v = _mm512_div_ps(acc, _mm512_loadu_ps(count.as_ptr()));
            // A run's last block stores only the lanes of its planes.
            if n == 16 {
                _mm512_storeu_ps(o.add(p), v);
            } else {
                _mm512_mask_storeu_ps(o.add(p), valid, v);
            }
        }
    }

    /// The sum of the taps of the 16 positions from `at`, each tap's load masked by its
    /// mask and `valid` (all lanes in whole blocks, a constant, so the `and` folds away).
    ///
    /// # Safety
    /// As [`Flat::run`]; `masks` is the block's at `at`, and `valid` keeps only lanes of
    /// the run's planes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn sum(&self, at: *const f32, masks: &[u16], valid: u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let mut acc = _mm512_setzero_ps();
        for (&off, &m) in self.offsets.iter().zip(masks) {
            // Masked-out lanes are not read (no fault past the plane), so the pointer
            // may lie outside it: hence the wrapping offset.
            acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m & valid, at.wrapping_offset(off)));
        }
        acc
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
