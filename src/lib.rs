//! kiln: a deep-learning graph compiler. This crate is the `kiln` command-line tool and a
//! facade over [`kiln_runtime`]: `kiln::load`, `kiln::compile`, requests.
pub use kiln_runtime::*;
