//! Per-op semantics, one group of related ops per file. Each group module answers for its
//! own ops in two functions and returns `None` for any op that is not its own:
//!
//! - `infer(op, input_types, const_inputs, n_outputs)`: output types from input types (and
//!   from constant inputs where an output shape depends on values, as Reshape's does);
//!   dims that only run time can know are `Dim::Unknown`, ranks that only the data can
//!   decide are `Shape::unknown_rank()`.
//! - `eval(op, inputs, n_outputs)`: the reference semantics on concrete tensors, written
//!   plainly: this is the oracle every backend is tested against.

pub mod util;

pub(crate) mod elementwise;
pub(crate) mod reduce;
pub(crate) mod nn;
pub(crate) mod movement;
pub(crate) mod image;
pub(crate) mod recurrent;
pub(crate) mod control;

use crate::error::Result;
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;

pub(crate) type InferFn = fn(&Op, &[Option<&TensorType>], &[Option<&Tensor>], usize) -> Option<Result<Vec<TensorType>>>;
pub(crate) type EvalFn = fn(&Op, &[Option<Tensor>], usize) -> Option<Result<Vec<Tensor>>>;

pub(crate) const GROUPS: &[(InferFn, EvalFn)] = &[
    (elementwise::infer, elementwise::eval),
    (reduce::infer, reduce::eval),
    (nn::infer, nn::eval),
    (movement::infer, movement::eval),
    (image::infer, image::eval),
    (recurrent::infer, recurrent::eval),
    (control::infer, control::eval),
];
