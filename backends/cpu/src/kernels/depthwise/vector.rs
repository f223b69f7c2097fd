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
    /// A plane's input rows with their padding columns written out as zeros (and for
    /// stride 2 split into even and odd columns).
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What one output row sums: per input row it reads, the row and its kernel row's weights;
/// per kernel column, where output 0 reads in a row.
struct Row<'a> {
    inputs: &'a [(&'a [f32], &'a [f32])],
    taps: &'a [usize],
    bias: f32,
    residual: Option<&'a [f32]>,
    clip: Option<(f32, f32)>,
    act: Option<&'a Activation>,
}

/// The plane as [`super::plane`] defines it, for stride 1 or 2 along the width; `false`
/// (nothing written) when this CPU lacks AVX2 or FMA, or the padded rows would take more
/// memory than the plane's input and output justify.
///
/// Each input row is copied once with its padding columns as zeros and enough zeros after
/// it for the last block of 8 outputs, so that every output is computed by the vector
/// loop with no bounds check. Stride 2 splits each padded row into its even and its odd
/// columns: tap offset `q` of output `o` reads padded column `2·o + q`, that is column
/// `o + q div 2` of the half `q mod 2`, again a contiguous run.
pub(super) fn plane(
    g: &Geometry,
    x: &[f32],
    k: &[f32],
    bias: f32,
    post: &Post,
    o: &mut [f32],
) -> bool {
    if !available() {
        return false;
    }
    if g.ow == 0 || g.oh == 0 {
        return true;
    }
    let blocks = g.ow.div_ceil(8) * 8;
    // Padded columns any output block reads, and each padded row's stored length.
    let reach = (blocks - 1) * g.sw + (g.kw - 1) * g.dw + 1;
    let width = reach.max(g.pw + g.w);
    let half = width.div_ceil(2);
    let stored = if g.sw == 1 { width } else { 2 * half };
    if g.h * stored > 4 * (g.h * g.w + g.p()) + 4096 {
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
    PADDED.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(g.h * stored, 0.0);
        // Stride 2: the padded row, rounded up to whole 16-column blocks for the split.
        let mut padded = vec![0.0f32; if g.sw == 1 { 0 } else { half.div_ceil(8) * 16 }];
        for (src, dst) in x[..g.h * g.w]
            .chunks_exact(g.w)
            .zip(buf.chunks_exact_mut(stored))
        {
            let row = if g.sw == 1 {
                &mut dst[..]
            } else {
                &mut padded[..]
            };
            row[..g.pw].fill(0.0);
            row[g.pw..g.pw + g.w].copy_from_slice(src);
            row[g.pw + g.w..].fill(0.0);
            if g.sw == 2 {
                // SAFETY: `available()` was checked; `padded` holds 16 columns per 8 of
                // each half.
                unsafe { deinterleave(&padded, dst, half) };
            }
        }
        let mut inputs: Vec<(&[f32], &[f32])> = Vec::with_capacity(g.kh);
        for (oh, orow) in o.chunks_exact_mut(g.ow).enumerate() {
            inputs.clear();
            for i in 0..g.kh {
                let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
                if ih >= 0 && (ih as usize) < g.h {
                    let ih = ih as usize;
                    inputs.push((
                        &buf[ih * stored..(ih + 1) * stored],
                        &k[i * g.kw..(i + 1) * g.kw],
                    ));
                }
            }
            let row = Row {
                inputs: &inputs,
                taps: &taps,
                bias,
                residual: post.residual.map(|r| &r[oh * g.ow..(oh + 1) * g.ow]),
                clip: post.clip,
                act: post.act,
            };
            // SAFETY: `available()` was checked by the caller; every input row holds
            // `stored` ≥ the columns read for outputs up to `blocks`.
            unsafe { output_row(&row, orow) };
        }
    });
    true
}

