//! TF2 `While` loops as Keras emits them for LSTM and GRU layers, recognised and lowered to
//! the IR's `Rnn`. TensorLists outside such a loop are plain tensors: the list made
//! by TensorListFromTensor is that tensor, the loop's output list is the LSTM's outputs.
//!
//! The loop's inputs are (counter, max, time, output list, h, c, input list, weights...);
//! its body reads x_t from the input list, computes x_t·W + h·R + b, splits it into Keras's
//! gates (i, f, c, o) with sigmoid/tanh, and writes h to the output list.

use super::graph::{split_tensor, Builder};
use super::proto::{attr_value, FunctionDef, NodeDef};
use kiln_ir::{Direction, IrError, Op, Result, RnnKind, Tensor, Value};
use std::collections::HashMap;

pub(super) fn count(f: &FunctionDef, op: &str) -> usize {
    f.node_def.iter().filter(|n| n.op == op).count()
}

/// The body arg position a body tensor reference names, if it is an argument.
pub(super) fn arg_pos(f: &FunctionDef, s: &str) -> Option<usize> {
    let sig = f.signature.as_ref()?;
    sig.input_arg.iter().position(|a| a.name == s)
}

/// Follows ReadVariableOp/Identity inside the body back to an argument.
pub(super) fn source_arg(f: &FunctionDef, body: &HashMap<&str, &NodeDef>, s: &str) -> Option<usize> {
    let mut cur = s.to_string();
    for _ in 0..8 {
        if let Some(p) = arg_pos(f, &cur) {
            return Some(p);
        }
        let node = body.get(cur.split(':').next()?)?;
        if !matches!(node.op.as_str(), "ReadVariableOp" | "Identity") {
            return None;
        }
        cur = node.input.first()?.clone();
    }
    None
}

pub(super) fn node_of<'a>(body: &HashMap<&str, &'a NodeDef>, s: &str) -> Option<&'a NodeDef> {
    body.get(s.split(':').next()?).copied()
}

/// Keras gate order (i, f, c, o) along `axis` of `w` → ONNX order (i, o, f, c).
fn reorder_gates(b: &mut Builder, name: &str, w: Value, axis: i64) -> Result<Value> {
    let parts = b.add(Op::Split { axis }, &format!("{name}/gates"), &[Some(w)], 4)?;
    let [i, f, c, o] = parts.as_slice() else {
        return Err(IrError::msg("gate split failed"));
    };
    b.add1(
        Op::Concat { axis },
        &format!("{name}/iofc"),
        &[*i, *o, *f, *c],
    )
}

pub fn convert_while(b: &mut Builder, n: &NodeDef, ins: &[Value]) -> Result<Vec<Option<Value>>> {
    let body_name = match n.attr.get("body").and_then(|a| a.value.as_ref()) {
        Some(attr_value::Value::Func(f)) => f.name.clone(),
        _ => return Err(IrError::msg("While has no body function")),
    };
    let f = b
        .flat
        .functions
        .get(&body_name)
        .ok_or_else(|| IrError::msg(format!("While body `{body_name}` is not in the library")))?
        .clone();
    lower(b, &n.name, &f, ins, &n.input)
}

