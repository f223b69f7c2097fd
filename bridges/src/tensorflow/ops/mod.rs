//! The one table from TensorFlow op types to IR ops. NHWC ops are wrapped in transposes to
//! the IR's NCHW and back (the passes cancel adjacent pairs). Structural ops are here; each
//! op family has its file.

mod elementwise;
mod known;
mod movement;
mod nn;

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

        _ => {
            type Convert = fn(&mut Builder, &NodeDef, &[Value]) -> Result<Option<Vec<Value>>>;
            let groups: [Convert; 3] = [nn::convert, elementwise::convert, movement::convert];
            for convert in groups {
                if let Some(v) = convert(b, n, ins)? {
                    return Ok(v);
                }
            }
            Err(IrError::msg(format!(
                "TensorFlow op {} is not supported",
                n.op
            )))
        }
    }
}
