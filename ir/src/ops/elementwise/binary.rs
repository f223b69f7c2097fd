//! `Op::Binary`: elementwise functions of two numpy-broadcast tensors.

use super::kernel::{map2, with_float, with_int, Flt, Int};
use super::math;
use crate::dtype::{DType, Element};
use crate::error::{IrError, Result};
use crate::op::BinaryOp;
use crate::tensor::{Storable, Tensor};
use crate::with_data;

fn is_comparison(b: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(b, Equal | Less | LessOrEqual | Greater | GreaterOrEqual)
}

/// The output dtype of `b` on `(x, y)`, or an error naming the dtypes.
pub(crate) fn out_dtype(b: BinaryOp, x: DType, y: DType) -> Result<DType> {
    use BinaryOp::*;
    let name = b.word();
    // Pow alone mixes types: the exponent may be any numeric type; the result is the base's.
    if b == Pow {
        if x == DType::Bool || y == DType::Bool {
            return Err(IrError::msg(format!(
                "pow does not take {x} and {y} tensors"
            )));
        }
        return Ok(x);
    }
    if x != y {
        return Err(IrError::msg(format!(
            "{name} needs both inputs of one dtype, found {x} and {y}"
        )));
    }
    let ok = match b {
        Equal => true,
        Less | LessOrEqual | Greater | GreaterOrEqual => x != DType::Bool,
        And | Or | Xor => x == DType::Bool,
        BitShiftLeft | BitShiftRight | BitwiseAnd | BitwiseOr | BitwiseXor => x.is_int(),
        Add | Sub | Mul | Div | Pow | Mod | FMod | Min | Max | PRelu => x != DType::Bool,
    };
    if !ok {
        return Err(IrError::msg(format!("{name} does not take {x} tensors")));
    }
    Ok(if is_comparison(b) { DType::Bool } else { x })
}

pub(crate) fn eval(b: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    use BinaryOp::*;
    out_dtype(b, x.dtype(), y.dtype())?;
    if is_comparison(b) {
        return with_data!(x.data(), p, T => compare::<T>(b, x, p, y));
    }
    match b {
        And | Or | Xor => {
            let (p, q) = (x.as_slice::<bool>()?, y.as_slice::<bool>()?);
            match b {
                And => map2(x, p, y, q, |a, c| a & c),
                Or => map2(x, p, y, q, |a, c| a | c),
                _ => map2(x, p, y, q, |a, c| a ^ c),
            }
        }
        Min | Max => with_data!(x.data(), p, T => min_max::<T>(b == Max, x, p, y)),
        Pow => pow(x, y),
        _ => with_float!(x.dtype(), T => float_binary::<T>(b, x, y),
                _ => with_int!(x.dtype(), T => int_binary::<T>(b, x, y),
                    _ => Err(IrError::msg(format!("{} does not take {} tensors", b.word(), x.dtype()))))),
    }
}

fn compare<T: Storable>(b: BinaryOp, x: &Tensor, p: &[T], y: &Tensor) -> Result<Tensor> {
    use BinaryOp::*;
    let q = y.as_slice::<T>()?;
    match b {
        Equal => map2(x, p, y, q, |a, c| a == c),
        Less => map2(x, p, y, q, |a, c| a < c),
        LessOrEqual => map2(x, p, y, q, |a, c| a <= c),
        Greater => map2(x, p, y, q, |a, c| a > c),
        _ => map2(x, p, y, q, |a, c| a >= c),
    }
}

/// numpy minimum/maximum: a NaN on either side wins (`a != a` is only true for NaN).
#[allow(clippy::eq_op)]
fn min_max<T: Storable>(max: bool, x: &Tensor, p: &[T], y: &Tensor) -> Result<Tensor> {
    let q = y.as_slice::<T>()?;
    map2(x, p, y, q, |a, c| {
        if a != a {
            a
        } else if c != c || (c > a) == max {
            c
        } else {
            a
        }
    })
}

