//! Elementwise ops as C expressions over their operands at the broadcast coordinates, with
//! `ir::eval`'s semantics: float math in f64 where the device has it, NaN passing through
//! min/max/clip/relu as eval does, integer division and modulo as ONNX defines them.

use super::{ctype, Gen};
use kiln_ir::{BinaryOp, DType, GeluApproximation, Op, UnaryOp, Value};

pub fn handles(op: &Op) -> bool {
    // The fusion pattern's elementwise ops (batch norm included), less bit casts.
    kiln_passes::pattern::pattern(op).is_elementwise() && !matches!(op, Op::BitCast { .. })
}

fn f(x: f32) -> String {
    format!("{:e}", x as f64)
}

/// The expression of `op` at the output coordinates `i0..i{rank-1}`; `None` when `op` is not
/// elementwise.
pub fn expr(g: &Gen, op: &Op, ins: &[Option<Value>], out: DType, rank: usize) -> Option<Result<String, String>> {
    if !handles(op) {
        return None;
    }
    Some(expr_inner(g, op, ins, out, rank))
}

fn expr_inner(g: &Gen, op: &Op, ins: &[Option<Value>], out: DType, rank: usize) -> Result<String, String> {
    let arg = |i: usize| -> Result<String, String> {
        let v = ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))?;
        g.at_broadcast(v, rank)
    };
    let dt = |i: usize| ins.get(i).copied().flatten().map(|v| g.dtype(v)).unwrap_or(out);
    let oty = ctype(out).ok_or_else(|| format!("{out} tensors"))?;
    let x0 = dt(0);
    let m = g.math(x0);
    // A float function of one operand, computed in M.
    let float1 = |body: &str| -> Result<String, String> {
        if !x0.is_float() {
            return Err(format!("{} does not take {x0} tensors here", op.name()));
        }
        let a = arg(0)?;
        Ok(format!("(({oty})({}))", body.replace('X', &format!("(({m})({a}))"))))
    };
    Ok(match op {
        Op::Unary(u) => unary(*u, x0, &arg(0)?, oty, m)?,
        Op::Binary(b) => binary(*b, x0, dt(1), &arg(0)?, &arg(1)?, oty, m)?,
        Op::Cast { to } => cast(x0, *to, &arg(0)?)?,
        Op::Clip => {
            let x = arg(0)?;
            let mut e = format!("({x})");
            if let Some(lo) = ins.get(1).copied().flatten() {
                let lo = g.at(lo, &vec!["0".to_string(); super::dims(g.graph, lo)?.len()]);
                e = format!("(({e}) < ({lo}) ? ({oty})({lo}) : ({e}))");
            }
            if let Some(hi) = ins.get(2).copied().flatten() {
                let hi = g.at(hi, &vec!["0".to_string(); super::dims(g.graph, hi)?.len()]);
                e = format!("(({e}) > ({hi}) ? ({oty})({hi}) : ({e}))");
            }
            e
        }
        Op::Where => format!("(({}) ? ({}) : ({}))", arg(0)?, arg(1)?, arg(2)?),
        Op::IsInf { detect_positive, detect_negative } => {
            let a = arg(0)?;
            format!(
                "((uchar)(({p} && ({a}) == INFINITY) || ({n} && ({a}) == -INFINITY)))",
                p = *detect_positive as i32,
                n = *detect_negative as i32
            )
        }
        Op::LeakyRelu { alpha } => float1(&format!("X < 0 ? {} * X : X", f(*alpha)))?,
        Op::Elu { alpha } => float1(&format!("X < 0 ? {} * expm1(X) : X", f(*alpha)))?,
        Op::Selu { alpha, gamma } => {
            float1(&format!("X > 0 ? {g} * X : {g} * {a} * expm1(X)", g = f(*gamma), a = f(*alpha)))?
        }
        Op::Celu { alpha } => float1(&format!("fmax(X, ({m})0) + fmin(({a}) * expm1(X / {a}), ({m})0)", a = f(*alpha)))?,
        Op::ThresholdedRelu { alpha } => float1(&format!("X > {} ? X : 0", f(*alpha)))?,
        Op::HardSigmoid { alpha, beta } => float1(&format!("k_clamp({} * X + {}, 0, 1)", f(*alpha), f(*beta)))?,
        Op::Shrink { bias, lambd } => {
            let (b, l) = (f(*bias), f(*lambd));
            let body = format!("X < -{l} ? X + {b} : (X > {l} ? X - {b} : 0)");
            if x0.is_float() {
                float1(&body)?
            } else {
                let a = arg(0)?;
                format!("(({oty})(long)({}))", body.replace('X', &format!("((double)({a}))")))
            }
        }
        Op::Gelu { approximate: GeluApproximation::None } => float1("0.5 * X * (1 + erf(X * 0.70710678118654752440))")?,
        Op::Gelu { approximate: GeluApproximation::Tanh } => {
            float1("0.5 * X * (1 + tanh(0.79788456080286535588 * (X + 0.044715 * X * X * X)))")?
        }
        Op::Swish { alpha } => float1(&format!("X * k_sigmoid({} * X)", f(*alpha)))?,
        Op::BatchNorm { epsilon } => {
            // (x, scale, bias, mean, var), the parameters along axis 1.
            if !x0.is_float() || rank < 2 {
                return Err("batch_norm takes float tensors of rank 2 or more".into());
            }
            let p = |i: usize| -> Result<String, String> {
                let v = ins.get(i).copied().flatten().ok_or("batch_norm needs five inputs")?;
                Ok(format!("(({m}){})", g.at(v, &["i1".to_string()])))
            };
            format!(
                "(({oty})((((({m})({x})) - {mean}) / sqrt({var} + ({m}){eps})) * {s} + {b}))",
                x = arg(0)?,
                mean = p(3)?,
                var = p(4)?,
                eps = f(*epsilon),
                s = p(1)?,
                b = p(2)?
            )
        }
        _ => return Err(format!("{} is not elementwise", op.name())),
    })
}