/// Splits `padded` into its even columns (`dst[..half]`) and odd ones (`dst[half..]`).
///
/// # Safety
/// AVX2 must be available, `padded` must hold `16 · ⌈half / 8⌉` columns and `dst` `2·half`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn deinterleave(padded: &[f32], dst: &mut [f32], half: usize) {
    use std::arch::x86_64::*;
    debug_assert!(padded.len() >= half.div_ceil(8) * 16 && dst.len() >= 2 * half);
    let (even, odd) = dst.split_at_mut(half);
    let mut e = 0;
    while e < half {
        let a = _mm256_loadu_ps(padded.as_ptr().add(2 * e));
        let b = _mm256_loadu_ps(padded.as_ptr().add(2 * e + 8));
        // Per 128-bit lane [a0 a2 b0 b2 | a4 a6 b4 b6]; the permute puts the a's first.
        let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0b10_00_10_00>(a, b),
        )));
        let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0b11_01_11_01>(a, b),
        )));
        if e + 8 <= half {
            _mm256_storeu_ps(even.as_mut_ptr().add(e), ev);
            _mm256_storeu_ps(odd.as_mut_ptr().add(e), od);
        } else {
            let mut tile = [0.0f32; 16];
            _mm256_storeu_ps(tile.as_mut_ptr(), ev);
            _mm256_storeu_ps(tile.as_mut_ptr().add(8), od);
            even[e..].copy_from_slice(&tile[..half - e]);
            odd[e..].copy_from_slice(&tile[8..8 + half - e]);
        }
        e += 8;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn deinterleave(_padded: &[f32], _dst: &mut [f32], _half: usize) {}

/// One output row in blocks of 32, then 16, then 8; the last partial block goes through a
/// stack tile.
///
/// # Safety
/// AVX2 and FMA must be available, and every input row must hold the columns that outputs
/// up to the row length rounded up to 8 read at each tap offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_row(row: &Row, o: &mut [f32]) {
    // With the kernel width a constant the tap loop unrolls: on 14-wide rows (two blocks
    // of 8) the loop's own instructions cost as much as the FMAs.
    match row.taps.len() {
        3 => output_row_k::<3>(row, o),
        5 => output_row_k::<5>(row, o),
        _ => output_row_k::<0>(row, o),
    }
}

/// [`output_row`] for kernels `KW` wide (0: any width, read from the row).
///
/// # Safety
/// As [`output_row`]; with `KW` > 0 the row's taps and weight rows hold `KW` entries.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_row_k<const KW: usize>(row: &Row, o: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = o.len();
    let kw = if KW == 0 { row.taps.len() } else { KW };
    debug_assert!(row.taps.len() == kw && row.inputs.iter().all(|(_, w)| w.len() == kw));
    let b = _mm256_set1_ps(row.bias);
    let clip = row
        .clip
        .map(|(l, h)| (_mm256_set1_ps(l), _mm256_set1_ps(h)));
    // Residual, then max(lo, v) and min(hi, ·): with the value as the second operand a
    // NaN passes through both, as in the portable path.
    // `c`: where the residual is read (`None`: already added).
    let finish8 = |v: __m256, c: Option<usize>| -> __m256 {
        let v = match (row.residual, c) {
            // SAFETY: the residual row has the output row's length and c + 8 ≤ n.
            (Some(r), Some(c)) => _mm256_add_ps(v, unsafe { _mm256_loadu_ps(r.as_ptr().add(c)) }),
            _ => v,
        };
        let v = match clip {
            Some((l, h)) => _mm256_min_ps(h, _mm256_max_ps(l, v)),
            None => v,
        };
        match row.act {
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
            for (input, w) in row.inputs {
                for j in 0..kw {
                    let wv = _mm256_set1_ps(*w.get_unchecked(j));
                    let p = input.as_ptr().add(*row.taps.get_unchecked(j) + $c);
                    let set = if KW == 0 { 0 } else { j % 3 };
                    for k in 0..$nb {
                        acc[set][k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p.add(8 * k)), acc[set][k]);
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
                _mm256_storeu_ps(o.as_mut_ptr().add(c), finish8(a, Some(c)));
            } else {
                let mut tile = [0.0f32; 8];
                if let Some(r) = row.residual {
                    tile[..n - c].copy_from_slice(&r[c..n]);
                    a = _mm256_add_ps(a, _mm256_loadu_ps(tile.as_ptr()));
                }
                _mm256_storeu_ps(tile.as_mut_ptr(), finish8(a, None));
                o[c..n].copy_from_slice(&tile[..n - c]);
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

#[cfg(not(target_arch = "x86_64"))]
unsafe fn output_row(_row: &Row, _o: &mut [f32]) {}
