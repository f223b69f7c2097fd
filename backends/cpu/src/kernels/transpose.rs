//! Transpose of an f32 tensor: dims the permutation keeps together are merged first
//! (`[0,2,1,3]` on [1,128,4,64] moves 64-float runs), then the output is written row by
//! row, each row a copy when the innermost dim stays innermost, else a strided gather.

use super::rows::collect_rows;
use crate::device::Ctx;
use kiln_ir::{Op, Result, Tensor};

pub(crate) struct Transpose {
    perm: Option<Vec<i64>>,
}

impl Transpose {
    pub fn new(op: &Op) -> Option<Transpose> {
        match op {
            Op::Transpose { perm } => Some(Transpose { perm: perm.clone() }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let rank = x.rank();
        let perm: Vec<usize> = match &self.perm {
            None => (0..rank).rev().collect(),
            Some(p) => {
                let p: Vec<usize> = p
                    .iter()
                    .map(|&a| usize::try_from(a).ok())
                    .collect::<Option<_>>()?;
                let mut seen = vec![false; rank];
                if p.len() != rank
                    || p.iter()
                        .any(|&a| a >= rank || std::mem::replace(&mut seen[a], true))
                {
                    return None;
                }
                p
            }
        };
        let shape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
        // Merge runs of output dims that are consecutive input dims; drop size-1 dims.
        let mut dims: Vec<(usize, usize)> = Vec::new(); // (input dim, size) in output order
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &a in &perm {
            if x.shape()[a] == 1 {
                continue;
            }
            match groups.last_mut() {
                Some(g)
                    if *g.last()? + 1 == a || next_nontrivial(x.shape(), *g.last()?) == Some(a) =>
                {
                    g.push(a)
                }
                _ => groups.push(vec![a]),
            }
        }
        let in_strides = {
            let mut s = vec![1usize; rank];
            for i in (0..rank.saturating_sub(1)).rev() {
                s[i] = s[i + 1] * x.shape()[i + 1];
            }
            s
        };
        for g in &groups {
            let size: usize = g.iter().map(|&a| x.shape()[a]).product();
            dims.push((*g.last()?, size));
        }
        let stride: Vec<usize> = dims.iter().map(|&(a, _)| in_strides[a]).collect();
        let sizes: Vec<usize> = dims.iter().map(|&(_, n)| n).collect();
        Some(Tensor::new(shape, gather(ctx, xv, &sizes, &stride)))
    }
}

/// The elements of `x` at the strided view `sizes`/`strides` (row-major over `sizes`), in
/// order: row by row, a row a copy where the innermost stride is 1, else a gather. The
/// view must lie inside `x` and cover `x.len()` elements or fewer. The output is written
/// once into fresh memory (a zero fill first was a wasted pass); rows are split over the
/// pool as [`super::rows::for_each_row`] does.
pub(crate) fn gather(ctx: &Ctx, x: &[f32], sizes: &[usize], strides: &[usize]) -> Vec<f32> {
    let n: usize = sizes.iter().product();
    let d = sizes.len();
    if d == 0 || n == 0 {
        return x[..n].to_vec();
    }
    let row_len = sizes[d - 1];
    let last_stride = strides[d - 1];
    // SAFETY: each call writes all row_len floats of its row (a read out of bounds
    // panics before anything is returned).
    unsafe {
        collect_rows(ctx, n, row_len, 2 * n, |r, dst| {
            // Input offset of output row r: its index over the outer dims.
            let (mut rest, mut off) = (r, 0);
            for i in (0..d - 1).rev() {
                off += (rest % sizes[i]) * strides[i];
                rest /= sizes[i];
            }
            if last_stride == 1 {
                let src = &x[off..off + row_len];
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, row_len);
            } else {
                for j in 0..row_len {
                    dst.add(j).write(x[off + j * last_stride]);
                }
            }
        })
    }
}

/// The next input dim after `a` whose size is not 1 (size-1 dims between two merged dims
/// do not break the run).
fn next_nontrivial(shape: &[usize], a: usize) -> Option<usize> {
    (a + 1..shape.len()).find(|&b| shape[b] != 1)
}
