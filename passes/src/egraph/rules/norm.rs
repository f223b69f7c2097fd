//! Layer normalisation written out in primitives, as tf2onnx exports Keras' LayerNormalization
//! (mean, squared difference, mean, add ε, sqrt, reciprocal, then the affine in its
//! `x·g + (−mean·g + β)` form, g = rstd·γ), becomes one `LayerNorm` over the trailing axes:
//! one kernel reading x twice instead of a dozen ops and two reductions.

use super::{child, dims, ops_in, rank, same_type, scalar, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use egg::Id;
use kiln_ir::{BinaryOp, DType, Op, PoolKind, UnaryOp};

pub fn rules() -> Vec<Rule> {
    vec![Rule {
        name: "layer-norm",
        apply: layer_norm,
    }]
}

/// The children of the ops `op` in class `id`, both orders for a commutative binary op.
fn pairs(eg: &EG, id: Id, op: BinaryOp) -> Vec<(Id, Id)> {
    let mut v = Vec::new();
    for (o, kids) in ops_in(eg, id) {
        if *o == Op::Binary(op) && kids.len() == 2 {
            v.push((kids[0], kids[1]));
            if matches!(op, BinaryOp::Add | BinaryOp::Mul) {
                v.push((kids[1], kids[0]));
            }
        }
    }
    v
}

/// The input of a unary op `op` in class `id`.
fn unary(eg: &EG, id: Id, op: &Op) -> Option<Id> {
    ops_in(eg, id)
        .find(|(o, k)| *o == op && k.len() == 1)
        .map(|(_, k)| k[0])
}

/// The input of an average over the axes from 2 on (a global average pool) in class `id`.
fn mean_of(eg: &EG, id: Id) -> Option<Id> {
    unary(
        eg,
        id,
        &Op::GlobalPool {
            kind: PoolKind::Average,
            p: 2,
        },
    )
}

/// rstd = 1 / sqrt(mean((x − m)²) + ε) for the given x and m: ε.
fn rstd_eps(eg: &EG, r: Id, x: Id, m: Id) -> Option<f64> {
    let s = unary(eg, r, &Op::Unary(UnaryOp::Reciprocal))?;
    let t = unary(eg, s, &Op::Unary(UnaryOp::Sqrt))?;
    pairs(eg, t, BinaryOp::Add).into_iter().find_map(|(v, e)| {
        let eps = scalar(eg, e)?;
        let sq = mean_of(eg, v)?;
        let found = pairs(eg, sq, BinaryOp::Mul).into_iter().any(|(a, b)| {
            eg.find(a) == eg.find(b)
                && pairs(eg, a, BinaryOp::Sub)
                    .iter()
                    .any(|&(p, q)| eg.find(p) == x && eg.find(q) == m)
        });
        found.then_some(eps)
    })
}

fn layer_norm(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    if super::op_of(eg, node) != Some(&Op::Binary(BinaryOp::Add)) {
        return;
    }
    let (Some(l), Some(r)) = (child(node, 0), child(node, 1)) else {
        return;
    };
    for (p, q) in [(l, r), (r, l)] {
        // p = x·g
        for (x, g) in pairs(eg, p, BinaryOp::Mul) {
            let x = eg.find(x);
            let Some(rank_x) = rank(eg, x) else { continue };
            if rank_x < 3 || !same_type(eg, class, x) || super::dtype(eg, x) != Some(DType::F32) {
                continue;
            }
            // g = rstd·γ
            for (rs, gamma) in pairs(eg, g, BinaryOp::Mul) {
                // q = (−m)·g + β
                for (ng, beta) in pairs(eg, q, BinaryOp::Add) {
                    let Some(m) = pairs(eg, ng, BinaryOp::Mul)
                        .into_iter()
                        .find_map(|(n, g2)| {
                            (eg.find(g2) == eg.find(g))
                                .then(|| unary(eg, n, &Op::Unary(UnaryOp::Neg)))
                                .flatten()
                        })
                    else {
                        continue;
                    };
                    let m = eg.find(m);
                    if mean_of(eg, m).map(|v| eg.find(v)) != Some(x) {
                        continue;
                    }
                    let Some(eps) = rstd_eps(eg, rs, x, m) else {
                        continue;
                    };
                    // γ and β must vary along the normalised axes only, as LayerNorm's
                    // scale and bias do: shaped as those axes.
                    let (Some(xd), Some(gd), Some(bd)) =
                        (dims(eg, x), dims(eg, gamma), dims(eg, beta))
                    else {
                        continue;
                    };
                    let norm: Vec<usize> = xd[2..].to_vec();
                    let fits = |d: &[usize]| {
                        d.len() <= xd.len()
                            && d.iter()
                                .rev()
                                .zip(xd.iter().rev())
                                .enumerate()
                                .all(|(i, (&a, &b))| a == b || (a == 1 && i >= norm.len()))
                    };
                    if !fits(&gd) || !fits(&bd) {
                        continue;
                    }
                    let shape: Vec<i64> = norm.iter().map(|&d| d as i64).collect();
                    let as_norm = |t: Id| {
                        Term::op(
                            Op::Reshape { allowzero: false },
                            vec![t.into(), Term::i64s(&shape)],
                        )
                    };
                    let ln = Op::LayerNorm {
                        axis: 2,
                        epsilon: eps as f32,
                        stash_type: DType::F32,
                    };
                    out.push((
                        class,
                        Term::op(ln, vec![x.into(), as_norm(gamma), as_norm(beta)]),
                    ));
                    return;
                }
            }
        }
    }
}
