//! LSTM, GRU and SimpleRNN (alone or in Bidirectional) as the IR's ONNX-style `Rnn` op,
//! run with `layout = 1` so Keras's (batch, time, features) needs no transposes.
//!
//! Keras packs the gates of a kernel as LSTM (i, f, c, o), GRU (z, r, h); ONNX wants
//! LSTM (i, o, f, c), GRU (z, r, h). A GRU with `reset_after` (the Keras 3 default) has
//! separate input and recurrent biases and is ONNX's `linear_before_reset`.

use super::super::model::{str_of, Ctx};
use super::super::{KErr, KResult};
use super::{num, permute};
use kiln_ir::{Direction, Op, RnnKind, Tensor, Value};
use serde_json::Value as Json;

struct Cell {
    kind: RnnKind,
    units: usize,
    activations: Vec<String>,
    alphas: Vec<f32>,
    betas: Vec<f32>,
    linear_before_reset: bool,
    /// Weights per ONNX (W: (G·u, in), R: (G·u, u), B: (2·G·u)).
    w: Vec<f32>,
    r: Vec<f32>,
    b: Vec<f32>,
    input: usize,
}

fn onnx_activation(name: &str, a: &str, alphas: &mut Vec<f32>, betas: &mut Vec<f32>) -> KResult<String> {
    Ok(match a {
        "tanh" => "Tanh".into(),
        "sigmoid" => "Sigmoid".into(),
        "relu" => "Relu".into(),
        "softsign" => "Softsign".into(),
        "softplus" => "Softplus".into(),
        "elu" => {
            alphas.push(1.0);
            "Elu".into()
        }
        "linear" => {
            alphas.push(1.0);
            betas.push(0.0);
            "Affine".into()
        }
        "hard_sigmoid" => {
            alphas.push(1.0 / 6.0);
            betas.push(0.5);
            "HardSigmoid".into()
        }
        other => return Err(KErr::at(name, format!("recurrent activation `{other}` is not supported"))),
    })
}

fn cell(ctx: &Ctx, name: &str, class: &str, cfg: &Json, w: &[Tensor]) -> KResult<Cell> {
    let kind = match class {
        "LSTM" => RnnKind::Lstm,
        "GRU" => RnnKind::Gru,
        "SimpleRNN" => RnnKind::Rnn,
        other => return Err(KErr::at(name, format!("`{other}` is not a recurrent layer kiln knows"))),
    };
    let _ = ctx;
    let units = cfg.get("units").and_then(|u| u.as_u64()).ok_or_else(|| KErr::at(name, "no `units`"))? as usize;
    let gates = match kind {
        RnnKind::Lstm => 4,
        RnnKind::Gru => 3,
        RnnKind::Rnn => 1,
    };
    let act = str_of(cfg, "activation").unwrap_or("tanh");
    let rec = str_of(cfg, "recurrent_activation").unwrap_or("sigmoid");
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let names: Vec<&str> = match kind {
        RnnKind::Lstm => vec![rec, act, act],
        RnnKind::Gru => vec![rec, act],
        RnnKind::Rnn => vec![act],
    };
    let mut activations = Vec::new();
    for a in names {
        activations.push(onnx_activation(name, a, &mut alphas, &mut betas)?);
    }
    let use_bias = cfg.get("use_bias").and_then(|b| b.as_bool()).unwrap_or(true);
    let reset_after = kind == RnnKind::Gru && cfg.get("reset_after").and_then(|b| b.as_bool()).unwrap_or(true);
    let want = if use_bias { 3 } else { 2 };
    if w.len() != want {
        return Err(KErr::at(name, format!("expected {want} weights for this {class}, the file has {}", w.len())));
    }
    let gu = gates * units;
    let k = &w[0];
    if k.rank() != 2 || k.shape()[1] != gu {
        return Err(KErr::at(name, format!("kernel has shape {:?}, expected (in, {gu})", k.shape())));
    }
    let input = k.shape()[0];
    if w[1].shape() != [units, gu] {
        return Err(KErr::at(name, format!("recurrent kernel has shape {:?}, expected ({units}, {gu})", w[1].shape())));
    }
    // ONNX gate g comes from Keras gate order[g].
    let order: Vec<usize> = match kind {
        RnnKind::Lstm => vec![0, 3, 1, 2],
        _ => (0..gates).collect(),
    };
    let reorder_rows = |t: &Tensor, cols: usize| -> KResult<Vec<f32>> {
        // t is (cols, G·u); its transpose is (G·u, cols) with gate blocks of u rows.
        let tt = permute(name, t, &[1, 0])?;
        let v = tt.as_slice::<f32>().map_err(|e| KErr::at(name, e.message))?;
        let mut out = Vec::with_capacity(v.len());
        for &g in &order {
            out.extend_from_slice(&v[g * units * cols..(g + 1) * units * cols]);
        }
        Ok(out)
    };
    let wv = reorder_rows(k, input)?;
    let rv = reorder_rows(&w[1], units)?;
    let reorder_vec = |v: &[f32]| -> Vec<f32> {
        let mut out = Vec::with_capacity(v.len());
        for &g in &order {
            out.extend_from_slice(&v[g * units..(g + 1) * units]);
        }
        out
    };
    let mut b = vec![0f32; 2 * gu];
    if use_bias {
        let bt = &w[2];
        let bv = bt.as_slice::<f32>().map_err(|e| KErr::at(name, e.message))?;
        if reset_after {
            if bt.shape() != [2, gu] {
                return Err(KErr::at(name, format!("bias has shape {:?}, expected (2, {gu})", bt.shape())));
            }
            b = reorder_vec(&bv[..gu]);
            b.extend(reorder_vec(&bv[gu..]));
        } else {
            if bt.shape() != [gu] {
                return Err(KErr::at(name, format!("bias has shape {:?}, expected ({gu})", bt.shape())));
            }
            b[..gu].copy_from_slice(&reorder_vec(bv));
        }
    }
    Ok(Cell { kind, units, activations, alphas, betas, linear_before_reset: reset_after, w: wv, r: rv, b, input })
}

