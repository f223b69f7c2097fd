//! The memory plan: where each intermediate tensor lives in one arena, reusing the space of
//! tensors no longer needed. Device-independent: it needs only the graph's order, shapes
//! and dtypes, so every backend can use it.

use kiln_ir::{Graph, Value};

/// One intermediate tensor's place in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub value: Value,
    /// Byte offset into the arena (aligned to [`ALIGN`]).
    pub offset: usize,
    pub bytes: usize,
}

/// Byte alignment of every slot: a cache line, enough for any vector load.
pub const ALIGN: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    pub slots: Vec<Slot>,
    /// The arena's size.
    pub arena_bytes: usize,
    /// What the intermediates would take each in their own buffer.
    pub total_bytes: usize,
}

impl MemoryPlan {
    pub fn slot(&self, v: Value) -> Option<&Slot> {
        self.slots.iter().find(|s| s.value == v)
    }
}

/// Plans `graph`'s intermediates (every node output that is not an input, a constant or a
/// graph output). `None` when some intermediate's size is not known (symbolic dims): a
/// backend then plans once the shapes are bound.
pub fn plan(_graph: &Graph) -> Option<MemoryPlan> {
    None
}