/// Lowers a loop whose body is `f` (args in loop-variable order), its initial values `ins`
/// (tensor names `inits`), to an LSTM; gives the final value of each loop variable the
/// LSTM determines.
pub fn lower(
    b: &mut Builder,
    name: &str,
    f: &FunctionDef,
    ins: &[Value],
    inits: &[String],
) -> Result<Vec<Option<Value>>> {
    let unrecognised = || {
        IrError::msg(
            "this While loop is not a Keras LSTM, GRU or SimpleRNN; general TF2 While loops are not supported",
        )
    };
    if let Some(res) = super::simple_rnn::lower(b, name, f, ins, inits)? {
        return Ok(res);
    }
    if count(f, "Sigmoid") == 2
        && count(f, "Tanh") == 1
        && count(f, "MatMul") == 2
        && count(f, "TensorListGetItem") == 1
    {
        return lower_gru(b, name, f, ins, inits);
    }
    if count(f, "Split") != 1
        || count(f, "Sigmoid") != 3
        || count(f, "Tanh") != 2
        || count(f, "TensorListGetItem") != 1
        || count(f, "MatMul") != 2
    {
        return Err(unrecognised());
    }
    let body: HashMap<&str, &NodeDef> = f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
    let get = f
        .node_def
        .iter()
        .find(|n| n.op == "TensorListGetItem")
        .ok_or_else(unrecognised)?;
    let x_arg = get
        .input
        .first()
        .and_then(|s| arg_pos(f, s))
        .ok_or_else(unrecognised)?;
    let (mut kernel, mut recurrent, mut h_arg) = (None, None, None);
    for m in f.node_def.iter().filter(|n| n.op == "MatMul") {
        let (Some(a), Some(w)) = (m.input.first(), m.input.get(1)) else {
            return Err(unrecognised());
        };
        let w_arg = source_arg(f, &body, w).ok_or_else(unrecognised)?;
        if node_of(&body, a).is_some_and(|x| x.op == "TensorListGetItem") {
            kernel = Some(w_arg);
        } else if let Some(h) = arg_pos(f, a) {
            recurrent = Some(w_arg);
            h_arg = Some(h);
        }
    }
    let bias = f
        .node_def
        .iter()
        .filter(|n| n.op == "BiasAdd")
        .find_map(|n| n.input.get(1).and_then(|s| source_arg(f, &body, s)));
    // c is the arg multiplied by the forget gate: the Mul reading an argument.
    let c_arg = f
        .node_def
        .iter()
        .filter(|n| n.op == "Mul")
        .flat_map(|n| n.input.iter())
        .find_map(|s| arg_pos(f, s))
        .ok_or_else(unrecognised)?;
    let (Some(kernel), Some(recurrent), Some(h_arg)) = (kernel, recurrent, h_arg) else {
        return Err(unrecognised());
    };
    let at = |i: usize| {
        ins.get(i)
            .copied()
            .ok_or_else(|| IrError::msg(format!("While has no input {i}")))
    };
    let x = at(x_arg)?;
    let w = at(kernel)?;
    let r = at(recurrent)?;
    let h0 = at(h_arg)?;
    let c0 = at(c_arg)?;
    let hidden =
        b.g.value_type(r)
            .shape
            .concrete()
            .and_then(|s| s.first().copied())
            .ok_or_else(|| IrError::msg("the recurrent kernel's shape must be known"))?;
    let dtype = b.g.value_type(w).dtype;

    let wt = b.add1(
        Op::Transpose {
            perm: Some(vec![1, 0]),
        },
        &format!("{name}/w_t"),
        &[w],
    )?;
    let wt = reorder_gates(b, &format!("{name}/w"), wt, 0)?;
    let rt = b.add1(
        Op::Transpose {
            perm: Some(vec![1, 0]),
        },
        &format!("{name}/r_t"),
        &[r],
    )?;
    let rt = reorder_gates(b, &format!("{name}/r"), rt, 0)?;
    let zero_axis = b.konst(&format!("{name}/axis0"), Tensor::new(vec![1], vec![0i64])?);
    let w3 = b.add1(Op::Unsqueeze, &format!("{name}/W"), &[wt, zero_axis])?;
    let r3 = b.add1(Op::Unsqueeze, &format!("{name}/R"), &[rt, zero_axis])?;
    let zeros = b.konst(
        &format!("{name}/rb"),
        Tensor::zeros(
            dtype,
            vec![hidden
                .checked_mul(4)
                .ok_or_else(|| IrError::msg("the LSTM is too large"))?],
        )?,
    );
    let wb = match bias {
        Some(i) => {
            let bv = at(i)?;
            reorder_gates(b, &format!("{name}/b"), bv, 0)?
        }
        None => zeros,
    };
    let bb = b.add1(
        Op::Concat { axis: 0 },
        &format!("{name}/wb_rb"),
        &[wb, zeros],
    )?;
    let b2 = b.add1(Op::Unsqueeze, &format!("{name}/B"), &[bb, zero_axis])?;
    let h0 = b.add1(Op::Unsqueeze, &format!("{name}/h0"), &[h0, zero_axis])?;
    let c0 = b.add1(Op::Unsqueeze, &format!("{name}/c0"), &[c0, zero_axis])?;
    let op = Op::Rnn {
        kind: RnnKind::Lstm,
        direction: Direction::Forward,
        hidden_size: hidden as i64,
        activations: vec![],
        activation_alpha: vec![],
        activation_beta: vec![],
        clip: None,
        layout: 0,
        input_forget: false,
        linear_before_reset: false,
    };
    let outs = b.add(
        op,
        name,
        &[
            Some(x),
            Some(w3),
            Some(r3),
            Some(b2),
            None,
            Some(h0),
            Some(c0),
        ],
        3,
    )?;
    let [y, yh, yc] = outs.as_slice() else {
        return Err(IrError::msg("the LSTM gave no outputs"));
    };
    loop_results(b, f, inits, name, ins.len(), *y, &[(h_arg, *yh, "h"), (c_arg, *yc, "c")], zero_axis)
}

