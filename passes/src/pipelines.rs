//! The standard pipelines: which passes run at each level, in which order.

use crate::manager::Pipeline;

/// `-O1`: the classic passes.
pub(crate) fn classic(_p: &mut Pipeline) {}

/// What `-O2` adds after the classic passes.
pub(crate) fn full(p: &mut Pipeline) {
    // Fusion comes last: it turns the rewritten graph into the kernels backends lower.
    p.push(crate::fusion::Fusion);
}
