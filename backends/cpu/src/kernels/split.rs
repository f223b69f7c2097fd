//! Split (f32): each output is `outer` blocks cut from the input's rows, written once into
//! fresh memory by block copies. The outputs, taken one after another, are cut into equal
//! ranges, one per thread (at batch 1 along channels every output is one contiguous copy,
//! cut between the threads). inception's merged 1×1 convs end in a split of up to 1.2 MB
//! that `ir::eval` copied on one thread.
//!
//! An input that is not f32, or sizes that do not add up, return `None`: the step then
//! replays `ir::eval`, which names what is wrong.

use super::rows::{Out, PARALLEL_MIN_WORK};
use crate::device::Ctx;
use kiln_ir::{Op, Result, Tensor};

pub(crate) struct Split {
    axis: i64,
    n_outputs: usize,
}

impl Split {
    pub fn new(op: &Op, n_outputs: usize) -> Option<Split> {
        match op {
            Op::Split { axis } => Some(Split {
                axis: *axis,
                n_outputs,
            }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Vec<Tensor>>> {
        let n_outputs = self.n_outputs;
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let axis = super::axis_of(self.axis, x.rank())?;
        let dim = x.shape()[axis];
        let sizes: Vec<usize> = match args.get(1).and_then(Option::as_ref) {
            Some(s) => s
                .to_i64_vec()
                .into_iter()
                .map(|v| usize::try_from(v).ok())
                .collect::<Option<_>>()?,
            // Without sizes, equal parts; the reference's rule for a remainder is left to it.
            None if n_outputs > 0 && dim % n_outputs == 0 => vec![dim / n_outputs; n_outputs],
            None => return None,
        };
        if sizes.len() != n_outputs
            || sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim)
        {
            return None;
        }
        let outer: usize = x.shape()[..axis].iter().product();
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let row = dim * inner;
        // Output k: `outer` blocks of `blocks[k]` floats, block o read from input offset
        // o·row + starts[k].
        let blocks: Vec<usize> = sizes.iter().map(|&s| s * inner).collect();
        let starts: Vec<usize> = blocks
            .iter()
            .scan(0, |at, &b| Some(std::mem::replace(at, *at + b)))
            .collect();
        let mut outs: Vec<Vec<f32>> = blocks
            .iter()
            .map(|&b| Vec::with_capacity(outer * b))
            .collect();
        let dsts: Vec<Out> = outs.iter_mut().map(|o| Out(o.as_mut_ptr())).collect();
        let len = xv.len();
        let threads = ctx.pool.map_or(1, |p| p.threads());
        let copy = |t: usize| {
            let (start, end) = (len * t / threads, len * (t + 1) / threads);
            // SAFETY: output k has capacity for outer·blocks[k] floats; the ranges of the
            // threads are disjoint, and `copy_range` reads only inside the input.
            unsafe { copy_range(xv, row, &blocks, &starts, &dsts, start, end) };
        };
        match ctx.pool {
            Some(pool) if threads > 1 && len >= PARALLEL_MIN_WORK => pool.run(&copy),
            _ => (0..threads).for_each(copy),
        }
        let mut result = Vec::with_capacity(n_outputs);
        for (k, mut out) in outs.into_iter().enumerate() {
            // SAFETY: the threads' ranges cover every output position, each written once.
            unsafe { out.set_len(outer * blocks[k]) };
            let mut shape = x.shape().to_vec();
            shape[axis] = sizes[k];
            result.push(Tensor::new(shape, out));
        }
        Some(result.into_iter().collect())
    }
}

/// Writes positions `start..end` of the outputs taken one after another: position j of
/// output k is `x[(j / b)·row + starts[k] + j % b]` with `b = blocks[k]`.
///
/// # Safety
/// `dsts[k]` must be valid for writes of `(x.len() / row)·blocks[k]` floats, and `end` at
/// most `x.len()`, the outputs' total.
unsafe fn copy_range(
    x: &[f32],
    row: usize,
    blocks: &[usize],
    starts: &[usize],
    dsts: &[Out],
    start: usize,
    end: usize,
) {
    let outer = if row == 0 { 0 } else { x.len() / row };
    let mut first = 0;
    for ((&b, &s), dst) in blocks.iter().zip(starts).zip(dsts) {
        let size = outer * b;
        let (lo, hi) = (
            start.max(first) - first,
            end.min(first + size).saturating_sub(first),
        );
        first += size;
        let mut j = lo;
        while j < hi {
            let (o, off) = (j / b, j % b);
            let n = (b - off).min(hi - j);
            let src = &x[o * row + s + off..o * row + s + off + n];
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst.at(j), n);
            j += n;
        }
    }
}
