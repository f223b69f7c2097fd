//! The ONNX bridge: a `.onnx` file (a serialized `ModelProto`) into a `kiln_ir::Graph`.
//!
//! - `tensor`: element types and `TensorProto` decoding, external data.
//! - `attrs`: typed attribute access.
//! - `graph`: scopes, graph inputs and initializers, node order, nested scopes.
//! - `ops`: the one table from ONNX op types to IR ops.
//! - `legacy`: old-opset forms rewritten into the IR's (newest-opset) ops.
//! - `opset6`: definitions from opsets 1 to 6 (legacy broadcasting, is_test, old attributes).
//! - `control`: If, Loop and Scan bodies.
//! - `functions`: inlining of model-local functions.
//!
//! The file is untrusted: every failure is a `BridgeError` naming the file, the node and
//! what is wrong; nothing panics and nothing is allocated that the file cannot justify.

mod attrs;
mod control;
mod functions;
mod graph;
mod legacy;
mod ops;
mod opset6;
mod tensor;

use crate::error::BridgeError;
use kiln_ir::{Graph, IrError, Tensor};
use onnx_protobuf::{Message, ModelProto, TensorProto};
use std::path::Path;

fn bridge_error(file: &str, e: IrError) -> BridgeError {
    BridgeError::new(file, e.node, e.message)
}

fn label_of(path: &Path) -> String {
    path.display().to_string()
}

fn read_file(path: &Path) -> Result<Vec<u8>, BridgeError> {
    std::fs::read(path)
        .map_err(|e| BridgeError::new(label_of(path), None, format!("cannot read the file: {e}")))
}

/// Loads a `.onnx` model file. External data may live in files beside it.
pub fn load(path: &Path) -> Result<Graph, BridgeError> {
    let bytes = read_file(path)?;
    let base = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("."),
    };
    load_bytes(&bytes, Some(base), &label_of(path))
}

/// Loads a serialized `ModelProto`. `label` names the model in messages; `base_dir` is
/// where external data is looked up (`None` refuses external data).
pub fn load_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    label: &str,
) -> Result<Graph, BridgeError> {
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| {
        BridgeError::new(
            label,
            None,
            format!("not a valid ONNX model (protobuf decoding failed: {e})"),
        )
    })?;
    graph::build_model(&model, base_dir).map_err(|e| bridge_error(label, e))
}

/// Reads a serialized `TensorProto` file (the conformance cases' `input_N.pb`), giving its
/// name and value.
pub fn read_tensor(path: &Path) -> Result<(String, Tensor), BridgeError> {
    let label = label_of(path);
    let bytes = read_file(path)?;
    let t = TensorProto::parse_from_bytes(&bytes).map_err(|e| {
        BridgeError::new(
            &label,
            None,
            format!("not a valid ONNX tensor (protobuf decoding failed: {e})"),
        )
    })?;
    let value = tensor_from_proto(&t, path.parent()).map_err(|e| bridge_error(&label, e))?;
    Ok((t.name.clone(), value))
}

/// Decodes one `TensorProto` (external data looked up in `base_dir`, refused with `None`).
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, IrError> {
    tensor::tensor_from_proto(t, base_dir)
}
