//! One elementwise op as CLIF, on one element or on f32x4 lanes, with `ir::eval`'s
//! semantics: NaN passes through compare-and-select ops (relu, clip, leaky relu…) as it
//! does in the reference, integers wrap, casts saturate toward zero as Rust's `as` does.

use super::emit::Fx;
use super::math;
use super::plan::Scalar;
use super::Unsupported;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use kiln_ir::{BinaryOp, DType, GeluApproximation, Op, UnaryOp};

/// An operand of an op: its value (absent for an integer constant on the vector path,
/// which only Pow's exponent may be), its dtype, and its value when it is a constant.
#[derive(Clone, Copy)]
pub struct Arg {
    pub v: Option<Value>,
    pub dtype: DType,
    pub konst: Option<Scalar>,
}

impl Arg {
    fn v(&self) -> Result<Value, Unsupported> {
        self.v
            .ok_or_else(|| Unsupported::new("an integer constant in a vectorised kernel"))
    }
}

/// The scalar CLIF type of a dtype (bool is a 0/1 byte).
pub fn clif_type(d: DType) -> Type {
    match d {
        DType::I32 => types::I32,
        DType::I64 => types::I64,
        DType::Bool => types::I8,
        _ => types::F32,
    }
}

/// The value of `op` on `args`, of dtype `out`.
pub fn lower(fx: &mut Fx, op: &Op, args: &[Option<Arg>], out: DType) -> Result<Value, Unsupported> {
    let arg = |i: usize| -> Result<Arg, Unsupported> {
        args.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| Unsupported::new(format!("`{}` misses input {i}", op.name())))
    };
    let x = arg(0)?;
    match op {
        Op::Cast { to } => cast(fx, x.v()?, x.dtype, *to),
        Op::Where => {
            let (c, a, b) = (arg(0)?.v()?, arg(1)?.v()?, arg(2)?.v()?);
            Ok(select(fx, out, c, a, b))
        }
        Op::Clip => {
            let mut v = x.v()?;
            if let Some(lo) = args.get(1).copied().flatten() {
                let lo = lo.v()?;
                let below = less(fx, x.dtype, v, lo);
                v = select(fx, x.dtype, below, lo, v);
            }
            if let Some(hi) = args.get(2).copied().flatten() {
                let hi = hi.v()?;
                let above = less(fx, x.dtype, hi, v);
                v = select(fx, x.dtype, above, hi, v);
            }
            Ok(v)
        }
        Op::Unary(u) => match x.dtype {
            DType::F32 => float_unary(fx, *u, x.v()?),
            DType::Bool => bool_unary(fx, *u, x.v()?),
            _ => int_unary(fx, *u, x.v()?),
        },
        Op::Binary(b) => {
            let y = arg(1)?;
            if *b == BinaryOp::Pow {
                return pow(fx, x, y);
            }
            match x.dtype {
                DType::F32 => float_binary(fx, *b, x.v()?, y.v()?),
                DType::Bool => bool_binary(fx, *b, x.v()?, y.v()?),
                _ => int_binary(fx, *b, x.v()?, y.v()?),
            }
        }
        _ if x.dtype == DType::F32 => activation(fx, op, x.v()?),
        _ => Err(Unsupported::new(format!(
            "`{}` on {} tensors",
            op.name(),
            x.dtype
        ))),
    }
}

/// `mask ? a : b` for values of dtype `d`.
fn select(fx: &mut Fx, d: DType, mask: Value, a: Value, b: Value) -> Value {
    match d {
        DType::F32 => fx.sel(mask, a, b),
        _ => fx.sel_same(mask, a, b),
    }
}

/// The mask `a < b` for values of dtype `d`.
fn less(fx: &mut Fx, d: DType, a: Value, b: Value) -> Value {
    match d {
        DType::F32 => fx.cmp(FloatCC::LessThan, a, b),
        _ => fx.icmp(IntCC::SignedLessThan, a, b),
    }
}

fn unsupported(what: &str, d: DType) -> Unsupported {
    Unsupported::new(format!("`{what}` on {d} tensors"))
}

