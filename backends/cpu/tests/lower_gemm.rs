//! The generated GEMM kernels (`lower/gemm`) against `kiln_ir::eval`: each node is lowered
//! into a JITModule, run over all its work units in one call and again split into two
//! ranges (units are independent), on an output pre-filled with NaN so that an element no
//! unit writes shows up. Tolerance rtol 1e-4, atol 1e-5.
//!
//! Shapes: resnet50's convolutions, mobilenet's depthwise ones, groups, 1-D, dilation,
//! asymmetric and automatic padding, dense and batched matmuls, Gemm's options, fused
//! epilogues; the portable CLIF microkernels (what an aarch64 artifact runs) on several.

mod lower_gemm_util;

use kiln_ir::{AutoPad, BinaryOp, Graph, Op, Tensor, TensorType, UnaryOp};
use lower_gemm_util::{check, conv, fused_node, node, rand, Kernels};

fn conv_op(strides: &[i64], pads: &[i64], dilations: &[i64], group: i64) -> Op {
    Op::Conv {
        auto_pad: AutoPad::NotSet,
        dilations: dilations.to_vec(),
        group,
        kernel_shape: vec![],
        pads: pads.to_vec(),
        strides: strides.to_vec(),
    }
}

/// Weights scaled as a trained network's are (variance 1/fan-in), so outputs are O(1):
/// with raw [-1, 1) weights a 4608-deep sum has magnitude ~40 and its f32 rounding alone
/// exceeds atol 1e-5 wherever it cancels to near zero (the reference sums in f64).
fn weights(shape: &[usize], seed: u64) -> Tensor {
    let t = rand(shape, seed);
    let fan_in: usize = shape[1..].iter().product();
    let scale = (3.0 / fan_in as f32).sqrt();
    let v: Vec<f32> = t
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|x| x * scale)
        .collect();
    Tensor::new(shape.to_vec(), v).unwrap()
}

/// A conv node with constant weights and bias, both kernel sets.
fn check_conv(x: &[usize], w: &[usize], op: Op, kernels: &[Kernels]) {
    let xt = rand(x, 1);
    let wt = weights(w, 2);
    let bt = rand(&[w[0]], 3);
    let n = node(op, &[&xt, &wt, &bt], &[false, true, true]);
    for &k in kernels {
        check(
            &n,
            &[Some(xt.clone()), Some(wt.clone()), Some(bt.clone())],
            &[false, true, true],
            k,
        );
    }
}

const BOTH: &[Kernels] = &[Kernels::Native, Kernels::Portable];
const NATIVE: &[Kernels] = &[Kernels::Native];

#[test]
fn resnet_stem_7x7_stride_2_on_224() {
    check_conv(
        &[1, 3, 224, 224],
        &[64, 3, 7, 7],
        conv_op(&[2, 2], &[3, 3, 3, 3], &[], 1),
        NATIVE,
    );
}

#[test]
fn resnet_3x3_on_56() {
    check_conv(
        &[1, 64, 56, 56],
        &[64, 64, 3, 3],
        conv_op(&[1, 1], &[1, 1, 1, 1], &[], 1),
        BOTH,
    );
}

#[test]
fn resnet_1x1_stride_2() {
    check_conv(
        &[1, 256, 56, 56],
        &[512, 256, 1, 1],
        conv_op(&[2, 2], &[], &[], 1),
        NATIVE,
    );
}

/// Stride 2 with padding: panels inside one output row take the unchecked gather, the
/// others (across rows, at the padded edges) the checked one.
#[test]
fn resnet_3x3_stride_2_on_56() {
    check_conv(
        &[1, 64, 56, 56],
        &[128, 64, 3, 3],
        conv_op(&[2, 2], &[1, 1, 1, 1], &[], 1),
        BOTH,
    );
    check_conv(
        &[1, 8, 20, 70],
        &[16, 8, 3, 3],
        conv_op(&[2, 3], &[1, 0, 1, 2], &[], 1),
        BOTH,
    );
}

#[test]
fn resnet_1x1_on_7x7x2048_to_512() {
    check_conv(
        &[1, 2048, 7, 7],
        &[512, 2048, 1, 1],
        conv_op(&[], &[], &[], 1),
        BOTH,
    );
}

#[test]
fn resnet_3x3_on_7x7x512() {
    check_conv(
        &[1, 512, 7, 7],
        &[512, 512, 3, 3],
        conv_op(&[1, 1], &[1, 1, 1, 1], &[], 1),
        NATIVE,
    );
}

