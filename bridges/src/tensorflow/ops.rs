//! The one table from TensorFlow op types to IR ops. NHWC ops are wrapped in transposes to
//! the IR's NCHW and back (the passes cancel adjacent pairs).

use super::graph::Builder;
use super::proto::{attr_value, AttrValue, NodeDef};
use super::tensor::{dtype_from_tf, tensor_from_proto};
use kiln_ir::{
    AutoPad, BinaryOp, CoordinateTransform, DType, IrError, KeepAspectRatio, NearestMode, Op,
    PadMode, PoolKind, ReduceKind, ResizeMode, Result, Tensor, UnaryOp, Value,
};

const TO_NCHW: [i64; 4] = [0, 3, 1, 2];
const TO_NHWC: [i64; 4] = [0, 2, 3, 1];

fn attr<'n>(n: &'n NodeDef, key: &str) -> Option<&'n attr_value::Value> {
    n.attr.get(key).and_then(|a: &AttrValue| a.value.as_ref())
}

pub fn attr_type(n: &NodeDef, key: &str) -> Result<i32> {
    match attr(n, key) {
        Some(attr_value::Value::Type(t)) => Ok(*t),
        _ => Err(IrError::msg(format!(
            "{}: missing type attribute `{key}`",
            n.op
        ))),
    }
}

fn attr_i(n: &NodeDef, key: &str, default: i64) -> i64 {
    match attr(n, key) {
        Some(attr_value::Value::I(i)) => *i,
        _ => default,
    }
}

fn attr_f(n: &NodeDef, key: &str, default: f32) -> f32 {
    match attr(n, key) {
        Some(attr_value::Value::F(f)) => *f,
        _ => default,
    }
}

fn attr_b(n: &NodeDef, key: &str, default: bool) -> bool {
    match attr(n, key) {
        Some(attr_value::Value::B(b)) => *b,
        _ => default,
    }
}