fn float_unary(fx: &mut Fx, u: UnaryOp, x: Value) -> Result<Value, Unsupported> {
    use UnaryOp::*;
    Ok(match u {
        Identity => x,
        Abs => fx.abs(x),
        Neg => fx.b.ins().fneg(x),
        Exp => math::exp(fx, x),
        Log => math::log(fx, x),
        Sqrt => fx.b.ins().sqrt(x),
        Reciprocal => {
            let one = fx.f(1.0);
            fx.div(one, x)
        }
        Floor => fx.b.ins().floor(x),
        Ceil => fx.b.ins().ceil(x),
        Round => fx.b.ins().nearest(x),
        Sign => {
            let pos = fx.cmp_k(FloatCC::GreaterThan, x, 0.0);
            let neg = fx.cmp_k(FloatCC::LessThan, x, 0.0);
            let v = fx.sel_k(neg, -1.0, x);
            fx.sel_k(pos, 1.0, v)
        }
        Relu => {
            let neg = fx.cmp_k(FloatCC::LessThan, x, 0.0);
            fx.sel_k(neg, 0.0, x)
        }
        Sigmoid => math::sigmoid(fx, x),
        Tanh => math::tanh(fx, x),
        Erf => math::erf(fx, x),
        Softplus => math::softplus(fx, x),
        Softsign => {
            let a = fx.abs(x);
            let one = fx.f(1.0);
            let d = fx.add(one, a);
            fx.div(x, d)
        }
        Mish => {
            let s = math::softplus(fx, x);
            let t = math::tanh(fx, s);
            fx.mul(x, t)
        }
        HardSwish => {
            // (x + 3)/6 rather than x/6 + 1/2, which cancels near x = -3.
            let three = fx.f(3.0);
            let g = fx.add(x, three);
            let sixth = fx.f(1.0 / 6.0);
            let g = fx.mul(g, sixth);
            let g = fx.clamp(g, 0.0, 1.0);
            fx.mul(x, g)
        }
        IsNaN => fx.cmp(FloatCC::Unordered, x, x),
        _ => return Err(unsupported(u.word(), DType::F32)),
    })
}

fn bool_unary(fx: &mut Fx, u: UnaryOp, x: Value) -> Result<Value, Unsupported> {
    match u {
        UnaryOp::Identity => Ok(x),
        UnaryOp::Not => Ok(fx.mask_not(x)),
        _ => Err(unsupported(u.word(), DType::Bool)),
    }
}

/// i32 and i64, scalar code only.
fn int_unary(fx: &mut Fx, u: UnaryOp, x: Value) -> Result<Value, Unsupported> {
    use UnaryOp::*;
    let ty = fx.b.func.dfg.value_type(x);
    let zero = fx.b.ins().iconst(ty, 0);
    Ok(match u {
        Identity | Floor | Ceil | Round => x,
        // Wrapping, as the reference: abs(MIN) = MIN.
        Abs => fx.b.ins().iabs(x),
        Neg => fx.b.ins().ineg(x),
        Relu => fx.b.ins().smax(x, zero),
        BitwiseNot => fx.b.ins().bnot(x),
        Sign => {
            let pos = fx.b.ins().icmp(IntCC::SignedGreaterThan, x, zero);
            let neg = fx.b.ins().icmp(IntCC::SignedLessThan, x, zero);
            let pos = fx.b.ins().uextend(ty, pos);
            let neg = fx.b.ins().uextend(ty, neg);
            fx.b.ins().isub(pos, neg)
        }
        _ => {
            return Err(Unsupported::new(format!(
                "`{}` on integer tensors",
                u.word()
            )))
        }
    })
}

fn comparison(b: BinaryOp) -> Option<(FloatCC, IntCC)> {
    use BinaryOp::*;
    Some(match b {
        Equal => (FloatCC::Equal, IntCC::Equal),
        Less => (FloatCC::LessThan, IntCC::SignedLessThan),
        LessOrEqual => (FloatCC::LessThanOrEqual, IntCC::SignedLessThanOrEqual),
        Greater => (FloatCC::GreaterThan, IntCC::SignedGreaterThan),
        GreaterOrEqual => (FloatCC::GreaterThanOrEqual, IntCC::SignedGreaterThanOrEqual),
        _ => return None,
    })
}

fn float_binary(fx: &mut Fx, b: BinaryOp, x: Value, y: Value) -> Result<Value, Unsupported> {
    use BinaryOp::*;
    if let Some((cc, _)) = comparison(b) {
        return Ok(fx.cmp(cc, x, y));
    }
    Ok(match b {
        Add => fx.add(x, y),
        Sub => fx.sub(x, y),
        Mul => fx.mul(x, y),
        Div => fx.div(x, y),
        // CLIF's fmin/fmax propagate NaN as numpy's minimum/maximum do.
        Min => fx.b.ins().fmin(x, y),
        Max => fx.b.ins().fmax(x, y),
        PRelu => {
            let neg = fx.cmp_k(FloatCC::LessThan, x, 0.0);
            let xy = fx.mul(x, y);
            fx.sel(neg, xy, x)
        }
        _ => return Err(unsupported(b.word(), DType::F32)),
    })
}

