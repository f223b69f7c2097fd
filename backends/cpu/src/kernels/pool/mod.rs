//! Max and average pooling (1-D and 2-D, NCHW, f32) and global max and average pooling,
//! one output plane per task, planes split over the pool. Where every window holds an
//! input position and columns step by 1 or 2 (nearly every model's pooling), a plane runs
//! through a padded copy with every column on vectors ([`padded`]), or for max pooling
//! with AVX-512F and rows of 16 outputs or more straight from the plane ([`rows512`]);
//! average pooling at stride 1 with the input's size (inception's) with AVX-512F takes
//! each plane as one flat run of 16-position blocks ([`flat512`]); other geometries take
//! the direct loops below.
//!
//! Semantics are `ir::eval`'s: max pooling keeps the first value of the window and
//! replaces it by any later value that compares greater (so a NaN in the first position
//! stays, a later NaN is skipped); a window with no input position gives 0; average
//! pooling divides by the window positions inside the input, or with `count_include_pad`
//! by those inside the padded extent. Sums are f32 (the reference sums in f64: the
//! difference is far inside the zoo's tolerance for windows of any size used in practice).

#[cfg(target_arch = "x86_64")]
mod flat512;
mod padded;
#[cfg(target_arch = "x86_64")]
mod rows512;

use super::rows::for_each_row;
use padded::Padded;
use crate::device::Ctx;
use kiln_ir::{AutoPad, Op, PoolKind, Result, Tensor};

pub(crate) struct Pool {
    max: bool,
    auto_pad: AutoPad,
    ceil_mode: bool,
    count_include_pad: bool,
    dilations: Vec<i64>,
    kernel_shape: Vec<i64>,
    pads: Vec<i64>,
    strides: Vec<i64>,
    /// The flat path's plan for the last geometry run (made once, not on every run: on
    /// 17² planes it took 8% of the kernel's time at one thread).
    #[cfg(target_arch = "x86_64")]
    flat: std::sync::Mutex<Option<std::sync::Arc<flat512::Flat>>>,
}

pub(crate) struct GlobalPool {
    max: bool,
}

/// One spatial dim: input size, output size, kernel, stride, dilation, begin and end pad.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dim1 {
    input: usize,
    out: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
}

impl Dim1 {
    /// Output size and pads as `ir::eval` computes them (see its window geometry).
    fn new(a: &Pool, i: usize, n: usize, input: usize) -> Option<Dim1> {
        let k = usize::try_from(*a.kernel_shape.get(i)?).ok().filter(|&k| k >= 1)?;
        let attr = |v: &[i64], default: i64| -> Option<usize> {
            let x = if v.is_empty() { default } else { *v.get(i)? };
            usize::try_from(x).ok().filter(|&x| (1..=1 << 31).contains(&x))
        };
        let (s, d) = (attr(&a.strides, 1)?, attr(&a.dilations, 1)?);
        if (!a.strides.is_empty() && a.strides.len() != n) || (!a.dilations.is_empty() && a.dilations.len() != n) {
            return None;
        }
        let extent = (k - 1).checked_mul(d)? + 1;
        let (out, pb, pe) = match a.auto_pad {
            AutoPad::NotSet => {
                let (pb, pe) = if a.pads.is_empty() {
                    (0, 0)
                } else if a.pads.len() == 2 * n && a.pads.iter().all(|&p| (0..=1 << 31).contains(&p)) {
                    (a.pads[i] as usize, a.pads[i + n] as usize)
                } else {
                    return None;
                };
                let span = (input + pb + pe).checked_sub(extent)?;
                let mut out = if a.ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
                if a.ceil_mode && (out - 1) * s >= input + pb {
                    out -= 1;
                }
                (out, pb, pe)
            }
            AutoPad::Valid => ((input.checked_sub(extent)?) / s + 1, 0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = input.div_ceil(s);
                let total = ((out.max(1) - 1) * s + extent).saturating_sub(input);
                let pb = if a.auto_pad == AutoPad::SameUpper { total / 2 } else { total - total / 2 };
                (out, pb, total - pb)
            }
        };
        Some(Dim1 { input, out, k, s, d, pb, pe })
    }

