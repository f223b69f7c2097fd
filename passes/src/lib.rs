//! Passes (to come with the passes issue).

pub mod fp16;
