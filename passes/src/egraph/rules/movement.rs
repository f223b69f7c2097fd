//! Data movement: transpose∘transpose composes (and cancels to nothing); reshape∘reshape
//! merges; a reshape or transpose that changes nothing goes; squeeze, unsqueeze and flatten
//! of known shapes are reshapes (so they merge too); transposes sink below elementwise ops
//! (unary, binary with both operands transposed alike or with a constant operand) and below
//! reductions, where they meet the next transpose and cancel.

use super::{child, dims, ints, is_absent, is_const, op_of, ops_in, perm_of, rank, same_type, ty, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use crate::pattern::{pattern, Pattern};
use egg::Id;
use kiln_ir::{Dim, Op};

pub fn rules() -> Vec<Rule> {
    vec![
        Rule { name: "transpose-transpose", apply: transpose_transpose },
        Rule { name: "reshape-reshape", apply: reshape_reshape },
        Rule { name: "as-reshape", apply: as_reshape },
        Rule { name: "sink-transpose-unary", apply: sink_unary },
        Rule { name: "sink-transpose-binary", apply: sink_binary },
        Rule { name: "sink-transpose-reduce", apply: sink_reduce },
        Rule { name: "transpose-of-pad", apply: transpose_of_pad },
        Rule { name: "sink-transpose-concat", apply: sink_concat },
    ]
}

fn transpose(perm: Vec<usize>) -> Op {
    Op::Transpose { perm: Some(perm.into_iter().map(|p| p as i64).collect()) }
}

fn is_identity(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &x)| i == x)
}

fn inverse(p: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; p.len()];
    for (i, &x) in p.iter().enumerate() {
        inv[x] = i;
    }
    inv
}

/// The transposes in class `id`: (input, perm).
fn transposes_in(eg: &EG, id: Id) -> Vec<(Id, Vec<usize>)> {
    let Some(r) = rank(eg, id) else { return vec![] };
    ops_in(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Transpose { perm } => perm_of(perm, r).map(|p| (kids[0], p)),
            _ => None,
        })
        .collect()
}

fn transpose_transpose(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Transpose { perm }) = op_of(eg, node) else { return };
    let x = node.children[0];
    let Some(p2) = rank(eg, x).and_then(|r| perm_of(perm, r)) else { return };
    if is_identity(&p2) {
        out.push((class, x.into()));
        return;
    }
    for (y, p1) in transposes_in(eg, x) {
        // out[i] = x[p2[i]] = y[p1[p2[i]]]
        let q: Vec<usize> = p2.iter().map(|&i| p1[i]).collect();
        out.push((class, if is_identity(&q) { y.into() } else { Term::op(transpose(q), vec![y.into()]) }));
    }
}

/// The target of a reshape that reads nothing from its input's shape: the class's own
/// known shape, or a given shape without zeros (`0` copies an input dim).
fn portable_shape(eg: &EG, class: Id, shape: Id, allowzero: bool) -> Option<Term> {
    if let Some(d) = dims(eg, class) {
        return Some(Term::i64s(&d.iter().map(|&x| x as i64).collect::<Vec<_>>()));
    }
    let s = ints(eg, shape)?;
    (allowzero || !s.contains(&0)).then_some(Term::Class(shape))
}

fn reshape_reshape(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Reshape { allowzero }) = op_of(eg, node) else { return };
    let (x, shape) = (node.children[0], node.children[1]);
    if same_type(eg, class, x) {
        out.push((class, x.into()));
        return;
    }
    let Some(target) = portable_shape(eg, class, shape, *allowzero) else { return };
    for (inner, kids) in ops_in(eg, x) {
        if matches!(inner, Op::Reshape { .. }) {
            let y = kids[0];
            let t = if same_type(eg, class, y) { y.into() } else { Term::op(Op::Reshape { allowzero: *allowzero }, vec![y.into(), target.clone()]) };
            out.push((class, t));
        }
    }
}

/// squeeze, unsqueeze and flatten to a known shape are reshapes.
fn as_reshape(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Squeeze | Op::Unsqueeze | Op::Flatten { .. }) = op_of(eg, node) else { return };
    if node.children.iter().skip(1).any(|&c| !is_const(eg, c)) {
        return;
    }
    let Some(d) = dims(eg, class) else { return };
    let shape = Term::i64s(&d.iter().map(|&x| x as i64).collect::<Vec<_>>());
    out.push((class, Term::op(Op::Reshape { allowzero: false }, vec![node.children[0].into(), shape])));
}

/// f(transpose(x, p)) = transpose(f(x), p) for elementwise f of one tensor (clip's bounds
/// are scalars).
fn sink_unary(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(op) = op_of(eg, node) else { return };
    if pattern(op) != Pattern::Elementwise && *op != Op::Clip {
        return;
    }
    let Some(x) = child(node, 0) else { return };
    if node.children[1..].iter().any(|&c| !is_const(eg, c) || rank(eg, c).is_some_and(|r| r > 0)) {
        return;
    }
    for (y, p) in transposes_in(eg, x) {
        let mut kids: Vec<Term> = node.children.iter().map(|&c| c.into()).collect();
        kids[0] = y.into();
        out.push((class, Term::op(transpose(p), vec![Term::op(op.clone(), kids)])));
    }
}

