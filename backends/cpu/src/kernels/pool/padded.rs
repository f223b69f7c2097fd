//! Pooling through a padded copy of each plane (see [`Padded`]).

use super::{Dim1, Pool};

/// Planes of at most this many outputs go eight at a time, one plane per vector lane
/// ([`Padded::planes8`]): one at a time, a 3×3 or 8×8 plane is a few vectors of work
/// behind a fixed cost per plane (inception's 2048 3×3 planes took 0.2 ms where
/// onnxruntime, channels in lanes, takes 0.015). One thread, median ms, same run: 3×3
/// average on 2048×3² 0.21 → 0.04, on 768×8² 0.24 → 0.09, on 288×17² 0.18 → 0.15;
/// past about 20×20 outputs the eight padded planes outgrow L1 and the plane-at-a-time
/// path won (288×35²: 0.38 against 0.62). Since the lanes are filled and emptied by
/// register transposes and the 3×3 taps are written out, eight planes at a time win at
/// any size with AVX2 (one thread, ms: 3×3/2 max on 64×77² 0.149 → 0.124, on 64×112²
/// 0.292 → 0.266, 3×3/1 average on 288×35² 0.35 → 0.29), which the caller takes when the
/// planes come in whole groups of eight (a last partial group would run on one thread,
/// element by element).
pub(super) const SMALL_PLANE: usize = 400;

