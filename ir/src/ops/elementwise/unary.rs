//! `Op::Unary`: elementwise functions of one tensor.

use super::kernel::{float_map, float_test, map1, with_int, Int};
use super::math;
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::UnaryOp;
use crate::tensor::Tensor;

/// The output dtype of `u` on `d`, or an error naming the dtype when `u` does not take it.
pub(crate) fn out_dtype(u: UnaryOp, d: DType) -> Result<DType> {
    use UnaryOp::*;
    let ok = match u {
        Identity => true,
        Not => d == DType::Bool,
        BitwiseNot => d.is_int(),
        // Integers are exact under these; the rounding ones are the identity on them.
        Abs | Neg | Sign | Relu | Floor | Ceil | Round => d != DType::Bool,
        _ => d.is_float(),
    };
    if !ok {
        return Err(IrError::msg(format!(
            "{} does not take {d} tensors",
            u.word()
        )));
    }
    Ok(if u == IsNaN { DType::Bool } else { d })
}

pub(crate) fn eval(u: UnaryOp, x: &Tensor) -> Result<Tensor> {
    out_dtype(u, x.dtype())?;
    if u == UnaryOp::Identity {
        return Ok(x.clone());
    }
    if u == UnaryOp::Not {
        return map1(x, x.as_slice::<bool>()?, |v: bool| !v);
    }
    if let Some(r) = with_int!(x.dtype(), T => Some(int_unary::<T>(u, x)), _ => None) {
        return r;
    }
    if u == UnaryOp::IsNaN {
        return float_test(x, f64::is_nan)
            .unwrap_or_else(|| Err(IrError::msg("is_nan takes floats")));
    }
    float_map(x, float_fn(u)).unwrap_or_else(|| {
        Err(IrError::msg(format!(
            "{} does not take {} tensors",
            u.word(),
            x.dtype()
        )))
    })
}

fn int_unary<T: Int>(u: UnaryOp, x: &Tensor) -> Result<Tensor> {
    use UnaryOp::*;
    let v = x.as_slice::<T>()?;
    match u {
        Floor | Ceil | Round => Ok(x.clone()),
        // Wrapping, as numpy: abs(MIN) and neg(MIN) stay MIN.
        Abs => map1(x, v, |a: T| if a < T::ZERO { a.wneg() } else { a }),
        Neg => map1(x, v, |a: T| a.wneg()),
        Sign => map1(x, v, |a: T| {
            if a > T::ZERO {
                T::ONE
            } else if a < T::ZERO {
                T::ONE.wneg()
            } else {
                T::ZERO
            }
        }),
        Relu => map1(x, v, |a: T| if a < T::ZERO { T::ZERO } else { a }),
        BitwiseNot => map1(x, v, |a: T| a.not()),
        _ => Err(IrError::msg(format!(
            "{} does not take {} tensors",
            u.word(),
            x.dtype()
        ))),
    }
}

/// The f64 function of a float unary op. (Identity, Not, BitwiseNot and IsNaN are
/// handled before this and never get here.)
fn float_fn(u: UnaryOp) -> fn(f64) -> f64 {
    use UnaryOp::*;
    match u {
        Identity | Not | BitwiseNot | IsNaN => |x| x,
        Abs => f64::abs,
        Neg => |x| -x,
        Exp => f64::exp,
        Log => f64::ln,
        Sqrt => f64::sqrt,
        Reciprocal => |x| 1.0 / x,
        Floor => f64::floor,
        Ceil => f64::ceil,
        Round => f64::round_ties_even,
        Sign => math::sign,
        Sin => f64::sin,
        Cos => f64::cos,
        Tan => f64::tan,
        Asin => f64::asin,
        Acos => f64::acos,
        Atan => f64::atan,
        Sinh => f64::sinh,
        Cosh => f64::cosh,
        Asinh => f64::asinh,
        Acosh => f64::acosh,
        Atanh => f64::atanh,
        Erf => math::erf,
        // `x < 0` rather than max(x, 0) so NaN stays NaN, as numpy's maximum keeps it.
        Relu => |x| if x < 0.0 { 0.0 } else { x },
        Sigmoid => math::sigmoid,
        Tanh => f64::tanh,
        Softplus => math::softplus,
        Softsign => |x| x / (1.0 + x.abs()),
        Mish => |x| x * math::softplus(x).tanh(),
        HardSwish => |x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
    }
}