fn bool_binary(fx: &mut Fx, b: BinaryOp, x: Value, y: Value) -> Result<Value, Unsupported> {
    use BinaryOp::*;
    Ok(match b {
        And => fx.mask_and(x, y),
        Or => fx.mask_or(x, y),
        Xor => fx.b.ins().bxor(x, y),
        Equal => fx.mask_eq(x, y),
        _ => return Err(unsupported(b.word(), DType::Bool)),
    })
}

/// i32 and i64, scalar code only. Division and remainder are left to the reference,
/// which reports division by zero instead of trapping.
fn int_binary(fx: &mut Fx, b: BinaryOp, x: Value, y: Value) -> Result<Value, Unsupported> {
    use BinaryOp::*;
    if let Some((_, cc)) = comparison(b) {
        return Ok(fx.b.ins().icmp(cc, x, y));
    }
    Ok(match b {
        Add => fx.b.ins().iadd(x, y),
        Sub => fx.b.ins().isub(x, y),
        Mul => fx.b.ins().imul(x, y),
        Min => fx.b.ins().smin(x, y),
        Max => fx.b.ins().smax(x, y),
        BitwiseAnd => fx.b.ins().band(x, y),
        BitwiseOr => fx.b.ins().bor(x, y),
        BitwiseXor => fx.b.ins().bxor(x, y),
        PRelu => {
            let ty = fx.b.func.dfg.value_type(x);
            let zero = fx.b.ins().iconst(ty, 0);
            let neg = fx.b.ins().icmp(IntCC::SignedLessThan, x, zero);
            let xy = fx.b.ins().imul(x, y);
            fx.b.ins().select(neg, xy, x)
        }
        _ => {
            return Err(Unsupported::new(format!(
                "`{}` on integer tensors",
                b.word()
            )))
        }
    })
}

/// x^y. A constant integer exponent up to 16 in magnitude multiplies (x² is x·x, exactly
/// rounded as the reference's powf), ½ is sqrt; otherwise exp(y·log|x|) with powf's sign
/// and special cases.
fn pow(fx: &mut Fx, x: Arg, y: Arg) -> Result<Value, Unsupported> {
    if x.dtype != DType::F32 {
        return int_pow(fx, x, y);
    }
    let xv = x.v()?;
    if let Some(k) = y.konst.map(Scalar::as_f64) {
        if k == k.trunc() && k.abs() <= 16.0 {
            let mut p =
                power(fx, xv, k.abs() as u32, |fx, a, b| fx.mul(a, b)).unwrap_or_else(|| fx.f(1.0));
            if k < 0.0 {
                let one = fx.f(1.0);
                p = fx.div(one, p);
            }
            return Ok(p);
        }
        if k == 0.5 {
            return Ok(fx.b.ins().sqrt(xv));
        }
    }
    let yv = match (y.dtype, y.konst) {
        (DType::F32, _) => y.v()?,
        (_, Some(k)) => fx.f(k.as_f64() as f32),
        _ => {
            return Err(Unsupported::new(
                "pow with a run-time integer exponent of a float",
            ))
        }
    };
    Ok(pow_general(fx, xv, yv))
}

/// `x^n` by squaring with `mul`; `None` for n = 0.
fn power(
    fx: &mut Fx,
    x: Value,
    mut n: u32,
    mul: impl Fn(&mut Fx, Value, Value) -> Value,
) -> Option<Value> {
    let mut acc: Option<Value> = None;
    let mut base = x;
    while n > 0 {
        if n & 1 == 1 {
            acc = Some(match acc {
                Some(a) => mul(fx, a, base),
                None => base,
            });
        }
        n >>= 1;
        if n > 0 {
            base = mul(fx, base, base);
        }
    }
    acc
}

