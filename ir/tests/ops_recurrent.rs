//! Values of the recurrent group (RNN/LSTM/GRU, Attention, RotaryEmbedding) against the
//! ONNX reference implementation (onnx 1.23, `onnx.reference.ReferenceEvaluator`). LSTM with
//! sequence_lens has no reference support, so its expected values come from running the
//! reference on each batch entry's sequence truncated to its length, padded with zeros.

use kiln_ir::eval::run_graph;
use kiln_ir::{DType, Direction, Graph, Op, RnnKind, Shape, Tensor, TensorType, Value};

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
}

/// Runs `op` as a one-node graph whose output types come from shape inference, and checks
/// the inferred shapes against the computed ones.
fn run(op: Op, ins: Vec<Option<Tensor>>, n_out: usize) -> Vec<Tensor> {
    let mut g = Graph::new("t");
    let mut vals = vec![];
    let mut feeds = vec![];
    for (i, x) in ins.iter().enumerate() {
        match x {
            Some(x) => {
                vals.push(Some(g.add_input(
                    format!("i{i}"),
                    TensorType::known(x.dtype(), x.shape()),
                )));
                feeds.push(x.clone());
            }
            None => vals.push(None),
        }
    }
    let n = g.add(op, "n", &vals, n_out).unwrap();
    for k in 0..n_out {
        g.add_output(format!("o{k}"), Value::new(n, k));
    }
    let out = run_graph(&g, &feeds).unwrap();
    for (k, o) in out.iter().enumerate() {
        assert_eq!(
            g.value_type(Value::new(n, k)).shape,
            Shape::known(o.shape()),
            "inferred shape of output {k}"
        );
    }
    out
}

fn close(got: &Tensor, shape: &[usize], want: &[f32]) {
    assert_eq!(got.shape(), shape);
    let g = got.as_slice::<f32>().unwrap();
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "element {i}: got {a}, want {b}\n got {g:?}"
        );
    }
}

fn rnn(kind: RnnKind, direction: Direction, hidden: i64) -> Op {
    Op::Rnn {
        kind,
        direction,
        hidden_size: hidden,
        activations: vec![],
        activation_alpha: vec![],
        activation_beta: vec![],
        clip: None,
        layout: 0,
        input_forget: false,
        linear_before_reset: false,
    }
}

fn attention() -> Op {
    Op::Attention {
        is_causal: false,
        kv_num_heads: None,
        q_num_heads: None,
        qk_matmul_output_mode: 0,
        scale: None,
        softcap: 0.0,
        softmax_precision: None,
        left_window_size: -1,
        right_window_size: -1,
    }
}