    /// For output position o: the first input position of tap 0 (may be negative), the
    /// taps inside the input, and the taps inside the padded extent.
    fn taps(&self, o: usize) -> (isize, std::ops::Range<usize>, usize) {
        let start = (o * self.s) as isize - self.pb as isize;
        let (mut lo, mut hi, mut padded) = (self.k, 0, 0);
        for t in 0..self.k {
            let pos = start + (t * self.d) as isize;
            if pos >= -(self.pb as isize) && pos < (self.input + self.pe) as isize {
                padded += 1;
            }
            if pos >= 0 && (pos as usize) < self.input {
                lo = lo.min(t);
                hi = t + 1;
            }
        }
        (start, lo.min(hi)..hi, padded)
    }
}

impl Pool {
    /// For f32 max or average pooling with one output; `None` otherwise.
    pub fn new(op: &Op, n_outputs: usize) -> Option<Pool> {
        let Op::Pool { kind, auto_pad, ceil_mode, count_include_pad, dilations, kernel_shape, pads, strides, .. } = op else {
            return None;
        };
        let max = match kind {
            PoolKind::Max => true,
            PoolKind::Average => false,
            PoolKind::Lp => return None,
        };
        if n_outputs != 1 || !(1..=2).contains(&kernel_shape.len()) {
            return None;
        }
        Some(Pool {
            max,
            auto_pad: *auto_pad,
            ceil_mode: *ceil_mode,
            count_include_pad: *count_include_pad,
            dilations: dilations.clone(),
            kernel_shape: kernel_shape.clone(),
            pads: pads.clone(),
            strides: strides.clone(),
            #[cfg(target_arch = "x86_64")]
            flat: Default::default(),
        })
    }