fn unary(u: UnaryOp, d: DType, a: &str, oty: &str, m: &str) -> Result<String, String> {
    use UnaryOp::*;
    let x = format!("(({m})({a}))");
    if d == DType::Bool {
        return match u {
            Identity => Ok(a.to_string()),
            Not => Ok(format!("((uchar)!({a}))")),
            _ => Err(format!("{} does not take bool tensors", u.word())),
        };
    }
    if !d.is_float() {
        return Ok(match u {
            Identity | Floor | Ceil | Round => a.to_string(),
            Abs => format!("(({oty})(({a}) < 0 ? -({a}) : ({a})))"),
            Neg => format!("(({oty})(-({a})))"),
            Sign => format!("(({oty})(({a}) > 0 ? 1 : (({a}) < 0 ? -1 : 0)))"),
            Relu => format!("(({oty})(({a}) < 0 ? 0 : ({a})))"),
            BitwiseNot => format!("(({oty})(~({a})))"),
            _ => return Err(format!("{} does not take {d} tensors", u.word())),
        });
    }
    let e = match u {
        Identity => return Ok(a.to_string()),
        IsNaN => return Ok(format!("((uchar)isnan({a}))")),
        Abs => format!("fabs({x})"),
        Neg => format!("-{x}"),
        Exp => format!("exp({x})"),
        Log => format!("log({x})"),
        Sqrt => format!("sqrt({x})"),
        Reciprocal => format!("1 / {x}"),
        Floor => format!("floor({x})"),
        Ceil => format!("ceil({x})"),
        Round => format!("rint({x})"),
        Sign => format!("k_sign({x})"),
        Sin => format!("sin({x})"),
        Cos => format!("cos({x})"),
        Tan => format!("tan({x})"),
        Asin => format!("asin({x})"),
        Acos => format!("acos({x})"),
        Atan => format!("atan({x})"),
        Sinh => format!("sinh({x})"),
        Cosh => format!("cosh({x})"),
        Asinh => format!("asinh({x})"),
        Acosh => format!("acosh({x})"),
        Atanh => format!("atanh({x})"),
        Erf => format!("erf({x})"),
        Relu => format!("k_relu({x})"),
        Sigmoid => format!("k_sigmoid({x})"),
        Tanh => format!("tanh({x})"),
        Softplus => format!("k_softplus({x})"),
        Softsign => format!("{x} / (1 + fabs({x}))"),
        Mish => format!("{x} * tanh(k_softplus({x}))"),
        HardSwish => format!("{x} * k_clamp({x} / 6 + 0.5, 0, 1)"),
        Not | BitwiseNot => return Err(format!("{} does not take {d} tensors", u.word())),
    };
    Ok(format!("(({oty})({e}))"))
}

