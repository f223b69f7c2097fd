//! Dimensions, shapes and tensor types. A dim is a known size, a named symbol (batch `N`,
//! sequence `S`) that one graph keeps across many concrete shapes, or unknown (`?`, a size
//! only run time knows, such as NonZero's output). A shape may have unknown rank (`*`) where
//! only the data decides it (a Reshape whose target shape is a run-time input).

use crate::dtype::DType;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Known(usize),
    Sym(String),
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            _ => None,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape; `None` dims means the rank itself is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape(pub Option<Vec<Dim>>);

impl Shape {
    pub fn known(dims: &[usize]) -> Shape {
        Shape(Some(dims.iter().map(|&d| Dim::Known(d)).collect()))
    }
    pub fn unknown_rank() -> Shape {
        Shape(None)
    }
    pub fn of_rank(rank: usize) -> Shape {
        Shape(Some(vec![Dim::Unknown; rank]))
    }
    pub fn dims(&self) -> Option<&[Dim]> {
        self.0.as_deref()
    }
    pub fn rank(&self) -> Option<usize> {
        self.0.as_ref().map(|d| d.len())
    }
    /// All dims as sizes, when every one is known.
    pub fn concrete(&self) -> Option<Vec<usize>> {
        self.0.as_ref()?.iter().map(|d| d.known()).collect()
    }
    /// The element count when every dim is known (None on overflow too).
    pub fn numel(&self) -> Option<usize> {
        self.concrete()?.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

impl From<Vec<Dim>> for Shape {
    fn from(d: Vec<Dim>) -> Shape {
        Shape(Some(d))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("[*]"),
            Some(dims) => {
                f.write_str("[")?;
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The type of a value in the graph: element type and shape. Printed `f32[N,3,32,32]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> TensorType {
        TensorType { dtype, shape: shape.into() }
    }
    pub fn known(dtype: DType, dims: &[usize]) -> TensorType {
        TensorType { dtype, shape: Shape::known(dims) }
    }
    pub fn unknown_shape(dtype: DType) -> TensorType {
        TensorType { dtype, shape: Shape::unknown_rank() }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
