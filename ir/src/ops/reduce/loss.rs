//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss over inputs of shape
//! `[N, C, d1, …, dk]` with targets `[N, d1, …, dk]`.

use super::common::{float_type, require_float};
use super::softmax::softmax_lanes;
use crate::error::{IrError, Result};
use crate::op::{LossReduction, Op};
use crate::ops::util::{input, input_type, opt_input};
use crate::shape::{Shape, TensorType};
use crate::tensor::Tensor;

pub fn infer(op: &Op, types: &[Option<&TensorType>], n_outputs: usize) -> Result<Vec<TensorType>> {
    let (reduction, sce) = match op {
        Op::NegativeLogLikelihoodLoss { reduction, .. } => (*reduction, false),
        Op::SoftmaxCrossEntropyLoss { reduction, .. } => (*reduction, true),
        _ => return Err(IrError::msg("not a loss")),
    };
    let x = float_type(types, 0)?;
    let target = input_type(types, 1)?;
    if !target.dtype.is_int() {
        return Err(IrError::msg(format!("the target must be an integer tensor, found {}", target.dtype)));
    }
    if x.shape.rank().is_some_and(|r| r < 2) {
        return Err(IrError::msg(format!("the input must have rank 2 or more ([N, C, …]), found {}", x.shape)));
    }
    let loss_shape = match reduction {
        LossReduction::None => target.shape.clone(),
        LossReduction::Sum | LossReduction::Mean => Shape(Some(vec![])),
    };
    let mut out = vec![TensorType { dtype: x.dtype, shape: loss_shape }];
    if sce && n_outputs > 1 {
        out.push(x.clone());
    }
    Ok(out)
}

pub fn eval(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let target = input(inputs, 1)?;
    let weight = opt_input(inputs, 2);
    match op {
        Op::NegativeLogLikelihoodLoss { reduction, ignore_index } => Ok(vec![nll_loss(x, target, weight, *reduction, *ignore_index)?]),
        Op::SoftmaxCrossEntropyLoss { reduction, ignore_index } => {
            require_float("softmax_cross_entropy_loss", x.dtype())?;
            if x.rank() < 2 {
                return Err(IrError::msg(format!("the scores must have rank 2 or more ([N, C, …]), found {:?}", x.shape())));
            }
            let mut lp = x.to_f64_vec();
            softmax_lanes(&mut lp, x.shape(), 1, true);
            // The loss is taken from the log-probabilities before rounding to x's type.
            let loss = nll_values(&lp, x.shape(), target, weight, *reduction, *ignore_index)?;
            let mut out = vec![Tensor::from_f64(x.dtype(), loss.0, &loss.1)?];
            if n_outputs > 1 {
                out.push(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &lp)?);
            }
            Ok(out)
        }
        _ => Err(IrError::msg("not a loss")),
    }
}

/// NLL loss: `-x[n, target[n, d], d] * weight[target]`, zero (and weightless) where the
/// target is `ignore_index`; `mean` divides by the total weight of the counted elements.
pub fn nll_loss(
    x: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: LossReduction,
    ignore_index: Option<i64>,
) -> Result<Tensor> {
    require_float("nll_loss", x.dtype())?;
    if x.rank() < 2 {
        return Err(IrError::msg(format!("the input must have rank 2 or more ([N, C, …]), found {:?}", x.shape())));
    }
    let (shape, vals) = nll_values(&x.to_f64_vec(), x.shape(), target, weight, reduction, ignore_index)?;
    Tensor::from_f64(x.dtype(), shape, &vals)
}

/// The loss shape and values for log-probabilities `x` of shape `shape` (rank >= 2).
fn nll_values(
    x: &[f64],
    shape: &[usize],
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: LossReduction,
    ignore_index: Option<i64>,
) -> Result<(Vec<usize>, Vec<f64>)> {
    if !target.dtype().is_int() {
        return Err(IrError::msg(format!("the target must be an integer tensor, found {}", target.dtype())));
    }
    let (n, c) = (shape[0], shape[1]);
    let expect: Vec<usize> = std::iter::once(n).chain(shape[2..].iter().copied()).collect();
    if target.shape() != expect {
        return Err(IrError::msg(format!("the target has shape {:?}, the input {:?} needs {:?}", target.shape(), shape, expect)));
    }
    let w = match weight {
        Some(w) => {
            if w.shape() != [c] {
                return Err(IrError::msg(format!("the weight must have shape [{c}], found {:?}", w.shape())));
            }
            Some(w.to_f64_vec())
        }
        None => None,
    };
    let d: usize = shape[2..].iter().product();
    let t = target.to_i64_vec();
    let mut loss = Vec::with_capacity(t.len());
    let mut total_weight = 0.0;
    for (k, &tk) in t.iter().enumerate() {
        if Some(tk) == ignore_index {
            loss.push(0.0);
            continue;
        }
        let class =
            usize::try_from(tk).ok().filter(|&cl| cl < c).ok_or_else(|| IrError::msg(format!("target value {tk} is outside [0, {c})")))?;
        let wk = w.as_ref().map_or(1.0, |w| w[class]);
        let (i, j) = (k / d.max(1), k % d.max(1));
        loss.push(-x[(i * c + class) * d + j] * wk);
        total_weight += wk;
    }
    Ok(match reduction {
        LossReduction::None => (target.shape().to_vec(), loss),
        LossReduction::Sum => (vec![], vec![loss.iter().sum()]),
        LossReduction::Mean => (vec![], vec![loss.iter().sum::<f64>() / total_weight]),
    })
}
