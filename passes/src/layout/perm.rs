//! Axis permutations and what they do to dims and constants.
//!
//! The convention throughout the layout pass: a value `v` is *held in layout `p`* when the
//! graph keeps `h` and `v = transpose(h, perm = p)`, so `v.dims[i] == h.dims[p[i]]`: axis `i`
//! of the value the model means is axis `p[i]` of the tensor actually computed.

use kiln_ir::eval::eval_op;
use kiln_ir::{Dim, Op, Result, Tensor, TensorType};

pub(crate) type Perm = Vec<usize>;

pub(crate) fn is_identity(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &a)| i == a)
}

/// `None` for the identity, so that "held as is" has one spelling.
pub(crate) fn normalize(p: Perm) -> Option<Perm> {
    if is_identity(&p) {
        None
    } else {
        Some(p)
    }
}

pub(crate) fn inverse(p: &[usize]) -> Perm {
    let mut inv = vec![0; p.len()];
    for (i, &a) in p.iter().enumerate() {
        inv[a] = i;
    }
    inv
}

/// The single transpose equal to `transpose(transpose(x, inner), outer)`.
pub(crate) fn compose(inner: &[usize], outer: &[usize]) -> Perm {
    outer.iter().map(|&o| inner[o]).collect()
}

/// A Transpose node's `perm` attribute checked against `rank` (absent reverses the axes).
pub(crate) fn from_attr(perm: &Option<Vec<i64>>, rank: usize) -> Option<Perm> {
    let Some(perm) = perm else {
        return Some((0..rank).rev().collect());
    };
    if perm.len() != rank {
        return None;
    }
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(rank);
    for &a in perm {
        let a = kiln_ir::ops::util::norm_axis(a, rank).ok()?;
        if std::mem::replace(&mut seen[a], true) {
            return None;
        }
        out.push(a);
    }
    Some(out)
}

/// The name of a node the pass derives from the node named `base`.
pub(crate) fn derived(base: &str, what: &str) -> String {
    if base.is_empty() {
        what.to_string()
    } else {
        format!("{base}/{what}")
    }
}

pub(crate) fn transpose_op(p: &[usize]) -> Op {
    Op::Transpose {
        perm: Some(p.iter().map(|&a| a as i64).collect()),
    }
}

/// `items` in the order `transpose(_, p)` puts the axes they describe.
pub(crate) fn permute<T: Clone>(items: &[T], p: &[usize]) -> Vec<T> {
    p.iter().map(|&a| items[a].clone()).collect()
}

/// The type of `transpose(x, p)` for `x` of type `ty` (same type if the rank is unknown or
/// does not match, which callers rule out).
pub(crate) fn permute_type(ty: &TensorType, p: &[usize]) -> TensorType {
    match ty.shape.dims() {
        Some(d) if d.len() == p.len() => TensorType::new(ty.dtype, permute(d, p)),
        _ => ty.clone(),
    }
}

/// The held type of a value of type `ty` held in layout `p`.
pub(crate) fn held_type(ty: &TensorType, p: &[usize]) -> TensorType {
    permute_type(ty, &inverse(p))
}

/// `transpose(t, p)` computed now.
pub(crate) fn permute_tensor(t: &Tensor, p: &[usize]) -> Result<Tensor> {
    if is_identity(p) {
        return Ok(t.clone());
    }
    let mut out = eval_op(&transpose_op(p), &[Some(t.clone())], 1)?;
    Ok(out.remove(0))
}

/// A 1-D constant with one entry per axis (scales, sizes) with its entries reordered as
/// `transpose(_, p)` reorders the axes.
pub(crate) fn permute_entries(t: &Tensor, p: &[usize]) -> Option<Tensor> {
    if t.rank() != 1 || t.len() != p.len() {
        return None;
    }
    if t.dtype().is_float() {
        Tensor::from_f64(t.dtype(), vec![p.len()], &permute(&t.to_f64_vec(), p)).ok()
    } else {
        Tensor::from_i64(t.dtype(), vec![p.len()], &permute(&t.to_i64_vec(), p)).ok()
    }
}

/// True when `transpose(x, p)` only moves axes of size 1 among the others: the elements
/// stay in the same order, so a reshape does the same.
pub(crate) fn moves_only_unit_axes(dims: &[Dim], p: &[usize]) -> bool {
    let big: Vec<usize> = p.iter().copied().filter(|&a| dims[a] != Dim::Known(1)).collect();
    big.windows(2).all(|w| w[0] < w[1])
}

/// Where each axis of a value goes when the axes in `removed` (sorted or not) disappear:
/// the layout of a reduction's result without kept dims, given the input's layout `p`.
/// Axis `i` of the value is axis `p[i]` of the held tensor; after removing the held axes
/// `p[a]` for `a` in `removed`, the surviving axes keep their order in both.
pub(crate) fn without_axes(p: &[usize], removed: &[usize]) -> Perm {
    let held_removed: Vec<usize> = removed.iter().map(|&a| p[a]).collect();
    let survivors: Vec<usize> = (0..p.len()).filter(|a| !held_removed.contains(a)).collect();
    (0..p.len())
        .filter(|a| !removed.contains(a))
        .map(|a| survivors.iter().position(|&s| s == p[a]).expect("a surviving axis"))
        .collect()
}

/// The layout of `unsqueeze(v, axes)` when `v` is held in layout `p` and the held tensor is
/// unsqueezed at the same output positions `axes` (sorted, normalized to the output rank).
pub(crate) fn with_axes(p: &[usize], axes: &[usize]) -> Perm {
    let rank = p.len() + axes.len();
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let mut q: Perm = (0..rank).collect();
    for (i, &o) in kept.iter().enumerate() {
        q[o] = kept[p[i]];
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhwc_and_nchw_undo_each_other() {
        let to_nchw = [0, 3, 1, 2];
        let to_nhwc = [0, 2, 3, 1];
        assert!(is_identity(&compose(&to_nchw, &to_nhwc)));
        assert_eq!(inverse(&to_nchw), to_nhwc);
    }

    #[test]
    fn reducing_h_and_w_of_a_held_nhwc_value_leaves_no_layout() {
        // v is NHWC held as NCHW (p = [0,2,3,1]); removing H and W leaves [N,C] both ways.
        assert!(is_identity(&without_axes(&[0, 2, 3, 1], &[1, 2])));
        // Removing C leaves [N,H,W] held as [N,H,W].
        assert!(is_identity(&without_axes(&[0, 2, 3, 1], &[3])));
        // Removing N from an NHWC value held as NCHW leaves HWC held as CHW.
        assert_eq!(without_axes(&[0, 2, 3, 1], &[0]), vec![1, 2, 0]);
    }

    #[test]
    fn unsqueezing_keeps_the_inserted_axes_in_place() {
        // [H,W,C] held as [C,H,W], unsqueezed at 0: [1,H,W,C] held as [1,C,H,W].
        assert_eq!(with_axes(&[1, 2, 0], &[0]), vec![0, 2, 3, 1]);
    }

    #[test]
    fn moving_unit_axes_is_a_reshape() {
        let d = |v: &[usize]| v.iter().map(|&x| Dim::Known(x)).collect::<Vec<_>>();
        assert!(moves_only_unit_axes(&d(&[2, 1, 1, 8]), &[0, 3, 1, 2]));
        assert!(!moves_only_unit_axes(&d(&[2, 4, 4, 8]), &[0, 3, 1, 2]));
    }
}
