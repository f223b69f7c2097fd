//! The classic passes (`-O1`): constant folding, shape-computation folding, dead code
//! elimination, common subexpression elimination, identity removal, and the decompositions
//! of composite ops that backends push when they lack a kernel.
//!
//! Every pass works on nested graphs too (If branches, Loop and Scan bodies, fused kernel
//! bodies), keeps the graph's signature (input and output names and types), and leaves alone
//! what it cannot prove safe: an op the evaluator rejects, a shape it does not know.

mod cse;
mod dce;
mod decompose;
mod fold;
mod shape_fold;
mod simplify;
mod util;

pub use cse::Cse;
pub use dce::Dce;
pub use decompose::Decompose;
pub use fold::{Fold, MAX_FOLDED_ELEMENTS};
pub use shape_fold::ShapeFold;
pub use simplify::Simplify;
