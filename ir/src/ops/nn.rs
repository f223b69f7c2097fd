//! (group placeholder)

use crate::error::Result;
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;

pub(crate) fn infer(_op: &Op, _types: &[Option<&TensorType>], _consts: &[Option<&Tensor>], _n_outputs: usize) -> Option<Result<Vec<TensorType>>> {
    None
}

pub(crate) fn eval(_op: &Op, _inputs: &[Option<Tensor>], _n_outputs: usize) -> Option<Result<Vec<Tensor>>> {
    None
}
