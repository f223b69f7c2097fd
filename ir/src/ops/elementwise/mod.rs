//! The elementwise group: `Op::Unary`, `Op::Binary` (numpy broadcasting), Cast, BitCast,
//! Clip, Where, IsInf, the activation family, Dropout (inference) and Det.
//!
//! Floats compute in f64 and round once to the element type; integers are exact, with
//! wrapping arithmetic as numpy and ONNX runtimes have it.

mod activation;
mod binary;
pub(crate) mod kernel;
pub mod math;
mod other;
mod unary;

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::{BinaryOp, Op};
use crate::ops::util::{broadcast_dims, input, input_type, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

/// Binary ops that ONNX makes variadic (Sum, Min, Max): more than two inputs fold left,
/// one input is returned as is.
fn variadic(b: BinaryOp) -> bool {
    matches!(b, BinaryOp::Add | BinaryOp::Min | BinaryOp::Max)
}

fn one_output(n_outputs: usize, t: TensorType) -> Result<Vec<TensorType>> {
    if n_outputs != 1 {
        return Err(IrError::msg(format!(
            "has one output, the node has {n_outputs}"
        )));
    }
    Ok(vec![t])
}

pub(crate) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    _consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<TensorType>>> {
    let r = match op {
        Op::Unary(u) => input_type(types, 0)
            .and_then(|x| {
                Ok(TensorType::new(
                    unary::out_dtype(*u, x.dtype)?,
                    x.shape.clone(),
                ))
            })
            .and_then(|t| one_output(n_outputs, t)),
        Op::Binary(b) => infer_binary(*b, types).and_then(|t| one_output(n_outputs, t)),
        Op::Cast { to } => input_type(types, 0)
            .and_then(|x| one_output(n_outputs, TensorType::new(*to, x.shape.clone()))),
        Op::BitCast { to } => input_type(types, 0).and_then(|x| {
            other::check_bitcast(x.dtype, *to)?;
            one_output(n_outputs, TensorType::new(*to, x.shape.clone()))
        }),
        Op::Clip => input_type(types, 0).and_then(|x| {
            if x.dtype == DType::Bool {
                return Err(IrError::msg("clip does not take bool tensors"));
            }
            for (i, what) in [(1, "min"), (2, "max")] {
                if let Some(Some(t)) = types.get(i) {
                    if t.dtype != x.dtype {
                        return Err(IrError::msg(format!(
                            "clip {what} is {} but x is {}",
                            t.dtype, x.dtype
                        )));
                    }
                }
            }
            one_output(n_outputs, x.clone())
        }),
        Op::Where => (|| {
            let (c, x, y) = (
                input_type(types, 0)?,
                input_type(types, 1)?,
                input_type(types, 2)?,
            );
            other::check_where(c.dtype, x.dtype, y.dtype)?;
            let shape = broadcast_dims(&broadcast_dims(&c.shape, &x.shape)?, &y.shape)?;
            one_output(n_outputs, TensorType::new(x.dtype, shape))
        })(),
        Op::IsInf { .. } => input_type(types, 0).and_then(|x| {
            kernel::need_float("is_inf", x.dtype)?;
            one_output(n_outputs, TensorType::new(DType::Bool, x.shape.clone()))
        }),
        Op::Shrink { .. } => input_type(types, 0).and_then(|x| {
            if x.dtype == DType::Bool {
                return Err(IrError::msg("shrink does not take bool tensors"));
            }
            one_output(n_outputs, x.clone())
        }),
        _ if activation::is_activation(op) => input_type(types, 0).and_then(|x| {
            kernel::need_float(op.name(), x.dtype)?;
            one_output(n_outputs, x.clone())
        }),
        Op::Dropout { .. } => input_type(types, 0).and_then(|x| match n_outputs {
            1 => Ok(vec![x.clone()]),
            2 => Ok(vec![
                x.clone(),
                TensorType::new(DType::Bool, x.shape.clone()),
            ]),
            n => Err(IrError::msg(format!(
                "dropout has one or two outputs, not {n}"
            ))),
        }),
        Op::Det => input_type(types, 0).and_then(|x| {
            kernel::need_float("det", x.dtype)?;
            let shape = match x.shape.dims() {
                None => Shape::unknown_rank(),
                Some(d) if d.len() < 2 => {
                    return Err(IrError::msg(format!(
                        "det needs rank 2 or more, found {}",
                        x.shape
                    )))
                }
                Some(d) => {
                    let (r, c) = (&d[d.len() - 2], &d[d.len() - 1]);
                    if let (Dim::Known(r), Dim::Known(c)) = (r, c) {
                        if r != c {
                            return Err(IrError::msg(format!(
                                "det needs square matrices, found {}",
                                x.shape
                            )));
                        }
                    }
                    Shape(Some(d[..d.len() - 2].to_vec()))
                }
            };
            one_output(n_outputs, TensorType::new(x.dtype, shape))
        }),
        _ => return None,
    };
    Some(r)
}

fn infer_binary(b: BinaryOp, types: &[Option<&TensorType>]) -> Result<TensorType> {
    let n = types.len();
    if n != 2 && !(variadic(b) && n >= 1) {
        return Err(IrError::msg(format!("takes two inputs, found {n}")));
    }
    let mut acc = input_type(types, 0)?.clone();
    if n == 1 {
        binary::out_dtype(b, acc.dtype, acc.dtype)?;
    }
    for i in 1..n {
        let y = input_type(types, i)?;
        let dtype = binary::out_dtype(b, acc.dtype, y.dtype)?;
        acc = TensorType::new(dtype, broadcast_dims(&acc.shape, &y.shape)?);
    }
    Ok(acc)
}

pub(crate) fn eval(
    op: &Op,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<Tensor>>> {
    let one = |r: Result<Tensor>| Some(r.map(|t| vec![t]));
    if let Op::Dropout { .. } = op {
        return Some(other::dropout(inputs, n_outputs));
    }
    let x = match op {
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Cast { .. }
        | Op::BitCast { .. }
        | Op::Clip
        | Op::Where
        | Op::IsInf { .. }
        | Op::Shrink { .. }
        | Op::Det => input(inputs, 0),
        _ if activation::is_activation(op) => input(inputs, 0),
        _ => return None,
    };
    let x = match x {
        Ok(x) => x,
        Err(e) => return Some(Err(e)),
    };
    if n_outputs != 1 {
        return Some(Err(IrError::msg(format!(
            "has one output, the node has {n_outputs}"
        ))));
    }
    match op {
        Op::Unary(u) => one(unary::eval(*u, x)),
        Op::Binary(b) => one(eval_binary(*b, inputs)),
        Op::Cast { to } => one(Ok(other::cast(x, *to))),
        Op::BitCast { to } => one(other::bitcast(x, *to)),
        Op::Clip => one(activation::clip(
            x,
            opt_input(inputs, 1),
            opt_input(inputs, 2),
        )),
        Op::Where => one(input(inputs, 1).and_then(|a| other::where_(x, a, input(inputs, 2)?))),
        Op::IsInf {
            detect_positive,
            detect_negative,
        } => one(activation::is_inf(*detect_positive, *detect_negative, x)),
        Op::Shrink { bias, lambd } => one(activation::shrink(*bias, *lambd, x)),
        Op::Det => one(other::det(x)),
        _ => activation::eval_activation(op, x).map(|r| r.map(|t| vec![t])),
    }
}

fn eval_binary(b: BinaryOp, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let n = inputs.len();
    if n != 2 && !(variadic(b) && n >= 1) {
        return Err(IrError::msg(format!("takes two inputs, found {n}")));
    }
    let mut acc = input(inputs, 0)?.clone();
    if n == 1 {
        binary::out_dtype(b, acc.dtype(), acc.dtype())?;
    }
    for i in 1..n {
        acc = binary::eval(b, &acc, input(inputs, i)?)?;
    }
    Ok(acc)
}
