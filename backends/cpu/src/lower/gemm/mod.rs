//! Conv, MatMul and Gemm (and fused kernels anchored on them) as CLIF GEMM drivers around
//! the microkernels, with every size known at compile time.

use super::{Kernel, LowerCtx, OutType, Operand, Result};
use cranelift_module::Module;
use kiln_ir::Node;

/// `Ok(None)` when `node` is not an op this lowering covers.
pub(crate) fn lower<M: Module>(
    _ctx: &mut LowerCtx<M>,
    _node: &Node,
    _inputs: &[Option<Operand>],
    _outputs: &[OutType],
) -> Result<Option<Kernel>> {
    Ok(None)
}
