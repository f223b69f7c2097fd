//! The CPU device against REFERENCE (`ir::eval`) on small graphs: convolution with each
//! epilogue the GEMM fuses, strides, pads, dilations, auto_pad, depthwise and grouped
//! convolution, matmul with batch dims and broadcasting, Gemm's transposes and C, fused
//! kernels, and eight requests in flight on one compiled model.
//!
//! Tolerance: the reference accumulates in f64, the GEMM in f32; rtol 1e-4, atol 1e-5 (the
//! zoo's) holds for these sizes.

use kiln_backends::{Backend, CompileOptions, KernelTiming, Program};
use kiln_cpu::Cpu;
use kiln_ir::{AutoPad, BinaryOp, DType, Graph, Op, Tensor, TensorType, UnaryOp, Value};

mod common;
use common::Rng;

fn f32_input(g: &mut Graph, name: &str, shape: &[usize]) -> Value {
    g.add_input(name, TensorType::known(DType::F32, shape))
}

fn conv_op(strides: &[i64], pads: &[i64], dilations: &[i64], group: i64, auto_pad: AutoPad) -> Op {
    Op::Conv {
        auto_pad,
        dilations: dilations.to_vec(),
        group,
        kernel_shape: vec![],
        pads: pads.to_vec(),
        strides: strides.to_vec(),
    }
}

/// Runs `g` on CPU and on REFERENCE and compares every output; returns the CPU's profile.
fn check(g: &Graph, inputs: &[Tensor]) -> Vec<KernelTiming> {
    kiln_ir::verify(g).unwrap();
    let want = kiln_ir::eval::run_graph(g, inputs).unwrap();
    let exe = Cpu::new()
        .compile(&Program::new(g.clone()), &CompileOptions::default())
        .unwrap();
    let mut profile = Vec::new();
    let got = exe.run(inputs, Some(&mut profile)).unwrap();
    assert_eq!(got.len(), want.len());
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.shape(), b.shape(), "output {k} shape");
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                "output {k} element {i}: {x} but expected {y}"
            );
        }
    }
    profile
}

fn kinds(g: &Graph) -> Vec<String> {
    kiln_cpu::program::compile(g).unwrap().kinds()
}

/// x [1, 3, 9, 8] convolved with 4 filters of 3×3; `then` adds the epilogue nodes.
fn conv_graph(then: impl FnOnce(&mut Graph, Value, &mut Rng) -> Value) -> (Graph, Vec<Tensor>) {
    let mut rng = Rng(7);
    let mut g = Graph::new("conv");
    let x = f32_input(&mut g, "x", &[1, 3, 9, 8]);
    let w = g.add_const("w", rng.tensor(&[4, 3, 3, 3]));
    let b = g.add_const("b", rng.tensor(&[4]));
    let y: Value = g
        .add(
            conv_op(&[], &[1, 1, 1, 1], &[], 1, AutoPad::NotSet),
            "conv",
            &[Some(x), Some(w), Some(b)],
            1,
        )
        .unwrap()
        .into();
    let out = then(&mut g, y, &mut rng);
    g.add_output("y", out);
    let inputs = g
        .inputs
        .iter()
        .map(|&n| rng.tensor(&g.node(n).outputs[0].shape.concrete().unwrap()))
        .collect();
    (g, inputs)
}

#[test]
fn conv_with_bias_alone() {
    let (g, x) = conv_graph(|_, y, _| y);
    assert_eq!(kinds(&g), ["conv (gemm)"]);
    check(&g, &x);
}

#[test]
fn conv_relu_fuses_into_the_gemm() {
    let (g, x) = conv_graph(|g, y, _| g.add1(Op::Unary(UnaryOp::Relu), "relu", &[y]).unwrap());
    assert_eq!(kinds(&g), ["conv+relu (gemm)"]);
    let profile = check(&g, &x);
    assert_eq!(profile.len(), 1);
    assert_eq!(profile[0].nodes, ["conv", "relu"]);
    assert_eq!(profile[0].kind, "conv+relu (gemm)");
    assert_eq!(profile[0].device, "CPU");
}

#[test]
fn conv_channel_add_and_clip_fuse() {
    let (g, x) = conv_graph(|g, y, rng| {
        let c = g.add_const("c", rng.tensor(&[1, 4, 1, 1]));
        let a = g.add1(Op::Binary(BinaryOp::Add), "add", &[c, y]).unwrap();
        let lo = g.add_const("lo", Tensor::scalar(0.0f32));
        let hi = g.add_const("hi", Tensor::scalar(0.5f32));
        g.add1(Op::Clip, "clip", &[a, lo, hi]).unwrap()
    });
    assert_eq!(kinds(&g), ["conv+add+clip (gemm)"]);
    check(&g, &x);
}

