//! Algebraic identities: x·1, 1·x, x+0, 0+x, x−0, x/1, x^1, −(−x), identity, a cast to the
//! type it already has, inference-mode dropout. Dropping an op is only right when it did
//! not broadcast its operand to a bigger shape, so each rule checks the types agree.

use super::{all_equal, child, is_absent, op_of, ops_in, same_type, scalar, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use egg::Id;
use kiln_ir::{BinaryOp, Op, UnaryOp};

pub fn rules() -> Vec<Rule> {
    vec![Rule { name: "neutral-operand", apply: neutral_operand }, Rule { name: "no-op", apply: no_op }]
}

/// x·1, 1·x, x+0, 0+x, x−0, x/1, x^1 → x.
fn neutral_operand(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Binary(b)) = op_of(eg, node) else { return };
    let (Some(l), Some(r)) = (child(node, 0), child(node, 1)) else { return };
    let keep = |x: Id, c: Id, neutral: f64| all_equal(eg, c, neutral) && same_type(eg, class, x);
    let hit = match b {
        BinaryOp::Mul => (keep(l, r, 1.0)).then_some(l).or_else(|| keep(r, l, 1.0).then_some(r)),
        BinaryOp::Add => (keep(l, r, 0.0)).then_some(l).or_else(|| keep(r, l, 0.0).then_some(r)),
        BinaryOp::Sub => keep(l, r, 0.0).then_some(l),
        BinaryOp::Div | BinaryOp::Pow => keep(l, r, 1.0).then_some(l),
        _ => None,
    };
    if let Some(x) = hit {
        out.push((class, Term::Class(x)));
    }
}

/// −(−x) → x; identity(x) → x; cast(x, t) → x when x is t; dropout(x) → x (inference).
fn no_op(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(op) = op_of(eg, node) else { return };
    let Some(x) = child(node, 0) else { return };
    match op {
        Op::Unary(UnaryOp::Identity) => out.push((class, x.into())),
        Op::Unary(UnaryOp::Neg) => {
            for (inner, kids) in ops_in(eg, x) {
                if *inner == Op::Unary(UnaryOp::Neg) {
                    out.push((class, kids[0].into()));
                }
            }
        }
        Op::Cast { to } if super::dtype(eg, x) == Some(*to) => out.push((class, x.into())),
        Op::Dropout { seed: None } => {
            let training = node.children.get(2).is_some_and(|&t| !is_absent(eg, t) && scalar(eg, t) != Some(0.0));
            if !training && same_type(eg, class, x) {
                out.push((class, x.into()));
            }
        }
        _ => {}
    }
}
