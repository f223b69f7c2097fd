//! Depthwise planes with AVX2 + FMA, stride 1 or 2 (stride 2 on split columns, see
//! [`super::split_columns`]).
//!
//! The portable loop adds one tap at a time to a whole output row, so each output element
//! is loaded and stored once per tap (9 times for 3×3) through 4-wide SSE without FMA.
//! Here 32 outputs stay in four ymm accumulators while every tap of every kernel row is
//! added with one FMA per 8 outputs, and the residual and clip are applied before the
//! single store. The input rows are first copied with their padding as zeros, so no
//! output needs a bounds check per tap (a scalar loop over a row's first and last columns
//! cost more than the vector loop over the rest of a 56-wide row).

use super::super::activation::Activation;
use super::super::im2col::Geometry;
use super::Post;

/// Whether this CPU runs the vector path (checked once; the answer is cached by std).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
thread_local! {
    /// A plane's padded rows (zeros around the input, and for stride 2 each row split
    /// into even and odd columns).
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What every output of a plane gets after its taps: the bias first, the clip and the
/// activation last (the residual, per output, comes between).
#[derive(Clone, Copy)]
struct Finish<'a> {
    bias: f32,
    clip: Option<(f32, f32)>,
    act: Option<&'a Activation>,
}

/// The padded rows of a plane and the kernel that reads them.
struct Rows<'a> {
    padded: *const f32,
    /// Columns per padded row.
    stored: usize,
    kh: usize,
    /// From one kernel row's padded row to the next's (dilation × `stored`).
    step: usize,
    /// Per kernel column, where output 0 reads in a padded row.
    taps: &'a [usize],
    /// The kernel, `kh` rows of `taps.len()`.
    k: &'a [f32],
}

/// The plane as [`super::plane`] defines it, for stride 1 or 2 along the width, written to
/// `o`; `false` (nothing written) when this CPU lacks AVX2 or FMA, or the padded rows
/// would take more memory than the plane's input and output justify.
///
/// The input is first copied into padded rows: `ph` rows of zeros, the input rows with
/// their padding columns as zeros and enough zeros after them for the last block of 8
/// outputs, then zero rows up to the last row a kernel row reaches. Output row `oh`'s
/// kernel row `i` is then padded row `oh·sh + i·dh`, so every output is computed by the
/// vector loop with no bounds check and no per-row bookkeeping (rows outside the image
/// add zeros; before, building each output row's list of input rows cost a third of the
/// time of the loop itself). Stride 2 splits each padded row into its even and its odd
/// columns: tap offset `q` of output `o` reads padded column `2·o + q`, that is column
/// `o + q div 2` of the half `q mod 2`, again a contiguous run.
///
/// # Safety
/// `o` must be valid for `g.p()` writes (it may be uninitialised); `post.residual`, if
/// any, must hold `g.p()` values.
pub(super) unsafe fn plane(
    g: &Geometry,
    x: &[f32],
    k: &[f32],
    bias: f32,
    post: &Post,
    o: *mut f32,
) -> bool {
    if !available() {
        return false;
    }
    if g.ow == 0 || g.oh == 0 {
        return true;
    }
    let blocks = g.ow.div_ceil(8) * 8;
    // Padded columns any output block reads; each padded row is stored in whole blocks
    // of 8 (stride 2: each half is), so the rows are written by whole vectors.
    let reach = (blocks - 1) * g.sw + (g.kw - 1) * g.dw + 1;
    let width = reach.max(g.pw + g.w);
    let half = width.div_ceil(2).div_ceil(8) * 8;
    let stored = if g.sw == 1 {
        width.div_ceil(8) * 8
    } else {
        2 * half
    };
    let need = (g.oh - 1)
        .checked_mul(g.sh)
        .and_then(|r| r.checked_add((g.kh - 1).checked_mul(g.dh)?))
        .and_then(|r| (r + 1).checked_mul(stored));
    let Some(need) = need else {
        return false;
    };
    // The row filler computes columns in i32 lanes.
    let fits = need <= 4 * (g.h * g.w + g.p()) + 4096 && stored + g.pw + g.w < i32::MAX as usize;
    if !fits
        || k.len() < g.kh * g.kw
        || x.len() < g.h * g.w
        || post.residual.is_some_and(|r| r.len() < g.p())
    {
        return false;
    }
    let taps: Vec<usize> = (0..g.kw)
        .map(|j| {
            let q = j * g.dw;
            if g.sw == 1 {
                q
            } else {
                (q % 2) * half + q / 2
            }
        })
        .collect();
    let fin = Finish {
        bias,
        clip: post.clip,
        act: post.act,
    };
    PADDED.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
        let padded = &mut buf[..need];
        for (r, dst) in padded.chunks_exact_mut(stored).enumerate() {
            let src = r
                .checked_sub(g.ph)
                .filter(|&i| i < g.h)
                .map_or(&[][..], |i| &x[i * g.w..(i + 1) * g.w]);
            // SAFETY: `available()` was checked; `dst` holds whole blocks of 8 (per half
            // for stride 2); the columns fit in i32.
            fill_row(src, g.pw, g.sw, dst);
        }
        let rows = Rows {
            padded: padded.as_ptr(),
            stored,
            kh: g.kh,
            step: g.dh * stored,
            taps: &taps,
            k,
        };
        // SAFETY: `available()` was checked; every padded row holds `stored` columns,
        // enough for outputs up to `blocks` at every tap offset, and the padded rows reach
        // the last one any output row reads; `o` and the residual hold `g.p()` values.
        match g.kw {
            3 => plane_k::<3>(g, &rows, &fin, post.residual, o),
            5 => plane_k::<5>(g, &rows, &fin, post.residual, o),
            _ => plane_k::<0>(g, &rows, &fin, post.residual, o),
        }
    });
    true
}

