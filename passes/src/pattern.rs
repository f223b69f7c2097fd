//! Each op's fusion pattern (the classification TVM's fusion uses): it says what an op may
//! fuse with. Fusion and the e-graph cost model read it; backends may too.

use kiln_ir::Op;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// One output element from the same element of each input, all of one shape.
    Elementwise,
    /// Elementwise with numpy broadcasting of some inputs.
    Broadcast,
    /// Each output element is one input element, moved (transpose, slice, pad, concat…).
    Injective,
    /// Reduces along axes (reductions, softmax, normalizations, pooling): may absorb an
    /// elementwise prologue and epilogue.
    Reduction,
    /// Conv and matmul: may absorb an elementwise epilogue (bias, activation, residual add).
    OutFusable,
    /// Fuses with nothing.
    Opaque,
}

impl Pattern {
    /// Elementwise or broadcast: may join any fused kernel's expression DAG.
    pub fn is_elementwise(self) -> bool {
        matches!(self, Pattern::Elementwise | Pattern::Broadcast)
    }
}

pub fn pattern(op: &Op) -> Pattern {
    use Pattern::*;
    match op {
        Op::Unary(_)
        | Op::Cast { .. }
        | Op::BitCast { .. }
        | Op::IsInf { .. }
        | Op::LeakyRelu { .. }
        | Op::Elu { .. }
        | Op::Selu { .. }
        | Op::Celu { .. }
        | Op::ThresholdedRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::Shrink { .. }
        | Op::Gelu { .. }
        | Op::Swish { .. } => Elementwise,
        Op::Binary(_) | Op::Where | Op::Clip | Op::BatchNorm { .. } => Broadcast,
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Flatten { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice
        | Op::Pad { .. }
        | Op::Expand
        | Op::Tile
        | Op::Gather { .. }
        | Op::DepthToSpace { .. }
        | Op::SpaceToDepth { .. }
        | Op::Trilu { .. } => Injective,
        Op::Reduce { .. }
        | Op::ArgReduce { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::LayerNorm { .. }
        | Op::GroupNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::RmsNorm { .. }
        | Op::LpNormalization { .. }
        | Op::MeanVarianceNormalization { .. }
        | Op::Pool { .. }
        | Op::GlobalPool { .. } => Reduction,
        Op::Conv { .. }
        | Op::ConvTranspose { .. }
        | Op::MatMul
        | Op::Gemm { .. }
        | Op::Einsum { .. } => OutFusable,
        _ => Opaque,
    }
}