// LSTM_FWD
const LSTM_X: &[f32] = &[
    0.25, 0.79, 0.55, -0.55, -0.4, 0.75, -0.99, 0.64, 0.59, -0.06, -0.39, -0.44,
];
const LSTM_FWD_W: &[f32] = &[
    -0.49, -0.11, 0.01, 0.11, 0.99, 0.59, 0.24, 0.98, -0.57, -0.68, 0.23, -0.91, -0.93, 0.03,
    -0.07, 0.83,
];
const LSTM_FWD_R: &[f32] = &[
    0.26, 0.03, -0.01, -0.5, -0.98, -0.62, 0.38, -0.6, -0.26, -0.99, 0.66, -0.69, -0.46, 0.76,
    0.02, 0.69,
];
const LSTM_FWD_B: &[f32] = &[
    0.28, 0.48, -0.82, 0.08, 0.02, 0.74, -0.28, 0.2, -0.88, -0.22, -0.35, -0.7, 0.63, -0.24, 0.96,
    0.18,
];
const LSTM_FWD_H0: &[f32] = &[0.21, 0.28, 0.35, -0.7];
const LSTM_FWD_C0: &[f32] = &[-0.12, -0.52, -0.2, -0.81];
const LSTM_FWD_Y: &[f32] = &[
    0.036279354,
    0.120346375,
    -0.09133275,
    -0.29780626,
    0.0820426,
    0.24700722,
    0.029000867,
    -0.036278687,
    0.08155217,
    0.17994085,
    0.0,
    0.0,
];
const LSTM_FWD_YH: &[f32] = &[0.08155217, 0.17994085, 0.029000867, -0.036278687];
const LSTM_FWD_YC: &[f32] = &[0.28040767, 0.58471686, 0.16011435, -0.07597801];
// LSTM_BI
const LSTM_BI_W: &[f32] = &[
    0.94, -0.57, 0.34, -0.4, 0.75, 0.32, -0.74, 0.69, 0.89, 0.81, 0.14, -0.71, -0.62, 0.86, 0.1,
    -0.64, 0.77, 0.28, 0.14, -0.25, -0.18, -0.52, -0.92, 0.75, -0.06, 0.1, -0.36, 0.5, -0.95,
    -0.26, -0.94, -0.75,
];
const LSTM_BI_R: &[f32] = &[
    0.93, 0.32, -0.14, 0.05, 0.75, -0.31, 0.18, 0.37, -0.29, 0.04, 0.53, 0.82, -0.7, 0.87, -0.99,
    0.51, 0.62, -0.73, -0.16, 0.63, -0.97, 0.26, 0.59, 0.03, 0.45, -0.55, -0.6, -0.27, -0.64,
    -0.31, 0.9, 0.15,
];
const LSTM_BI_B: &[f32] = &[
    -0.32, -0.46, 0.9, -0.11, 0.96, 0.03, 0.04, 0.79, 0.49, 0.16, -0.15, 0.76, -0.18, 0.85, -0.86,
    -0.14, 0.04, 0.9, -0.5, 0.61, 0.35, 0.43, 0.26, 0.94, -0.33, -0.2, -0.59, -0.9, -0.57, 0.83,
    0.68, -0.78,
];
const LSTM_BI_H0: &[f32] = &[0.21, -0.04, 0.19, 0.32, -0.39, 0.92, -0.07, 0.26];
const LSTM_BI_C0: &[f32] = &[0.27, -0.63, -0.88, -0.18, 0.53, 0.63, 0.46, -0.77];
const LSTM_BI_Y: &[f32] = &[
    -0.010670023,
    -0.28239098,
    -0.636914,
    0.12514316,
    0.06702355,
    -0.1416277,
    0.11597468,
    -0.036676764,
    -0.042978235,
    -0.16330872,
    -0.26591554,
    0.28108323,
    0.077387,
    0.051330954,
    0.10070767,
    -0.23890145,
    -0.4262006,
    0.07656945,
    0.0,
    0.0,
    0.09249476,
    0.012348475,
    0.0,
    0.0,
];
const LSTM_BI_YH: &[f32] = &[
    -0.4262006,
    0.07656945,
    -0.26591554,
    0.28108323,
    0.06702355,
    -0.1416277,
    0.11597468,
    -0.036676764,
];
const LSTM_BI_YC: &[f32] = &[
    -0.62650466,
    0.14662874,
    -0.7354159,
    0.3424275,
    0.42543465,
    -0.2739302,
    0.4867831,
    -0.15445179,
];
const GRU_X: &[f32] = &[
    0.83, 0.6, 0.76, 0.05, 0.83, -0.91, -0.94, -0.96, -0.49, -0.5, -0.62, 0.13, -0.92, 0.18, -0.67,
    0.36, -0.96, -0.38,
];
const GRU_W: &[f32] = &[
    0.88, 0.08, 0.62, 0.32, 0.22, -0.62, 0.15, -0.92, 0.6, 0.92, 0.71, -0.9, -0.32, -0.36, -0.77,
    0.25, 0.59, -0.37,
];
const GRU_R: &[f32] = &[
    0.73, 0.59, -0.74, 0.53, 0.77, -0.61, 0.15, 0.28, 0.22, -0.81, 0.32, 0.26,
];
const GRU_B: &[f32] = &[
    0.65, 0.61, -0.35, 0.44, 0.73, 0.79, -0.68, -0.95, 0.3, -0.57, 0.13, 0.89,
];
const GRU_H0: &[f32] = &[-0.24, -0.49, -0.09, 0.31];
const GRU_Y_LBR0: &[f32] = &[
    -0.16838014,
    0.40597042,
    0.422903,
    0.54217124,
    0.67157435,
    0.6151334,
    0.59010345,
    0.75253356,
    0.79953533,
    0.8181349,
    0.65722734,
    0.84489715,
];
const GRU_YH_LBR0: &[f32] = &[0.79953533, 0.8181349, 0.65722734, 0.84489715];
const GRU_Y_LBR1: &[f32] = &[
    -0.1915863, 0.37086353, 0.4343477, 0.54032236, 0.6608038, 0.37144506, 0.55696183, 0.52920747,
    0.81109345, 0.70011455, 0.64196205, 0.6840432,
];
const GRU_YH_LBR1: &[f32] = &[0.81109345, 0.70011455, 0.64196205, 0.6840432];
const ATT_Q: &[f32] = &[
    -0.8, -0.24, -0.73, 0.32, 0.66, -0.25, -0.26, 0.08, -0.57, -0.51, -0.34, -0.09, -0.84, 0.51,
    0.16, -0.4, -0.84, 0.53, -0.74, -0.73, -0.74, -0.84, 0.81, -0.46,
];
const ATT_K: &[f32] = &[
    -0.39, 0.67, 0.24, -0.63, -0.13, 0.77, -0.25, 0.42, -0.81, 0.45, 0.55, 0.65,
];
const ATT_V: &[f32] = &[
    0.35, -0.26, -0.87, 0.04, 0.51, -0.62, -0.47, 0.07, 0.5, 0.79, -0.75, -0.63,
];
const ATT_Y: &[f32] = &[
    0.35,
    -0.26,
    -0.07691243,
    -0.15502152,
    -0.14568476,
    -0.23176688,
    0.35,
    -0.26,
    -0.3252903,
    -0.09394499,
    0.0048289285,
    -0.27952102,
    -0.47,
    0.07,
    -0.0024142116,
    0.417074,
    -0.08844046,
    0.24520487,
    -0.47,
    0.07,
    0.08131939,
    0.4792268,
    -0.38017225,
    -0.08999439,
];
const A3_Q: &[f32] = &[0.6, 0.29, 0.44, 0.99, 0.88, 0.69, 0.55, -0.21];
const A3_K: &[f32] = &[0.28, -0.63, 0.52, 0.52, 0.44, -0.11, -0.24, -0.16];
const A3_V: &[f32] = &[-0.93, 0.69, 0.08, -0.22, 0.1, 0.44, -0.24, 0.66];
const A3_PK: &[f32] = &[0.84, -0.23, -0.72, 0.52];
const A3_PV: &[f32] = &[0.99, -0.7, 0.43, 0.65];
const A3_Y: &[f32] = &[
    0.576769,
    -0.17069283,
    0.1491126,
    0.6541923,
    0.28207877,
    -0.18749452,
    0.21392603,
    0.11290184,
];
const A3_PRESK: &[f32] = &[
    0.84, -0.23, 0.28, -0.63, 0.44, -0.11, -0.72, 0.52, 0.52, 0.52, -0.24, -0.16,
];
const A3_QK: &[f32] = &[
    0.3067773,
    f32::NEG_INFINITY,
    0.16375211,
    0.40480754,
    -0.13295189,
    f32::NEG_INFINITY,
    0.13977888,
    f32::NEG_INFINITY,
    -0.18613596,
    -0.3534793,
    0.12485392,
    f32::NEG_INFINITY,
];
const ROT_X: &[f32] = &[
    0.84, -0.75, -0.82, 0.98, -0.77, -0.65, 0.15, -0.11, 0.5, -0.62, 0.83, -0.57, 0.54, -0.86,
    -0.05, -0.93,
];
const ROT_COS: &[f32] = &[-0.37, -0.38, 0.44, -0.09, -0.89, 0.99, 0.78, 0.83];
const ROT_SIN: &[f32] = &[-0.51, -0.21, -0.55, -0.75, -0.93, 0.01, -0.75, -0.65];
const ROT_Y: &[f32] = &[
    0.092699945,
    -1.2149999,
    -0.043600023,
    1.3464,
    -1.0881,
    0.070500016,
    0.053000003,
    -0.1888,
    -0.12100002,
    -0.5478,
    -0.5022,
    -0.5712,
    -0.2354,
    -0.6754,
    -0.693,
    0.1212,
];

