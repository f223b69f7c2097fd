//! Max and average pooling (1-D and 2-D, NCHW, f32) and global max and average pooling,
//! one output plane per task, planes split over the pool.
//!
//! Semantics are `ir::eval`'s: max pooling keeps the first value of the window and
//! replaces it by any later value that compares greater (so a NaN in the first position
//! stays, a later NaN is skipped); a window with no input position gives 0; average
//! pooling divides by the window positions inside the input, or with `count_include_pad`
//! by those inside the padded extent. Sums are f32 (the reference sums in f64: the
//! difference is far inside the zoo's tolerance for windows of any size used in practice).

use super::rows::for_each_row;
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
}

pub(crate) struct GlobalPool {
    max: bool,
}

/// One spatial dim: input size, output size, kernel, stride, dilation, begin and end pad.
#[derive(Clone, Copy, Debug)]
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
        let mut out = vec![0.0f32; planes.checked_mul(plane_out)?];
        let rows: Vec<_> = (0..dh.out).map(|o| dh.taps(o)).collect();
        let cols: Vec<_> = (0..dw.out).map(|o| dw.taps(o)).collect();
        let work = out.len() * dh.k * dw.k;
        for_each_row(ctx, &mut out, plane_out, work, |c, o| {
            let x = &xv[c * plane_in..(c + 1) * plane_in];
            for (oh, (h0, hi, hpad)) in rows.iter().enumerate() {
                let orow = &mut o[oh * dw.out..(oh + 1) * dw.out];
                for (v, (w0, wi, wpad)) in orow.iter_mut().zip(&cols) {
                    if hi.is_empty() || wi.is_empty() {
                        // No input position: max gives 0, average 0 / count (NaN for 0).
                        let count = if self.count_include_pad { hpad * wpad } else { 0 };
                        *v = if self.max { 0.0 } else { 0.0 / count as f32 };
                        continue;
                    }
                    let at = |i: usize, j: usize| {
                        let r = (*h0 + (i * dh.d) as isize) as usize;
                        let c = (*w0 + (j * dw.d) as isize) as usize;
                        x[r * dw.input + c]
                    };
                    if self.max {
                        let mut best = at(hi.start, wi.start);
                        for i in hi.clone() {
                            for j in wi.clone() {
                                let e = at(i, j);
                                if e > best {
                                    best = e;
                                }
                            }
                        }
                        *v = best;
                    } else {
                        let mut sum = 0.0f32;
                        for i in hi.clone() {
                            for j in wi.clone() {
                                sum += at(i, j);
                            }
                        }
                        let count = if self.count_include_pad { hpad * wpad } else { hi.len() * wi.len() };
                        *v = sum / count as f32;
                    }
                }
            }
        });
        Some(Tensor::new(shape, out))
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
        for_each_row(ctx, &mut out, per, planes * plane, |r, o| {
            for (k, v) in o.iter_mut().enumerate() {
                let c = r * per + k;
                if c >= planes {
                    break;
                }
                let s = &xv[c * plane..(c + 1) * plane];
                *v = if self.max { max_of(s) } else { sum_of(s) / plane as f32 };
            }
        });
        out.truncate(planes);
        Some(Tensor::new(shape, out))
    }
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

/// Eight partial sums (vectorisable, and more accurate than one running sum).
pub(crate) fn sum_of(s: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