#[test]
fn batch_of_two_with_odd_channels() {
    check_conv(
        &[2, 5, 9, 11],
        &[7, 5, 3, 2],
        conv_op(&[1, 2], &[0, 1, 2, 0], &[], 1),
        BOTH,
    );
}

#[test]
fn mobilenet_depthwise_3x3_stride_1_and_2() {
    let dw = |s: i64| conv_op(&[s, s], &[1, 1, 1, 1], &[], 32);
    check_conv(&[1, 32, 112, 112], &[32, 1, 3, 3], dw(1), BOTH);
    check_conv(&[1, 32, 112, 112], &[32, 1, 3, 3], dw(2), NATIVE);
    // Asymmetric padding (TF's SAME with stride 2) and a batch.
    check_conv(
        &[2, 8, 15, 14],
        &[8, 1, 3, 3],
        conv_op(&[2, 2], &[0, 0, 1, 1], &[], 8),
        NATIVE,
    );
}

#[test]
fn grouped_conv() {
    check_conv(
        &[1, 8, 10, 10],
        &[12, 2, 3, 3],
        conv_op(&[1, 1], &[1, 1, 1, 1], &[], 4),
        BOTH,
    );
    // Two output channels per input channel: a grouped GEMM, not the depthwise loop.
    check_conv(
        &[1, 4, 9, 9],
        &[8, 1, 3, 3],
        conv_op(&[1, 1], &[1, 1, 1, 1], &[], 4),
        NATIVE,
    );
}

#[test]
fn one_dimensional_conv() {
    check_conv(
        &[2, 6, 50],
        &[10, 6, 5],
        conv_op(&[2], &[2, 1], &[], 1),
        BOTH,
    );
}

#[test]
fn dilation_and_auto_pad() {
    check_conv(
        &[1, 4, 20, 21],
        &[6, 4, 3, 3],
        conv_op(&[1, 1], &[2, 2, 2, 2], &[2, 2], 1),
        BOTH,
    );
    for pad in [AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid] {
        let op = Op::Conv {
            auto_pad: pad,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![],
            pads: vec![],
            strides: vec![2, 2],
        };
        check_conv(&[1, 3, 17, 16], &[5, 3, 4, 3], op, NATIVE);
    }
}

#[test]
fn conv_with_run_time_weights() {
    let (xt, wt) = (rand(&[1, 6, 12, 12], 4), rand(&[9, 6, 3, 3], 5));
    let n = node(
        conv_op(&[1, 1], &[1, 1, 1, 1], &[], 1),
        &[&xt, &wt],
        &[false, false],
    );
    for &k in BOTH {
        check(
            &n,
            &[Some(xt.clone()), Some(wt.clone())],
            &[false, false],
            k,
        );
    }
}

#[test]
fn dense_1x2048x1000() {
    let (a, b) = (rand(&[1, 2048], 6), rand(&[2048, 1000], 7));
    let n = node(Op::MatMul, &[&a, &b], &[false, true]);
    for &k in BOTH {
        check(&n, &[Some(a.clone()), Some(b.clone())], &[false, true], k);
    }
}

#[test]
fn batched_matmul_constant_and_run_time_b() {
    let (a, b) = (rand(&[2, 3, 37, 50], 8), rand(&[50, 29], 9));
    let n = node(Op::MatMul, &[&a, &b], &[false, true]);
    check(
        &n,
        &[Some(a.clone()), Some(b.clone())],
        &[false, true],
        Kernels::Native,
    );
    // Run-time B with its own batch, and a B shared by every batch of A.
    let b3 = rand(&[2, 3, 50, 29], 10);
    let n = node(Op::MatMul, &[&a, &b3], &[false, false]);
    for &k in BOTH {
        check(&n, &[Some(a.clone()), Some(b3.clone())], &[false, false], k);
    }
    let n = node(Op::MatMul, &[&a, &b], &[false, false]);
    check(
        &n,
        &[Some(a.clone()), Some(b.clone())],
        &[false, false],
        Kernels::Native,
    );
}

