//! Keras activations, by name or as layers.

use super::super::model::{str_of, Ctx};
use super::super::{KErr, KResult};
use super::*;
use kiln_ir::{BinaryOp, GeluApproximation, Op, Tensor, UnaryOp, Value};
use serde_json::Value as Json;

/// A Keras activation, given by name (or a serialized activation object).
pub(crate) fn activation(
    ctx: &mut Ctx,
    name: &str,
    act: Option<&Json>,
    x: Value,
) -> KResult<Value> {
    let a = match act {
        None | Some(Json::Null) => return Ok(x),
        Some(Json::String(s)) => s.as_str(),
        Some(o) => o
            .get("config")
            .and_then(|c| str_of(c, "name"))
            .or_else(|| str_of(o, "class_name"))
            .ok_or_else(|| KErr::at(name, format!("activation {o} is not understood")))?,
    };
    let unary = |u| Op::Unary(u);
    let op = match a {
        "linear" => return Ok(x),
        "relu" => unary(UnaryOp::Relu),
        "sigmoid" => unary(UnaryOp::Sigmoid),
        "tanh" => unary(UnaryOp::Tanh),
        "softplus" => unary(UnaryOp::Softplus),
        "softsign" => unary(UnaryOp::Softsign),
        "exponential" => unary(UnaryOp::Exp),
        "mish" => unary(UnaryOp::Mish),
        "softmax" => Op::Softmax { axis: -1 },
        "log_softmax" => Op::LogSoftmax { axis: -1 },
        "elu" => Op::Elu { alpha: 1.0 },
        "selu" => Op::Selu {
            alpha: 1.673_263_2,
            gamma: 1.050_701,
        },
        "celu" => Op::Celu { alpha: 1.0 },
        "swish" | "silu" => Op::Swish { alpha: 1.0 },
        "gelu" => Op::Gelu {
            approximate: GeluApproximation::None,
        },
        // Keras 3: relu6(x + 3) / 6.
        "hard_sigmoid" => Op::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        },
        "hard_silu" | "hard_swish" => unary(UnaryOp::HardSwish),
        "leaky_relu" => Op::LeakyRelu { alpha: 0.2 },
        "relu6" => {
            let y = ctx.add(name, unary(UnaryOp::Relu), &[x])?;
            let dt = ctx.ty(y).dtype;
            let six =
                Tensor::from_f64(dt, vec![], &[6.0]).map_err(|e| KErr::at(name, e.message))?;
            let six = ctx.constant(name, six);
            return ctx.add(name, Op::Binary(BinaryOp::Min), &[y, six]);
        }
        "tanh_shrink" => {
            let t = ctx.add(name, unary(UnaryOp::Tanh), &[x])?;
            return ctx.add(name, Op::Binary(BinaryOp::Sub), &[x, t]);
        }
        "log_sigmoid" => {
            let s = ctx.add(name, unary(UnaryOp::Sigmoid), &[x])?;
            return ctx.add(name, unary(UnaryOp::Log), &[s]);
        }
        other => {
            return Err(KErr::at(
                name,
                format!("activation `{other}` is not supported"),
            ))
        }
    };
    ctx.add(name, op, &[x])
}

pub(super) fn relu_layer(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let max = num(cfg, "max_value");
    let slope = num(cfg, "negative_slope").unwrap_or(0.0);
    let threshold = num(cfg, "threshold").unwrap_or(0.0);
    if threshold != 0.0 {
        return Err(KErr::at(
            name,
            "ReLU with a nonzero threshold is not supported",
        ));
    }
    let mut y = if slope != 0.0 {
        ctx.add(
            name,
            Op::LeakyRelu {
                alpha: slope as f32,
            },
            &[x],
        )?
    } else {
        ctx.add(name, Op::Unary(UnaryOp::Relu), &[x])?
    };
    if let Some(m) = max {
        let dt = ctx.ty(y).dtype;
        let t = Tensor::from_f64(dt, vec![], &[m]).map_err(|e| KErr::at(name, e.message))?;
        let mv = ctx.constant(name, t);
        y = ctx.add(name, Op::Binary(BinaryOp::Min), &[y, mv])?;
    }
    Ok(y)
}