#[test]
fn conv_residual_add_relu_fuses() {
    let (g, x) = conv_graph(|g, y, _| {
        let skip = f32_input(g, "skip", &[1, 4, 9, 8]);
        let a = g
            .add1(Op::Binary(BinaryOp::Add), "add", &[y, skip])
            .unwrap();
        g.add1(Op::Unary(UnaryOp::Relu), "relu", &[a]).unwrap()
    });
    assert_eq!(kinds(&g), ["conv+add+relu (gemm)"]);
    check(&g, &x);
}

#[test]
fn an_epilogue_value_used_twice_stays_its_own_step() {
    let (g, x) = conv_graph(|g, y, _| {
        let r = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[y]).unwrap();
        g.add1(Op::Binary(BinaryOp::Mul), "mul", &[r, y]).unwrap()
    });
    // The conv's result is read twice, so the relu cannot join its epilogue; the relu and
    // the mul then run as one generated kernel.
    assert_eq!(kinds(&g), ["conv (gemm)", "relu+mul (generated)"]);
    check(&g, &x);
}

#[test]
fn conv_geometry_strides_pads_dilations_auto_pad() {
    let cases: &[(&[i64], &[i64], &[i64], AutoPad)] = &[
        (&[2, 2], &[0, 0, 0, 0], &[1, 1], AutoPad::NotSet),
        (&[1, 2], &[2, 1, 0, 3], &[1, 1], AutoPad::NotSet),
        (&[1, 1], &[1, 1, 1, 1], &[2, 3], AutoPad::NotSet),
        (&[3, 2], &[], &[1, 2], AutoPad::SameUpper),
        (&[2, 1], &[], &[1, 1], AutoPad::SameLower),
        (&[2, 3], &[], &[2, 1], AutoPad::Valid),
    ];
    for (i, (s, p, d, auto)) in cases.iter().enumerate() {
        let mut rng = Rng(11 + i as u64);
        let mut g = Graph::new("geometry");
        let x = f32_input(&mut g, "x", &[2, 5, 11, 10]);
        let w = g.add_const("w", rng.tensor(&[7, 5, 3, 2]));
        let y = g.add1(conv_op(s, p, d, 1, *auto), "conv", &[x, w]).unwrap();
        g.add_output("y", y);
        check(&g, &[rng.tensor(&[2, 5, 11, 10])]);
    }
}

#[test]
fn pointwise_and_one_dimensional_conv() {
    let mut rng = Rng(3);
    let mut g = Graph::new("pointwise");
    let x = f32_input(&mut g, "x", &[1, 6, 5, 7]);
    let w = g.add_const("w", rng.tensor(&[9, 6, 1, 1]));
    let y = g
        .add1(conv_op(&[], &[], &[], 1, AutoPad::NotSet), "conv", &[x, w])
        .unwrap();
    g.add_output("y", y);
    check(&g, &[rng.tensor(&[1, 6, 5, 7])]);

    let mut g = Graph::new("conv1d");
    let x = f32_input(&mut g, "x", &[2, 3, 17]);
    let w = g.add_const("w", rng.tensor(&[5, 3, 4]));
    let y = g
        .add1(
            conv_op(&[2], &[1, 2], &[2], 1, AutoPad::NotSet),
            "conv",
            &[x, w],
        )
        .unwrap();
    g.add_output("y", y);
    check(&g, &[rng.tensor(&[2, 3, 17])]);
}

#[test]
fn depthwise_and_grouped_conv() {
    for (group, m, s) in [(8i64, 8usize, 1i64), (8, 8, 2), (2, 6, 1), (4, 8, 2)] {
        let mut rng = Rng(5 + group as u64);
        let mut g = Graph::new("groups");
        let x = f32_input(&mut g, "x", &[2, 8, 12, 13]);
        let w = g.add_const("w", rng.tensor(&[m, 8 / group as usize, 3, 3]));
        let b = g.add_const("b", rng.tensor(&[m]));
        let y: Value = g
            .add(
                conv_op(&[s, s], &[1, 1, 1, 1], &[], group, AutoPad::NotSet),
                "conv",
                &[Some(x), Some(w), Some(b)],
                1,
            )
            .unwrap()
            .into();
        let lo = g.add_const("lo", Tensor::scalar(0.0f32));
        let hi = g.add_const("hi", Tensor::scalar(6.0f32));
        let r = g.add1(Op::Clip, "relu6", &[y, lo, hi]).unwrap();
        g.add_output("y", r);
        let want = if m == 8 && group == 8 {
            "conv+clip (direct)"
        } else {
            "conv+clip (gemm)"
        };
        assert_eq!(kinds(&g), [want]);
        check(&g, &[rng.tensor(&[2, 8, 12, 13])]);
    }
}