fn unsupported(name: &str, cfg: &Json) -> KResult<()> {
    if cfg.get("stateful").and_then(|b| b.as_bool()).unwrap_or(false) {
        return Err(KErr::at(name, "stateful recurrent layers are not supported"));
    }
    Ok(())
}

fn flag(cfg: &Json, key: &str) -> bool {
    cfg.get(key).and_then(|b| b.as_bool()).unwrap_or(false)
}

/// Emits the Rnn op for one or two cells (two = bidirectional), returning (Y, Y_h, Y_c?).
fn emit(ctx: &mut Ctx, name: &str, cells: &[Cell], direction: Direction, x: Value) -> KResult<Vec<Value>> {
    let c0 = &cells[0];
    let dirs = cells.len();
    let g = match c0.kind {
        RnnKind::Lstm => 4,
        RnnKind::Gru => 3,
        RnnKind::Rnn => 1,
    };
    let gu = g * c0.units;
    let mut w = Vec::new();
    let mut r = Vec::new();
    let mut b = Vec::new();
    for c in cells {
        if c.units != c0.units || c.input != c0.input || c.kind != c0.kind {
            return Err(KErr::at(name, "the forward and backward layers differ"));
        }
        w.extend_from_slice(&c.w);
        r.extend_from_slice(&c.r);
        b.extend_from_slice(&c.b);
    }
    let wv = ctx.const_f32(name, vec![dirs, gu, c0.input], w)?;
    let rv = ctx.const_f32(name, vec![dirs, gu, c0.units], r)?;
    let bv = ctx.const_f32(name, vec![dirs, 2 * gu], b)?;
    let mut activations = Vec::new();
    let mut alphas = Vec::new();
    let mut betas = Vec::new();
    for c in cells {
        activations.extend(c.activations.iter().cloned());
        alphas.extend(c.alphas.iter().copied());
        betas.extend(c.betas.iter().copied());
    }
    let n_out = if c0.kind == RnnKind::Lstm { 3 } else { 2 };
    let op = Op::Rnn {
        kind: c0.kind,
        direction,
        hidden_size: c0.units as i64,
        activations,
        activation_alpha: alphas,
        activation_beta: betas,
        clip: None,
        layout: 1,
        input_forget: false,
        linear_before_reset: c0.linear_before_reset,
    };
    ctx.add_n(name, op, &[Some(x), Some(wv), Some(rv), Some(bv)], n_out)
}

fn squeeze(ctx: &mut Ctx, name: &str, x: Value, axis: i64) -> KResult<Value> {
    let a = ctx.const_i64(name, &[axis])?;
    ctx.add(name, Op::Squeeze, &[x, a])
}

fn flip_time(ctx: &mut Ctx, name: &str, x: Value) -> KResult<Value> {
    let s = ctx.const_i64(name, &[-1])?;
    let e = ctx.const_i64(name, &[i64::MIN])?;
    let a = ctx.const_i64(name, &[1])?;
    let st = ctx.const_i64(name, &[-1])?;
    ctx.add(name, Op::Slice, &[x, s, e, a, st])
}