fn attr_s(n: &NodeDef, key: &str, default: &str) -> String {
    match attr(n, key) {
        Some(attr_value::Value::S(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => default.to_string(),
    }
}

fn attr_ints(n: &NodeDef, key: &str) -> Vec<i64> {
    match attr(n, key) {
        Some(attr_value::Value::List(l)) => l.i.clone(),
        _ => vec![],
    }
}

fn input(ins: &[Value], i: usize) -> Result<Value> {
    ins.get(i)
        .copied()
        .ok_or_else(|| IrError::msg(format!("missing input {i}")))
}

fn nchw(data_format: &str) -> Result<bool> {
    match data_format {
        "NHWC" | "" => Ok(false),
        "NCHW" => Ok(true),
        f => Err(IrError::msg(format!("data_format {f} is not supported"))),
    }
}

/// The H and W entries of a 4-entry NHWC (or NCHW) attribute such as strides.
fn spatial(v: &[i64], is_nchw: bool, what: &str) -> Result<Vec<i64>> {
    if v.is_empty() {
        return Ok(vec![1, 1]);
    }
    if v.len() != 4 {
        return Err(IrError::msg(format!(
            "{what} has {} entries; expected 4",
            v.len()
        )));
    }
    Ok(if is_nchw {
        vec![v[2], v[3]]
    } else {
        vec![v[1], v[2]]
    })
}

/// TF padding → (auto_pad, explicit pads).
fn padding(n: &NodeDef, is_nchw: bool) -> Result<(AutoPad, Vec<i64>)> {
    match attr_s(n, "padding", "VALID").as_str() {
        "SAME" => Ok((AutoPad::SameUpper, vec![])),
        "VALID" => Ok((AutoPad::Valid, vec![])),
        "EXPLICIT" => {
            let p = attr_ints(n, "explicit_paddings");
            if p.len() != 8 {
                return Err(IrError::msg("explicit_paddings needs 8 entries"));
            }
            let (h, w) = if is_nchw { (4, 6) } else { (2, 4) };
            Ok((AutoPad::NotSet, vec![p[h], p[w], p[h + 1], p[w + 1]]))
        }
        p => Err(IrError::msg(format!("padding {p} is not supported"))),
    }
}

impl Builder<'_> {
    fn transpose(&mut self, name: &str, x: Value, perm: &[i64]) -> Result<Value> {
        self.add1(
            Op::Transpose {
                perm: Some(perm.to_vec()),
            },
            name,
            &[x],
        )
    }

    fn const_ints(&self, v: Value, what: &str) -> Result<Vec<i64>> {
        self.g
            .const_value(v)
            .map(|t| t.to_i64_vec())
            .ok_or_else(|| IrError::msg(format!("{what} must be a constant")))
    }

    fn i64s(&mut self, name: &str, vals: &[i64]) -> Value {
        match Tensor::new(vec![vals.len()], vals.to_vec()) {
            Ok(t) => self.konst(name, t),
            Err(_) => self.konst(name, Tensor::scalar(0i64)),
        }
    }

    /// `v` as a 1-D i64 tensor (axes, shapes, pads).
    fn as_i64_1d(&mut self, name: &str, v: Value) -> Result<Value> {
        let ty = self.g.value_type(v).clone();
        let mut v = v;
        if ty.dtype != DType::I64 {
            v = self.add1(Op::Cast { to: DType::I64 }, &format!("{name}/i64"), &[v])?;
        }
        if ty.shape.rank() != Some(1) {
            let shape = self.i64s(&format!("{name}/flat_shape"), &[-1]);
            v = self.add1(
                Op::Reshape { allowzero: false },
                &format!("{name}/flat"),
                &[v, shape],
            )?;
        }
        Ok(v)
    }

    fn scalar_like(&mut self, name: &str, x: Value, val: f64) -> Result<Value> {
        let dtype = self.g.value_type(x).dtype;
        let t = Tensor::from_f64(dtype, vec![], &[val])?;
        Ok(self.konst(name, t))
    }

    fn rank_of(&self, v: Value) -> Result<usize> {
        self.g
            .value_type(v)
            .shape
            .rank()
            .ok_or_else(|| IrError::msg("the input's rank must be known"))
    }

    /// Runs `f` on `x` in NCHW: transposes in and out unless the node is NCHW already.
    fn in_nchw(
        &mut self,
        name: &str,
        x: Value,
        is_nchw: bool,
        f: impl FnOnce(&mut Self, Value) -> Result<Value>,
    ) -> Result<Value> {
        if is_nchw {
            return f(self, x);
        }
        let xt = self.transpose(&format!("{name}/to_nchw"), x, &TO_NCHW)?;
        let y = f(self, xt)?;
        self.transpose(&format!("{name}/to_nhwc"), y, &TO_NHWC)
    }
}

fn unary(b: &mut Builder, name: &str, u: UnaryOp, ins: &[Value]) -> Result<Vec<Value>> {
    Ok(vec![b.add1(Op::Unary(u), name, &[input(ins, 0)?])?])
}

fn binary(b: &mut Builder, name: &str, op: BinaryOp, ins: &[Value]) -> Result<Vec<Value>> {
    Ok(vec![b.add1(
        Op::Binary(op),
        name,
        &[input(ins, 0)?, input(ins, 1)?],
    )?])
}

pub fn convert(b: &mut Builder, n: &NodeDef, ins: &[Value]) -> Result<Vec<Value>> {
    let name = n.name.as_str();
    let one = |v: Value| -> Result<Vec<Value>> { Ok(vec![v]) };
    match n.op.as_str() {
        "Const" if b.preloaded.contains_key(name) => {
            let t = b
                .preloaded
                .remove(name)
                .ok_or_else(|| IrError::msg("constant already used"))?;
            one(b.konst(name, t))
        }
        "Const" => match attr(n, "value") {
            Some(attr_value::Value::Tensor(t)) => one(b.konst(name, tensor_from_proto(t)?)),
            _ => Err(IrError::msg("Const has no tensor value")),
        },
        "VarHandleOp" => {
            let t = (b.variable)(n)?;
            one(b.konst(name, t))
        }
        "Identity"
        | "StopGradient"
        | "ReadVariableOp"
        | "Snapshot"
        | "PreventGradient"
        | "EnsureShape"
        | "PlaceholderWithDefault"
        | "CheckNumerics" => one(input(ins, 0)?),
        "IdentityN" => Ok(ins.to_vec()),
        // A list made from a tensor is that tensor; a reserved list only feeds a While
        // loop, whose lowering builds the list's contents.
        "TensorListFromTensor" | "TensorListStack" => one(input(ins, 0)?),
        "TensorListReserve" => one(b.konst(name, Tensor::scalar(0f32))),
        "TensorListGetItem" => {
            let i = input(ins, 1)?;
            one(b.add1(Op::Gather { axis: 0 }, name, &[input(ins, 0)?, i])?)
        }
        "NoOp" => Ok(vec![]),
        "Placeholder" => Err(IrError::msg(
            "a Placeholder the outputs need is not among the graph inputs",
        )),

        // ── Convolution, pooling, normalization (NHWC) ──
        "Conv2D" | "DepthwiseConv2dNative" => {
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let strides = spatial(&attr_ints(n, "strides"), is_nchw, "strides")?;
            let dilations = spatial(&attr_ints(n, "dilations"), is_nchw, "dilations")?;
            let (auto_pad, pads) = padding(n, is_nchw)?;
            let x = input(ins, 0)?;
            let f = input(ins, 1)?;
            let fshape =
                b.g.value_type(f)
                    .shape
                    .concrete()
                    .ok_or_else(|| IrError::msg("the filter's shape must be known"))?;
            if fshape.len() != 4 {
                return Err(IrError::msg("the filter must be 4-D"));
            }
            let (w, group) = if n.op == "Conv2D" {
                // HWIO → OIHW; grouped when the input has more channels than the filter.
                let w = b.transpose(&format!("{name}/filter"), f, &[3, 2, 0, 1])?;
                let cin =
                    b.g.value_type(x)
                        .shape
                        .dims()
                        .and_then(|d| d.get(if is_nchw { 1 } else { 3 }))
                        .and_then(|d| d.known());
                let group = match cin {
                    Some(c) if fshape[2] > 0 && c % fshape[2] == 0 => (c / fshape[2]) as i64,
                    _ => 1,
                };
                (w, group)
            } else {
                // [H, W, C, M] → [C*M, 1, H, W], one group per input channel.
                let cm = fshape[2]
                    .checked_mul(fshape[3])
                    .ok_or_else(|| IrError::msg("the filter is too large"))?
                    as i64;
                let shape = b.i64s(
                    &format!("{name}/filter_shape"),
                    &[fshape[0] as i64, fshape[1] as i64, 1, cm],
                );
                let r = b.add1(
                    Op::Reshape { allowzero: false },
                    &format!("{name}/filter_flat"),
                    &[f, shape],
                )?;
                (
                    b.transpose(&format!("{name}/filter"), r, &[3, 2, 0, 1])?,
                    fshape[2] as i64,
                )
            };
            let op = Op::Conv {
                auto_pad,
                dilations,
                group,
                kernel_shape: vec![fshape[0] as i64, fshape[1] as i64],
                pads,
                strides,
            };
            one(b.in_nchw(name, x, is_nchw, |b, xt| b.add1(op, name, &[xt, w]))?)
        }
        "Conv2DBackpropInput" => {
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let strides = spatial(&attr_ints(n, "strides"), is_nchw, "strides")?;
            let dilations = spatial(&attr_ints(n, "dilations"), is_nchw, "dilations")?;
            let (auto_pad, pads) = padding(n, is_nchw)?;
            let sizes = b.const_ints(input(ins, 0)?, "Conv2DBackpropInput's input_sizes")?;
            let out_hw = spatial(&sizes, is_nchw, "input_sizes")?;
            let f = input(ins, 1)?;
            let fshape =
                b.g.value_type(f)
                    .shape
                    .concrete()
                    .ok_or_else(|| IrError::msg("the filter's shape must be known"))?;
            if fshape.len() != 4 {
                return Err(IrError::msg("the filter must be 4-D"));
            }
            // [H, W, out, in] → [in, out, H, W]
            let w = b.transpose(&format!("{name}/filter"), f, &[3, 2, 0, 1])?;
            let op = Op::ConvTranspose {
                auto_pad: if auto_pad == AutoPad::Valid {
                    AutoPad::NotSet
                } else {
                    auto_pad
                },
                dilations,
                group: 1,
                kernel_shape: vec![fshape[0] as i64, fshape[1] as i64],
                output_padding: vec![],
                output_shape: out_hw,
                pads,
                strides,
            };
            let x = input(ins, 2)?;
            one(b.in_nchw(name, x, is_nchw, |b, xt| b.add1(op, name, &[xt, w]))?)
        }
        "AvgPool" | "MaxPool" => {
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let strides = spatial(&attr_ints(n, "strides"), is_nchw, "strides")?;
            let kernel_shape = spatial(&attr_ints(n, "ksize"), is_nchw, "ksize")?;
            let (auto_pad, pads) = padding(n, is_nchw)?;
            let op = Op::Pool {
                kind: if n.op == "MaxPool" {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                },
                auto_pad,
                ceil_mode: false,
                count_include_pad: false,
                dilations: vec![],
                kernel_shape,
                pads,
                strides,
                storage_order: 0,
                p: 2,
            };
            one(b.in_nchw(name, input(ins, 0)?, is_nchw, |b, xt| {
                b.add1(op, name, &[xt])
            })?)
        }
        "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => {
            if attr_b(n, "is_training", false) {
                return Err(IrError::msg("training-mode batch norm is not supported"));
            }
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let op = Op::BatchNorm {
                epsilon: attr_f(n, "epsilon", 1e-4),
            };
            let rest = [
                input(ins, 1)?,
                input(ins, 2)?,
                input(ins, 3)?,
                input(ins, 4)?,
            ];
            one(b.in_nchw(name, input(ins, 0)?, is_nchw, |b, xt| {
                b.add1(op, name, &[xt, rest[0], rest[1], rest[2], rest[3]])
            })?)
        }
        "BiasAdd" | "BiasAddV1" => {
            let x = input(ins, 0)?;
            let mut bias = input(ins, 1)?;
            if nchw(&attr_s(n, "data_format", "NHWC"))? {
                let r = b.rank_of(x)?;
                let mut shape = vec![-1i64];
                shape.extend(std::iter::repeat_n(1, r.saturating_sub(2)));
                let s = b.i64s(&format!("{name}/bias_shape"), &shape);
                bias = b.add1(
                    Op::Reshape { allowzero: false },
                    &format!("{name}/bias"),
                    &[bias, s],
                )?;
            }
            one(b.add1(Op::Binary(BinaryOp::Add), name, &[x, bias])?)
        }

        // ── Linear algebra ──
        "MatMul" => {
            let op = Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: attr_b(n, "transpose_a", false),
                trans_b: attr_b(n, "transpose_b", false),
            };
            one(b.add1(op, name, &[input(ins, 0)?, input(ins, 1)?])?)
        }
        "BatchMatMul" | "BatchMatMulV2" | "BatchMatMulV3" => {
            let mut x = input(ins, 0)?;
            let mut y = input(ins, 1)?;
            for (key, v) in [("adj_x", &mut x), ("adj_y", &mut y)] {
                if attr_b(n, key, false) {
                    let r = b.rank_of(*v)?;
                    if r < 2 {
                        return Err(IrError::msg("BatchMatMul inputs need rank 2 or more"));
                    }
                    let mut perm: Vec<i64> = (0..r as i64).collect();
                    perm.swap(r - 2, r - 1);
                    *v = b.transpose(&format!("{name}/{key}"), *v, &perm)?;
                }
            }
            one(b.add1(Op::MatMul, name, &[x, y])?)
        }
        "Einsum" => {
            let equation = attr_s(n, "equation", "");
            one(b.add1(Op::Einsum { equation }, name, ins)?)
        }

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

        // ── Shape and data movement ──
        "Reshape" => {
            let s = b.as_i64_1d(&format!("{name}/shape"), input(ins, 1)?)?;
            // TF's 0 is a zero-size dim, not ONNX's "copy the input dim".
            one(b.add1(Op::Reshape { allowzero: true }, name, &[input(ins, 0)?, s])?)
        }
        "Transpose" => {
            let perm = b.const_ints(input(ins, 1)?, "the permutation")?;
            one(b.add1(Op::Transpose { perm: Some(perm) }, name, &[input(ins, 0)?])?)
        }
        "Squeeze" => {
            let axes = attr_ints(n, "squeeze_dims");
            let x = input(ins, 0)?;
            if axes.is_empty() {
                one(b.add1(Op::Squeeze, name, &[x])?)
            } else {
                let a = b.i64s(&format!("{name}/axes"), &axes);
                one(b.add1(Op::Squeeze, name, &[x, a])?)
            }
        }
        "ExpandDims" => {
            let a = b.as_i64_1d(&format!("{name}/axes"), input(ins, 1)?)?;
            one(b.add1(Op::Unsqueeze, name, &[input(ins, 0)?, a])?)
        }
        "ConcatV2" | "Concat" => {
            let (axis_v, vals) = if n.op == "ConcatV2" {
                let (last, rest) = ins
                    .split_last()
                    .ok_or_else(|| IrError::msg("ConcatV2 has no inputs"))?;
                (*last, rest.to_vec())
            } else {
                let (first, rest) = ins
                    .split_first()
                    .ok_or_else(|| IrError::msg("Concat has no inputs"))?;
                (*first, rest.to_vec())
            };
            let axis = *b
                .const_ints(axis_v, "the axis")?
                .first()
                .ok_or_else(|| IrError::msg("the axis is empty"))?;
            one(b.add1(Op::Concat { axis }, name, &vals)?)
        }
        "Pack" => {
            let axis = attr_i(n, "axis", 0);
            let x0 = input(ins, 0)?;
            let r = b.rank_of(x0)? as i64;
            let axis = if axis < 0 { axis + r + 1 } else { axis };
            let a = b.i64s(&format!("{name}/axes"), &[axis]);
            let mut parts = Vec::new();
            for (i, &v) in ins.iter().enumerate() {
                parts.push(b.add1(Op::Unsqueeze, &format!("{name}/{i}"), &[v, a])?);
            }
            one(b.add1(Op::Concat { axis }, name, &parts)?)
        }
        "Unpack" => {
            let num = attr_i(n, "num", 0);
            let num = usize::try_from(num)
                .ok()
                .filter(|&k| k > 0 && k <= 1 << 20)
                .ok_or_else(|| IrError::msg("bad `num`"))?;
            let axis = attr_i(n, "axis", 0);
            let x = input(ins, 0)?;
            let outs = b.add(
                Op::Split { axis },
                &format!("{name}/split"),
                &[Some(x)],
                num,
            )?;
            let a = b.i64s(&format!("{name}/axes"), &[axis]);
            let mut res = Vec::new();
            for (i, v) in outs.into_iter().enumerate() {
                res.push(b.add1(Op::Squeeze, &format!("{name}:{i}"), &[v, a])?);
            }
            Ok(res)
        }
        "Split" => {
            let k = usize::try_from(attr_i(n, "num_split", 0))
                .ok()
                .filter(|&k| k > 0 && k <= 1 << 20)
                .ok_or_else(|| IrError::msg("bad `num_split`"))?;
            let axis = *b
                .const_ints(input(ins, 0)?, "the axis")?
                .first()
                .ok_or_else(|| IrError::msg("the axis is empty"))?;
            b.add(Op::Split { axis }, name, &[Some(input(ins, 1)?)], k)
        }
        "SplitV" => {
            let x = input(ins, 0)?;
            let mut sizes = b.const_ints(input(ins, 1)?, "size_splits")?;
            let axis = *b
                .const_ints(input(ins, 2)?, "the axis")?
                .first()
                .ok_or_else(|| IrError::msg("the axis is empty"))?;
            if let Some(pos) = sizes.iter().position(|&s| s == -1) {
                let r = b.rank_of(x)? as i64;
                let ax = if axis < 0 { axis + r } else { axis };
                let dim =
                    b.g.value_type(x)
                        .shape
                        .dims()
                        .and_then(|d| usize::try_from(ax).ok().and_then(|a| d.get(a)))
                        .and_then(|d| d.known())
                        .ok_or_else(|| {
                            IrError::msg("SplitV with a -1 size needs the split dim known")
                        })?;
                let known: i64 = sizes.iter().filter(|&&s| s != -1).sum();
                sizes[pos] = dim as i64 - known;
            }
            let s = b.i64s(&format!("{name}/sizes"), &sizes);
            b.add(Op::Split { axis }, name, &[Some(x), Some(s)], sizes.len())
        }
        "Shape" => {
            let s = b.add1(
                Op::Shape {
                    start: 0,
                    end: None,
                },
                name,
                &[input(ins, 0)?],
            )?;
            let to = match attr(n, "out_type") {
                Some(attr_value::Value::Type(t)) => dtype_from_tf(*t)?,
                _ => DType::I32,
            };
            if to == DType::I64 {
                one(s)
            } else {
                one(b.add1(Op::Cast { to }, &format!("{name}/cast"), &[s])?)
            }
        }
        "Fill" => {
            let dims = b.as_i64_1d(&format!("{name}/dims"), input(ins, 0)?)?;
            one(b.add1(Op::Expand, name, &[input(ins, 1)?, dims])?)
        }
        "Range" => one(b.add1(
            Op::Range,
            name,
            &[input(ins, 0)?, input(ins, 1)?, input(ins, 2)?],
        )?),
        "Tile" => {
            let m = b.as_i64_1d(&format!("{name}/multiples"), input(ins, 1)?)?;
            one(b.add1(Op::Tile, name, &[input(ins, 0)?, m])?)
        }
        "Pad" | "PadV2" | "MirrorPad" => {
            // paddings [rank, 2] → ONNX [begins..., ends...]
            let p = input(ins, 1)?;
            let p = b.add1(
                Op::Cast { to: DType::I64 },
                &format!("{name}/pads_i64"),
                &[p],
            )?;
            let p = b.transpose(&format!("{name}/pads_t"), p, &[1, 0])?;
            let p = b.as_i64_1d(&format!("{name}/pads"), p)?;
            let mode = if n.op == "MirrorPad" {
                match attr_s(n, "mode", "REFLECT").as_str() {
                    "REFLECT" => PadMode::Reflect,
                    m => return Err(IrError::msg(format!("MirrorPad mode {m} is not supported"))),
                }
            } else {
                PadMode::Constant
            };
            let x = input(ins, 0)?;
            if n.op == "PadV2" {
                one(b.add1(Op::Pad { mode }, name, &[x, p, input(ins, 2)?])?)
            } else {
                one(b.add1(Op::Pad { mode }, name, &[x, p])?)
            }
        }
        "Slice" => {
            let begin = b.const_ints(input(ins, 1)?, "Slice's begin")?;
            let size = b.const_ints(input(ins, 2)?, "Slice's size")?;
            if begin.len() != size.len() {
                return Err(IrError::msg("Slice's begin and size differ in length"));
            }
            let ends: Vec<i64> = begin
                .iter()
                .zip(&size)
                .map(|(&s, &z)| if z < 0 { i64::MAX } else { s.saturating_add(z) })
                .collect();
            let axes: Vec<i64> = (0..begin.len() as i64).collect();
            let s = b.i64s(&format!("{name}/starts"), &begin);
            let e = b.i64s(&format!("{name}/ends"), &ends);
            let a = b.i64s(&format!("{name}/axes"), &axes);
            one(b.add1(Op::Slice, name, &[input(ins, 0)?, s, e, a])?)
        }
        "StridedSlice" => strided_slice(b, n, ins),
        "GatherV2" | "Gather" => {
            if attr_i(n, "batch_dims", 0) != 0 {
                return Err(IrError::msg("GatherV2 with batch_dims is not supported"));
            }
            let axis = if n.op == "GatherV2" {
                *b.const_ints(input(ins, 2)?, "the axis")?
                    .first()
                    .ok_or_else(|| IrError::msg("the axis is empty"))?
            } else {
                0
            };
            one(b.add1(Op::Gather { axis }, name, &[input(ins, 0)?, input(ins, 1)?])?)
        }
        "ResizeBilinear" | "ResizeNearestNeighbor" => {
            let align = attr_b(n, "align_corners", false);
            let half = attr_b(n, "half_pixel_centers", false);
            let bilinear = n.op == "ResizeBilinear";
            let (coordinate_transformation_mode, nearest_mode) = match (align, half, bilinear) {
                (true, _, true) => (CoordinateTransform::AlignCorners, NearestMode::Floor),
                (true, _, false) => (
                    CoordinateTransform::AlignCorners,
                    NearestMode::RoundPreferCeil,
                ),
                (false, true, true) => (CoordinateTransform::HalfPixel, NearestMode::Floor),
                (false, true, false) => (CoordinateTransform::TfHalfPixelForNn, NearestMode::Floor),
                (false, false, _) => (CoordinateTransform::Asymmetric, NearestMode::Floor),
            };
            let op = Op::Resize {
                antialias: false,
                axes: vec![2, 3],
                coordinate_transformation_mode,
                cubic_coeff_a: -0.75,
                exclude_outside: false,
                extrapolation_value: 0.0,
                keep_aspect_ratio_policy: KeepAspectRatio::Stretch,
                mode: if bilinear {
                    ResizeMode::Linear
                } else {
                    ResizeMode::Nearest
                },
                nearest_mode,
            };
            let sizes = b.as_i64_1d(&format!("{name}/sizes"), input(ins, 1)?)?;
            let x = input(ins, 0)?;
            one(b.in_nchw(name, x, false, |b, xt| {
                let r = b.add(op, name, &[Some(xt), None, None, Some(sizes)], 1)?;
                r.first()
                    .copied()
                    .ok_or_else(|| IrError::msg("Resize produced no output"))
            })?)
        }
        op => Err(IrError::msg(format!("TensorFlow op {op} is not supported"))),
    }
}

