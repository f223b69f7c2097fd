//! Zero padding folded into the op that reads it: conv(pad(x)) → conv with bigger pads;
//! max-pool(pad(x)) likewise when x is non-negative (a padded zero never beats a real
//! element then, and every window keeps a real element when each pad is under the kernel);
//! average-pool(pad(x)) counting the pads.

use super::{all_equal, child, ints, is_absent, op_of, ops_in, rank, Found, Rule, Term};
use crate::egraph::analysis::EG;
use crate::egraph::lang::ENode;
use egg::Id;
use kiln_ir::{AutoPad, Op, PadMode, PoolKind};

pub fn rules() -> Vec<Rule> {
    vec![Rule { name: "pad-into-conv", apply: pad_into_conv }, Rule { name: "pad-into-pool", apply: pad_into_pool }]
}

/// The spatial (begin…, end…) zero pads of a constant-mode zero Pad node of rank `r` whose
/// batch and channel dims are unpadded.
fn spatial_zero_pads(eg: &EG, kids: &[Id], r: usize) -> Option<Vec<i64>> {
    let pads = ints(eg, *kids.get(1)?)?;
    if let Some(&v) = kids.get(2) {
        if !is_absent(eg, v) && !all_equal(eg, v, 0.0) {
            return None;
        }
    }
    let axes: Vec<usize> = match kids.get(3) {
        Some(&a) if !is_absent(eg, a) => {
            ints(eg, a)?.iter().map(|&x| usize::try_from(if x < 0 { x + r as i64 } else { x }).ok().filter(|&x| x < r)).collect::<Option<_>>()?
        }
        _ => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
        return None;
    }
    let (mut begin, mut end) = (vec![0i64; r], vec![0i64; r]);
    for (i, &a) in axes.iter().enumerate() {
        begin[a] += pads[i];
        end[a] += pads[i + axes.len()];
    }
    if begin[..2.min(r)].iter().chain(&end[..2.min(r)]).any(|&p| p != 0) {
        return None;
    }
    Some(begin[2..].iter().chain(&end[2..]).copied().collect())
}

/// Explicit pads of an op: `auto_pad` explicit or valid, empty meaning zeros.
fn own_pads(auto_pad: AutoPad, pads: &[i64], spatial: usize) -> Option<Vec<i64>> {
    match auto_pad {
        AutoPad::NotSet if pads.len() == 2 * spatial => Some(pads.to_vec()),
        AutoPad::NotSet | AutoPad::Valid if pads.is_empty() => Some(vec![0; 2 * spatial]),
        _ => None,
    }
}

fn add(a: &[i64], b: &[i64]) -> Vec<i64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// The pad nodes feeding class `x` as (padded input, spatial pads).
fn pads_in(eg: &EG, x: Id) -> Vec<(Id, Vec<i64>)> {
    let Some(r) = rank(eg, x) else { return vec![] };
    if r < 3 {
        return vec![];
    }
    ops_in(eg, x)
        .filter_map(|(op, kids)| match op {
            Op::Pad { mode: PadMode::Constant } => spatial_zero_pads(eg, kids, r).map(|p| (kids[0], p)),
            _ => None,
        })
        .collect()
}

fn pad_into_conv(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Conv { auto_pad, dilations, group, kernel_shape, pads, strides }) = op_of(eg, node) else { return };
    let Some(x) = child(node, 0) else { return };
    for (y, extra) in pads_in(eg, x) {
        let Some(own) = own_pads(*auto_pad, pads, extra.len() / 2) else { continue };
        let conv = Op::Conv {
            auto_pad: AutoPad::NotSet,
            dilations: dilations.clone(),
            group: *group,
            kernel_shape: kernel_shape.clone(),
            pads: add(&own, &extra),
            strides: strides.clone(),
        };
        let mut kids: Vec<Term> = node.children.iter().map(|&c| c.into()).collect();
        kids[0] = y.into();
        out.push((class, Term::op(conv, kids)));
    }
}

fn pad_into_pool(eg: &EG, class: Id, node: &ENode, out: &mut Found) {
    let Some(Op::Pool { kind, auto_pad, ceil_mode: false, count_include_pad, dilations, kernel_shape, pads, strides, storage_order, p }) = op_of(eg, node) else {
        return;
    };
    let Some(x) = child(node, 0) else { return };
    if dilations.iter().any(|&d| d != 1) {
        return;
    }
    for (y, extra) in pads_in(eg, x) {
        let spatial = extra.len() / 2;
        let Some(own) = own_pads(*auto_pad, pads, spatial) else { continue };
        let total = add(&own, &extra);
        let include = match kind {
            PoolKind::Max if eg[y].data.nonneg => {
                if kernel_shape.len() != spatial || total.iter().enumerate().any(|(i, &t)| t >= kernel_shape[i % spatial]) {
                    continue;
                }
                *count_include_pad
            }
            PoolKind::Average if *count_include_pad || own.iter().all(|&p| p == 0) => true,
            _ => continue,
        };
        let pool = Op::Pool {
            kind: *kind,
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
            count_include_pad: include,
            dilations: dilations.clone(),
            kernel_shape: kernel_shape.clone(),
            pads: total,
            strides: strides.clone(),
            storage_order: *storage_order,
            p: *p,
        };
        out.push((class, Term::op(pool, vec![y.into()])));
    }
}