/// The loop's results from a recurrent op's outputs `y` and final `states` (loop variable,
/// value, name suffix; the hidden state first): each state without its direction axis, and
/// the output list (every step's output, or only the last h when Keras reserved one
/// element), each in its loop variable's slot of `n_vars`.
pub(super) fn loop_results(
    b: &mut Builder,
    f: &FunctionDef,
    inits: &[String],
    name: &str,
    n_vars: usize,
    y: Value,
    states: &[(usize, Value, &str)],
    zero_axis: Value,
) -> Result<Vec<Option<Value>>> {
    let one_axis = b.konst(&format!("{name}/axis1"), Tensor::new(vec![1], vec![1i64])?);
    let mut res: Vec<Option<Value>> = vec![None; n_vars];
    for &(arg, v, suffix) in states {
        let last = b.add1(Op::Squeeze, &format!("{name}/{suffix}"), &[v, zero_axis])?;
        if let Some(slot) = res.get_mut(arg) {
            *slot = Some(last);
        }
    }
    let yh = states.first().map(|s| s.1).ok_or_else(|| IrError::msg("a recurrent loop carries no state"))?;
    let (list_arg, reserved_one) = output_list(b, f, inits)?;
    let list = if reserved_one { yh } else { b.add1(Op::Squeeze, &format!("{name}/y"), &[y, one_axis])? };
    if let Some(slot) = res.get_mut(list_arg) {
        *slot = Some(list);
    }
    Ok(res)
}

/// The loop variable the body writes each step's output to, and whether Keras reserved one
/// element for it (the last step's output) rather than one per step.
fn output_list(b: &Builder, f: &FunctionDef, inits: &[String]) -> Result<(usize, bool)> {
    let list_arg = f
        .node_def
        .iter()
        .find(|n| n.op == "TensorListSetItem")
        .and_then(|n| n.input.first())
        .and_then(|s| arg_pos(f, s))
        .ok_or_else(|| IrError::msg("the loop body writes no output list"))?;
    let reserve = inits
        .get(list_arg)
        .map(|s| b.flat.resolve(&super::graph::normalize(s)))
        .transpose()?;
    let Some(reserve) = reserve else {
        return Ok((list_arg, false));
    };
    let (node, _) = split_tensor(&reserve)?;
    let rn = b.flat.index.get(node).and_then(|&i| b.flat.nodes.get(i));
    let num = rn
        .and_then(|rn| rn.input.get(1))
        .map(|s| b.flat.resolve(s))
        .transpose()?;
    let one = match num {
        Some(t) => {
            let v = b.value_of(&t)?;
            b.g.const_value(v)
                .map(|t| t.to_i64_vec() == vec![1])
                .unwrap_or(false)
        }
        None => false,
    };
    Ok((list_arg, one))
}