/// StridedSlice with every mask: a Slice over the input dims, then Squeeze of the shrunk
/// dims and Unsqueeze of the new axes.
fn strided_slice(b: &mut Builder, n: &NodeDef, ins: &[Value]) -> Result<Vec<Value>> {
    let name = n.name.as_str();
    let x = input(ins, 0)?;
    let begin = b.const_ints(input(ins, 1)?, "StridedSlice's begin")?;
    let end = b.const_ints(input(ins, 2)?, "StridedSlice's end")?;
    let strides = b.const_ints(input(ins, 3)?, "StridedSlice's strides")?;
    if begin.len() != end.len() || begin.len() != strides.len() || begin.len() > 64 {
        return Err(IrError::msg(
            "StridedSlice's begin, end and strides differ in length",
        ));
    }
    let bit = |key: &str, i: usize| (attr_i(n, key, 0) >> i) & 1 == 1;
    let rank = b.rank_of(x)?;
    let spec = begin.len();
    let explicit = (0..spec)
        .filter(|&i| !bit("new_axis_mask", i) && !bit("ellipsis_mask", i))
        .count();
    let (mut starts, mut ends, mut axes, mut steps) = (vec![], vec![], vec![], vec![]);
    let mut shrink = vec![];
    // The output's dims in order: Some(input dim) kept, None a new axis.
    let mut layout: Vec<Option<usize>> = vec![];
    let mut dim = 0usize;
    let mut saw_ellipsis = false;
    for i in 0..spec {
        if bit("ellipsis_mask", i) && !saw_ellipsis {
            saw_ellipsis = true;
            let fill = rank.saturating_sub(explicit);
            for _ in 0..fill {
                layout.push(Some(dim));
                dim += 1;
            }
            continue;
        }
        if bit("new_axis_mask", i) {
            layout.push(None);
            continue;
        }
        if dim >= rank {
            return Err(IrError::msg(
                "StridedSlice indexes more dims than the input has",
            ));
        }
        let step = strides[i];
        if step == 0 {
            return Err(IrError::msg("StridedSlice has a zero stride"));
        }
        if bit("shrink_axis_mask", i) {
            let s = begin[i];
            starts.push(s);
            ends.push(if s == -1 {
                i64::MAX
            } else {
                s.saturating_add(1)
            });
            steps.push(1);
            axes.push(dim as i64);
            shrink.push(dim as i64);
        } else {
            let s = if bit("begin_mask", i) {
                if step > 0 {
                    0
                } else {
                    i64::MAX
                }
            } else {
                begin[i]
            };
            let e = if bit("end_mask", i) {
                if step > 0 {
                    i64::MAX
                } else {
                    i64::MIN
                }
            } else {
                end[i]
            };
            starts.push(s);
            ends.push(e);
            steps.push(step);
            axes.push(dim as i64);
            layout.push(Some(dim));
        }
        dim += 1;
    }
    let mut v = x;
    if !axes.is_empty() {
        let s = b.i64s(&format!("{name}/starts"), &starts);
        let e = b.i64s(&format!("{name}/ends"), &ends);
        let a = b.i64s(&format!("{name}/axes"), &axes);
        let st = b.i64s(&format!("{name}/steps"), &steps);
        v = b.add1(Op::Slice, &format!("{name}/slice"), &[v, s, e, a, st])?;
    }
    if !shrink.is_empty() {
        let a = b.i64s(&format!("{name}/shrink"), &shrink);
        v = b.add1(Op::Squeeze, &format!("{name}/squeeze"), &[v, a])?;
    }
    let new_axes: Vec<i64> = layout
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_none())
        .map(|(i, _)| i as i64)
        .collect();
    if !new_axes.is_empty() {
        let a = b.i64s(&format!("{name}/new_axes"), &new_axes);
        v = b.add1(Op::Unsqueeze, &format!("{name}/unsqueeze"), &[v, a])?;
    }
    if v == x {
        v = b.add1(Op::Unary(UnaryOp::Identity), name, &[x])?;
    }
    Ok(vec![v])
}