fn float_binary<T: Flt>(b: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    use BinaryOp::*;
    let f: fn(f64, f64) -> f64 = match b {
        Add => |a, c| a + c,
        Sub => |a, c| a - c,
        Mul => |a, c| a * c,
        Div => |a, c| a / c,
        Mod => math::py_mod,
        // Rust's `%` on floats is C fmod.
        FMod => |a, c| a % c,
        PRelu => |a, c| if a < 0.0 { a * c } else { a },
        _ => {
            return Err(IrError::msg(format!(
                "{} does not take {} tensors",
                b.word(),
                x.dtype()
            )))
        }
    };
    let (p, q) = (x.as_slice::<T>()?, y.as_slice::<T>()?);
    map2(x, p, y, q, |a, c| T::of(f(a.to_f64(), c.to_f64())))
}

fn int_binary<T: Int>(b: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    use BinaryOp::*;
    let (p, q) = (x.as_slice::<T>()?, y.as_slice::<T>()?);
    if matches!(b, Div | Mod | FMod) && q.contains(&T::ZERO) {
        return Err(IrError::msg(format!("integer {} by zero", b.word())));
    }
    match b {
        Add => map2(x, p, y, q, T::wadd),
        Sub => map2(x, p, y, q, T::wsub),
        Mul => map2(x, p, y, q, T::wmul),
        Div => map2(x, p, y, q, T::wdiv),
        FMod => map2(x, p, y, q, T::wrem),
        // Python's %: a nonzero remainder takes the divisor's sign.
        Mod => map2(x, p, y, q, |a, c| {
            let r = a.wrem(c);
            if r != T::ZERO && ((r < T::ZERO) != (c < T::ZERO)) {
                r.wadd(c)
            } else {
                r
            }
        }),
        PRelu => map2(x, p, y, q, |a, c| if a < T::ZERO { a.wmul(c) } else { a }),
        BitwiseAnd => map2(x, p, y, q, T::and),
        BitwiseOr => map2(x, p, y, q, T::or),
        BitwiseXor => map2(x, p, y, q, T::xor),
        BitShiftLeft => map2(x, p, y, q, |a, c| a.shl(c.shift_amount())),
        BitShiftRight => map2(x, p, y, q, |a, c| a.shr(c.shift_amount())),
        _ => Err(IrError::msg(format!(
            "{} does not take {} tensors",
            b.word(),
            x.dtype()
        ))),
    }
}

/// numpy `power(x, y).astype(x.dtype)`: float bases use f64 `powf`; integer bases with
/// integer exponents multiply exactly (wrapping); with float exponents, truncate the float
/// power as a cast would.
fn pow(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    if let Some(r) = with_float!(x.dtype(), T => Some(float_pow::<T>(x, y)), _ => None) {
        return r;
    }
    with_int!(x.dtype(), T => {
        if y.dtype().is_float() {
            let q = y.to_f64_vec();
            let p = x.as_slice::<T>()?;
            map2(x, p, y, &q, |a: T, c| {
                let r = a.to_f64().powf(c);
                if r.is_finite() { T::from_i64(r as i64) } else { T::ZERO }
            })
        } else {
            let p = x.as_slice::<T>()?;
            with_int!(y.dtype(), E => {
                let q = y.as_slice::<E>()?;
                map2(x, p, y, q, |a: T, e: E| int_pow(a, e))
            }, _ => Err(IrError::msg(format!("pow does not take {} exponents", y.dtype()))))
        }
    }, _ => Err(IrError::msg(format!("pow does not take {} bases", x.dtype()))))
}

fn float_pow<T: Flt>(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let p = x.as_slice::<T>()?;
    if y.dtype() == x.dtype() {
        return map2(x, p, y, y.as_slice::<T>()?, |a, c| {
            T::of(a.to_f64().powf(c.to_f64()))
        });
    }
    let q = y.to_f64_vec();
    map2(x, p, y, &q, |a, c| T::of(a.to_f64().powf(c)))
}

/// `a` to the integer power `e` with wrapping multiplication. A negative exponent gives
/// 1/a^|e|, which truncates to 0 unless |a| is 1 (numpy refuses; C++ runtimes truncate).
fn int_pow<T: Int, E: Int>(a: T, e: E) -> T {
    if e < E::ZERO {
        let odd = e.to_i64() % 2 != 0;
        return if a == T::ONE {
            T::ONE
        } else if T::SIGNED && a == T::ONE.wneg() {
            if odd {
                a
            } else {
                T::ONE
            }
        } else {
            T::ZERO
        };
    }
    let mut e = e.to_u64();
    let mut base = a;
    let mut acc = T::ONE;
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wmul(base);
        }
        base = base.wmul(base);
        e >>= 1;
    }
    acc
}