    /// The output, or `None` when this kernel does not handle the input.
    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let xs = x.shape();
        let n = self.kernel_shape.len();
        if xs.len() != n + 2 {
            return None;
        }
        let dims: Vec<Dim1> = (0..n).map(|i| Dim1::new(self, i, n, xs[2 + i])).collect::<Option<_>>()?;
        // 1-D runs as 2-D with one row and a 1-tap window over it.
        let (dh, dw) = if n == 2 {
            (dims[0], dims[1])
        } else {
            (Dim1 { input: 1, out: 1, k: 1, s: 1, d: 1, pb: 0, pe: 0 }, dims[0])
        };
        let planes = xs[0].checked_mul(xs[1])?;
        let (plane_in, plane_out) = (dh.input * dw.input, dh.out.checked_mul(dw.out)?);
        let mut shape = xs[..2].to_vec();
        shape.extend(dims.iter().map(|d| d.out));
        let total = planes.checked_mul(plane_out)?;
        let rows: Vec<_> = (0..dh.out).map(|o| dh.taps(o)).collect();
        let cols: Vec<_> = (0..dw.out).map(|o| dw.taps(o)).collect();
        #[cfg(target_arch = "x86_64")]
        if !self.max
            && ctx.kernel == crate::gemm::Kernel::Avx2Fma
            && super::avx512f::detected()
            && flat512::applies(&dh, &dw)
        {
            let flat = {
                let mut last = self.flat.lock().unwrap_or_else(|e| e.into_inner());
                match &*last {
                    Some(flat) if flat.geometry() == (dh, dw) => flat.clone(),
                    _ => last.insert(std::sync::Arc::new(flat512::Flat::new(&dh, &dw, &rows, &cols, self.count_include_pad))).clone(),
                }
            };
            let per = flat.planes();
            // SAFETY: the CPU has AVX-512F (checked above); `applies` holds, so a plane's
            // output is as long as its input (plane_out = plane_in), and `run` writes all
            // the outputs of its run of planes (the last run may be short).
            let out = unsafe {
                super::rows::collect_rows(ctx, total, per * plane_out, total * dh.k * dw.k, |u, o| {
                    flat.run(&xv[u * per * plane_in..((u + 1) * per).min(planes) * plane_in], o)
                })
            };
            return Some(Tensor::new(shape, out));
        }
        let mut out = vec![0.0f32; total];
        // Output columns whose every tap lies inside the input row: a contiguous range,
        // since windows move right with the column.
        let full = |o: &usize| cols[*o].1 == (0..dw.k);
        let inner_lo = (0..dw.out).find(full).unwrap_or(dw.out);
        let inner_hi = (inner_lo..dw.out).rev().find(full).map_or(inner_lo, |o| o + 1);
        let work = out.len() * dh.k * dw.k;
        #[cfg(target_arch = "x86_64")]
        if self.max
            && ctx.kernel == crate::gemm::Kernel::Avx2Fma
            && super::avx512f::detected()
            && rows512::applies(&dh, &dw, &cols)
        {
            for_each_row(ctx, &mut out, plane_out, work, |c, o| {
                // SAFETY: the CPU has AVX-512F (checked above), `applies` holds, `c`'s
                // input and output planes are whole, and inner_lo..inner_hi are the
                // columns whose taps all lie inside the row.
                unsafe { rows512::plane(&dh, &dw, &cols, inner_lo..inner_hi, &xv[c * plane_in..(c + 1) * plane_in], o) }
            });
            return Some(Tensor::new(shape, out));
        }
        if let Some(padded) = Padded::new(self, &dh, &dw) {
            let avx2 = ctx.kernel == crate::gemm::Kernel::Avx2Fma;
            // Larger planes too, with AVX2 and whole groups of eight (see SMALL_PLANE).
            if plane_out <= padded::SMALL_PLANE || (avx2 && planes % 8 == 0) {
                // Eight planes at a time, one per lane; the last few planes on this thread.
                let whole = planes / 8 * 8;
                let (head, tail) = out.split_at_mut(whole * plane_out);
                for_each_row(ctx, head, 8 * plane_out, work, |g, o| {
                    padded.planes8(avx2, &xv[g * 8 * plane_in..(g + 1) * 8 * plane_in], o, 8)
                });
                padded.planes8(avx2, &xv[whole * plane_in..], tail, planes - whole);
            } else {
                for_each_row(ctx, &mut out, plane_out, work, |c, o| {
                    padded.plane(avx2, &xv[c * plane_in..(c + 1) * plane_in], o)
                });
            }
            return Some(Tensor::new(shape, out));
        }
        for_each_row(ctx, &mut out, plane_out, work, |c, o| {
            let x = &xv[c * plane_in..(c + 1) * plane_in];
            for (oh, &(h0, ref hi, hpad)) in rows.iter().enumerate() {
                let orow = &mut o[oh * dw.out..(oh + 1) * dw.out];
                let rows_in = hi.clone().map(|i| {
                    let r = (h0 + (i * dh.d) as isize) as usize;
                    &x[r * dw.input..(r + 1) * dw.input]
                });
                // A row of windows that see no input row takes the scalar path throughout.
                let (lo, hi_col) = if hi.is_empty() { (dw.out, dw.out) } else { (inner_lo, inner_hi) };
                if lo < hi_col {
                    let count = if self.count_include_pad { hpad * dw.k } else { hi.len() * dw.k };
                    self.inner(rows_in.clone(), &dw, lo, count, &mut orow[lo..hi_col]);
                }
                for ow in (0..lo).chain(hi_col..dw.out) {
                    let (w0, wi, wpad) = (cols[ow].0, cols[ow].1.clone(), cols[ow].2);
                    if hi.is_empty() || wi.is_empty() {
                        // No input position: max gives 0, average 0 / count (NaN for 0).
                        let count = if self.count_include_pad { hpad * wpad } else { 0 };
                        orow[ow] = if self.max { 0.0 } else { 0.0 / count as f32 };
                        continue;
                    }
                    let taps = rows_in.clone().flat_map(|row| wi.clone().map(move |j| row[(w0 + (j * dw.d) as isize) as usize]));
                    orow[ow] = if self.max {
                        taps.reduce(|best, e| if e > best { e } else { best }).unwrap_or(0.0)
                    } else {
                        let count = if self.count_include_pad { hpad * wpad } else { hi.len() * wi.len() };
                        taps.fold(0.0f32, |sum, e| sum + e) / count as f32
                    };
                }
            }
        });
        Some(Tensor::new(shape, out))
    }

    /// The output columns `first..first + acc.len()` of one output row, all of whose taps
    /// are inside the input rows `rows_in`: taps outer, columns inner, so each tap is one
    /// pass over a run of the row (contiguous at stride 1) that the compiler vectorises.
    /// Per column the taps are combined in the scalar path's order, so results are
    /// bit-identical to it, NaNs included.
    fn inner<'a>(&self, rows_in: impl Iterator<Item = &'a [f32]>, dw: &Dim1, first: usize, count: usize, acc: &mut [f32]) {
        let n = acc.len();
        let mut started = false;
        for row in rows_in {
            for j in 0..dw.k {
                let c0 = first * dw.s + j * dw.d - dw.pb;
                let src = &row[c0..c0 + (n - 1) * dw.s + 1];
                match (self.max, started, dw.s) {
                    (_, false, _) => {
                        // 0 + e, as the scalar sum starts: -0.0 becomes 0.0 there too.
                        let zero = if self.max { -0.0 } else { 0.0 };
                        acc.iter_mut().zip(src.iter().step_by(dw.s)).for_each(|(a, &e)| *a = zero + e);
                    }
                    (true, true, 1) => acc.iter_mut().zip(src).for_each(|(a, &e)| *a = if e > *a { e } else { *a }),
                    (true, true, _) => acc.iter_mut().zip(src.iter().step_by(dw.s)).for_each(|(a, &e)| *a = if e > *a { e } else { *a }),
                    (false, true, 1) => acc.iter_mut().zip(src).for_each(|(a, &e)| *a += e),
                    (false, true, _) => acc.iter_mut().zip(src.iter().step_by(dw.s)).for_each(|(a, &e)| *a += e),
                }
                started = true;
            }
        }
        if !self.max {
            let count = count as f32;
            acc.iter_mut().for_each(|a| *a /= count);
        }
    }
}

