//! TASO's merge: matmuls (or 1×1 convs) reading one input with different constant weights
//! become one matmul over the concatenated weights, then a split. Extraction takes it only
//! when the cost model says one bigger kernel plus the split beats the separate kernels.

use super::{dims, dtype, is_absent, is_const, op_of, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use egg::{Id, Language};
use kiln_ir::Op;

/// More siblings than this are left alone (the concatenated weight grows, the match is
/// quadratic in the siblings).
const MAX_SIBLINGS: usize = 8;

pub fn rules() -> Vec<Rule> {
    vec![Rule { name: "merge-parallel", apply: merge_parallel }]
}

/// What a sibling must share with the first: the op (attributes included) and the weight's
/// dims other than the output-channel one.
fn signature(eg: &EG, node: &ENode) -> Option<(Op, Vec<usize>, usize)> {
    let op = op_of(eg, node)?;
    let w = *node.children.get(1)?;
    if !is_const(eg, w) {
        return None;
    }
    let wd = dims(eg, w)?;
    match op {
        Op::MatMul if wd.len() == 2 => Some((op.clone(), vec![wd[0]], wd[1])),
        Op::Conv { group: 1, strides, dilations, .. }
            if wd.len() >= 3 && wd[2..].iter().all(|&k| k == 1) && strides.iter().all(|&s| s == 1) && dilations.iter().all(|&d| d == 1) =>
        {
            let has_bias = node.children.get(2).is_some_and(|&b| !is_absent(eg, b));
            Some((op.clone(), [&wd[1..], &[has_bias as usize]].concat(), wd[0]))
        }
        _ => None,
    }
}

fn merge_parallel(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some((op, shared, _)) = signature(eg, node) else { return };
    let x = eg.find(node.children[0]);
    let dt = dtype(eg, node.children[1]);
    // Siblings: nodes of other classes with the same signature reading x, by class id.
    let mut sibs: Vec<(Id, ENode, usize)> = Vec::new();
    for p in eg[x].parents() {
        let parent = eg.id_to_node(p).clone().map_children(|c| eg.find(c));
        let pc = eg.find(p);
        if parent.children.first() != Some(&x) || parent.children.len() != node.children.len() || sibs.iter().any(|s| s.0 == pc) {
            continue;
        }
        let Some((o, s, n)) = signature(eg, &parent) else { continue };
        if o == op && s == shared && dtype(eg, parent.children[1]) == dt {
            sibs.push((pc, parent, n));
        }
    }
    sibs.sort_by(|a, b| a.0.cmp(&b.0));
    if sibs.len() < 2 || sibs.len() > MAX_SIBLINGS || sibs[0].0 != eg.find(class) {
        return;
    }
    let conv = matches!(op, Op::Conv { .. });
    let weights: Vec<Term> = sibs.iter().map(|s| s.1.children[1].into()).collect();
    let w = Term::op(Op::Concat { axis: if conv { 0 } else { 1 } }, weights);
    let mut args = vec![Term::Class(x), w];
    if conv && node.children.len() > 2 {
        if sibs.iter().all(|s| !is_absent(eg, s.1.children[2])) {
            args.push(Term::op(Op::Concat { axis: 0 }, sibs.iter().map(|s| s.1.children[2].into()).collect()));
        } else {
            return;
        }
    }
    let sizes: Vec<i64> = sibs.iter().map(|s| s.2 as i64).collect();
    let merged = Term::op(op, args);
    let split = Term::Multi(Op::Split { axis: if conv { 1 } else { -1 } }, sibs.len(), vec![merged, Term::i64s(&sizes)]);
    for (i, s) in sibs.iter().enumerate() {
        out.push((s.0, Term::Output(i, Box::new(split.clone()))));
    }
}