/// b(transpose(x, p), transpose(y, p)) = transpose(b(x, y), p); with a constant operand c,
/// b(transpose(x, p), c) = transpose(b(x, c'), p) where c' is c brought to full rank and
/// transposed back.
fn sink_binary(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(op @ Op::Binary(_)) = op_of(eg, node) else { return };
    let (Some(l), Some(r)) = (child(node, 0), child(node, 1)) else { return };
    let Some(out_rank) = rank(eg, class) else { return };
    for (side, x, other) in [(0, l, r), (1, r, l)] {
        // The transposed operand must carry the full output shape: no broadcasting of it.
        if ty(eg, class).is_none() || ty(eg, class).map(|t| &t.shape) != ty(eg, x).map(|t| &t.shape) {
            continue;
        }
        for (y, p) in transposes_in(eg, x) {
            let moved: Option<Term> = if let Some((z, _)) = transposes_in(eg, other).into_iter().find(|(_, q)| *q == p) {
                (rank(eg, z) == Some(out_rank)).then_some(z.into())
            } else if is_const(eg, other) {
                let Some(cd) = ty(eg, other).and_then(|t| t.shape.dims().map(|d| d.to_vec())) else { continue };
                if cd.len() > out_rank || cd.iter().any(|d| !matches!(d, Dim::Known(_))) {
                    continue;
                }
                let mut full: Vec<i64> = vec![1; out_rank - cd.len()];
                full.extend(cd.iter().map(|d| d.known().unwrap_or(1) as i64));
                let reshaped = Term::op(Op::Reshape { allowzero: false }, vec![other.into(), Term::i64s(&full)]);
                Some(Term::op(transpose(inverse(&p)), vec![reshaped]))
            } else {
                None
            };
            let Some(moved) = moved else { continue };
            let kids = if side == 0 { vec![y.into(), moved] } else { vec![moved, y.into()] };
            out.push((class, Term::op(transpose(p), vec![Term::op(op.clone(), kids)])));
        }
    }
}

/// reduce(transpose(x, p), axes) = reduce(x, p[axes]) when the kept axes stay in order
/// (keepdims false), or transpose(reduce(x, p[axes]), p) with keepdims.
fn sink_reduce(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(op @ Op::Reduce { keepdims, .. }) = op_of(eg, node) else { return };
    let (Some(x), Some(axes)) = (child(node, 0), child(node, 1)) else { return };
    let (Some(axes), Some(r)) = (ints(eg, axes), rank(eg, x)) else { return };
    if axes.is_empty() {
        return;
    }
    let Some(axes) = axes.iter().map(|&a| usize::try_from(if a < 0 { a + r as i64 } else { a }).ok().filter(|&a| a < r)).collect::<Option<Vec<_>>>() else {
        return;
    };
    for (y, p) in transposes_in(eg, x) {
        let mut moved: Vec<i64> = axes.iter().map(|&a| p[a] as i64).collect();
        moved.sort_unstable();
        let reduced = Term::op(op.clone(), vec![y.into(), Term::i64s(&moved)]);
        if *keepdims {
            out.push((class, Term::op(transpose(p), vec![reduced])));
        } else {
            let kept: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).map(|a| p[a]).collect();
            if kept.windows(2).all(|w| w[0] < w[1]) {
                out.push((class, reduced));
            }
        }
    }
}

/// transpose(pad(x, pads), p) = pad(transpose(x, p), pads permuted): the pad moves to the
/// other side of a layout change, where it may fold into the conv or pool that reads it.
fn transpose_of_pad(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Transpose { perm }) = op_of(eg, node) else { return };
    let x = node.children[0];
    let Some(r) = rank(eg, x) else { return };
    let Some(p) = perm_of(perm, r) else { return };
    for (inner, kids) in ops_in(eg, x) {
        let Op::Pad { .. } = inner else { continue };
        if kids.get(3).is_some_and(|&a| !is_absent(eg, a)) {
            continue;
        }
        let Some(pads) = kids.get(1).and_then(|&c| ints(eg, c)) else { continue };
        if pads.len() != 2 * r {
            continue;
        }
        let moved: Vec<i64> = (0..2 * r).map(|i| if i < r { pads[p[i]] } else { pads[r + p[i - r]] }).collect();
        let value = kids.get(2).map_or(Term::None, |&v| v.into());
        let t = Term::op(inner.clone(), vec![Term::op(transpose(p.clone()), vec![kids[0].into()]), Term::i64s(&moved), value, Term::None]);
        out.push((class, t));
    }
}

/// concat(transpose(a, p), transpose(b, p), …, axis) = transpose(concat(a, b, …, p[axis]), p).
fn sink_concat(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Concat { axis }) = op_of(eg, node) else { return };
    let Some(r) = rank(eg, class) else { return };
    let Some(axis) = usize::try_from(if *axis < 0 { axis + r as i64 } else { *axis }).ok().filter(|&a| a < r) else { return };
    let Some(&first) = node.children.first() else { return };
    for (_, p) in transposes_in(eg, first) {
        let inner: Option<Vec<Term>> =
            node.children.iter().map(|&c| transposes_in(eg, c).into_iter().find(|(_, q)| *q == p).map(|(y, _)| Term::Class(y))).collect();
        let Some(inner) = inner else { continue };
        let concat = Term::op(Op::Concat { axis: p[axis] as i64 }, inner);
        out.push((class, Term::op(transpose(p), vec![concat])));
    }
}
