//! Reductions, normalizations and losses: Reduce, ArgReduce, Softmax/LogSoftmax/Hardmax,
//! CumSum/CumProd, TopK, the normalization family and the two classification losses.
//! Floats are computed in f64 and rounded once to the output type; integers stay exact.

mod common;
mod cumulative;
mod loss;
mod norm;
mod reduction;
mod softmax;
mod topk;

use crate::error::Result;
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;

pub(crate) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<TensorType>>> {
    Some(match op {
        Op::Reduce { .. } | Op::ArgReduce { .. } => reduction::infer(op, types, consts),
        Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::Hardmax { .. } => softmax::infer(op, types),
        Op::CumSum { .. } | Op::CumProd { .. } => cumulative::infer(op, types),
        Op::TopK { .. } => topk::infer(op, types, consts),
        Op::LpNormalization { .. }
        | Op::BatchNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::LayerNorm { .. }
        | Op::GroupNorm { .. }
        | Op::RmsNorm { .. }
        | Op::Lrn { .. }
        | Op::MeanVarianceNormalization { .. } => norm::infer(op, types, n_outputs),
        Op::NegativeLogLikelihoodLoss { .. } | Op::SoftmaxCrossEntropyLoss { .. } => loss::infer(op, types, n_outputs),
        _ => return None,
    })
}

pub(crate) fn eval(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Option<Result<Vec<Tensor>>> {
    Some(match op {
        Op::Reduce { .. } | Op::ArgReduce { .. } => reduction::eval(op, inputs),
        Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::Hardmax { .. } => softmax::eval(op, inputs),
        Op::CumSum { .. } | Op::CumProd { .. } => cumulative::eval(op, inputs),
        Op::TopK { .. } => topk::eval(op, inputs),
        Op::LpNormalization { .. }
        | Op::BatchNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::LayerNorm { .. }
        | Op::GroupNorm { .. }
        | Op::RmsNorm { .. }
        | Op::Lrn { .. }
        | Op::MeanVarianceNormalization { .. } => norm::eval(op, inputs, n_outputs),
        Op::NegativeLogLikelihoodLoss { .. } | Op::SoftmaxCrossEntropyLoss { .. } => loss::eval(op, inputs, n_outputs),
        _ => return None,
    })
}
