//! Relu and clip chains: relu of something non-negative is that thing (relu∘relu,
//! relu∘sigmoid, relu∘clip(≥0)); clip(relu x, a≥0, b) = clip(x, a, b); clips compose;
//! max(x, 0) is relu; min(max(x, a), b) is clip(x, a, b); min∘min and max∘max with
//! constants take one constant.

use super::{child, is_absent, is_const, op_of, ops_in, same_type, scalar, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use egg::Id;
use kiln_ir::{BinaryOp, Op, UnaryOp};

pub fn rules() -> Vec<Rule> {
    vec![
        Rule { name: "relu-of-nonneg", apply: relu_of_nonneg },
        Rule { name: "clip-chain", apply: clip_chain },
        Rule { name: "min-max", apply: min_max },
    ]
}

fn relu_of_nonneg(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    if op_of(eg, node) != Some(&Op::Unary(UnaryOp::Relu)) {
        return;
    }
    let x = node.children[0];
    if eg[x].data.nonneg {
        out.push((class, x.into()));
    }
}

/// A clip bound: absent, or a scalar constant.
fn bound(eg: &EG, node: &ENode, i: usize) -> Option<Option<f64>> {
    match child(node, i) {
        None => Some(None),
        Some(b) if is_absent(eg, b) => Some(None),
        Some(b) => scalar(eg, b).map(Some),
    }
}

fn clip_chain(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    if op_of(eg, node) != Some(&Op::Clip) {
        return;
    }
    let x = node.children[0];
    let (Some(lo), Some(_)) = (bound(eg, node, 1), bound(eg, node, 2)) else { return };
    let arg = |i: usize| node.children.get(i).map_or(Term::None, |&c| Term::Class(c));
    for (inner, kids) in ops_in(eg, x) {
        match inner {
            // clip(relu x, a ≥ 0, b) = clip(x, a, b)
            Op::Unary(UnaryOp::Relu) if lo.is_some_and(|a| a >= 0.0) => {
                out.push((class, Term::op(Op::Clip, vec![kids[0].into(), arg(1), arg(2)])));
            }
            // A clip of a clip is a clip whose bounds are where the pair sends -inf and
            // +inf: clip(x, outer(inner(-inf)), outer(inner(+inf))). Taking max(a1, a2) and
            // min(b1, b2) instead is wrong when the ranges do not overlap (clip(clip(x, 0, 1),
            // 2, 3) is 2 everywhere, clip(x, 2, 1) is 1).
            Op::Clip => {
                let inner_node = ENode { kind: crate::egraph::lang::Kind::None, children: kids.to_vec() };
                if bound(eg, &inner_node, 1).is_none() || bound(eg, &inner_node, 2).is_none() {
                    continue;
                }
                let present = |ids: &[Id], i: usize| ids.get(i).copied().filter(|&c| !is_absent(eg, c));
                let (a1, b1) = (present(kids, 1), present(kids, 2));
                let (a2, b2) = (present(&node.children, 1), present(&node.children, 2));
                let bin = |b: BinaryOp, l: Term, r: Term| Term::op(Op::Binary(b), vec![l, r]);
                // Where the outer clip sends `t`; `None` is -inf when `low`, else +inf.
                let outer = |t: Option<Term>, low: bool| match t {
                    Some(t) => {
                        let t = match a2 {
                            Some(a) => bin(BinaryOp::Max, t, a.into()),
                            None => t,
                        };
                        match b2 {
                            Some(b) => bin(BinaryOp::Min, t, b.into()),
                            None => t,
                        }
                    }
                    None if low => match (a2, b2) {
                        (Some(a), Some(b)) => bin(BinaryOp::Min, a.into(), b.into()),
                        (Some(a), None) => a.into(),
                        (None, _) => Term::None,
                    },
                    None => b2.map_or(Term::None, Term::from),
                };
                let inner_low = a1.map(|a| match b1 {
                    Some(b) => bin(BinaryOp::Min, a.into(), b.into()),
                    None => a.into(),
                });
                let inner_high = b1.map(Term::from);
                out.push((class, Term::op(Op::Clip, vec![kids[0].into(), outer(inner_low, true), outer(inner_high, false)])));
            }
            _ => {}
        }
    }
}

/// The scalar constant operand of a binary node and the other operand.
fn with_scalar(eg: &EG, node: &ENode) -> Option<(Id, Id, f64)> {
    let (l, r) = (child(node, 0)?, child(node, 1)?);
    if let Some(c) = scalar(eg, r) {
        return Some((l, r, c));
    }
    scalar(eg, l).map(|c| (r, l, c))
}

fn min_max(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Binary(b @ (BinaryOp::Min | BinaryOp::Max))) = op_of(eg, node) else { return };
    let Some((x, c, cv)) = with_scalar(eg, node) else { return };
    if !same_type(eg, class, x) || !is_const(eg, c) {
        return;
    }
    if *b == BinaryOp::Max && cv == 0.0 {
        out.push((class, Term::op(Op::Unary(UnaryOp::Relu), vec![x.into()])));
    }
    // min(relu(y), b) = clip(y, 0, b) for b ≥ 0 (relu6 as Keras writes it).
    if *b == BinaryOp::Min && cv >= 0.0 && super::dtype(eg, c) == Some(kiln_ir::DType::F32) {
        for (inner, kids) in ops_in(eg, x) {
            if *inner == Op::Unary(UnaryOp::Relu) {
                let zero = Term::Const(kiln_ir::Tensor::scalar(0.0f32));
                out.push((class, Term::op(Op::Clip, vec![kids[0].into(), zero, c.into()])));
            }
        }
    }
    for (inner, kids) in ops_in(eg, x) {
        let Op::Binary(ib @ (BinaryOp::Min | BinaryOp::Max)) = inner else { continue };
        let inner_node = ENode { kind: node.kind, children: kids.to_vec() };
        let Some((y, ic, icv)) = with_scalar(eg, &inner_node) else { continue };
        if !same_type(eg, x, y) {
            continue;
        }
        if ib == b {
            // min(min(y, a), b) = min(y, min(a, b))
            out.push((class, Term::op(Op::Binary(*b), vec![y.into(), Term::op(Op::Binary(*b), vec![ic.into(), c.into()])])));
        } else {
            // min(max(y, a), b) = clip(y, a, b) when a ≤ b, and max(min(y, b), a) likewise.
            let (lo, hi, lov, hiv) = if *b == BinaryOp::Min { (ic, c, icv, cv) } else { (c, ic, cv, icv) };
            if lov <= hiv {
                out.push((class, Term::op(Op::Clip, vec![y.into(), lo.into(), hi.into()])));
            }
        }
    }
}
