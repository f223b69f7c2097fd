//! The `While` loop Keras emits for a SimpleRNN layer, lowered to the IR's `Rnn` (kind RNN).
//!
//! The body reads x_t from the input list, computes act(x_t·W + b + h·R) and writes the
//! result both to the output list and to h. Two MatMuls, one list read, and no gates
//! (no Sigmoid feeding a Mul, no Split) tell it apart from LSTM and GRU bodies.

use super::graph::Builder;
use super::lstm::{arg_pos, count, loop_results, node_of, source_arg};
use super::proto::{FunctionDef, NodeDef};
use kiln_ir::{Direction, IrError, Op, Result, RnnKind, Tensor, Value};
use std::collections::HashMap;

/// The IR activation (name, alpha) for the op Keras's cell applies last.
fn activation(op: &str) -> Option<(&'static str, Option<f32>)> {
    Some(match op {
        "Tanh" => ("Tanh", None),
        "Relu" => ("Relu", None),
        "Sigmoid" => ("Sigmoid", None),
        "Elu" => ("Elu", Some(1.0)),
        "Softplus" => ("Softplus", None),
        "Softsign" => ("Softsign", None),
        // activation=None: the sum itself, an affine map with slope 1.
        "AddV2" | "Add" => ("Affine", Some(1.0)),
        _ => return None,
    })
}

/// Lowers `f` to an RNN when it is a SimpleRNN body; `None` when it is not one, so that the
/// caller can try the other patterns.
pub fn lower(
    b: &mut Builder,
    name: &str,
    f: &FunctionDef,
    ins: &[Value],
    inits: &[String],
) -> Result<Option<Vec<Option<Value>>>> {
    if count(f, "MatMul") != 2
        || count(f, "TensorListGetItem") != 1
        || count(f, "TensorListSetItem") != 1
        || count(f, "Split") != 0
        || count(f, "Mul") != 0
    {
        return Ok(None);
    }
    let body: HashMap<&str, &NodeDef> = f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
    let Some(set) = f.node_def.iter().find(|n| n.op == "TensorListSetItem") else {
        return Ok(None);
    };
    let Some(act_node) = set.input.get(2).and_then(|s| node_of(&body, s)) else {
        return Ok(None);
    };
    let Some((act, alpha)) = activation(&act_node.op) else {
        return Ok(None);
    };
    let (mut kernel, mut recurrent, mut h_arg) = (None, None, None);
    for m in f.node_def.iter().filter(|n| n.op == "MatMul") {
        let (Some(a), Some(w)) = (m.input.first(), m.input.get(1)) else {
            return Ok(None);
        };
        let Some(w_arg) = source_arg(f, &body, w) else {
            return Ok(None);
        };
        if node_of(&body, a).is_some_and(|x| x.op == "TensorListGetItem") {
            kernel = Some(w_arg);
        } else if let Some(h) = arg_pos(f, a) {
            recurrent = Some(w_arg);
            h_arg = Some(h);
        }
    }
    let x_arg = f
        .node_def
        .iter()
        .find(|n| n.op == "TensorListGetItem")
        .and_then(|n| n.input.first())
        .and_then(|s| arg_pos(f, s));
    let (Some(kernel), Some(recurrent), Some(h_arg), Some(x_arg)) =
        (kernel, recurrent, h_arg, x_arg)
    else {
        return Ok(None);
    };
    let bias = f
        .node_def
        .iter()
        .filter(|n| n.op == "BiasAdd")
        .find_map(|n| n.input.get(1).and_then(|s| source_arg(f, &body, s)));
    let at = |i: usize| {
        ins.get(i)
            .copied()
            .ok_or_else(|| IrError::msg(format!("the loop has no input {i}")))
    };
    let (x, w, r, h0) = (at(x_arg)?, at(kernel)?, at(recurrent)?, at(h_arg)?);
    let hidden =
        b.g.value_type(r)
            .shape
            .concrete()
            .and_then(|s| s.first().copied())
            .ok_or_else(|| IrError::msg("the recurrent kernel's shape must be known"))?;
    let dtype = b.g.value_type(w).dtype;

    let t = Op::Transpose {
        perm: Some(vec![1, 0]),
    };
    let wt = b.add1(t.clone(), &format!("{name}/w_t"), &[w])?;
    let rt = b.add1(t, &format!("{name}/r_t"), &[r])?;
    let zero_axis = b.konst(&format!("{name}/axis0"), Tensor::new(vec![1], vec![0i64])?);
    let w3 = b.add1(Op::Unsqueeze, &format!("{name}/W"), &[wt, zero_axis])?;
    let r3 = b.add1(Op::Unsqueeze, &format!("{name}/R"), &[rt, zero_axis])?;
    // ONNX's B is [Wb, Rb]; Keras has one bias, so Rb is zero.
    let zeros = b.konst(&format!("{name}/rb"), Tensor::zeros(dtype, vec![hidden])?);
    let wb = match bias {
        Some(i) => at(i)?,
        None => zeros,
    };
    let bb = b.add1(
        Op::Concat { axis: 0 },
        &format!("{name}/wb_rb"),
        &[wb, zeros],
    )?;
    let b2 = b.add1(Op::Unsqueeze, &format!("{name}/B"), &[bb, zero_axis])?;
    let h0 = b.add1(Op::Unsqueeze, &format!("{name}/h0"), &[h0, zero_axis])?;
    let op = Op::Rnn {
        kind: RnnKind::Rnn,
        direction: Direction::Forward,
        hidden_size: hidden as i64,
        activations: vec![act.to_string()],
        activation_alpha: alpha.into_iter().collect(),
        activation_beta: if act == "Affine" { vec![0.0] } else { vec![] },
        clip: None,
        layout: 0,
        input_forget: false,
        linear_before_reset: false,
    };
    let outs = b.add(
        op,
        name,
        &[Some(x), Some(w3), Some(r3), Some(b2), None, Some(h0)],
        2,
    )?;
    let [y, yh] = outs.as_slice() else {
        return Err(IrError::msg("the RNN gave no outputs"));
    };
    loop_results(b, f, inits, name, ins.len(), *y, &[(h_arg, *yh, "h")], zero_axis).map(Some)
}
