//! Framework bridges: each module lowers one framework's model format into a `kiln_ir::Graph`.
//! A framework's vocabulary (op type strings, attribute maps, protobuf types) never leaves
//! its module.

pub mod error;
pub mod keras;
pub mod onnx;
pub mod tensorflow;

pub use error::BridgeError;