#[test]
fn lstm_forward_with_sequence_lens() {
    let lens = Tensor::new(vec![2], vec![3i32, 2]).unwrap();
    let out = run(
        rnn(RnnKind::Lstm, Direction::Forward, 2),
        vec![
            Some(t(&[3, 2, 2], LSTM_X)),
            Some(t(&[1, 8, 2], LSTM_FWD_W)),
            Some(t(&[1, 8, 2], LSTM_FWD_R)),
            Some(t(&[1, 16], LSTM_FWD_B)),
            Some(lens),
            Some(t(&[1, 2, 2], LSTM_FWD_H0)),
            Some(t(&[1, 2, 2], LSTM_FWD_C0)),
        ],
        3,
    );
    close(&out[0], &[3, 1, 2, 2], LSTM_FWD_Y);
    close(&out[1], &[1, 2, 2], LSTM_FWD_YH);
    close(&out[2], &[1, 2, 2], LSTM_FWD_YC);
}

#[test]
fn lstm_bidirectional_with_sequence_lens() {
    let lens = Tensor::new(vec![2], vec![3i32, 2]).unwrap();
    let out = run(
        rnn(RnnKind::Lstm, Direction::Bidirectional, 2),
        vec![
            Some(t(&[3, 2, 2], LSTM_X)),
            Some(t(&[2, 8, 2], LSTM_BI_W)),
            Some(t(&[2, 8, 2], LSTM_BI_R)),
            Some(t(&[2, 16], LSTM_BI_B)),
            Some(lens),
            Some(t(&[2, 2, 2], LSTM_BI_H0)),
            Some(t(&[2, 2, 2], LSTM_BI_C0)),
        ],
        3,
    );
    close(&out[0], &[3, 2, 2, 2], LSTM_BI_Y);
    close(&out[1], &[2, 2, 2], LSTM_BI_YH);
    close(&out[2], &[2, 2, 2], LSTM_BI_YC);
}