thread_local! {
    /// Eight planes padded, one `[f32; 8]` per position, and their outputs the same way.
    static LANES: std::cell::RefCell<(Vec<[f32; 8]>, Vec<[f32; 8]>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    /// A padded plane, and one output row rounded up to whole vectors.
    static PADDED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// 2-D pooling without dilation, at column stride 1 or 2, where every window holds an
/// input position, through a padded copy of each plane: every output column then takes
/// the vector path, edges included (at 35×35 the two edge columns and the scalar
/// leftovers of each row took more time than the 32 vector columns). At stride 2 each
/// padded row is stored as its even columns then its odd ones, so every tap reads a
/// contiguous run.
///
/// The padding repeats the nearest input row or column for max pooling and is zero for
/// average pooling, which keeps results bit-identical to the scalar path: a max window
/// then meets its input positions in the same order of first appearance (its first tap
/// is its first input position, and a repeat never compares greater than itself), and
/// adding 0 to a sum that started from 0 + e changes nothing. Averages divide by the
/// scalar path's count per output.
pub(super) struct Padded {
    max: bool,
    dh: Dim1,
    dw: Dim1,
    /// Output columns rounded up to a multiple of 8.
    cols: usize,
    /// Padded columns the rounded-up outputs read, and padded rows.
    span: usize,
    height: usize,
    /// Where tap j of output column 0 starts in a stored row, and the stored row's length.
    offsets: Vec<usize>,
    width: usize,
    /// For average pooling, each output's count as the scalar path divides by it.
    divisors: Vec<f32>,
}

impl Padded {
    pub(super) fn new(pool: &Pool, dh: &Dim1, dw: &Dim1) -> Option<Padded> {
        if dh.d != 1 || dw.d != 1 || dh.input == 0 || dw.input == 0 || !(1..=2).contains(&dw.s) {
            return None;
        }
        let rows: Vec<_> = (0..dh.out).map(|o| dh.taps(o)).collect();
        let cols: Vec<_> = (0..dw.out).map(|o| dw.taps(o)).collect();
        if rows.iter().chain(&cols).any(|t| t.1.is_empty()) {
            return None;
        }
        let count = |t: &(isize, std::ops::Range<usize>, usize)| {
            if pool.count_include_pad {
                t.2
            } else {
                t.1.len()
            }
        };
        let out_cols = dw.out.next_multiple_of(8);
        let span = (out_cols - 1) * dw.s + dw.k;
        let even = span.div_ceil(2);
        let (offsets, width) = if dw.s == 1 {
            ((0..dw.k).collect(), span)
        } else {
            (
                (0..dw.k)
                    .map(|j| if j % 2 == 0 { j / 2 } else { even + j / 2 })
                    .collect(),
                span.next_multiple_of(2),
            )
        };
        Some(Padded {
            max: pool.max,
            dh: *dh,
            dw: *dw,
            cols: out_cols,
            span,
            height: (dh.out - 1) * dh.s + dh.k,
            offsets,
            width,
            divisors: if pool.max {
                Vec::new()
            } else {
                rows.iter()
                    .flat_map(|r| cols.iter().map(move |c| (count(r) * count(c)) as f32))
                    .collect()
            },
        })
    }

    /// `lanes` (at most 8) planes at once: `x` holds their input planes back to back and
    /// `o` their outputs. The padded planes are interleaved, one position's 8 values side
    /// by side, and each output folds its taps in the order [`Padded::plane`] does.
    pub(super) fn planes8(&self, avx2: bool, x: &[f32], o: &mut [f32], lanes: usize) {
        if lanes == 0 {
            return;
        }
        let (mut buf, mut outs) = LANES.with(|b| b.take());
        let span = (self.dw.out - 1) * self.dw.s + self.dw.k;
        buf.resize(self.height * span, [0.0; 8]);
        let whole = lanes == 8
            && self.dw.input >= 8
            && x.len() >= 8 * self.dh.input * self.dw.input
            && o.len() >= 8 * self.dh.out * self.dw.out;
        #[cfg(target_arch = "x86_64")]
        if avx2 && whole {
            outs.resize(self.dh.out * self.dw.out, [0.0; 8]);
            // SAFETY: `avx2` is set only for the AVX2+FMA device, which checked the CPU.
            unsafe { self.planes8_avx2_whole(x, o, lanes, &mut buf, &mut outs, span) };
        } else if avx2 {
            // SAFETY: as above.
            unsafe { self.planes8_avx2(x, o, lanes, &mut buf, &mut outs, span) };
        } else {
            self.planes8_any::<false, false>(x, o, lanes, &mut buf, &mut outs, span);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (avx2, whole);
            self.planes8_any::<false, false>(x, o, lanes, &mut buf, &mut outs, span);
        }
        LANES.with(|b| b.replace((buf, outs)));
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn planes8_avx2(
        &self,
        x: &[f32],
        o: &mut [f32],
        lanes: usize,
        buf: &mut [[f32; 8]],
        outs: &mut [[f32; 8]],
        span: usize,
    ) {
        if lanes == 8
            && x.len() >= 8 * self.dh.input * self.dw.input
            && x.len() <= i32::MAX as usize
        {
            self.planes8_any::<false, true>(x, o, lanes, buf, outs, span)
        } else {
            self.planes8_any::<false, false>(x, o, lanes, buf, outs, span)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn planes8_avx2_whole(
        &self,
        x: &[f32],
        o: &mut [f32],
        lanes: usize,
        buf: &mut [[f32; 8]],
        outs: &mut [[f32; 8]],
        span: usize,
    ) {
        self.planes8_any::<true, true>(x, o, lanes, buf, outs, span)
    }

    /// With `WHOLE` (AVX2, all eight lanes, rows of at least 8), the copies into and out of the lanes go eight
    /// positions at a time through an 8×8 register transpose (one plane's row of eight
    /// values becomes one value in each of eight positions): element by element they took
    /// most of inception's 17² average pools. Rows shorter than 8 (3×3 planes) have no
    /// run of eight to copy, and the transposed outputs did not pay there.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn planes8_any<const WHOLE: bool, const GATHER: bool>(
        &self,
        x: &[f32],
        o: &mut [f32],
        lanes: usize,
        buf: &mut [[f32; 8]],
        outs: &mut [[f32; 8]],
        span: usize,
    ) {
        let (dh, dw) = (&self.dh, &self.dw);
        let (plane_in, plane_out) = (dh.input * dw.input, dh.out * dw.out);
        // Padded position (r, c) reads input (r - pb, c - pb): the nearest input position
        // for max pooling, zero for average pooling outside the input.
        let source = |p: usize, pb: usize, n: usize| -> Option<usize> {
            match p.checked_sub(pb) {
                Some(i) if i < n => Some(i),
                _ if self.max => Some(p.saturating_sub(pb).min(n - 1)),
                _ => None,
            }
        };
        for (r, row) in buf.chunks_exact_mut(span).enumerate() {
            let sr = source(r, dh.pb, dh.input);
            // Padded columns pb.. hold input columns 0..: eight at a time where they fit.
            let mut end = dw.pb;
            if let (true, Some(sr)) = (WHOLE, sr) {
                while end + 8 <= span && end + 8 <= dw.pb + dw.input {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX2 (only `planes8_avx2_whole` sets `WHOLE`, for 8 whole
                    // planes); the 8 planes' rows hold input columns end - pb .. end - pb + 8,
                    // and `row` positions end .. end + 8.
                    unsafe {
                        lanes_in(
                            x.as_ptr().add(sr * dw.input + end - dw.pb),
                            plane_in,
                            row.as_mut_ptr().add(end),
                        )
                    };
                    end += 8;
                }
            }
            let copied = if WHOLE && sr.is_some() {
                dw.pb..end
            } else {
                0..0
            };
            for (c, cell) in row.iter_mut().enumerate() {
                if copied.contains(&c) {
                    continue;
                }
                *cell = [0.0; 8];
                if let (Some(sr), Some(sc)) = (sr, source(c, dw.pb, dw.input)) {
                    #[cfg(target_arch = "x86_64")]
                    if GATHER {
                        // SAFETY: AVX2 (only the `*_avx2` functions set `GATHER`), and the 8
                        // planes (`plane_in` apart, all inside `x`, whose length fits i32)
                        // each hold position sr·input + sc.
                        unsafe { gather8(x.as_ptr().add(sr * dw.input + sc), plane_in, cell) };
                        continue;
                    }
                    for (l, v) in cell.iter_mut().enumerate().take(lanes) {
                        *v = x[l * plane_in + sr * dw.input + sc];
                    }
                }
            }
        }
        for oh in 0..dh.out {
            for ow in 0..dw.out {
                let mut v = [0.0f32; 8];
                let mut started = false;
                if dh.k == 3 && dw.k == 3 {
                    // The common 3×3 window written out: the generic loops' control and
                    // their test of `started` per tap cost more than the taps.
                    let base = oh * dh.s * span + ow * dw.s;
                    let rows = &buf[base..base + 2 * span + 3];
                    let taps = [
                        &rows[0],
                        &rows[1],
                        &rows[2],
                        &rows[span],
                        &rows[span + 1],
                        &rows[span + 2],
                        &rows[2 * span],
                        &rows[2 * span + 1],
                        &rows[2 * span + 2],
                    ];
                    let zero = if self.max { -0.0 } else { 0.0 };
                    v.iter_mut().zip(taps[0]).for_each(|(a, &e)| *a = zero + e);
                    for e in &taps[1..] {
                        if self.max {
                            v.iter_mut()
                                .zip(*e)
                                .for_each(|(a, &e)| *a = if e > *a { e } else { *a });
                        } else {
                            v.iter_mut().zip(*e).for_each(|(a, &e)| *a += e);
                        }
                    }
                    started = true;
                }
                for i in 0..if started { 0 } else { dh.k } {
                    let base = (oh * dh.s + i) * span + ow * dw.s;
                    for e in &buf[base..base + dw.k] {
                        match (started, self.max) {
                            // 0 + e, as the scalar paths start: -0.0 becomes 0.0 in a sum.
                            (false, true) => v.iter_mut().zip(e).for_each(|(a, &e)| *a = -0.0 + e),
                            (false, false) => v.iter_mut().zip(e).for_each(|(a, &e)| *a = 0.0 + e),
                            (true, true) => v
                                .iter_mut()
                                .zip(e)
                                .for_each(|(a, &e)| *a = if e > *a { e } else { *a }),
                            (true, false) => v.iter_mut().zip(e).for_each(|(a, &e)| *a += e),
                        }
                        started = true;
                    }
                }
                let at = oh * dw.out + ow;
                if !self.max {
                    let n = self.divisors[at];
                    v.iter_mut().for_each(|a| *a /= n);
                }
                if WHOLE {
                    outs[at] = v;
                } else {
                    for (l, &val) in v.iter().enumerate().take(lanes) {
                        o[l * plane_out + at] = val;
                    }
                }
            }
        }
        if !WHOLE {
            return;
        }
        let mut at = 0;
        {
            while at + 8 <= plane_out {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 (only `planes8_avx2_whole` sets `WHOLE`, for 8 whole
                // planes); positions at .. at + 8 of `outs` and of each output plane in `o`.
                unsafe {
                    lanes_out(outs.as_ptr().add(at), o.as_mut_ptr().add(at), plane_out)
                };
                at += 8;
            }
        }
        for (a, v) in outs.iter().enumerate().take(plane_out).skip(at) {
            for (l, &val) in v.iter().enumerate().take(lanes) {
                o[l * plane_out + a] = val;
            }
        }
    }

    /// One plane: `x` (input rows) into `o` (output rows).
    pub(super) fn plane(&self, avx2: bool, x: &[f32], o: &mut [f32]) {
        // Taken out of the thread-local rather than used inside `with`: a closure would
        // not be compiled for AVX2 with the function below.
        let (mut buf, mut row) = PADDED.with(|b| b.take());
        buf.resize(self.height * self.width, 0.0);
        row.resize(self.cols, 0.0);
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is set only for the AVX2+FMA device, which checked the CPU.
            unsafe { self.plane_avx2(x, o, &mut buf, &mut row) };
        } else {
            self.plane_any::<false>(x, o, &mut buf, &mut row);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = avx2;
            self.plane_any::<false>(x, o, &mut buf, &mut row);
        }
        PADDED.with(|b| b.replace((buf, row)));
    }

    /// [`Padded::plane`] compiled for AVX2 (the copy, the taps and the division).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn plane_avx2(&self, x: &[f32], o: &mut [f32], buf: &mut [f32], row: &mut [f32]) {
        self.plane_any::<true>(x, o, buf, row)
    }

    #[inline(always)]
    fn plane_any<const AVX2: bool>(
        &self,
        x: &[f32],
        o: &mut [f32],
        buf: &mut [f32],
        row: &mut [f32],
    ) {
        let (dh, dw) = (&self.dh, &self.dw);
        for (r, dst) in buf.chunks_exact_mut(self.width).enumerate() {
            let ri = r as isize - dh.pb as isize;
            let src = if (0..dh.input as isize).contains(&ri) {
                ri as usize
            } else if self.max {
                ri.clamp(0, dh.input as isize - 1) as usize
            } else {
                dst.fill(0.0);
                continue;
            };
            let src = &x[src * dw.input..(src + 1) * dw.input];
            let (edge_l, edge_r) = if self.max {
                (src[0], src[dw.input - 1])
            } else {
                (0.0, 0.0)
            };
            // Padded column c holds input column c - pb, or the edge value.
            let at = |c: usize| match c.checked_sub(dw.pb) {
                None => edge_l,
                Some(i) if i < dw.input => src[i],
                Some(_) => edge_r,
            };
            if dw.s == 1 {
                let left = dw.pb.min(self.span);
                let mid = (self.span - left).min(dw.input);
                dst[..left].fill(edge_l);
                dst[left..left + mid].copy_from_slice(&src[..mid]);
                dst[left + mid..].fill(edge_r);
            } else {
                let (even, odd) = dst.split_at_mut(self.span.div_ceil(2));
                // Stored column c of each half reads padded columns 2c and 2c + 1: inside
                // the input for c in lo..hi, a run of consecutive input pairs.
                let lo = dw.pb.div_ceil(2).min(odd.len());
                let hi = ((dw.input + dw.pb) / 2).clamp(lo, odd.len());
                // Past `beyond` both columns of a pair are right of the input.
                let beyond = (dw.input + dw.pb).div_ceil(2).clamp(hi, odd.len());
                for c in (0..lo).chain(hi..beyond) {
                    (even[c], odd[c]) = (at(2 * c), at(2 * c + 1));
                }
                even[beyond..].fill(edge_r);
                odd[beyond..].fill(edge_r);
                if even.len() > odd.len() {
                    // The last padded column of an odd span has no odd partner.
                    even[odd.len()] = at(2 * odd.len());
                }
                let pairs = &src[2 * lo - dw.pb..2 * hi - dw.pb];
                let mut done = 0;
                #[cfg(target_arch = "x86_64")]
                if AVX2 {
                    // SAFETY: only `plane_avx2` sets `AVX2`.
                    done = unsafe { split_pairs_avx2(pairs, &mut even[lo..hi], &mut odd[lo..hi]) };
                }
                let rest = pairs[2 * done..].chunks_exact(2);
                for ((e, o), pair) in even[lo + done..hi]
                    .iter_mut()
                    .zip(&mut odd[lo + done..hi])
                    .zip(rest)
                {
                    (*e, *o) = (pair[0], pair[1]);
                }
            }
        }
        for (oh, orow) in o.chunks_exact_mut(dw.out).enumerate() {
            let rows = &buf[oh * dh.s * self.width..(oh * dh.s + dh.k) * self.width];
            let mut c = 0;
            while c < self.cols {
                if c + 32 <= self.cols {
                    fold::<32>(
                        self.max,
                        rows,
                        self.width,
                        &self.offsets,
                        c,
                        &mut row[c..c + 32],
                    );
                    c += 32;
                } else {
                    fold::<8>(
                        self.max,
                        rows,
                        self.width,
                        &self.offsets,
                        c,
                        &mut row[c..c + 8],
                    );
                    c += 8;
                }
            }
            if self.max {
                orow.copy_from_slice(&row[..dw.out]);
            } else {
                let divisors = &self.divisors[oh * dw.out..(oh + 1) * dw.out];
                for ((d, &v), &n) in orow.iter_mut().zip(row.iter()).zip(divisors) {
                    *d = v / n;
                }
            }
        }
    }
}

/// The even elements of `pairs` into `even`, the odd ones into `odd`, sixteen at a time
/// (two shuffles and a swap of 64-bit quarters per half); element by element this copy
/// took most of a stride-2 plane's time. Returns how many pairs it wrote.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn split_pairs_avx2(pairs: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let n = (pairs.len() / 2).min(even.len()).min(odd.len()) / 8 * 8;
    let mut i = 0;
    while i < n {
        let lo = _mm256_loadu_ps(pairs.as_ptr().add(2 * i));
        let hi = _mm256_loadu_ps(pairs.as_ptr().add(2 * i + 8));
        // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6], then the middle quarters swapped.
        let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0x88>(lo, hi),
        )));
        let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0xDD>(lo, hi),
        )));
        _mm256_storeu_ps(even.as_mut_ptr().add(i), e);
        _mm256_storeu_ps(odd.as_mut_ptr().add(i), o);
        i += 8;
    }
    n
}