#[test]
fn matmul_with_constant_weights_bias_and_batch_dims() {
    let mut rng = Rng(21);
    let mut g = Graph::new("dense");
    let x = f32_input(&mut g, "x", &[2, 3, 4, 37]);
    let w = g.add_const("w", rng.tensor(&[37, 19]));
    let b = g.add_const("b", rng.tensor(&[19]));
    let y = g.add1(Op::MatMul, "matmul", &[x, w]).unwrap();
    let y = g.add1(Op::Binary(BinaryOp::Add), "add", &[y, b]).unwrap();
    let y = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[y]).unwrap();
    g.add_output("y", y);
    assert_eq!(kinds(&g), ["matmul+add+relu (gemm)"]);
    check(&g, &[rng.tensor(&[2, 3, 4, 37])]);
}

#[test]
fn matmul_of_run_time_operands_broadcasts_batches() {
    let mut rng = Rng(22);
    for (a, b) in [
        (&[2, 1, 4, 5][..], &[3, 5, 6][..]),
        (&[5][..], &[2, 5, 3][..]),
        (&[3, 4, 5][..], &[5][..]),
        (&[4, 5][..], &[5, 6][..]),
    ] {
        let mut g = Graph::new("bmm");
        let x = f32_input(&mut g, "a", a);
        let y = f32_input(&mut g, "b", b);
        let z = g.add1(Op::MatMul, "matmul", &[x, y]).unwrap();
        g.add_output("z", z);
        check(&g, &[rng.tensor(a), rng.tensor(b)]);
    }
}

#[test]
fn gemm_transposes_alpha_beta_and_c() {
    let mut rng = Rng(23);
    for (trans_a, trans_b, c_shape, c_const) in [
        (false, true, vec![10], true),
        (true, false, vec![3, 10], false),
        (true, true, vec![3, 1], true),
        (false, false, vec![], false),
    ] {
        let mut g = Graph::new("gemm");
        let a_shape = if trans_a { [7, 3] } else { [3, 7] };
        let x = f32_input(&mut g, "a", &a_shape);
        let w = g.add_const("w", rng.tensor(if trans_b { &[10, 7] } else { &[7, 10] }));
        let c = if c_const {
            g.add_const("c", rng.tensor(&c_shape))
        } else {
            f32_input(&mut g, "c", &c_shape)
        };
        let op = Op::Gemm {
            alpha: 0.5,
            beta: 2.0,
            trans_a,
            trans_b,
        };
        let y = g.add1(op, "gemm", &[x, w, c]).unwrap();
        g.add_output("y", y);
        let mut inputs = vec![rng.tensor(&a_shape)];
        if !c_const {
            inputs.push(rng.tensor(&c_shape));
        }
        assert_eq!(kinds(&g), ["gemm (gemm)"]);
        check(&g, &inputs);
    }
}

/// A fused kernel as the fusion pass makes them: body inputs are the kernel's run-time
/// inputs, weights are constants inside the body.
fn fused_conv_block() -> (Graph, Vec<Tensor>) {
    let mut rng = Rng(31);
    let mut body = Graph::new("body");
    let x = f32_input(&mut body, "x", &[1, 4, 6, 6]);
    let skip = f32_input(&mut body, "skip", &[1, 4, 6, 6]);
    let w = body.add_const("w", rng.tensor(&[4, 4, 3, 3]));
    let y = body
        .add1(
            conv_op(&[], &[1, 1, 1, 1], &[], 1, AutoPad::NotSet),
            "conv",
            &[x, w],
        )
        .unwrap();
    let c = body.add_const("bias", rng.tensor(&[4, 1, 1]));
    let y = body
        .add1(Op::Binary(BinaryOp::Add), "bias_add", &[y, c])
        .unwrap();
    let y = body
        .add1(Op::Binary(BinaryOp::Add), "residual", &[y, skip])
        .unwrap();
    let y = body.add1(Op::Unary(UnaryOp::Relu), "relu", &[y]).unwrap();
    body.add_output("y", y);

    let mut g = Graph::new("fused");
    let x = f32_input(&mut g, "x", &[1, 4, 6, 6]);
    let s = g.add1(Op::Unary(UnaryOp::Tanh), "tanh", &[x]).unwrap();
    let k = g
        .add1(
            Op::Fused {
                body: Box::new(body),
            },
            "block",
            &[x, s],
        )
        .unwrap();
    let out = g.add1(Op::Softmax { axis: 1 }, "softmax", &[k]).unwrap();
    g.add_output("y", out);
    (g, vec![rng.tensor(&[1, 4, 6, 6])])
}

