//! The extraction cost model: estimated time of one e-node, in microseconds, from the work
//! it does (flops), the bytes it moves (its inputs and outputs) and a fixed cost per kernel
//! launch. Elementwise ops are cheap because fusion folds them into a neighbouring kernel;
//! reshapes are views. A node computed from constants only costs nothing: `fold` computes
//! it before run time.

use super::analysis::EG;
use super::lang::{ENode, Kind};
use crate::pattern::pattern;
use kiln_ir::{Dim, Op, TensorType, UnaryOp};

/// Machine constants of the estimate. Only ratios matter for choosing between rewrites.
#[derive(Clone, Debug)]
pub struct CostModel {
    /// Fixed cost of launching one kernel.
    pub launch_us: f64,
    pub bytes_per_us: f64,
    pub flops_per_us: f64,
    /// Share of a standalone kernel's cost an elementwise op keeps once fused.
    pub elementwise_share: f64,
    /// A general reduction against the specialized kernels (global pooling) doing the same.
    pub reduce_penalty: f64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel { launch_us: 4.0, bytes_per_us: 10_000.0, flops_per_us: 50_000.0, elementwise_share: 0.3, reduce_penalty: 1.25 }
    }
}

/// Elements of a type, counting symbolic and unknown dims as 1 (batch 1).
fn numel(t: &TensorType) -> f64 {
    match t.shape.dims() {
        None => 1.0,
        Some(d) => d.iter().map(|d| if let Dim::Known(k) = d { *k as f64 } else { 1.0 }).product(),
    }
}

fn bytes(t: &TensorType) -> f64 {
    numel(t) * t.dtype.size() as f64
}

fn dim(t: Option<&TensorType>, i: usize) -> f64 {
    t.and_then(|t| t.shape.dims()?.get(i)?.known()).map_or(1.0, |k| k as f64)
}

impl CostModel {
    /// The cost of `node` alone (its children are costed by their own classes).
    pub fn node_cost(&self, eg: &EG, node: &ENode, outs: &[TensorType]) -> f64 {
        let (Kind::Op(o) | Kind::Multi(o)) = node.kind else { return 0.0 };
        let op = eg.analysis.op(o);
        let kids: Vec<&super::analysis::Data> = node.children.iter().map(|&c| &eg[c].data).collect();
        if op.is_pure() && kids.iter().all(|d| d.constant) {
            return 0.0;
        }
        if outs.is_empty() {
            return f64::INFINITY;
        }
        let out_elems: f64 = outs.iter().map(numel).sum();
        let moved: f64 = kids.iter().filter_map(|d| d.ty()).map(bytes).sum::<f64>() + outs.iter().map(bytes).sum::<f64>();
        let flops = match op {
            Op::Conv { .. } | Op::ConvTranspose { .. } => {
                let w = kids.get(1).and_then(|d| d.ty());
                let per_out: f64 = w.map_or(1.0, |w| numel(w) / dim(Some(w), 0).max(1.0));
                2.0 * out_elems * per_out
            }
            Op::MatMul => {
                let a = kids.first().and_then(|d| d.ty());
                let k = a.and_then(|t| t.shape.rank()).map_or(1.0, |r| dim(a, r.saturating_sub(1)));
                2.0 * out_elems * k
            }
            Op::Gemm { trans_a, .. } => {
                let a = kids.first().and_then(|d| d.ty());
                2.0 * out_elems * dim(a, if *trans_a { 0 } else { 1 })
            }
            _ => out_elems,
        };
        let full = self.launch_us + moved / self.bytes_per_us + flops / self.flops_per_us;
        match op {
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze | Op::Unary(UnaryOp::Identity) => 0.05 * self.launch_us,
            Op::Reduce { .. } => full * self.reduce_penalty,
            _ if pattern(op).is_elementwise() => full * self.elementwise_share,
            _ => full,
        }
    }
}
