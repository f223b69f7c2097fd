//! A mean (or max) over every spatial axis of a channel-first tensor is a global pool.

use super::{child, dims, ints, op_of, rank, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use egg::Id;
use kiln_ir::{Op, PoolKind, ReduceKind};

pub fn rules() -> Vec<Rule> {
    vec![Rule { name: "reduce-to-global-pool", apply: reduce_to_global_pool }]
}

fn reduce_to_global_pool(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    // With axes given, `noop_with_empty_axes` does not matter.
    let Some(Op::Reduce { kind, keepdims, .. }) = op_of(eg, node) else { return };
    let kind = match kind {
        ReduceKind::Mean => PoolKind::Average,
        ReduceKind::Max => PoolKind::Max,
        _ => return,
    };
    let (Some(x), Some(axes)) = (child(node, 0), child(node, 1)) else { return };
    let (Some(r), Some(axes)) = (rank(eg, x), ints(eg, axes)) else { return };
    if r < 3 {
        return;
    }
    let mut axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + r as i64 } else { a }).collect();
    axes.sort_unstable();
    if axes != (2..r as i64).collect::<Vec<_>>() {
        return;
    }
    let pool = Term::op(Op::GlobalPool { kind, p: 2 }, vec![x.into()]);
    if *keepdims {
        out.push((class, pool));
    } else if let Some(d) = dims(eg, class) {
        let shape: Vec<i64> = d.iter().map(|&x| x as i64).collect();
        out.push((class, Term::op(Op::Reshape { allowzero: false }, vec![pool, Term::i64s(&shape)])));
    } else {
        out.push((class, Term::op(Op::Squeeze, vec![pool, Term::i64s(&axes)])));
    }
}
