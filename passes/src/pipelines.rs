//! The standard pipelines: which passes run at each level, in which order.

use crate::manager::Pipeline;

/// `-O1`: the classic passes.
pub(crate) fn classic(_p: &mut Pipeline) {}

/// What `-O2` adds after the classic passes.
///
/// The intended order: layout, egraph, then the classic fold and dce again (the e-graph
/// leaves new weights as constant expressions for `fold` to compute), then fusion. Layout,
/// fold/dce and fusion land from other branches; the lead orders them on merge.
pub(crate) fn full(p: &mut Pipeline) {
    p.push(crate::egraph::EGraph::default());
}