/// A Keras GRU loop (reset_after, gates z, r, h as ONNX orders them) → Rnn (kind GRU,
/// linear_before_reset). Its bias variable is [2, 3H]: input and recurrent biases.
fn lower_gru(
    b: &mut Builder,
    name: &str,
    f: &FunctionDef,
    ins: &[Value],
    inits: &[String],
) -> Result<Vec<Option<Value>>> {
    let unrecognised = || {
        IrError::msg("this While loop is not a Keras GRU (reset_after); general TF2 While loops are not supported")
    };
    let body: HashMap<&str, &NodeDef> = f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
    let (mut kernel, mut recurrent, mut h_arg) = (None, None, None);
    for m in f.node_def.iter().filter(|n| n.op == "MatMul") {
        let (Some(a), Some(w)) = (m.input.first(), m.input.get(1)) else {
            return Err(unrecognised());
        };
        let w_arg = source_arg(f, &body, w).ok_or_else(unrecognised)?;
        if node_of(&body, a).is_some_and(|x| x.op == "TensorListGetItem") {
            kernel = Some(w_arg);
        } else if let Some(h) = arg_pos(f, a) {
            recurrent = Some(w_arg);
            h_arg = Some(h);
        }
    }
    // The bias variable is split into its input and recurrent rows.
    let bias = f
        .node_def
        .iter()
        .filter(|n| n.op == "Split")
        .find_map(|n| n.input.get(1).and_then(|s| source_arg(f, &body, s)));
    let (Some(kernel), Some(recurrent), Some(h_arg), Some(bias)) = (kernel, recurrent, h_arg, bias)
    else {
        return Err(unrecognised());
    };
    let x_arg = f
        .node_def
        .iter()
        .find(|n| n.op == "TensorListGetItem")
        .and_then(|n| n.input.first())
        .and_then(|s| arg_pos(f, s))
        .ok_or_else(unrecognised)?;
    let at = |i: usize| {
        ins.get(i)
            .copied()
            .ok_or_else(|| IrError::msg(format!("the loop has no input {i}")))
    };
    let (x, w, r, bv, h0) = (
        at(x_arg)?,
        at(kernel)?,
        at(recurrent)?,
        at(bias)?,
        at(h_arg)?,
    );
    let hidden =
        b.g.value_type(r)
            .shape
            .concrete()
            .and_then(|s| s.first().copied())
            .ok_or_else(|| IrError::msg("the recurrent kernel's shape must be known"))?;
    let bshape = b.g.value_type(bv).shape.concrete();
    if bshape.as_deref() != Some(&[2, hidden.saturating_mul(3)][..]) {
        return Err(IrError::msg(
            "the GRU bias is not [2, 3H] (reset_after = False is not supported)",
        ));
    }
    let t = Op::Transpose {
        perm: Some(vec![1, 0]),
    };
    let wt = b.add1(t.clone(), &format!("{name}/w_t"), &[w])?;
    let rt = b.add1(t, &format!("{name}/r_t"), &[r])?;
    let zero_axis = b.konst(&format!("{name}/axis0"), Tensor::new(vec![1], vec![0i64])?);
    let w3 = b.add1(Op::Unsqueeze, &format!("{name}/W"), &[wt, zero_axis])?;
    let r3 = b.add1(Op::Unsqueeze, &format!("{name}/R"), &[rt, zero_axis])?;
    let flat_shape = b.konst(
        &format!("{name}/b_shape"),
        Tensor::new(vec![2], vec![1i64, -1])?,
    );
    let b2 = b.add1(
        Op::Reshape { allowzero: false },
        &format!("{name}/B"),
        &[bv, flat_shape],
    )?;
    let h0 = b.add1(Op::Unsqueeze, &format!("{name}/h0"), &[h0, zero_axis])?;
    let op = Op::Rnn {
        kind: RnnKind::Gru,
        direction: Direction::Forward,
        hidden_size: hidden as i64,
        activations: vec![],
        activation_alpha: vec![],
        activation_beta: vec![],
        clip: None,
        layout: 0,
        input_forget: false,
        linear_before_reset: true,
    };
    let outs = b.add(
        op,
        name,
        &[Some(x), Some(w3), Some(r3), Some(b2), None, Some(h0)],
        2,
    )?;
    let [y, yh] = outs.as_slice() else {
        return Err(IrError::msg("the GRU gave no outputs"));
    };
    loop_results(b, f, inits, name, ins.len(), *y, &[(h_arg, *yh, "h")], zero_axis)
}
