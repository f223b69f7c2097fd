//! LayerNormalization over the trailing axes from `axis` on, f32, with a scale and an
//! optional bias shaped as those axes (what the e-graph's "layer-norm" rule makes of the
//! primitives Keras exports). Rows split over the pool; each row's mean and variance are
//! summed in f64, as `ir::eval` does, then the row is written once.

use super::rows::collect_rows;
use crate::device::Ctx;
use kiln_ir::{Op, Result, Tensor};
use std::mem::MaybeUninit;

pub(crate) struct LayerNorm {
    axis: i64,
    eps: f64,
}

impl LayerNorm {
    /// For a LayerNorm whose only output is y; `None` otherwise.
    pub fn new(op: &Op, n_outputs: usize) -> Option<LayerNorm> {
        match op {
            Op::LayerNorm { axis, epsilon, .. } if n_outputs == 1 => Some(LayerNorm {
                axis: *axis,
                eps: *epsilon as f64,
            }),
            _ => None,
        }
    }

    /// y, or `None` for inputs this kernel does not take (not f32, a scale or bias that
    /// broadcasts rather than covering the normalised axes).
    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let axis = super::axis_of(self.axis, x.rank())?;
        let cols: usize = x.shape()[axis..].iter().product();
        let scale = args
            .get(1)?
            .as_ref()?
            .as_slice::<f32>()
            .ok()
            .filter(|s| s.len() == cols)?;
        let bias = match args.get(2) {
            Some(Some(b)) => Some(b.as_slice::<f32>().ok().filter(|b| b.len() == cols)?),
            _ => None,
        };
        if cols == 0 {
            return None;
        }
        let eps = self.eps;
        // SAFETY: each call writes all `cols` floats of its row.
        let out = unsafe {
            collect_rows(ctx, xv.len(), cols, 3 * xv.len(), |r, dst| {
                let row = &xv[r * cols..(r + 1) * cols];
                let mean = sum_lanes(row, |e| e as f64) / cols as f64;
                let var = sum_lanes(row, |e| (e as f64 - mean) * (e as f64 - mean)) / cols as f64;
                let inv = (1.0 / (var + eps).sqrt()) as f32;
                // The mean as an f32 and its rounding error: far from zero mean (1000 ± 1)
                // e - mean is exact in f32 and the error taken off after, where an f32
                // mean alone would be off by a ten-thousandth of the deviation.
                let (hi, lo) = (mean as f32, (mean - (mean as f32) as f64) as f32);
                // SAFETY: `dst` points at this row's `cols` floats, written here only.
                let dst = std::slice::from_raw_parts_mut(dst as *mut MaybeUninit<f32>, cols);
                match bias {
                    Some(b) => {
                        for (((o, &e), &s), &b) in dst.iter_mut().zip(row).zip(scale).zip(b) {
                            o.write(((e - hi) - lo) * inv * s + b);
                        }
                    }
                    None => {
                        for ((o, &e), &s) in dst.iter_mut().zip(row).zip(scale) {
                            o.write(((e - hi) - lo) * inv * s);
                        }
                    }
                }
            })
        };
        Some(Tensor::new(x.shape().to_vec(), out))
    }
}

/// The sum of `f` over `row` in eight f64 partial sums: one running sum is a chain of
/// dependent adds the row's length long (a 256-wide row took 80 µs per 128 rows that way;
/// the lanes vectorise).
pub(super) fn sum_lanes(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &e) in acc.iter_mut().zip(c) {
            *a += f(e);
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|&e| f(e)).sum::<f64>()
}