#[test]
fn lstm_layout_1_is_a_transpose_of_layout_0() {
    // Same data as the forward case, batch-major; one output only.
    let x = t(&[3, 2, 2], LSTM_X).as_slice::<f32>().unwrap().to_vec();
    let mut xb = vec![0.0f32; 12];
    for s in 0..3 {
        for b in 0..2 {
            for i in 0..2 {
                xb[(b * 3 + s) * 2 + i] = x[(s * 2 + b) * 2 + i];
            }
        }
    }
    let mut op = rnn(RnnKind::Lstm, Direction::Forward, 2);
    if let Op::Rnn { layout, .. } = &mut op {
        *layout = 1;
    }
    let out = run(
        op,
        vec![
            Some(t(&[2, 3, 2], &xb)),
            Some(t(&[1, 8, 2], LSTM_FWD_W)),
            Some(t(&[1, 8, 2], LSTM_FWD_R)),
            Some(t(&[1, 16], LSTM_FWD_B)),
        ],
        1,
    );
    let plain = run(
        rnn(RnnKind::Lstm, Direction::Forward, 2),
        vec![
            Some(t(&[3, 2, 2], LSTM_X)),
            Some(t(&[1, 8, 2], LSTM_FWD_W)),
            Some(t(&[1, 8, 2], LSTM_FWD_R)),
            Some(t(&[1, 16], LSTM_FWD_B)),
        ],
        1,
    );
    let (a, p) = (
        out[0].as_slice::<f32>().unwrap(),
        plain[0].as_slice::<f32>().unwrap(),
    );
    assert_eq!(out[0].shape(), &[2, 3, 1, 2]);
    for s in 0..3 {
        for b in 0..2 {
            for k in 0..2 {
                assert_eq!(a[(b * 3 + s) * 2 + k], p[(s * 2 + b) * 2 + k]);
            }
        }
    }
}

#[test]
fn gru_linear_before_reset_both_ways() {
    for (lbr, y, yh) in [
        (false, GRU_Y_LBR0, GRU_YH_LBR0),
        (true, GRU_Y_LBR1, GRU_YH_LBR1),
    ] {
        let mut op = rnn(RnnKind::Gru, Direction::Forward, 2);
        if let Op::Rnn {
            linear_before_reset,
            ..
        } = &mut op
        {
            *linear_before_reset = lbr;
        }
        let out = run(
            op,
            vec![
                Some(t(&[3, 2, 3], GRU_X)),
                Some(t(&[1, 6, 3], GRU_W)),
                Some(t(&[1, 6, 2], GRU_R)),
                Some(t(&[1, 12], GRU_B)),
                None,
                Some(t(&[1, 2, 2], GRU_H0)),
            ],
            2,
        );
        close(&out[0], &[3, 1, 2, 2], y);
        close(&out[1], &[1, 2, 2], yh);
    }
}

