//! Shape and type inference: the types of a node's outputs from its op and inputs.

use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;

/// Output types of `op` applied to inputs of `types` (`None` for an absent optional input).
/// `consts` holds the value of each input that is a constant, so that value-dependent
/// shapes (Reshape, Slice, Expand…) come out exact when they can.
pub fn infer(op: &Op, types: &[Option<&TensorType>], consts: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<TensorType>> {
    match op {
        Op::Input => return Err(IrError::msg("an input node's type is given, not inferred")),
        Op::Const { value } => return Ok(vec![TensorType::known(value.dtype(), value.shape())]),
        _ => {}
    }
    for (infer, _) in crate::ops::GROUPS {
        if let Some(r) = infer(op, types, consts, n_outputs) {
            let out = r.map_err(|e| IrError::msg(format!("{}: {}", op.name(), e.message)))?;
            if out.len() != n_outputs {
                return Err(IrError::msg(format!("{} gives {} outputs, the node has {}", op.name(), out.len(), n_outputs)));
            }
            return Ok(out);
        }
    }
    Err(IrError::msg(format!("no shape inference for op `{}`", op.name())))
}
