//! The standard pipelines: which passes run at each level, in which order.

use crate::manager::Pipeline;

/// `-O1`: the classic passes. Identities go first so that folding sees through them;
/// shape folding turns shape chains into constants that `fold` then finishes; CSE runs on
/// the folded graph (where more nodes read the same constants) and the last DCE removes
/// what it merged away.
pub(crate) fn classic(p: &mut Pipeline) {
    use crate::classic::*;
    p.push(Simplify)
        .push(ShapeFold)
        .push(Fold)
        .push(Dce)
        .push(Cse)
        .push(Dce);
}

/// What `-O2` adds after the classic passes. The order: layout first (it removes the bridges' NHWC transposes in one sweep), then
/// the e-graph (algebra, folding batch norms, pads and scales into convs), then the classic
/// clean-up, and fusion last, so that it sees the final ops.
pub(crate) fn full(p: &mut Pipeline) {
    p.push(crate::layout::Layout);
    p.push(crate::egraph::EGraph::default());
    // The e-graph computes the weights it rewrote; what its rewrites leave constant-only
    // elsewhere is folded, and what they orphaned removed; simplify then moves the
    // activations after the splits the merge of sibling convs made in front of the split.
    p.push(crate::classic::Fold).push(crate::classic::Dce).push(crate::classic::Simplify);
    // Fusion comes last: it turns the rewritten graph into the kernels backends lower.
    p.push(crate::fusion::Fusion);
}