/// Eight positions of eight planes into lanes: `src` is plane 0's first value, the planes
/// `stride` apart; `dst[i]` gets value i of each plane.
///
/// # Safety
/// AVX2; 8 floats at `src + l·stride` for l < 8, and 8 cells at `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lanes_in(src: *const f32, stride: usize, dst: *mut [f32; 8]) {
    use std::arch::x86_64::*;
    let mut r: [__m256; 8] = std::array::from_fn(|l| _mm256_loadu_ps(src.add(l * stride)));
    super::super::transpose::tiles::transpose8(&mut r);
    for (i, v) in r.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(i) as *mut f32, v);
    }
}

/// One position of eight planes into a cell: `src` is plane 0's value, the planes
/// `stride` apart.
///
/// # Safety
/// AVX2; `src + l·stride` readable for l < 8, and `7·stride` fits i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn gather8(src: *const f32, stride: usize, cell: &mut [f32; 8]) {
    use std::arch::x86_64::*;
    let s = stride as i32;
    let idx = _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s);
    _mm256_storeu_ps(cell.as_mut_ptr(), _mm256_i32gather_ps::<4>(src, idx));
}

/// The inverse of [`lanes_in`]: cells `src[0..8]` to eight values of each of eight planes
/// at `dst + l·stride`.
///
/// # Safety
/// AVX2; 8 cells at `src`, and 8 floats at `dst + l·stride` for l < 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lanes_out(src: *const [f32; 8], dst: *mut f32, stride: usize) {
    use std::arch::x86_64::*;
    let mut r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i) as *const f32));
    super::super::transpose::tiles::transpose8(&mut r);
    for (l, v) in r.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(l * stride), v);
    }
}

