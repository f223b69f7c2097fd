//! The standard pipelines: which passes run at each level, in which order.

use crate::manager::Pipeline;

/// `-O1`: the classic passes.
pub(crate) fn classic(_p: &mut Pipeline) {}

/// What `-O2` adds after the classic passes.
/// The order: layout first (it removes the bridges' NHWC transposes in one sweep), then
/// the e-graph (algebra, folding batch norms, pads and scales into convs), then the classic
/// clean-up, and fusion last, so that it sees the final ops.
pub(crate) fn full(p: &mut Pipeline) {
    p.push(crate::layout::Layout);
    p.push(crate::egraph::EGraph::default());
    // Fusion comes last: it turns the rewritten graph into the kernels backends lower.
    p.push(crate::fusion::Fusion);
}
