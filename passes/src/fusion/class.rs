//! What part an op may play in a fused kernel, derived from its [`Pattern`].

use crate::pattern::{pattern, Pattern};
use kiln_ir::Op;

/// An op's part in fusion. [`Pattern`] says what an op computes; `Class` refines it into
/// the cases the partitioner treats differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Conv, matmul: the kernel's anchor; takes an elementwise epilogue and a data-movement
    /// prologue on its data input.
    OutFusable,
    /// Reductions, normalizations, pooling: the kernel's anchor; takes an elementwise
    /// prologue on its data input and an elementwise epilogue.
    Reduction,
    /// Elementwise or broadcast: joins any kernel's expression DAG.
    Elementwise,
    /// Reshape, Squeeze, Unsqueeze, Flatten: the same elements in the same order under
    /// another shape, so free wherever it sits.
    View,
    /// One input moved element by element (transpose, pad, slice…): may start a kernel, or
    /// sit in front of an anchor as its prologue.
    Movement,
    /// Other injective ops (concat, gather, split…): may start a kernel that elementwise
    /// ops then join, but never join one.
    Injective,
    /// Fuses with nothing.
    Opaque,
}

impl Class {
    pub(crate) fn of(op: &Op) -> Class {
        match op {
            Op::Input | Op::Const { .. } => Class::Opaque,
            Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Flatten { .. } => Class::View,
            Op::Transpose { .. }
            | Op::Pad { .. }
            | Op::Slice
            | Op::DepthToSpace { .. }
            | Op::SpaceToDepth { .. }
            | Op::Expand
            | Op::Tile => Class::Movement,
            op => match pattern(op) {
                Pattern::Elementwise | Pattern::Broadcast => Class::Elementwise,
                Pattern::Injective => Class::Injective,
                Pattern::Reduction => Class::Reduction,
                Pattern::OutFusable => Class::OutFusable,
                Pattern::Opaque => Class::Opaque,
            },
        }
    }

    pub(crate) fn is_anchor(self) -> bool {
        matches!(self, Class::OutFusable | Class::Reduction)
    }

    /// Moves data without computing: may form an anchor's prologue.
    pub(crate) fn moves_data(self) -> bool {
        matches!(self, Class::View | Class::Movement)
    }
}