/// `L` outputs from column `first` of one output row: every tap of every stored row
/// (`rows`, `width` apart) folded in registers, rows outer and taps inner as the scalar
/// path goes; tap j of column c reads stored column `c + offsets[j]`.
#[inline(always)]
fn fold<const L: usize>(
    max: bool,
    rows: &[f32],
    width: usize,
    offsets: &[usize],
    first: usize,
    out: &mut [f32],
) {
    let mut v = [0.0f32; L];
    let mut started = false;
    if let ([a, b, c], 3) = (offsets, rows.len() / width.max(1)) {
        // The common 3×3 window written out, as in `planes8_any`.
        let at = |r: usize, off: usize| -> &[f32; L] {
            rows[r * width + first + off..r * width + first + off + L]
                .try_into()
                .expect("L floats")
        };
        let zero = if max { -0.0 } else { 0.0 };
        v.iter_mut()
            .zip(at(0, *a))
            .for_each(|(v, &e)| *v = zero + e);
        for (r, off) in [
            (0, *b),
            (0, *c),
            (1, *a),
            (1, *b),
            (1, *c),
            (2, *a),
            (2, *b),
            (2, *c),
        ] {
            if max {
                v.iter_mut()
                    .zip(at(r, off))
                    .for_each(|(v, &e)| *v = if e > *v { e } else { *v });
            } else {
                v.iter_mut().zip(at(r, off)).for_each(|(v, &e)| *v += e);
            }
        }
        out.copy_from_slice(&v);
        return;
    }
    for stored in rows.chunks_exact(width) {
        for &off in offsets {
            let src: &[f32; L] = stored[first + off..first + off + L]
                .try_into()
                .expect("L floats");
            match (started, max) {
                // 0 + e, as the scalar paths start: -0.0 becomes 0.0 in a sum; max keeps it.
                (false, true) => v.iter_mut().zip(src).for_each(|(a, &e)| *a = -0.0 + e),
                (false, false) => v.iter_mut().zip(src).for_each(|(a, &e)| *a = 0.0 + e),
                (true, true) => v
                    .iter_mut()
                    .zip(src)
                    .for_each(|(a, &e)| *a = if e > *a { e } else { *a }),
                (true, false) => v.iter_mut().zip(src).for_each(|(a, &e)| *a += e),
            }
            started = true;
        }
    }
    out.copy_from_slice(&v);
}
