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

/// What `-O2` adds after the classic passes.
pub(crate) fn full(_p: &mut Pipeline) {}