fn pow_general(fx: &mut Fx, x: Value, y: Value) -> Value {
    let ax = fx.abs(x);
    let l = math::log(fx, ax);
    let yl = fx.mul(y, l);
    let r = math::exp(fx, yl);
    // A negative base (or -0) is negated for an odd integer exponent (every float beyond
    // 2^24 is even); a finite negative base with a non-integer exponent gives NaN, while
    // -inf gives |x|^y as powf does.
    let fl = fx.b.ins().floor(y);
    let is_int = fx.cmp(FloatCC::Equal, fl, y);
    let half = fx.f(0.5);
    let hy = fx.mul(y, half);
    let fh = fx.b.ins().floor(hy);
    let even = fx.cmp(FloatCC::Equal, fh, hy);
    let odd = fx.mask_not(even);
    let odd = fx.mask_and(is_int, odd);
    let xb = fx.bits(x);
    let zero = fx.i(0);
    let sign = fx.icmp(IntCC::SignedLessThan, xb, zero);
    let flip = fx.mask_and(sign, odd);
    let neg_r = fx.b.ins().fneg(r);
    let r = fx.sel(flip, neg_r, r);
    let neg = fx.cmp_k(FloatCC::LessThan, x, 0.0);
    let finite = fx.cmp_k(FloatCC::NotEqual, x, f32::NEG_INFINITY);
    let not_int = fx.mask_not(is_int);
    let bad = fx.mask_and(neg, finite);
    let bad = fx.mask_and(bad, not_int);
    let r = fx.sel_k(bad, f32::NAN, r);
    // powf: x^0 = 1 and 1^y = 1 even for NaN; (-1)^±inf = 1.
    let y0 = fx.cmp_k(FloatCC::Equal, y, 0.0);
    let x1 = fx.cmp_k(FloatCC::Equal, x, 1.0);
    let ax1 = fx.cmp_k(FloatCC::Equal, ax, 1.0);
    let ay = fx.abs(y);
    let yinf = fx.cmp_k(FloatCC::Equal, ay, f32::INFINITY);
    let m1inf = fx.mask_and(ax1, yinf);
    let one_cases = fx.mask_or(y0, x1);
    let one_cases = fx.mask_or(one_cases, m1inf);
    fx.sel_k(one_cases, 1.0, r)
}

/// An integer base to a constant non-negative integer power, wrapping.
fn int_pow(fx: &mut Fx, x: Arg, y: Arg) -> Result<Value, Unsupported> {
    let k = match y.konst {
        Some(Scalar::Int(k)) if (0..=64).contains(&k) => k as u32,
        _ => {
            return Err(Unsupported::new(
                "integer pow needs a constant exponent in 0..=64",
            ))
        }
    };
    let xv = x.v()?;
    let ty = fx.b.func.dfg.value_type(xv);
    Ok(power(fx, xv, k, |fx, a, b| fx.b.ins().imul(a, b))
        .unwrap_or_else(|| fx.b.ins().iconst(ty, 1)))
}

/// ONNX Cast among f32, i32, i64 and bool, as `Tensor::cast`: float→int truncates and
/// saturates (through i64, then wraps to i32), int→int wraps, →bool is `!= 0`, i64→f32
/// rounds through f64 as the reference does.
fn cast(fx: &mut Fx, x: Value, from: DType, to: DType) -> Result<Value, Unsupported> {
    use DType::*;
    if from == to {
        return Ok(x);
    }
    if fx.vector {
        return match (from, to) {
            (F32, Bool) => Ok(fx.float_to_mask(x)),
            (Bool, F32) => Ok(fx.mask_to_float(x)),
            _ => Err(Unsupported::new("an integer cast in a vectorised kernel")),
        };
    }
    Ok(match (from, to) {
        (F32, Bool) => fx.float_to_mask(x),
        (Bool, F32) => fx.mask_to_float(x),
        (F32, I64) => fx.b.ins().fcvt_to_sint_sat(types::I64, x),
        (F32, I32) => {
            let w = fx.b.ins().fcvt_to_sint_sat(types::I64, x);
            fx.b.ins().ireduce(types::I32, w)
        }
        (I32, F32) => fx.b.ins().fcvt_from_sint(types::F32, x),
        (I64, F32) => {
            let d = fx.b.ins().fcvt_from_sint(types::F64, x);
            fx.b.ins().fdemote(types::F32, d)
        }
        (I32, I64) => fx.b.ins().sextend(types::I64, x),
        (I64, I32) => fx.b.ins().ireduce(types::I32, x),
        (I32 | I64, Bool) => fx.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0),
        (Bool, I32 | I64) => fx.b.ins().uextend(clif_type(to), x),
        _ => return Err(Unsupported::new(format!("cast from {from} to {to}"))),
    })
}

