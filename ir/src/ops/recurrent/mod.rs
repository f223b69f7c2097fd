//! Sequence models: the ONNX recurrent cells (RNN, LSTM, GRU), scaled dot-product attention
//! and rotary position embeddings. All of them compute in f64 and round once to the input's
//! float type at the end (attention also rounds where the ONNX reference does, so that f16
//! and bf16 results agree with it).

mod attention;
mod rnn;
mod rotary;

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;

pub(crate) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    _consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<TensorType>>> {
    match op {
        Op::Rnn { .. } => Some(rnn::infer(op, types, n_outputs)),
        Op::Attention { .. } => Some(attention::infer(op, types, n_outputs)),
        Op::RotaryEmbedding { .. } => Some(rotary::infer(types, n_outputs)),
        _ => None,
    }
}

pub(crate) fn eval(
    op: &Op,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<Tensor>>> {
    match op {
        Op::Rnn { .. } => Some(rnn::eval(op, inputs, n_outputs)),
        Op::Attention { .. } => Some(attention::eval(op, inputs, n_outputs)),
        Op::RotaryEmbedding { .. } => Some(rotary::eval(op, inputs, n_outputs)),
        _ => None,
    }
}

/// Largest output (in elements) these ops will build.
const MAX_ELEMENTS: usize = 1 << 31;

/// These ops are defined on floating-point tensors only.
fn check_float(what: &str, d: DType) -> Result<()> {
    if d.is_float() {
        Ok(())
    } else {
        Err(IrError::msg(format!(
            "{what} must be a float tensor, found {d}"
        )))
    }
}

/// `x` rounded to the precision of `dtype` (a no-op for f64), to mirror computations that
/// the ONNX reference performs in the input's own type.
fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::F16 => half::f16::from_f64(x).to_f64(),
        DType::BF16 => half::bf16::from_f64(x).to_f64(),
        _ => x,
    }
}

/// A dim as usize, refusing negatives (used when an attribute gives a size).
fn attr_usize(what: &str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| IrError::msg(format!("{what} must not be negative, found {v}")))
}
