//! ONNX RNN, LSTM and GRU: inputs (x, w, r, b?, sequence_lens?, initial_h?, initial_c?, p?)
//! (GRU and RNN stop at initial_h), outputs (y?, y_h?, y_c?).
//!
//! Each batch entry runs on its own through its own valid length, so `sequence_lens` needs
//! no special path: steps past a sequence's length leave zeros in `y`, `y_h` is the state
//! after the last valid step, and the reverse direction starts at that sequence's last
//! valid step (as onnxruntime does). A sequence of length 0 gives zero final states (again
//! onnxruntime's choice; the spec is silent).

use super::{attr_usize, check_float};
use crate::error::{IrError, Result};
use crate::op::{Direction, Op, RnnKind};
use crate::ops::util::{input, input_type, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

/// Gates per kind: RNN has one, GRU three (z, r, h), LSTM four (i, o, f, c).
fn n_gates(kind: RnnKind) -> usize {
    match kind {
        RnnKind::Rnn => 1,
        RnnKind::Gru => 3,
        RnnKind::Lstm => 4,
    }
}

fn max_outputs(kind: RnnKind) -> usize {
    if kind == RnnKind::Lstm {
        3
    } else {
        2
    }
}

fn num_directions(d: Direction) -> usize {
    if d == Direction::Bidirectional {
        2
    } else {
        1
    }
}

pub(super) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let Op::Rnn {
        kind,
        direction,
        hidden_size,
        layout,
        ..
    } = op
    else {
        return Err(IrError::msg("not a recurrent op"));
    };
    if n_outputs > max_outputs(*kind) {
        return Err(IrError::msg(format!(
            "{} has at most {} outputs, the node has {n_outputs}",
            kind.word(),
            max_outputs(*kind)
        )));
    }
    if *layout != 0 && *layout != 1 {
        return Err(IrError::msg(format!(
            "layout must be 0 or 1, found {layout}"
        )));
    }
    let x = input_type(types, 0)?;
    check_float("x", x.dtype)?;
    let r = input_type(types, 2)?;
    let dims3 = |t: &TensorType, what: &str| -> Result<Vec<Dim>> {
        match t.shape.dims() {
            None => Ok(vec![Dim::Unknown; 3]),
            Some(d) if d.len() == 3 => Ok(d.to_vec()),
            Some(d) => Err(IrError::msg(format!(
                "{what} must have rank 3, found rank {}",
                d.len()
            ))),
        }
    };
    let xd = dims3(x, "x")?;
    let rd = dims3(r, "r")?;
    let hidden = if *hidden_size > 0 {
        Dim::Known(attr_usize("hidden_size", *hidden_size)?)
    } else {
        rd[2].clone()
    };
    let (seq, batch) = if *layout == 0 {
        (xd[0].clone(), xd[1].clone())
    } else {
        (xd[1].clone(), xd[0].clone())
    };
    let d = Dim::Known(num_directions(*direction));
    let y = if *layout == 0 {
        vec![seq, d.clone(), batch.clone(), hidden.clone()]
    } else {
        vec![batch.clone(), seq, d.clone(), hidden.clone()]
    };
    let state = if *layout == 0 {
        vec![d, batch, hidden]
    } else {
        vec![batch, d, hidden]
    };
    let mut out = vec![TensorType::new(x.dtype, Shape(Some(y)))];
    while out.len() < n_outputs {
        out.push(TensorType::new(x.dtype, Shape(Some(state.clone()))));
    }
    out.truncate(n_outputs);
    Ok(out)
}

/// The activation functions an ONNX recurrent op may name.
#[derive(Clone, Copy, Debug)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f64) -> f64 {
        match self {
            Act::Relu => x.max(0.0),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => x.exp().ln_1p(),
        }
    }
}

