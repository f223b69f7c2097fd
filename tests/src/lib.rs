//! Shared code for kiln's cross-crate tests.

pub mod conformance;
