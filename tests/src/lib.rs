//! Shared code for kiln's cross-crate tests.

pub mod conformance;
pub mod pass_checks;