/// Parses the activation names. `activation_alpha` and `activation_beta` are consumed in
/// order by the functions that take a parameter (onnxruntime's reading of the spec);
/// a function left without one gets the default of the ONNX operator of the same name.
fn parse_activations(
    kind: RnnKind,
    names: &[String],
    alphas: &[f32],
    betas: &[f32],
    dirs: usize,
) -> Result<Vec<Vec<Act>>> {
    let per_dir = match kind {
        RnnKind::Rnn => 1,
        RnnKind::Gru => 2,
        RnnKind::Lstm => 3,
    };
    let defaults: Vec<String> = match kind {
        RnnKind::Rnn => vec!["Tanh".into()],
        RnnKind::Gru => vec!["Sigmoid".into(), "Tanh".into()],
        RnnKind::Lstm => vec!["Sigmoid".into(), "Tanh".into(), "Tanh".into()],
    };
    let names: Vec<String> = if names.is_empty() {
        defaults
            .iter()
            .cycle()
            .take(per_dir * dirs)
            .cloned()
            .collect()
    } else if names.len() == per_dir && dirs == 2 {
        // One set given for a bidirectional op serves both directions.
        names.iter().chain(names.iter()).cloned().collect()
    } else if names.len() == per_dir * dirs {
        names.to_vec()
    } else {
        return Err(IrError::msg(format!(
            "{} with {dirs} direction(s) takes {} activations, {} were given",
            kind.word(),
            per_dir * dirs,
            names.len()
        )));
    };
    let mut alphas = alphas.iter().map(|&a| a as f64);
    let mut betas = betas.iter().map(|&b| b as f64);
    let mut acts = Vec::with_capacity(names.len());
    for name in &names {
        let act = match name.to_ascii_lowercase().as_str() {
            "relu" => Act::Relu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "affine" => Act::Affine(alphas.next().unwrap_or(1.0), betas.next().unwrap_or(0.0)),
            "leakyrelu" => Act::LeakyRelu(alphas.next().unwrap_or(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(alphas.next().unwrap_or(1.0)),
            "scaledtanh" => {
                Act::ScaledTanh(alphas.next().unwrap_or(1.0), betas.next().unwrap_or(1.0))
            }
            "hardsigmoid" => {
                Act::HardSigmoid(alphas.next().unwrap_or(0.2), betas.next().unwrap_or(0.5))
            }
            "elu" => Act::Elu(alphas.next().unwrap_or(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            other => {
                return Err(IrError::msg(format!(
                    "unknown activation function `{other}`"
                )))
            }
        };
        acts.push(act);
    }
    Ok(acts.chunks(per_dir).map(|c| c.to_vec()).collect())
}

/// `out[g] = sum_k m[g][k] * v[k]` for `g` in `0..rows`, `m` row-major with `cols` columns.
fn matvec(m: &[f64], cols: usize, rows: usize, v: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|g| {
            m[g * cols..(g + 1) * cols]
                .iter()
                .zip(v)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect()
}

/// Checks a tensor's shape against what the op needs.
fn expect_shape(what: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return Err(IrError::msg(format!(
            "{what} must have shape {want:?}, found {:?}",
            t.shape()
        )));
    }
    Ok(())
}

pub(super) fn eval(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let Op::Rnn {
        kind,
        direction,
        hidden_size,
        activations,
        activation_alpha,
        activation_beta,
        clip,
        layout,
        input_forget,
        linear_before_reset,
    } = op
    else {
        return Err(IrError::msg("not a recurrent op"));
    };
    let kind = *kind;
    if n_outputs > max_outputs(kind) {
        return Err(IrError::msg(format!(
            "{} has at most {} outputs, the node has {n_outputs}",
            kind.word(),
            max_outputs(kind)
        )));
    }
    if kind != RnnKind::Lstm && (opt_input(inputs, 6).is_some() || opt_input(inputs, 7).is_some()) {
        return Err(IrError::msg(format!(
            "{} takes no initial_c or peepholes",
            kind.word()
        )));
    }
    let x = input(inputs, 0)?;
    let w = input(inputs, 1)?;
    let r = input(inputs, 2)?;
    let dtype = x.dtype();
    check_float("x", dtype)?;
    for (what, t) in [("w", w), ("r", r)] {
        if t.dtype() != dtype {
            return Err(IrError::msg(format!(
                "{what} is {} but x is {dtype}",
                t.dtype()
            )));
        }
    }
    if x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
        return Err(IrError::msg(format!(
            "x, w and r must have rank 3, found {:?}, {:?}, {:?}",
            x.shape(),
            w.shape(),
            r.shape()
        )));
    }
    let layout = match *layout {
        0 => false,
        1 => true,
        l => return Err(IrError::msg(format!("layout must be 0 or 1, found {l}"))),
    };
    let (seq, batch, isz) = if layout {
        (x.shape()[1], x.shape()[0], x.shape()[2])
    } else {
        (x.shape()[0], x.shape()[1], x.shape()[2])
    };
    let dirs = num_directions(*direction);
    let hid = r.shape()[2];
    if *hidden_size > 0 && attr_usize("hidden_size", *hidden_size)? != hid {
        return Err(IrError::msg(format!(
            "hidden_size is {hidden_size} but r has shape {:?}",
            r.shape()
        )));
    }
    let g = n_gates(kind);
    let gh = g * hid;
    expect_shape("w", w, &[dirs, gh, isz])?;
    expect_shape("r", r, &[dirs, gh, hid])?;
    let acts = parse_activations(kind, activations, activation_alpha, activation_beta, dirs)?;
    let clip = clip.map(|c| c as f64);
    let clamp = |v: f64| match clip {
        Some(c) => v.clamp(-c, c),
        None => v,
    };

    let xv = x.to_f64_vec();
    let wv = w.to_f64_vec();
    let rv = r.to_f64_vec();
    let bv = match opt_input(inputs, 3) {
        Some(b) => {
            expect_shape("b", b, &[dirs, 2 * gh])?;
            b.to_f64_vec()
        }
        None => vec![0.0; dirs * 2 * gh],
    };
    let lens: Vec<usize> = match opt_input(inputs, 4) {
        Some(s) => {
            expect_shape("sequence_lens", s, &[batch])?;
            s.to_i64_vec()
                .into_iter()
                .map(|l| match usize::try_from(l) {
                    Ok(l) if l <= seq => Ok(l),
                    _ => Err(IrError::msg(format!(
                        "sequence length {l} is outside [0, {seq}]"
                    ))),
                })
                .collect::<Result<_>>()?
        }
        None => vec![seq; batch],
    };
    let state_shape = if layout {
        [batch, dirs, hid]
    } else {
        [dirs, batch, hid]
    };
    // Index of (direction, batch) in a state tensor of either layout.
    let sidx = |d: usize, b: usize| {
        if layout {
            (b * dirs + d) * hid
        } else {
            (d * batch + b) * hid
        }
    };
    let init = |i: usize, what: &str| -> Result<Vec<f64>> {
        match opt_input(inputs, i) {
            Some(t) => {
                expect_shape(what, t, &state_shape)?;
                Ok(t.to_f64_vec())
            }
            None => Ok(vec![0.0; dirs * batch * hid]),
        }
    };
    let h0 = init(5, "initial_h")?;
    let c0 = init(6, "initial_c")?;
    let pv = match opt_input(inputs, 7) {
        Some(p) => {
            expect_shape("p", p, &[dirs, 3 * hid])?;
            p.to_f64_vec()
        }
        None => vec![0.0; dirs * 3 * hid],
    };

    let y_len = crate::tensor::checked_numel(&[seq, dirs, batch, hid])?;
    if y_len > super::MAX_ELEMENTS {
        return Err(IrError::msg(format!(
            "an output of [{seq}, {dirs}, {batch}, {hid}] is over 2^31 elements"
        )));
    }
    let mut y = vec![0.0; y_len];
    let mut yh = vec![0.0; dirs * batch * hid];
    let mut yc = vec![0.0; dirs * batch * hid];
    for d in 0..dirs {
        let reverse = *direction == Direction::Reverse || d == 1;
        let wd = &wv[d * gh * isz..(d + 1) * gh * isz];
        let rd = &rv[d * gh * hid..(d + 1) * gh * hid];
        let wb = &bv[d * 2 * gh..d * 2 * gh + gh];
        let rb = &bv[d * 2 * gh + gh..(d + 1) * 2 * gh];
        let pd = &pv[d * 3 * hid..(d + 1) * 3 * hid];
        let act = &acts[d];
        for b in 0..batch {
            let len = lens[b];
            let mut h = h0[sidx(d, b)..sidx(d, b) + hid].to_vec();
            let mut c = c0[sidx(d, b)..sidx(d, b) + hid].to_vec();
            for step in 0..len {
                let t = if reverse { len - 1 - step } else { step };
                let xo = if layout {
                    (b * seq + t) * isz
                } else {
                    (t * batch + b) * isz
                };
                let xt = &xv[xo..xo + isz];
                let gx = matvec(wd, isz, gh, xt);
                let gr = matvec(rd, hid, gh, &h);
                let pre = |k: usize| gx[k] + gr[k] + wb[k] + rb[k];
                let new_h: Vec<f64> = match kind {
                    RnnKind::Rnn => (0..hid).map(|k| act[0].apply(clamp(pre(k)))).collect(),
                    RnnKind::Gru => {
                        let z: Vec<f64> = (0..hid).map(|k| act[0].apply(clamp(pre(k)))).collect();
                        let rg: Vec<f64> = (0..hid)
                            .map(|k| act[0].apply(clamp(pre(hid + k))))
                            .collect();
                        // Without linear_before_reset the reset gate scales h before Rh.
                        let reset_h: Vec<f64> = h.iter().zip(&rg).map(|(a, b)| a * b).collect();
                        let rh = matvec(&rd[2 * hid * hid..], hid, hid, &reset_h);
                        (0..hid)
                            .map(|k| {
                                let hk = 2 * hid + k;
                                let cand = if *linear_before_reset {
                                    gx[hk] + wb[hk] + rg[k] * (gr[hk] + rb[hk])
                                } else {
                                    gx[hk] + wb[hk] + rh[k] + rb[hk]
                                };
                                let hh = act[1].apply(clamp(cand));
                                (1.0 - z[k]) * hh + z[k] * h[k]
                            })
                            .collect()
                    }
                    RnnKind::Lstm => {
                        let mut hn = vec![0.0; hid];
                        for k in 0..hid {
                            let i = act[0].apply(clamp(pre(k) + pd[k] * c[k]));
                            let f = if *input_forget {
                                1.0 - i
                            } else {
                                act[0].apply(clamp(pre(2 * hid + k) + pd[2 * hid + k] * c[k]))
                            };
                            let cc = act[1].apply(clamp(pre(3 * hid + k)));
                            let cn = f * c[k] + i * cc;
                            let o = act[0].apply(clamp(pre(hid + k) + pd[hid + k] * cn));
                            hn[k] = o * act[2].apply(clamp(cn));
                            c[k] = cn;
                        }
                        hn
                    }
                };
                h = new_h;
                let yo = if layout {
                    ((b * seq + t) * dirs + d) * hid
                } else {
                    ((t * dirs + d) * batch + b) * hid
                };
                y[yo..yo + hid].copy_from_slice(&h);
            }
            if len == 0 {
                h.iter_mut().for_each(|v| *v = 0.0);
                c.iter_mut().for_each(|v| *v = 0.0);
            }
            yh[sidx(d, b)..sidx(d, b) + hid].copy_from_slice(&h);
            yc[sidx(d, b)..sidx(d, b) + hid].copy_from_slice(&c);
        }
    }
    let y_shape = if layout {
        vec![batch, seq, dirs, hid]
    } else {
        vec![seq, dirs, batch, hid]
    };
    let mut out = vec![Tensor::from_f64(dtype, y_shape, &y)?];
    if n_outputs > 1 {
        out.push(Tensor::from_f64(dtype, state_shape.to_vec(), &yh)?);
    }
    if n_outputs > 2 {
        out.push(Tensor::from_f64(dtype, state_shape.to_vec(), &yc)?);
    }
    out.truncate(n_outputs);
    Ok(out)
}