impl GlobalPool {
    pub fn new(op: &Op) -> Option<GlobalPool> {
        match op {
            Op::GlobalPool { kind: PoolKind::Max, .. } => Some(GlobalPool { max: true }),
            Op::GlobalPool { kind: PoolKind::Average, .. } => Some(GlobalPool { max: false }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let xs = x.shape();
        if xs.len() < 2 {
            return None;
        }
        let planes = xs[0] * xs[1];
        let plane: usize = xs[2..].iter().product();
        if plane == 0 {
            return None; // the reference's error (max) or NaN (average)
        }
        let mut shape = xs[..2].to_vec();
        shape.extend(std::iter::repeat_n(1, xs.len() - 2));
        let mut out = vec![0.0f32; planes];
        // One row of the output per plane would be one float per task: take 64 planes
        // per task instead.
        let per = 64.min(planes.max(1));
        let padded = planes.div_ceil(per) * per;
        out.resize(padded, 0.0);
        #[cfg(target_arch = "x86_64")]
        let small512 = !self.max && plane < SMALL_SUM && super::avx512f::detected();
        for_each_row(ctx, &mut out, per, planes * plane, |r, o| {
            #[cfg(target_arch = "x86_64")]
            if small512 {
                let n = o.len().min(planes.saturating_sub(r * per));
                let x = &xv[r * per * plane..(r * per + n) * plane];
                // SAFETY: AVX-512F was detected; `x` holds the n planes.
                unsafe { averages_avx512(x, plane, &mut o[..n]) };
                return;
            }
            for (k, v) in o.iter_mut().enumerate() {
                let c = r * per + k;
                if c >= planes {
                    break;
                }
                let s = &xv[c * plane..(c + 1) * plane];
                *v = if self.max {
                    max_of(s)
                } else if plane < SMALL_SUM {
                    sum_small(s) / plane as f32
                } else {
                    sum_of(s) / plane as f32
                };
            }
        });
        out.truncate(planes);
        Some(Tensor::new(shape, out))
    }
}

/// Planes shorter than this are summed by [`sum_small`]: the 32 partial sums of
/// [`sum_of`] and their tree cost more than the plane (inception's 2048 3×3 planes took
/// 0.035 ms, 60 cycles a plane).
const SMALL_SUM: usize = 64;

/// The average of each `plane`-long plane of `x` (fewer than [`SMALL_SUM`] values) into
/// `out`: two vectors of partial sums, the tail masked, then a reduction. One plane is a
/// few loads and a tree, and the planes overlap; with [`sum_small`]'s four scalar chains
/// mobilenet_v2's 1280 7×7 planes took 20 µs at one thread, 17 at two, against
/// onnxruntime's 6; this takes 12 and 9 (per-kernel minimums of three interleaved runs).
///
/// # Safety
/// AVX-512F; `x` holds `out.len()` planes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn averages_avx512(x: &[f32], plane: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(plane < SMALL_SUM && x.len() >= out.len() * plane);
    for (c, o) in out.iter_mut().enumerate() {
        let p = x.as_ptr().add(c * plane);
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= plane {
            a = _mm512_add_ps(a, _mm512_loadu_ps(p.add(i)));
            b = _mm512_add_ps(b, _mm512_loadu_ps(p.add(i + 16)));
            i += 32;
        }
        if i + 16 <= plane {
            a = _mm512_add_ps(a, _mm512_loadu_ps(p.add(i)));
            i += 16;
        }
        if i < plane {
            let tail = super::avx512f::lanes(0, (plane - i) as isize);
            b = _mm512_add_ps(b, _mm512_maskz_loadu_ps(tail, p.add(i)));
        }
        *o = _mm512_reduce_add_ps(_mm512_add_ps(a, b)) / plane as f32;
    }
}

/// Four running sums, added pairwise at the end: short chains the core overlaps across
/// planes, no set-up.
#[inline]
fn sum_small(s: &[f32]) -> f32 {
    let mut acc = [0.0f32; 4];
    let mut chunks = s.chunks_exact(4);
    for c in &mut chunks {
        for i in 0..4 {
            acc[i] += c[i];
        }
    }
    for (a, &e) in acc.iter_mut().zip(chunks.remainder()) {
        *a += e;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The first element, replaced by any later one that compares greater (NaN first stays).
fn max_of(s: &[f32]) -> f32 {
    let mut best = s[0];
    for &e in s {
        if e > best {
            best = e;
        }
    }
    best
}

/// The sum of `s` over partial sums (vectorisable, and more accurate than one running sum).
pub(crate) fn sum_of(s: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { sum_avx2(s) };
    }
    sum_lanes(s)
}

/// [`sum_lanes`] compiled for AVX2: the same order of additions, so the same result.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(s: &[f32]) -> f32 {
    sum_lanes(s)
}

/// 32 partial sums (four vectors, so the adds do not wait on one register's latency: a
/// single 8-lane chain held efficientnet's squeeze pooling to one add per 3 cycles), the
/// tail added lane by lane, then a tree.
#[inline(always)]
fn sum_lanes(s: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let mut chunks = s.chunks_exact(32);
    for c in &mut chunks {
        for i in 0..32 {
            acc[i] += c[i];
        }
    }
    for (a, &e) in acc.iter_mut().zip(chunks.remainder()) {
        *a += e;
    }
    let mut n = 32;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            acc[i] += acc[i + n];
        }
    }
    acc[0]
}
