//! Batch norm, scale and bias folded into conv, matmul and gemm weights.
//!
//! Batch norm first becomes its affine form, mul(x, k) + (bias − mean·k) with
//! k = scale / sqrt(var + ε) per channel; then a per-channel scale after a conv (or a
//! matmul/gemm, per output column) scales the weights and bias, and a per-channel bias adds
//! into the bias. The new weights are expressions of constants only: extraction counts them
//! as free and `fold` computes them.
//!
//! A per-input-channel scale before a conv (squeeze-excitation's gate, computed at run time)
//! scales the weights instead: W·s costs one pass over the weights, x·s one over the
//! feature map.

use super::{child, dtype, is_absent, is_const, op_of, ops_in, rank, same_type, value, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use egg::Id;
use kiln_ir::{BinaryOp, DType, Op, Tensor, UnaryOp};

pub fn rules() -> Vec<Rule> {
    vec![
        Rule { name: "batch-norm-affine", apply: batch_norm_affine },
        Rule { name: "fold-scale", apply: fold_scale },
        Rule { name: "fold-bias", apply: fold_bias },
        Rule { name: "scale-into-conv", apply: scale_into_conv },
    ]
}

fn bin(b: BinaryOp, l: impl Into<Term>, r: impl Into<Term>) -> Term {
    Term::op(Op::Binary(b), vec![l.into(), r.into()])
}

fn reshape(x: impl Into<Term>, shape: &[usize]) -> Term {
    let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Term::op(Op::Reshape { allowzero: false }, vec![x.into(), Term::i64s(&s)])
}

/// `[n, 1, 1, …]` of rank `r` (the channel-first weight layout).
fn lead(n: usize, r: usize) -> Vec<usize> {
    let mut v = vec![1; r.max(1)];
    v[0] = n;
    v
}

/// A scalar of a float dtype.
fn scalar_of(dt: DType, x: f32) -> Option<Term> {
    let f = Term::Const(Tensor::scalar(x));
    match dt {
        DType::F32 => Some(f),
        DType::F64 | DType::F16 | DType::BF16 => Some(Term::op(Op::Cast { to: dt }, vec![f])),
        _ => None,
    }
}

/// BatchNorm(x, scale, bias, mean, var) = x·k + (bias − mean·k), k = scale/sqrt(var + ε),
/// with k and the shift shaped [C, 1, …] to broadcast along axis 1.
fn batch_norm_affine(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::BatchNorm { epsilon }) = op_of(eg, node) else { return };
    if node.children.len() != 5 || node.children[1..].iter().any(|&c| !is_const(eg, c) || is_absent(eg, c)) {
        return;
    }
    let x = node.children[0];
    let (Some(r), Some(dt)) = (rank(eg, x), dtype(eg, x)) else { return };
    let Some(c) = super::dims(eg, node.children[1]).filter(|d| d.len() == 1).map(|d| d[0]) else { return };
    if r < 2 || !same_type(eg, class, x) {
        return;
    }
    let Some(eps) = scalar_of(dt, *epsilon) else { return };
    let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| node.children[i]);
    let k = bin(BinaryOp::Div, scale, Term::op(Op::Unary(UnaryOp::Sqrt), vec![bin(BinaryOp::Add, var, eps)]));
    let shift = bin(BinaryOp::Sub, bias, bin(BinaryOp::Mul, mean, k.clone()));
    let mut shape = vec![1; r - 1];
    shape[0] = c;
    let t = bin(BinaryOp::Add, bin(BinaryOp::Mul, x, reshape(k, &shape)), reshape(shift, &shape));
    out.push((class, t));
}

/// The length (1 or C) of constant `c` when it varies along `axis` of a rank-`r` result
/// only; `None` when it is not such a constant.
fn per_channel(eg: &EG, c: Id, r: usize, axis: usize) -> Option<usize> {
    let t = value(eg, c)?;
    let s = t.shape();
    if s.len() > r {
        return None;
    }
    let off = r - s.len();
    s.iter().enumerate().all(|(i, &d)| d == 1 || i + off == axis).then_some(t.len())
}

