//! kiln ops as an egg `Language`. An e-node is a kind (which op, which constant, which
//! input) plus its children. Ops carry `f32` and `Tensor` attributes that are neither `Hash`
//! nor `Eq`, so an e-node names its op by an index into the analysis's op table, where equal
//! ops (same printed form) share one index; constants are indices into a constant table.

use egg::{Id, Language};
use std::fmt;

/// What an e-node computes. Indices point into the tables of [`super::analysis::KilnAnalysis`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Graph input number `i`: a leaf.
    Input(u32),
    /// Constant `c` of the constant table: a leaf.
    Const(u32),
    /// An absent optional input: a leaf no op reads a value from.
    None,
    /// A single-output op `o` of the op table; the children are its inputs in order.
    Op(u32),
    /// A multi-output op or one holding nested graphs: a tuple that no rule looks into.
    /// Its values are read through [`Kind::Output`] nodes.
    Multi(u32),
    /// Output `k` of the `Multi` node that is the only child.
    Output(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ENode {
    pub kind: Kind,
    pub children: Vec<Id>,
}

impl ENode {
    pub fn leaf(kind: Kind) -> ENode {
        ENode { kind, children: Vec::new() }
    }
}

impl Language for ENode {
    type Discriminant = Kind;

    fn discriminant(&self) -> Kind {
        self.kind
    }

    fn matches(&self, other: &Self) -> bool {
        self.kind == other.kind && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}
