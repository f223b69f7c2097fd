//! Elementwise ops with attributes: the activation family, Clip, IsInf.

use super::kernel::{float_map, float_test, map1, need_float, one, with_int};
use super::math;
use crate::dtype::Element;
use crate::error::{IrError, Result};
use crate::op::{GeluApproximation, Op};
use crate::tensor::Tensor;
use crate::with_data;

/// The f64 function of a float activation op, or None when `op` is not one.
/// Attributes are f32 in ONNX; they are widened exactly to f64.
fn activation(op: &Op) -> Option<Box<dyn Fn(f64) -> f64>> {
    Some(match *op {
        Op::LeakyRelu { alpha } => {
            let a = alpha as f64;
            Box::new(move |x| if x < 0.0 { a * x } else { x })
        }
        Op::Elu { alpha } => {
            let a = alpha as f64;
            Box::new(move |x| if x < 0.0 { a * x.exp_m1() } else { x })
        }
        Op::Selu { alpha, gamma } => {
            let (a, g) = (alpha as f64, gamma as f64);
            Box::new(move |x| if x > 0.0 { g * x } else { g * a * x.exp_m1() })
        }
        Op::Celu { alpha } => {
            let a = alpha as f64;
            Box::new(move |x| x.max(0.0) + (a * (x / a).exp_m1()).min(0.0))
        }
        Op::ThresholdedRelu { alpha } => {
            let a = alpha as f64;
            Box::new(move |x| if x > a { x } else { 0.0 })
        }
        Op::HardSigmoid { alpha, beta } => {
            let (a, b) = (alpha as f64, beta as f64);
            Box::new(move |x| (a * x + b).clamp(0.0, 1.0))
        }
        Op::Gelu {
            approximate: GeluApproximation::None,
        } => Box::new(|x| 0.5 * x * (1.0 + math::erf(x / std::f64::consts::SQRT_2))),
        Op::Gelu {
            approximate: GeluApproximation::Tanh,
        } => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            Box::new(move |x| 0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh()))
        }
        Op::Swish { alpha } => {
            let a = alpha as f64;
            Box::new(move |x| x * math::sigmoid(a * x))
        }
        _ => return None,
    })
}

pub(crate) fn is_activation(op: &Op) -> bool {
    activation(op).is_some()
}

/// Evaluates a float activation; None when `op` is not one.
pub(crate) fn eval_activation(op: &Op, x: &Tensor) -> Option<Result<Tensor>> {
    let f = activation(op)?;
    if let Err(e) = need_float(op.name(), x.dtype()) {
        return Some(Err(e));
    }
    float_map(x, f)
}

/// ONNX Shrink, which also takes integers: computed in f64 and cast back (truncating).
pub(crate) fn shrink(bias: f32, lambd: f32, x: &Tensor) -> Result<Tensor> {
    let (b, l) = (bias as f64, lambd as f64);
    let f = move |v: f64| {
        if v < -l {
            v + b
        } else if v > l {
            v - b
        } else {
            0.0
        }
    };
    if let Some(r) = float_map(x, f) {
        return r;
    }
    with_int!(x.dtype(), T => map1(x, x.as_slice::<T>()?, |v: T| T::from_i64(f(v.to_f64()) as i64)),
        _ => Err(IrError::msg(format!("shrink does not take {} tensors", x.dtype()))))
}

/// IsInf → bool.
pub(crate) fn is_inf(pos: bool, neg: bool, x: &Tensor) -> Result<Tensor> {
    need_float("is_inf", x.dtype())?;
    float_test(x, |v| {
        (pos && v == f64::INFINITY) || (neg && v == f64::NEG_INFINITY)
    })
    .unwrap_or_else(|| Err(IrError::msg("is_inf takes floats")))
}

/// Clip(x, min?, max?): an absent bound is no bound. As numpy's clip, max is applied after
/// min (so min > max gives max) and NaN passes through.
// The generic body is also instantiated for bool (rejected above), where clippy objects
// to ordering booleans.
#[allow(clippy::bool_comparison)]
pub(crate) fn clip(x: &Tensor, lo: Option<&Tensor>, hi: Option<&Tensor>) -> Result<Tensor> {
    if x.dtype() == crate::DType::Bool {
        return Err(IrError::msg("clip does not take bool tensors"));
    }
    with_data!(x.data(), v, T => {
        let lo: Option<T> = lo.map(|t| one::<T>(t, "clip min")).transpose()?;
        let hi: Option<T> = hi.map(|t| one::<T>(t, "clip max")).transpose()?;
        map1(x, v, |a: T| {
            let a = match lo { Some(l) if a < l => l, _ => a };
            match hi { Some(h) if a > h => h, _ => a }
        })
    })
}