/// The linear op feeding a per-channel scale or bias, found among the ops of class `a`.
enum Linear<'a> {
    /// conv(x, w, b?) with a constant w of this rank.
    Conv { op: &'a Op, kids: &'a [Id], w_rank: usize },
    /// matmul(x, w) with a constant 2-d w.
    MatMul { kids: &'a [Id] },
    /// gemm(a, b, c?) with a constant b.
    Gemm { op: &'a Op, kids: &'a [Id], trans_b: bool },
}

fn linears(eg: &EG, a: Id) -> Vec<Linear<'_>> {
    let mut v = Vec::new();
    for (op, kids) in ops_in(eg, a) {
        match op {
            Op::Conv { .. } if kids.len() >= 2 && is_const(eg, kids[1]) => {
                if let Some(w_rank) = rank(eg, kids[1]) {
                    v.push(Linear::Conv { op, kids, w_rank });
                }
            }
            Op::MatMul if kids.len() == 2 && is_const(eg, kids[1]) && rank(eg, kids[1]) == Some(2) => v.push(Linear::MatMul { kids }),
            Op::Gemm { trans_b, .. } if kids.len() >= 2 && is_const(eg, kids[1]) => v.push(Linear::Gemm { op, kids, trans_b: *trans_b }),
            _ => {}
        }
    }
    v
}

fn arg(kids: &[Id], i: usize) -> Term {
    kids.get(i).map_or(Term::None, |&c| c.into())
}

fn present(eg: &EG, kids: &[Id], i: usize) -> Option<Id> {
    kids.get(i).copied().filter(|&c| !is_absent(eg, c))
}

/// (linear result, constant) operand pairs of a commutative or left-only binary node.
fn operands(node: &ENode, commutative: bool) -> Vec<(Id, Id)> {
    let (Some(l), Some(r)) = (child(node, 0), child(node, 1)) else { return vec![] };
    if commutative {
        vec![(l, r), (r, l)]
    } else {
        vec![(l, r)]
    }
}

/// mul(linear(x, W, b), s) = linear(x, W·s, b·s) for a per-output-channel constant s.
fn fold_scale(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    if op_of(eg, node) != Some(&Op::Binary(BinaryOp::Mul)) {
        return;
    }
    for (a, s) in operands(node, true) {
        let Some(r) = rank(eg, a) else { continue };
        if !same_type(eg, class, a) || r < 2 {
            continue;
        }
        for lin in linears(eg, a) {
            let t = match lin {
                Linear::Conv { op, kids, w_rank } => {
                    let Some(n) = per_channel(eg, s, r, 1) else { continue };
                    let sv = reshape(s, &[n]);
                    let w = bin(BinaryOp::Mul, kids[1], reshape(sv.clone(), &lead(n, w_rank)));
                    let b = present(eg, kids, 2).map_or(Term::None, |b| bin(BinaryOp::Mul, b, sv));
                    let mut args = vec![kids[0].into(), w];
                    if kids.len() > 2 {
                        args.push(b);
                    }
                    Term::op(op.clone(), args)
                }
                Linear::MatMul { kids } => {
                    let Some(n) = per_channel(eg, s, r, r - 1) else { continue };
                    Term::op(Op::MatMul, vec![kids[0].into(), bin(BinaryOp::Mul, kids[1], reshape(s, &[1, n]))])
                }
                Linear::Gemm { op, kids, trans_b } => {
                    let Some(n) = per_channel(eg, s, r, r - 1) else { continue };
                    let ws = if trans_b { reshape(s, &[n, 1]) } else { reshape(s, &[1, n]) };
                    let mut args = vec![kids[0].into(), bin(BinaryOp::Mul, kids[1], ws)];
                    if kids.len() > 2 {
                        args.push(present(eg, kids, 2).map_or(Term::None, |c| bin(BinaryOp::Mul, c, reshape(s, &[n]))));
                    }
                    Term::op(op.clone(), args)
                }
            };
            out.push((class, t));
        }
    }
}

