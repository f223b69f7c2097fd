//! The IR's error type. Messages name the node (by its source-model name) and say what is wrong.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct IrError {
    /// The node the error is about, as the source model named it, if any.
    pub node: Option<String>,
    pub message: String,
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;

impl IrError {
    pub fn msg(message: impl Into<String>) -> IrError {
        IrError { node: None, message: message.into() }
    }

    /// An error about `node` (its op and name are added to the message).
    pub fn at(node: impl Into<String>, message: impl Into<String>) -> IrError {
        IrError { node: Some(node.into()), message: message.into() }
    }

    /// Attaches a node to an error that has none yet.
    pub fn in_node(mut self, node: impl Into<String>) -> IrError {
        if self.node.is_none() {
            self.node = Some(node.into());
        }
        self
    }
}

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "node {n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for IrError {}

/// `bail!("...")` for IrError.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::IrError::msg(format!($($arg)*))) };
}

/// `ensure!(cond, "...")` for IrError.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !$cond { $crate::bail!($($arg)*) } };
}
