//! The error every bridge returns: which file, which node (by the name the model gave it),
//! and what is wrong.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct BridgeError {
    /// The model file (or the label the caller gave in-memory bytes).
    pub file: String,
    /// The node the error is about, as the model names it.
    pub node: Option<String>,
    pub message: String,
}

impl BridgeError {
    pub fn new(
        file: impl Into<String>,
        node: Option<String>,
        message: impl Into<String>,
    ) -> BridgeError {
        BridgeError {
            file: file.into(),
            node,
            message: message.into(),
        }
    }
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{}: node {}: {}", self.file, node, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for BridgeError {}