pub(crate) fn recurrent(ctx: &mut Ctx, name: &str, class: &str, cfg: &Json, x: Value) -> KResult<Vec<Value>> {
    unsupported(name, cfg)?;
    let w = ctx.store.layer_weights(name, class)?;
    let c = cell(ctx, name, class, cfg, &w)?;
    let back = flag(cfg, "go_backwards");
    let dir = if back { Direction::Reverse } else { Direction::Forward };
    let outs = emit(ctx, name, &[c], dir, x)?;
    let y = if flag(cfg, "return_sequences") {
        let y = squeeze(ctx, name, outs[0], 2)?;
        // Keras emits a backwards layer's outputs in the order it processed them.
        if back { flip_time(ctx, name, y)? } else { y }
    } else {
        squeeze(ctx, name, outs[1], 1)?
    };
    let mut result = vec![y];
    if flag(cfg, "return_state") {
        for s in &outs[1..] {
            result.push(squeeze(ctx, name, *s, 1)?);
        }
    }
    Ok(result)
}

pub(crate) fn bidirectional(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Vec<Value>> {
    let inner = cfg.get("layer").ok_or_else(|| KErr::at(name, "Bidirectional has no `layer`"))?;
    let class = str_of(inner, "class_name").unwrap_or("");
    let fcfg = inner.get("config").unwrap_or(&Json::Null);
    let bcfg = cfg.get("backward_layer").and_then(|b| b.get("config")).unwrap_or(fcfg);
    unsupported(name, fcfg)?;
    if flag(fcfg, "go_backwards") {
        return Err(KErr::at(name, "Bidirectional over a go_backwards layer is not supported"));
    }
    let w = ctx.store.layer_weights(name, "Bidirectional")?;
    if w.len() % 2 != 0 {
        return Err(KErr::at(name, format!("Bidirectional has an odd number of weights ({})", w.len())));
    }
    let half = w.len() / 2;
    let f = cell(ctx, name, class, fcfg, &w[..half])?;
    let b = cell(ctx, name, class, bcfg, &w[half..])?;
    let n_states = if f.kind == RnnKind::Lstm { 2 } else { 1 };
    let units = f.units as i64;
    let outs = emit(ctx, name, &[f, b], Direction::Bidirectional, x)?;
    let seq = flag(fcfg, "return_sequences");
    // Y is (N, T, 2, H), Y_h (N, 2, H): the direction axis sits just before the features.
    let (y, dir_axis) = if seq { (outs[0], 2) } else { (outs[1], 1) };
    let merge = cfg.get("merge_mode").and_then(|m| m.as_str()).map(|s| s.to_string());
    let mut result = match merge.as_deref() {
        Some("concat") => {
            let shape: Vec<i64> = if seq { vec![0, 0, 2 * units] } else { vec![0, 2 * units] };
            let s = ctx.const_i64(name, &shape)?;
            vec![ctx.add(name, Op::Reshape { allowzero: false }, &[y, s])?]
        }
        Some(m @ ("sum" | "ave" | "mul")) => {
            let two = ctx.const_i64(name, &[1, 1])?;
            let parts = ctx.add_n(name, Op::Split { axis: dir_axis }, &[Some(y), Some(two)], 2)?;
            let a = squeeze(ctx, name, parts[0], dir_axis)?;
            let c = squeeze(ctx, name, parts[1], dir_axis)?;
            let op = if m == "mul" { kiln_ir::BinaryOp::Mul } else { kiln_ir::BinaryOp::Add };
            let mut v = ctx.add(name, Op::Binary(op), &[a, c])?;
            if m == "ave" {
                let h = ctx.const_f32(name, vec![], vec![0.5])?;
                v = ctx.add(name, Op::Binary(kiln_ir::BinaryOp::Mul), &[v, h])?;
            }
            vec![v]
        }
        None => {
            let two = ctx.const_i64(name, &[1, 1])?;
            let parts = ctx.add_n(name, Op::Split { axis: dir_axis }, &[Some(y), Some(two)], 2)?;
            vec![squeeze(ctx, name, parts[0], dir_axis)?, squeeze(ctx, name, parts[1], dir_axis)?]
        }
        Some(other) => return Err(KErr::at(name, format!("merge_mode `{other}` is not supported"))),
    };
    if flag(fcfg, "return_state") {
        // Keras order: forward states, then backward states.
        for d in 0..2i64 {
            for s in &outs[1..=n_states] {
                let st = ctx.const_i64(name, &[d])?;
                let en = ctx.const_i64(name, &[d + 1])?;
                let ax = ctx.const_i64(name, &[1])?;
                let part = ctx.add(name, Op::Slice, &[*s, st, en, ax])?;
                result.push(squeeze(ctx, name, part, 1)?);
            }
        }
    }
    let _ = num;
    Ok(result)
}