/// Every output row of a plane, for kernels `KW` wide (0: any width, read from the
/// taps). With the kernel width a constant the tap loop unrolls: on 14-wide rows (two
/// blocks of 8) the loop's own instructions cost as much as the FMAs.
///
/// # Safety
/// As [`plane`] guarantees once it has filled the padded rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_k<const KW: usize>(
    g: &Geometry,
    rows: &Rows,
    fin: &Finish,
    residual: Option<&[f32]>,
    o: *mut f32,
) {
    for oh in 0..g.oh {
        let top = rows.padded.add(oh * g.sh * rows.stored);
        let r = residual.map(|r| r.as_ptr().add(oh * g.ow));
        output_row::<KW>(rows, top, fin, r, o.add(oh * g.ow), g.ow);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn plane_k<const KW: usize>(
    _g: &Geometry,
    _rows: &Rows,
    _fin: &Finish,
    _residual: Option<&[f32]>,
    _o: *mut f32,
) {
}

/// Writes one padded row: column `c` of the padded row is input column `c - pw` (zero
/// outside the input; an empty `src` is a row of zeros). Stride 1 stores the padded row
/// as it is; stride 2 stores its even columns in `dst`'s first half and its odd ones in
/// the second. One pass of vector loads and stores (a `memcpy` and two fills per row cost
/// more than the plane's FMAs on 14-wide rows). A block across the input's edges is the
/// nearest 8 columns inside the row, moved into place by a lane permute with the lanes
/// outside zeroed: `vmaskmovps` loads, tried first, took up to a hundred cycles each on
/// this AMD core in a whole model, and a block gathered into a stack tile waits for the
/// tile's stores to reach the load.
///
/// # Safety
/// AVX2 must be available; `dst.len()` must be a multiple of 8 (stride 2: of 16);
/// `dst.len() + pw` and `src.len()` must fit in an i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_row(src: &[f32], pw: usize, sw: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = dst.as_mut_ptr();
    if src.is_empty() {
        for c in (0..dst.len()).step_by(8) {
            _mm256_storeu_ps(d.add(c), _mm256_setzero_ps());
        }
        return;
    }
    if src.len() < 8 {
        // Rows narrower than a vector (7×7 planes) column by column.
        let half = dst.len() / 2;
        for c in 0..dst.len() {
            let v = c
                .checked_sub(pw)
                .and_then(|i| src.get(i))
                .copied()
                .unwrap_or(0.0);
            let at = match sw {
                1 => c,
                _ if c % 2 == 0 => c / 2,
                _ => half + c / 2,
            };
            if at < dst.len() {
                *d.add(at) = v;
            }
        }
        return;
    }
    let w = src.len() as isize;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let below = _mm256_set1_epi32(-1);
    let end = _mm256_set1_epi32(w as i32);
    // The 8 input columns from column `at` (possibly before or past the row).
    let load = |at: isize| -> __m256 {
        if at >= 0 && at + 8 <= w {
            // SAFETY: columns at..at + 8 lie inside `src`.
            unsafe { _mm256_loadu_ps(src.as_ptr().offset(at)) }
        } else {
            let base = at.clamp(0, w - 8);
            // SAFETY: w ≥ 8, so columns base..base + 8 lie inside `src`.
            let v = unsafe { _mm256_loadu_ps(src.as_ptr().offset(base)) };
            // Lane l takes column at + l, which is lane at + l - base of v when inside.
            let moved = _mm256_permutevar8x32_ps(
                v,
                _mm256_add_epi32(lanes, _mm256_set1_epi32((at - base) as i32)),
            );
            let column = _mm256_add_epi32(lanes, _mm256_set1_epi32(at as i32));
            let inside = _mm256_and_si256(
                _mm256_cmpgt_epi32(column, below),
                _mm256_cmpgt_epi32(end, column),
            );
            _mm256_and_ps(moved, _mm256_castsi256_ps(inside))
        }
    };
    let pw = pw as isize;
    if sw == 1 {
        for c in (0..dst.len()).step_by(8) {
            _mm256_storeu_ps(d.add(c), load(c as isize - pw));
        }
        return;
    }
    let half = dst.len() / 2;
    for e in (0..half).step_by(8) {
        let at = 2 * e as isize - pw;
        let (a, b) = (load(at), load(at + 8));
        // Per 128-bit lane [a0 a2 b0 b2 | a4 a6 b4 b6]; the permute puts the a's first.
        let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0b10_00_10_00>(a, b),
        )));
        let odd = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0b11_01_11_01>(a, b),
        )));
        _mm256_storeu_ps(d.add(e), even);
        _mm256_storeu_ps(d.add(half + e), odd);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn fill_row(_src: &[f32], _pw: usize, _sw: usize, _dst: &mut [f32]) {}