#[test]
fn fused_kernel_maps_its_epilogue_onto_the_gemm() {
    let (g, x) = fused_conv_block();
    assert_eq!(
        kinds(&g),
        ["tanh (generated)", "conv+add+add+relu (gemm)", "softmax (native)"]
    );
    let profile = check(&g, &x);
    assert_eq!(profile.len(), 3);
    assert_eq!(profile[1].nodes, ["conv", "bias_add", "residual", "relu"]);
    assert_eq!(profile[1].kind, "conv+add+add+relu (gemm)");
}

#[test]
fn eight_requests_in_flight_equal_sequential_runs() {
    let (g, _) = fused_conv_block();
    let model = kiln_runtime::Model {
        graph: g,
        path: "fused.kir".into(),
        format: kiln_runtime::Format::Kir,
    };
    let compiled = kiln_runtime::compile(&model, "CPU").unwrap();
    let inputs: Vec<Tensor> = (0..8).map(|i| Rng(100 + i).tensor(&[1, 4, 6, 6])).collect();
    let sequential: Vec<_> = inputs
        .iter()
        .map(|x| compiled.request().infer_ordered(&[x.clone()]).unwrap())
        .collect();
    let pending: Vec<_> = inputs
        .iter()
        .map(|x| compiled.start(vec![x.clone()]))
        .collect();
    for (p, want) in pending.into_iter().zip(&sequential) {
        assert_eq!(&p.wait().unwrap(), want);
    }
}

#[test]
fn other_dtypes_and_ops_fall_back_to_eval() {
    let mut g = Graph::new("ints");
    let a = g.add_input("a", TensorType::known(DType::I64, &[2, 3]));
    let b = g.add_const(
        "b",
        Tensor::new(vec![3, 2], vec![1i64, 2, 3, 4, 5, 6]).unwrap(),
    );
    let y = g.add1(Op::MatMul, "matmul", &[a, b]).unwrap();
    g.add_output("y", y);
    assert_eq!(kinds(&g), ["matmul (eval)"]);
    let x = Tensor::new(vec![2, 3], vec![1i64, 0, -1, 2, 2, 2]).unwrap();
    let exe = Cpu::new()
        .compile(&Program::new(g.clone()), &CompileOptions::default())
        .unwrap();
    assert_eq!(
        exe.run(&[x.clone()], None).unwrap(),
        kiln_ir::eval::run_graph(&g, &[x]).unwrap()
    );
    assert!(kiln_cpu::fallback_ops().contains(&"topk"));
    assert!(!kiln_cpu::fallback_ops().contains(&"softmax"));
    // Elementwise ops the code generator compiles leave the list; the ones it refuses stay.
    assert!(!kiln_cpu::fallback_ops().contains(&"exp"));
    assert!(!kiln_cpu::fallback_ops().contains(&"add"));
    assert!(!kiln_cpu::fallback_ops().contains(&"and"));
    assert!(kiln_cpu::fallback_ops().contains(&"sin"));
    assert!(!kiln_cpu::fallback_ops().contains(&"conv"));
}

#[test]
fn an_add_of_two_convolutions_joins_one_chain() {
    let mut rng = Rng(41);
    let mut g = Graph::new("two");
    let x = f32_input(&mut g, "x", &[1, 3, 6, 6]);
    let w1 = g.add_const("w1", rng.tensor(&[4, 3, 3, 3]));
    let w2 = g.add_const("w2", rng.tensor(&[4, 3, 1, 1]));
    let a = g
        .add1(
            conv_op(&[], &[1, 1, 1, 1], &[], 1, AutoPad::NotSet),
            "main",
            &[x, w1],
        )
        .unwrap();
    let b = g
        .add1(
            conv_op(&[], &[], &[], 1, AutoPad::NotSet),
            "shortcut",
            &[x, w2],
        )
        .unwrap();
    let s = g.add1(Op::Binary(BinaryOp::Add), "add", &[a, b]).unwrap();
    let r = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[s]).unwrap();
    g.add_output("y", r);
    assert_eq!(kinds(&g), ["conv (gemm)", "conv+add+relu (gemm)"]);
    check(&g, &[rng.tensor(&[1, 3, 6, 6])]);
}