#[test]
fn rnn_rejects_bad_weights() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::known(DType::F32, &[3, 2, 3]));
    let w = g.add_input("w", TensorType::known(DType::F32, &[1, 5, 3]));
    let r = g.add_input("r", TensorType::known(DType::F32, &[1, 6, 2]));
    let n = g
        .add(
            rnn(RnnKind::Gru, Direction::Forward, 2),
            "n",
            &[Some(x), Some(w), Some(r)],
            2,
        )
        .unwrap();
    g.add_output("y", Value::new(n, 0));
    let feeds = [
        t(&[3, 2, 3], GRU_X),
        t(&[1, 5, 3], &GRU_W[..15]),
        t(&[1, 6, 2], GRU_R),
    ];
    let err = run_graph(&g, &feeds).unwrap_err();
    assert!(err.message.contains("w must have shape"), "{err}");
}

#[test]
fn attention_causal_gqa() {
    let mut op = attention();
    if let Op::Attention { is_causal, .. } = &mut op {
        *is_causal = true;
    }
    let out = run(
        op,
        vec![
            Some(t(&[1, 4, 3, 2], ATT_Q)),
            Some(t(&[1, 2, 3, 2], ATT_K)),
            Some(t(&[1, 2, 3, 2], ATT_V)),
        ],
        1,
    );
    close(&out[0], &[1, 4, 3, 2], ATT_Y);
}

#[test]
fn attention_3d_bool_mask_past_softcap_and_biased_logits() {
    let op = Op::Attention {
        is_causal: false,
        kv_num_heads: Some(2),
        q_num_heads: Some(2),
        qk_matmul_output_mode: 2,
        scale: None,
        softcap: 2.0,
        softmax_precision: None,
        left_window_size: -1,
        right_window_size: -1,
    };
    let mask = Tensor::new(vec![2, 3], vec![true, false, true, true, true, false]).unwrap();
    let out = run(
        op,
        vec![
            Some(t(&[1, 2, 4], A3_Q)),
            Some(t(&[1, 2, 4], A3_K)),
            Some(t(&[1, 2, 4], A3_V)),
            Some(mask),
            Some(t(&[1, 2, 1, 2], A3_PK)),
            Some(t(&[1, 2, 1, 2], A3_PV)),
        ],
        4,
    );
    close(&out[0], &[1, 2, 4], A3_Y);
    close(&out[1], &[1, 2, 3, 2], A3_PRESK);
    // Masked logits are f32::NEG_INFINITY; compare those exactly.
    let qk = out[3].as_slice::<f32>().unwrap();
    assert_eq!(out[3].shape(), &[1, 2, 2, 3]);
    for (a, b) in qk.iter().zip(A3_QK) {
        if b.is_infinite() {
            assert_eq!(a, b);
        } else {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn rotary_3d_interleaved_with_positions() {
    let op = Op::RotaryEmbedding {
        interleaved: true,
        num_heads: Some(2),
        rotary_embedding_dim: 0,
    };
    let pos = Tensor::new(vec![1, 2], vec![3i64, 1]).unwrap();
    let out = run(
        op,
        vec![
            Some(t(&[1, 2, 8], ROT_X)),
            Some(t(&[4, 2], ROT_COS)),
            Some(t(&[4, 2], ROT_SIN)),
            Some(pos),
        ],
        1,
    );
    close(&out[0], &[1, 2, 8], ROT_Y);
}

#[test]
fn rotary_rejects_out_of_range_position() {
    let op = Op::RotaryEmbedding {
        interleaved: false,
        num_heads: Some(2),
        rotary_embedding_dim: 0,
    };
    let pos = Tensor::new(vec![1, 2], vec![4i64, -1]).unwrap();
    let ins = [
        Some(t(&[1, 2, 8], ROT_X)),
        Some(t(&[4, 2], ROT_COS)),
        Some(t(&[4, 2], ROT_SIN)),
        Some(pos),
    ];
    let err = kiln_ir::eval::eval_op(&op, &ins, 1).unwrap_err();
    assert!(err.message.contains("position id"), "{err}");
}