/// The f32 activations with attributes.
fn activation(fx: &mut Fx, op: &Op, x: Value) -> Result<Value, Unsupported> {
    let neg = |fx: &mut Fx| fx.cmp_k(FloatCC::LessThan, x, 0.0);
    Ok(match *op {
        Op::LeakyRelu { alpha } => {
            let m = neg(fx);
            let k = fx.f(alpha);
            let ax = fx.mul(x, k);
            fx.sel(m, ax, x)
        }
        Op::Elu { alpha } => {
            let m = neg(fx);
            let e = math::expm1(fx, x);
            let k = fx.f(alpha);
            let ae = fx.mul(k, e);
            fx.sel(m, ae, x)
        }
        Op::Selu { alpha, gamma } => {
            let pos = fx.cmp_k(FloatCC::GreaterThan, x, 0.0);
            let e = math::expm1(fx, x);
            let ga = fx.f(gamma * alpha);
            let g = fx.f(gamma);
            let lo = fx.mul(ga, e);
            let hi = fx.mul(g, x);
            fx.sel(pos, hi, lo)
        }
        Op::Celu { alpha } => {
            // max(x, 0) + min(α·expm1(x/α), 0). The reference's f64 max/min return the
            // other operand for NaN, so celu(NaN) = 0: compare-and-select does the same.
            let inv = fx.f(1.0 / alpha);
            let xa = fx.mul(x, inv);
            let e = math::expm1(fx, xa);
            let k = fx.f(alpha);
            let ae = fx.mul(k, e);
            let zero = fx.f(0.0);
            let pos = fx.cmp_k(FloatCC::GreaterThan, x, 0.0);
            let a = fx.sel(pos, x, zero);
            let neg_part = fx.cmp_k(FloatCC::LessThan, ae, 0.0);
            let b = fx.sel(neg_part, ae, zero);
            fx.add(a, b)
        }
        Op::ThresholdedRelu { alpha } => {
            let above = fx.cmp_k(FloatCC::GreaterThan, x, alpha);
            let zero = fx.f(0.0);
            fx.sel(above, x, zero)
        }
        Op::HardSigmoid { alpha, beta } => {
            let v = fx.mul_add_k(x, alpha, beta);
            fx.clamp(v, 0.0, 1.0)
        }
        Op::Shrink { bias, lambd } => {
            let below = fx.cmp_k(FloatCC::LessThan, x, -lambd);
            let above = fx.cmp_k(FloatCC::GreaterThan, x, lambd);
            let b = fx.f(bias);
            let plus = fx.add(x, b);
            let minus = fx.sub(x, b);
            let zero = fx.f(0.0);
            let v = fx.sel(above, minus, zero);
            fx.sel(below, plus, v)
        }
        Op::Gelu {
            approximate: GeluApproximation::None,
        } => {
            let k = fx.f(std::f32::consts::FRAC_1_SQRT_2);
            let z = fx.mul(x, k);
            let ope = math::one_plus_erf(fx, z);
            let half = fx.f(0.5);
            let hx = fx.mul(half, x);
            fx.mul(hx, ope)
        }
        Op::Gelu {
            approximate: GeluApproximation::Tanh,
        } => {
            // 0.5·x·(1 + tanh(u)) = x·sigmoid(2u), accurate for negative x as well.
            let k = (2.0 / std::f64::consts::PI).sqrt() as f32;
            let x2 = fx.mul(x, x);
            let c = fx.mul_add_k(x2, 0.044715 * 2.0 * k, 2.0 * k);
            let u2 = fx.mul(c, x);
            let s = math::sigmoid(fx, u2);
            fx.mul(x, s)
        }
        Op::Swish { alpha } => {
            let k = fx.f(alpha);
            let ax = fx.mul(k, x);
            let s = math::sigmoid(fx, ax);
            fx.mul(x, s)
        }
        Op::IsInf {
            detect_positive,
            detect_negative,
        } => {
            let pos = fx.cmp_k(FloatCC::Equal, x, f32::INFINITY);
            let negi = fx.cmp_k(FloatCC::Equal, x, f32::NEG_INFINITY);
            match (detect_positive, detect_negative) {
                (true, true) => fx.mask_or(pos, negi),
                (true, false) => pos,
                (false, true) => negi,
                (false, false) => fx.mask_const(false),
            }
        }
        _ => return Err(unsupported(op.name(), DType::F32)),
    })
}