fn binary(b: BinaryOp, x: DType, y: DType, a: &str, c: &str, oty: &str, m: &str) -> Result<String, String> {
    use BinaryOp::*;
    let cmp = |o: &str| Ok(format!("((uchar)(({a}) {o} ({c})))"));
    match b {
        Equal => return cmp("=="),
        Less => return cmp("<"),
        LessOrEqual => return cmp("<="),
        Greater => return cmp(">"),
        GreaterOrEqual => return cmp(">="),
        And => return Ok(format!("((uchar)(({a}) && ({c})))")),
        Or => return Ok(format!("((uchar)(({a}) || ({c})))")),
        Xor => return Ok(format!("((uchar)((({a}) != 0) != (({c}) != 0)))")),
        _ => {}
    }
    if x.is_float() {
        let (p, q) = (format!("(({m})({a}))"), format!("(({m})({c}))"));
        let e = match b {
            Add => format!("{p} + {q}"),
            Sub => format!("{p} - {q}"),
            Mul => format!("{p} * {q}"),
            Div => format!("{p} / {q}"),
            Pow => format!("pow({p}, {q})"),
            Mod => format!("k_pymod({p}, {q})"),
            FMod => format!("fmod({p}, {q})"),
            Min => format!("k_minmax({p}, {q}, 0)"),
            Max => format!("k_minmax({p}, {q}, 1)"),
            PRelu => format!("{p} < 0 ? {p} * {q} : {p}"),
            _ => return Err(format!("{} does not take {x} tensors", b.word())),
        };
        return Ok(format!("(({oty})({e}))"));
    }
    if x == DType::Bool {
        return Err(format!("{} does not take bool tensors", b.word()));
    }
    let e = match b {
        Add => format!("({a}) + ({c})"),
        Sub => format!("({a}) - ({c})"),
        Mul => format!("({a}) * ({c})"),
        // eval refuses a zero divisor; a kernel cannot fail, so it gives 0 instead.
        Div => format!("({c}) == 0 ? 0 : ({a}) / ({c})"),
        FMod => format!("({c}) == 0 ? 0 : ({a}) % ({c})"),
        Mod if x.is_signed() => format!("k_imod((long)({a}), (long)({c}))"),
        Mod => format!("({c}) == 0 ? 0 : ({a}) % ({c})"),
        Min => format!("({a}) < ({c}) ? ({a}) : ({c})"),
        Max => format!("({a}) > ({c}) ? ({a}) : ({c})"),
        PRelu => format!("({a}) < 0 ? ({a}) * ({c}) : ({a})"),
        BitwiseAnd => format!("({a}) & ({c})"),
        BitwiseOr => format!("({a}) | ({c})"),
        BitwiseXor => format!("({a}) ^ ({c})"),
        // As eval: a shift by the width or more (or by a negative amount) shifts every bit out.
        BitShiftLeft => format!("(({c}) < 0 || ({c}) >= {bits}) ? 0 : ({a}) << ({c})", bits = x.size() * 8),
        BitShiftRight if x.is_signed() => format!("({a}) >> ((({c}) < 0 || ({c}) >= {bits}) ? {} : ({c}))", x.size() * 8 - 1, bits = x.size() * 8),
        BitShiftRight => format!("(({c}) < 0 || ({c}) >= {bits}) ? 0 : ({a}) >> ({c})", bits = x.size() * 8),
        Pow if y.is_float() => format!("(long)pow((double)({a}), (double)({c}))"),
        Pow => format!("k_ipow((long)({a}), (long)({c}))"),
        _ => return Err(format!("{} does not take {x} tensors", b.word())),
    };
    Ok(format!("(({oty})({e}))"))
}

fn cast(from: DType, to: DType, a: &str) -> Result<String, String> {
    let ty = ctype(to).ok_or_else(|| format!("cast to {to}"))?;
    ctype(from).ok_or_else(|| format!("cast from {from}"))?;
    if from == to {
        return Ok(a.to_string());
    }
    if to == DType::Bool {
        return Ok(format!("((uchar)(({a}) != 0))"));
    }
    if from.is_float() && !to.is_float() {
        // Saturate to 64 bits, then wrap to the target as eval does (NaN gives 0).
        let wide = if to.is_signed() { "convert_long_sat" } else { "convert_ulong_sat" };
        let src = if from == DType::F64 { format!("({a})") } else { format!("((float)({a}))") };
        return Ok(format!("(({ty}){wide}({src}))"));
    }
    Ok(format!("(({ty})({a}))"))
}
