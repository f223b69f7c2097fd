//! LayerNormalization over the trailing axes from `axis` on, f32, with a scale and an
//! optional bias shaped as those axes (what the e-graph's "layer-norm" rule makes of the
//! primitives Keras exports). Rows split over the pool; each row's mean and variance are
//! summed in f64, as `ir::eval` does, then the row is written once.

use super::rows::collect_rows;
use crate::device::Ctx;
use kiln_ir::{Op, Result, Tensor};

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
                let mean = row.iter().map(|&e| e as f64).sum::<f64>() / cols as f64;
                let var = row
                    .iter()
                    .map(|&e| (e as f64 - mean) * (e as f64 - mean))
                    .sum::<f64>()
                    / cols as f64;
                let inv = (1.0 / (var + eps).sqrt()) as f32;
                let mean = mean as f32;
                for (k, &e) in row.iter().enumerate() {
                    let y = (e - mean) * inv * scale[k] + bias.map_or(0.0, |b| b[k]);
                    dst.add(k).write(y);
                }
            })
        };
        Some(Tensor::new(x.shape().to_vec(), out))
    }
}
