//! ONNX bridge (placeholder)
