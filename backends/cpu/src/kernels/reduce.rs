//! ReduceSum and ReduceMean of f32 over one run of adjacent axes (Keras'
//! GlobalAveragePooling1D over a transformer's tokens: 128×256 to 256, 80 µs through
//! `ir::eval`, which walks a list of offsets per output in f64). Sums in f64 as `ir::eval`
//! does, in the same order per output where the reduced axes are not the last ones; over
//! the last axes in eight partial sums.

use crate::device::Ctx;
use kiln_ir::{Op, ReduceKind, Result, Tensor};

pub(crate) struct Reduce {
    mean: bool,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

impl Reduce {
    pub fn new(op: &Op) -> Option<Reduce> {
        match op {
            Op::Reduce {
                kind: kind @ (ReduceKind::Sum | ReduceKind::Mean),
                keepdims,
                noop_with_empty_axes,
            } => Some(Reduce {
                mean: *kind == ReduceKind::Mean,
                keepdims: *keepdims,
                noop_with_empty_axes: *noop_with_empty_axes,
            }),
            _ => None,
        }
    }

    /// The reduction, or `None` for what this kernel does not take (not f32, axes that
    /// are not one run of adjacent axes, repeated or out of range: `ir::eval` then runs
    /// it, and reports what is wrong).
    pub fn run(&self, _ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let rank = x.rank();
        let axes: Vec<i64> = match args.get(1) {
            Some(Some(a)) => a.as_slice::<i64>().ok()?.to_vec(),
            _ => vec![],
        };
        let mut mask = vec![axes.is_empty(); rank];
        if axes.is_empty() && self.noop_with_empty_axes {
            return None;
        }
        for &a in &axes {
            let a = super::axis_of(a, rank)?;
            if std::mem::replace(&mut mask[a], true) {
                return None;
            }
        }
        let first = mask.iter().position(|&m| m).unwrap_or(rank);
        let end = mask.iter().rposition(|&m| m).map_or(rank, |l| l + 1);
        if mask[first.min(end)..end].iter().any(|&m| !m) {
            return None;
        }
        let dims = x.shape();
        let outer: usize = dims[..first].iter().product();
        let count: usize = dims[first..end].iter().product();
        let inner: usize = dims[end..].iter().product();
        let finish = |s: f64| {
            if self.mean {
                (s / count as f64) as f32
            } else {
                s as f32
            }
        };
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            let block = &xv[o * count * inner..(o + 1) * count * inner];
            if inner == 1 {
                out.push(finish(super::layer_norm::sum_lanes(block, |e| e as f64)));
                continue;
            }
            let mut acc = vec![0.0f64; inner];
            for row in block.chunks_exact(inner) {
                for (a, &e) in acc.iter_mut().zip(row) {
                    *a += e as f64;
                }
            }
            out.extend(acc.into_iter().map(finish));
        }
        let shape: Vec<usize> = dims
            .iter()
            .zip(&mask)
            .filter_map(|(&d, &m)| match (m, self.keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        Some(Tensor::new(shape, out))
    }
}
