//! Elementwise ops and reductions.

use super::*;

pub(super) fn convert(b: &mut Builder, n: &NodeDef, ins: &[Value]) -> Result<Option<Vec<Value>>> {
    let name = n.name.as_str();
    let one = |v: Value| -> Result<Vec<Value>> { Ok(vec![v]) };
    let r = match n.op.as_str() {
        // ── Elementwise ──
        "Relu" => unary(b, name, UnaryOp::Relu, ins),
        "Sigmoid" => unary(b, name, UnaryOp::Sigmoid, ins),
        "Tanh" => unary(b, name, UnaryOp::Tanh, ins),
        "Softplus" => unary(b, name, UnaryOp::Softplus, ins),
        "Softsign" => unary(b, name, UnaryOp::Softsign, ins),
        "Erf" => unary(b, name, UnaryOp::Erf, ins),
        "Exp" => unary(b, name, UnaryOp::Exp, ins),
        "Log" => unary(b, name, UnaryOp::Log, ins),
        "Sqrt" => unary(b, name, UnaryOp::Sqrt, ins),
        "Neg" => unary(b, name, UnaryOp::Neg, ins),
        "Abs" => unary(b, name, UnaryOp::Abs, ins),
        "Floor" => unary(b, name, UnaryOp::Floor, ins),
        "Ceil" => unary(b, name, UnaryOp::Ceil, ins),
        "Round" => unary(b, name, UnaryOp::Round, ins),
        "Sin" => unary(b, name, UnaryOp::Sin, ins),
        "Cos" => unary(b, name, UnaryOp::Cos, ins),
        "Reciprocal" | "Inv" => unary(b, name, UnaryOp::Reciprocal, ins),
        "LogicalNot" => unary(b, name, UnaryOp::Not, ins),
        "Rsqrt" => {
            let s = b.add1(
                Op::Unary(UnaryOp::Sqrt),
                &format!("{name}/sqrt"),
                &[input(ins, 0)?],
            )?;
            one(b.add1(Op::Unary(UnaryOp::Reciprocal), name, &[s])?)
        }
        "Square" => {
            let x = input(ins, 0)?;
            one(b.add1(Op::Binary(BinaryOp::Mul), name, &[x, x])?)
        }
        "Erfc" => {
            let x = input(ins, 0)?;
            let e = b.add1(Op::Unary(UnaryOp::Erf), &format!("{name}/erf"), &[x])?;
            let o = b.scalar_like(&format!("{name}/one"), x, 1.0)?;
            one(b.add1(Op::Binary(BinaryOp::Sub), name, &[o, e])?)
        }
        "Relu6" => {
            let x = input(ins, 0)?;
            let lo = b.scalar_like(&format!("{name}/lo"), x, 0.0)?;
            let hi = b.scalar_like(&format!("{name}/hi"), x, 6.0)?;
            one(b.add1(Op::Clip, name, &[x, lo, hi])?)
        }
        "Elu" => one(b.add1(Op::Elu { alpha: 1.0 }, name, &[input(ins, 0)?])?),
        "Selu" => one(b.add1(
            Op::Selu {
                alpha: 1.673_263_2,
                gamma: 1.050_701,
            },
            name,
            &[input(ins, 0)?],
        )?),
        "LeakyRelu" => one(b.add1(
            Op::LeakyRelu {
                alpha: attr_f(n, "alpha", 0.2),
            },
            name,
            &[input(ins, 0)?],
        )?),
        "Add" | "AddV2" => binary(b, name, BinaryOp::Add, ins),
        "Sub" => binary(b, name, BinaryOp::Sub, ins),
        "Mul" => binary(b, name, BinaryOp::Mul, ins),
        "RealDiv" | "Div" => binary(b, name, BinaryOp::Div, ins),
        "Maximum" => binary(b, name, BinaryOp::Max, ins),
        "Minimum" => binary(b, name, BinaryOp::Min, ins),
        "Pow" => binary(b, name, BinaryOp::Pow, ins),
        "FloorMod" => binary(b, name, BinaryOp::Mod, ins),
        "Less" => binary(b, name, BinaryOp::Less, ins),
        "LessEqual" => binary(b, name, BinaryOp::LessOrEqual, ins),
        "Greater" => binary(b, name, BinaryOp::Greater, ins),
        "GreaterEqual" => binary(b, name, BinaryOp::GreaterOrEqual, ins),
        "Equal" => binary(b, name, BinaryOp::Equal, ins),
        "LogicalAnd" => binary(b, name, BinaryOp::And, ins),
        "LogicalOr" => binary(b, name, BinaryOp::Or, ins),
        "NotEqual" => {
            let e = b.add1(
                Op::Binary(BinaryOp::Equal),
                &format!("{name}/eq"),
                &[input(ins, 0)?, input(ins, 1)?],
            )?;
            one(b.add1(Op::Unary(UnaryOp::Not), name, &[e])?)
        }
        "FloorDiv" => {
            let (x, y) = (input(ins, 0)?, input(ins, 1)?);
            if b.g.value_type(x).dtype.is_float() {
                let d = b.add1(Op::Binary(BinaryOp::Div), &format!("{name}/div"), &[x, y])?;
                one(b.add1(Op::Unary(UnaryOp::Floor), name, &[d])?)
            } else {
                // (x - x mod y) / y is exact, and mod has the divisor's sign as floor needs.
                let m = b.add1(Op::Binary(BinaryOp::Mod), &format!("{name}/mod"), &[x, y])?;
                let s = b.add1(Op::Binary(BinaryOp::Sub), &format!("{name}/sub"), &[x, m])?;
                one(b.add1(Op::Binary(BinaryOp::Div), name, &[s, y])?)
            }
        }
        "SquaredDifference" => {
            let d = b.add1(
                Op::Binary(BinaryOp::Sub),
                &format!("{name}/diff"),
                &[input(ins, 0)?, input(ins, 1)?],
            )?;
            one(b.add1(Op::Binary(BinaryOp::Mul), name, &[d, d])?)
        }
        "Select" | "SelectV2" => {
            let (c, x, y) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
            let mut c = c;
            if n.op == "Select" {
                // v1 Select takes a vector condition over the first dim of x.
                let (rc, rx) = (b.rank_of(c)?, b.rank_of(x)?);
                if rc == 1 && rx > 1 {
                    let axes: Vec<i64> = (1..rx as i64).collect();
                    let a = b.i64s(&format!("{name}/cond_axes"), &axes);
                    c = b.add1(Op::Unsqueeze, &format!("{name}/cond"), &[c, a])?;
                }
            }
            one(b.add1(Op::Where, name, &[c, x, y])?)
        }
        "Cast" => {
            let to = dtype_from_tf(attr_type(n, "DstT")?)?;
            one(b.add1(Op::Cast { to }, name, &[input(ins, 0)?])?)
        }
        "Softmax" => one(b.add1(Op::Softmax { axis: -1 }, name, &[input(ins, 0)?])?),
        "LogSoftmax" => one(b.add1(Op::LogSoftmax { axis: -1 }, name, &[input(ins, 0)?])?),

        // ── Reductions ──
        "Mean" | "Sum" | "Max" | "Min" | "Prod" => {
            let kind = match n.op.as_str() {
                "Mean" => ReduceKind::Mean,
                "Sum" => ReduceKind::Sum,
                "Max" => ReduceKind::Max,
                "Min" => ReduceKind::Min,
                _ => ReduceKind::Prod,
            };
            let axes = b.as_i64_1d(&format!("{name}/axes"), input(ins, 1)?)?;
            // TF reduces nothing over empty axes.
            let op = Op::Reduce {
                kind,
                keepdims: attr_b(n, "keep_dims", false),
                noop_with_empty_axes: true,
            };
            one(b.add1(op, name, &[input(ins, 0)?, axes])?)
        }
        "ArgMax" | "ArgMin" => {
            let axis = b.const_ints(input(ins, 1)?, "the axis")?;
            let axis = *axis
                .first()
                .ok_or_else(|| IrError::msg("the axis is empty"))?;
            let op = Op::ArgReduce {
                max: n.op == "ArgMax",
                axis,
                keepdims: false,
                select_last_index: false,
            };
            let r = b.add1(op, name, &[input(ins, 0)?])?;
            let to = match attr(n, "output_type") {
                Some(attr_value::Value::Type(t)) => dtype_from_tf(*t)?,
                _ => DType::I64,
            };
            if to == DType::I64 {
                one(r)
            } else {
                one(b.add1(Op::Cast { to }, &format!("{name}/cast"), &[r])?)
            }
        }

        _ => return Ok(None),
    };
    r.map(Some)
}
