//! Concat (f32): the output is `outer` rows, each the inputs' blocks side by side, written
//! once into fresh memory by block copies, the output cut into equal ranges, one per
//! thread. densenet joins its growing feature maps 58 times (up to 3 MB each), which
//! `ir::eval` copied on one thread while the other waited.
//!
//! Inputs that are not all f32, or that do not line up off the axis, return `None`: the
//! step then replays `ir::eval`, which names what is wrong.

use super::rows::{Out, PARALLEL_MIN_WORK};
use crate::device::Ctx;
use kiln_ir::{Op, Result, Tensor};

pub(crate) struct Concat {
    axis: i64,
}

impl Concat {
    pub fn new(op: &Op) -> Option<Concat> {
        match op {
            Op::Concat { axis } => Some(Concat { axis: *axis }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let xs: Vec<&Tensor> = args.iter().map(Option::as_ref).collect::<Option<_>>()?;
        let first = *xs.first()?;
        let rank = first.rank();
        let axis = super::axis_of(self.axis, rank)?;
        let mut shape = first.shape().to_vec();
        shape[axis] = 0;
        let mut parts = Vec::with_capacity(xs.len());
        for x in &xs {
            let lines_up = x.rank() == rank && (0..rank).all(|d| d == axis || x.shape()[d] == first.shape()[d]);
            if !lines_up {
                return None;
            }
            parts.push(x.as_slice::<f32>().ok()?);
            shape[axis] = shape[axis].checked_add(x.shape()[axis])?;
        }
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        // Each input's block in one output row.
        let blocks: Vec<usize> = xs.iter().map(|x| x.shape()[axis] * inner).collect();
        let row: usize = blocks.iter().sum();
        let len = outer.checked_mul(row)?;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = Out(out.as_mut_ptr());
        let threads = ctx.pool.map_or(1, |p| p.threads());
        let copy = |t: usize| {
            let (start, end) = (len * t / threads, len * (t + 1) / threads);
            // SAFETY: `dst` has capacity for `len` floats; each thread writes only its
            // range start..end, and `copy_range` reads only inside the inputs.
            unsafe { copy_range(&parts, &blocks, row, start, end, &dst) };
        };
        match ctx.pool {
            Some(pool) if threads > 1 && len >= PARALLEL_MIN_WORK => pool.run(&copy),
            _ => (0..threads).for_each(copy),
        }
        // SAFETY: the ranges of all threads cover 0..len, each written once above.
        unsafe { out.set_len(len) };
        Some(Tensor::new(shape, out))
    }
}

/// Writes output elements `start..end`: output element `o·row + off_i + j` is element
/// `o·blocks[i] + j` of input i, where `off_i` is the sum of the blocks before i.
///
/// # Safety
/// `dst` must be valid for writes of `end` floats; input i must hold `outer·blocks[i]`
/// floats, where `outer·row ≥ end`.
unsafe fn copy_range(parts: &[&[f32]], blocks: &[usize], row: usize, start: usize, end: usize, dst: &Out) {
    if start >= end || row == 0 {
        return;
    }
    let (mut o, mut at) = (start / row, start % row);
    let mut pos = start;
    while pos < end {
        // The block holding position `at` of row o, and the offset inside it.
        let mut off = at;
        for (part, &b) in parts.iter().zip(blocks) {
            if off >= b {
                off -= b;
                continue;
            }
            let n = (b - off).min(end - pos);
            let src = &part[o * b + off..o * b + off + n];
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst.at(pos), n);
            pos += n;
            if pos >= end {
                return;
            }
            off = 0;
        }
        o += 1;
        at = 0;
    }
}