/// add(linear(x, W, b), c) = linear(x, W, b + c) for a per-output-channel constant c
/// (sub likewise); matmul(x, W) + c with 2-d x becomes gemm(x, W, c).
fn fold_bias(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let (sub, commutative) = match op_of(eg, node) {
        Some(Op::Binary(BinaryOp::Add)) => (false, true),
        Some(Op::Binary(BinaryOp::Sub)) => (true, false),
        _ => return,
    };
    let combine = if sub { BinaryOp::Sub } else { BinaryOp::Add };
    for (a, c) in operands(node, commutative) {
        let Some(r) = rank(eg, a) else { continue };
        if !same_type(eg, class, a) || r < 2 {
            continue;
        }
        // The channel count, to give a bias to a linear op that has none.
        let Some(out_dims) = super::dims(eg, a).or_else(|| {
            let t = super::ty(eg, a)?;
            let d = t.shape.dims()?;
            Some(d.iter().map(|d| d.known().unwrap_or(0)).collect())
        }) else {
            continue;
        };
        for lin in linears(eg, a) {
            let (axis, channels) = match lin {
                Linear::Conv { .. } => (1, out_dims[1]),
                _ => (r - 1, out_dims[r - 1]),
            };
            let Some(n) = per_channel(eg, c, r, axis) else { continue };
            if channels == 0 {
                continue;
            }
            // c as a [channels] vector.
            let cv = if n == channels {
                reshape(c, &[n])
            } else {
                Term::op(Op::Expand, vec![reshape(c, &[1]), Term::i64s(&[channels as i64])])
            };
            let new_bias = |old: Option<Id>| match old {
                Some(b) => bin(combine, b, cv.clone()),
                None if sub => Term::op(Op::Unary(UnaryOp::Neg), vec![cv.clone()]),
                None => cv.clone(),
            };
            let t = match lin {
                Linear::Conv { op, kids, .. } => Term::op(op.clone(), vec![kids[0].into(), kids[1].into(), new_bias(present(eg, kids, 2))]),
                Linear::MatMul { kids } => {
                    if rank(eg, kids[0]) != Some(2) {
                        continue;
                    }
                    let gemm = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
                    Term::op(gemm, vec![kids[0].into(), kids[1].into(), new_bias(None)])
                }
                Linear::Gemm { op, kids, .. } => {
                    let Op::Gemm { alpha, beta, trans_a, trans_b } = op else { continue };
                    match present(eg, kids, 2) {
                        Some(old) if *beta == 1.0 => Term::op(op.clone(), vec![arg(kids, 0), arg(kids, 1), new_bias(Some(old))]),
                        None => {
                            let gemm = Op::Gemm { alpha: *alpha, beta: 1.0, trans_a: *trans_a, trans_b: *trans_b };
                            Term::op(gemm, vec![arg(kids, 0), arg(kids, 1), new_bias(None)])
                        }
                        Some(_) => continue,
                    }
                }
            };
            out.push((class, t));
        }
    }
}

/// conv(mul(x, s), W, b) = conv(x, mul(W, s), b) for s of shape [1, C, 1, …] (or one that
/// broadcasts as it) and an ungrouped conv: output channel m sums W[m, c, …]·s[c]·x[c, …],
/// and a padded zero stays zero either way. s need not be constant.
fn scale_into_conv(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(op @ Op::Conv { group: 1, .. }) = op_of(eg, node) else { return };
    let (Some(m), Some(w)) = (child(node, 0), child(node, 1)) else { return };
    let Some(r) = rank(eg, m) else { return };
    if r < 3 || rank(eg, w) != Some(r) {
        return;
    }
    for (mul, kids) in ops_in(eg, m) {
        if mul != &Op::Binary(BinaryOp::Mul) || kids.len() != 2 {
            continue;
        }
        for (x, s) in [(kids[0], kids[1]), (kids[1], kids[0])] {
            let Some(sd) = super::dims(eg, s) else { continue };
            let per_input_channel = sd.len() <= r && sd.iter().enumerate().all(|(i, &d)| d == 1 || i + r - sd.len() == 1);
            if !per_input_channel || !same_type(eg, m, x) || dtype(eg, s) != dtype(eg, w) {
                continue;
            }
            let mut args: Vec<Term> = node.children.iter().map(|&c| c.into()).collect();
            args[0] = x.into();
            args[1] = bin(BinaryOp::Mul, w, s);
            out.push((class, Term::op(op.clone(), args)));
        }
    }
}