/// One output row (`n` outputs at `o`, the kernel's first row reading the padded row at
/// `top`) in blocks of 32, then 16, then 8; the last partial block goes through a stack
/// tile.
///
/// # Safety
/// AVX2 and FMA must be available; the `kh` padded rows from `top` (`rows.step` apart)
/// hold the columns that outputs up to `n` rounded up to 8 read at each tap offset; `o`
/// and `residual` hold `n` values.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_row<const KW: usize>(
    rows: &Rows,
    top: *const f32,
    fin: &Finish,
    residual: Option<*const f32>,
    o: *mut f32,
    n: usize,
) {
    use std::arch::x86_64::*;
    let kw = if KW == 0 { rows.taps.len() } else { KW };
    let b = _mm256_set1_ps(fin.bias);
    let clip = fin
        .clip
        .map(|(l, h)| (_mm256_set1_ps(l), _mm256_set1_ps(h)));
    // Residual, then max(lo, v) and min(hi, ·): with the value as the second operand a
    // NaN passes through both, as in the portable path.
    // `c`: where the residual is read (`None`: already added).
    let finish8 = |v: __m256, c: Option<usize>| -> __m256 {
        let v = match (residual, c) {
            // SAFETY: the residual row holds n values and c + 8 ≤ n.
            (Some(r), Some(c)) => _mm256_add_ps(v, unsafe { _mm256_loadu_ps(r.add(c)) }),
            _ => v,
        };
        let v = match clip {
            Some((l, h)) => _mm256_min_ps(h, _mm256_max_ps(l, v)),
            None => v,
        };
        match fin.act {
            // SAFETY: AVX2 and FMA are available (this function's contract).
            Some(a) => unsafe { super::super::activation::avx2::apply(a, v) },
            None => v,
        }
    };
    // The sums of the `NB` blocks of 8 outputs at `c`. Taps go round-robin to three sets
    // of accumulators (the tap index is a constant once the loop unrolls), added at the
    // end: one chain of 9 or 25 dependent FMAs per block would wait on the FMA's latency
    // (a 14-wide row has only two blocks to interleave).
    macro_rules! sums {
        ($c:expr, $nb:literal) => {{
            let zero = _mm256_setzero_ps();
            let mut acc = [[zero; $nb]; 3];
            acc[0] = [b; $nb];
            for i in 0..rows.kh {
                let input = top.add(i * rows.step + $c);
                let w = rows.k.as_ptr().add(i * kw);
                for j in 0..kw {
                    let wv = _mm256_set1_ps(*w.add(j));
                    let p = input.add(*rows.taps.get_unchecked(j));
                    let set = if KW == 0 { 0 } else { j % 3 };
                    for k in 0..$nb {
                        acc[set][k] =
                            _mm256_fmadd_ps(wv, _mm256_loadu_ps(p.add(8 * k)), acc[set][k]);
                    }
                }
            }
            let mut out = [zero; $nb];
            for k in 0..$nb {
                out[k] = _mm256_add_ps(_mm256_add_ps(acc[0][k], acc[1][k]), acc[2][k]);
            }
            out
        }};
    }
    // Stores the block of outputs at `c`, the last lanes through a tile: the residual's
    // valid part is copied in (the lanes past the row compute on zeros and are dropped),
    // and the clip and activation run on the vector as for every other block.
    macro_rules! store {
        ($a:expr, $c:expr) => {{
            let (mut a, c) = ($a, $c);
            if c + 8 <= n {
                _mm256_storeu_ps(o.add(c), finish8(a, Some(c)));
            } else {
                let mut tile = [0.0f32; 8];
                if let Some(r) = residual {
                    std::ptr::copy_nonoverlapping(r.add(c), tile.as_mut_ptr(), n - c);
                    a = _mm256_add_ps(a, _mm256_loadu_ps(tile.as_ptr()));
                }
                _mm256_storeu_ps(tile.as_mut_ptr(), finish8(a, None));
                std::ptr::copy_nonoverlapping(tile.as_ptr(), o.add(c), n - c);
            }
        }};
    }
    let mut c = 0;
    while c + 32 <= n {
        let [a0, a1, a2, a3] = sums!(c, 4);
        store!(a0, c);
        store!(a1, c + 8);
        store!(a2, c + 16);
        store!(a3, c + 24);
        c += 32;
    }
    while c + 8 < n {
        let [a0, a1] = sums!(c, 2);
        store!(a0, c);
        store!(a1, c + 8);
        c += 16;
    }
    if c < n {
        let [a0] = sums!(c, 1);
        store!(a0, c);
    }
}