#[test]
fn gemm_trans_b_alpha_beta_and_c() {
    let gemm = |ta: bool, tb: bool| Op::Gemm {
        alpha: 0.5,
        beta: 2.0,
        trans_a: ta,
        trans_b: tb,
    };
    let a = rand(&[10, 300], 11);
    let at = rand(&[300, 10], 12);
    let bt = rand(&[70, 300], 13);
    let row = rand(&[70], 14);
    let full = rand(&[10, 70], 15);
    let n = node(gemm(false, true), &[&a, &bt, &row], &[false, true, true]);
    for &k in BOTH {
        check(
            &n,
            &[Some(a.clone()), Some(bt.clone()), Some(row.clone())],
            &[false, true, true],
            k,
        );
    }
    let n = node(gemm(true, true), &[&at, &bt, &full], &[false, true, true]);
    check(
        &n,
        &[Some(at.clone()), Some(bt.clone()), Some(full.clone())],
        &[false, true, true],
        Kernels::Native,
    );
    let one = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    let n = node(one, &[&a, &bt, &full], &[false, false, false]);
    check(
        &n,
        &[Some(a.clone()), Some(bt.clone()), Some(full.clone())],
        &[false, false, false],
        Kernels::Native,
    );
}

/// conv → add(bias) → add(residual) → relu / clip(0, 6), as the fusion pass builds it.
fn fused_conv(
    x: &[usize],
    w: &[usize],
    op: Op,
    clip: Option<(f32, f32)>,
) -> (kiln_ir::Node, Vec<Tensor>) {
    let (xt, wt) = (rand(x, 20), rand(w, 21));
    let out_shape = conv(&op, &xt, &wt).shape().to_vec();
    let rt = rand(&out_shape, 22);
    let mut g = Graph::new("body");
    let xv = g.add_input("x", TensorType::known(kiln_ir::DType::F32, x));
    let rv = g.add_input("r", TensorType::known(kiln_ir::DType::F32, &out_shape));
    let wv = g.add_const("w", wt);
    let bv = g.add_const("b", rand(&[w[0], 1, 1], 23));
    let c = g.add1(op, "conv", &[xv, wv]).unwrap();
    let c = g.add1(Op::Binary(BinaryOp::Add), "bias", &[c, bv]).unwrap();
    let c = g.add1(Op::Binary(BinaryOp::Add), "skip", &[rv, c]).unwrap();
    let c = match clip {
        None => g.add1(Op::Unary(UnaryOp::Relu), "relu", &[c]).unwrap(),
        Some((lo, hi)) => {
            let lo = g.add_const("lo", Tensor::scalar(lo));
            let hi = g.add_const("hi", Tensor::scalar(hi));
            g.add1(Op::Clip, "clip", &[c, lo, hi]).unwrap()
        }
    };
    g.add_output("y", c);
    (fused_node(g), vec![xt, rt])
}

#[test]
fn fused_conv_bias_add_relu_and_clip() {
    for &k in BOTH {
        let (n, ins) = fused_conv(
            &[1, 16, 14, 14],
            &[24, 16, 3, 3],
            conv_op(&[1, 1], &[1, 1, 1, 1], &[], 1),
            None,
        );
        let ins: Vec<_> = ins.into_iter().map(Some).collect();
        check(&n, &ins, &[false, false], k);
        let (n, ins) = fused_conv(
            &[1, 16, 9, 9],
            &[16, 1, 3, 3],
            conv_op(&[2, 2], &[1, 1, 1, 1], &[], 16),
            Some((0.0, 6.0)),
        );
        let ins: Vec<_> = ins.into_iter().map(Some).collect();
        check(&n, &ins, &[false, false], k);
    }
    // A residual block's 1×1 projection with an odd number of positions (edge panel).
    let (n, ins) = fused_conv(
        &[1, 64, 7, 7],
        &[256, 64, 1, 1],
        conv_op(&[], &[], &[], 1),
        Some((0.0, 6.0)),
    );
    let ins: Vec<_> = ins.into_iter().map(Some).collect();
    check(&n, &ins, &[false, false], Kernels::Native);
}

#[test]
fn fused_bodies_outside_the_epilogue_are_left_to_the_caller() {
    let (xt, wt) = (rand(&[1, 2, 5, 5], 30), rand(&[3, 2, 3, 3], 31));
    let mut g = Graph::new("body");
    let xv = g.add_input("x", TensorType::known(kiln_ir::DType::F32, &[1, 2, 5, 5]));
    let wv = g.add_const("w", wt);
    let c = g
        .add1(conv_op(&[], &[], &[], 1), "conv", &[xv, wv])
        .unwrap();
    let c = g.add1(Op::Unary(UnaryOp::Sigmoid), "sig", &[c]).unwrap();
    g.add_output("y", c);
    let n = fused_node(g);
    assert!(lower_gemm_util::lower_only(&n, &[Some(xt)], &[false]).is_none());
}
