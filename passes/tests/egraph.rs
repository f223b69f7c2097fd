//! The e-graph pass: each rule family on a small graph, asserting the rewritten IR and that
//! the graph computes the same values before and after.

use kiln_ir::eval::run_graph;
use kiln_ir::text::{print, Weights};
use kiln_ir::*;
use kiln_passes::egraph::{EGraph, RunStats};

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u32) -> Tensor {
    Tensor::new(shape.to_vec(), values(shape.iter().product(), seed)).unwrap()
}

fn positive(shape: &[usize], seed: u32) -> Tensor {
    let v = values(shape.iter().product(), seed).into_iter().map(|x| x.abs() + 0.5).collect();
    Tensor::new(shape.to_vec(), v).unwrap()
}

fn ints(v: &[i64]) -> Tensor {
    Tensor::new(vec![v.len()], v.to_vec()).unwrap()
}

fn scalar(x: f32) -> Tensor {
    Tensor::scalar(x)
}

fn f32s(shape: &[usize], v: f32) -> Tensor {
    Tensor::new(shape.to_vec(), vec![v; shape.iter().product()]).unwrap()
}

fn unary(g: &mut Graph, u: UnaryOp, x: Value) -> Value {
    g.add1(Op::Unary(u), u.word(), &[x]).unwrap()
}

fn binary(g: &mut Graph, b: BinaryOp, x: Value, y: Value) -> Value {
    g.add1(Op::Binary(b), b.word(), &[x, y]).unwrap()
}

fn konst(g: &mut Graph, name: &str, t: Tensor) -> Value {
    g.add_const(name, t)
}

fn conv_op(pads: &[i64]) -> Op {
    Op::Conv { auto_pad: AutoPad::NotSet, dilations: vec![], group: 1, kernel_shape: vec![3, 3], pads: pads.to_vec(), strides: vec![] }
}

fn transpose(g: &mut Graph, x: Value, perm: &[i64]) -> Value {
    g.add1(Op::Transpose { perm: Some(perm.to_vec()) }, "transpose", &[x]).unwrap()
}

/// Runs the pass with the verifier, checks every output against the original within
/// `rtol`, and returns the rewritten graph and the run's statistics.
fn rewrite(g: &Graph, inputs: &[Tensor], rtol: f32) -> (Graph, RunStats) {
    verify(g).unwrap();
    let before = run_graph(g, inputs).unwrap();
    let mut out = g.clone();
    let stats = EGraph::default().run_with_stats(&mut out).unwrap();
    verify(&out).unwrap_or_else(|e| panic!("{e}\n{}", print(&out, Weights::Elided)));
    let after = run_graph(&out, inputs).unwrap();
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.shape(), a.shape());
        let (b, a) = (b.as_slice::<f32>().unwrap(), a.as_slice::<f32>().unwrap());
        for (x, y) in b.iter().zip(a) {
            assert!((x - y).abs() <= rtol * x.abs().max(1.0), "{x} vs {y}\n{}", print(&out, Weights::Elided));
        }
    }
    // The signature is untouched.
    assert_eq!(g.outputs.iter().map(|o| (&o.0, g.value_type(o.1))).collect::<Vec<_>>(), out.outputs.iter().map(|o| (&o.0, out.value_type(o.1))).collect::<Vec<_>>());
    (out, stats)
}

/// The op names of a graph's operation nodes, in topological order.
fn ops(g: &Graph) -> Vec<&'static str> {
    // Every node of the result computes from a non-constant: new weights were computed.
    for n in g.nodes.node_indices() {
        let ins = g.inputs_of(n);
        let all_const = !ins.is_empty() && ins.iter().flatten().all(|v| g.const_value(*v).is_some());
        assert!(!all_const || g.nodes.node_weight(n).is_some_and(|w| !w.op.is_pure()), "{} is a constant expression\n{g}", g.node(n).name);
    }
    g.topo_order().unwrap().into_iter().map(|n| g.node(n).op.name()).filter(|n| *n != "input" && *n != "const").collect()
}

#[test]
fn algebraic_identities_vanish() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[2, 3]));
    let zero = konst(&mut g, "zero", scalar(0.0));
    let one = konst(&mut g, "one", f32s(&[3], 1.0));
    let a = binary(&mut g, BinaryOp::Add, x, zero);
    let m = binary(&mut g, BinaryOp::Mul, one, a);
    let d = binary(&mut g, BinaryOp::Div, m, one);
    let s = binary(&mut g, BinaryOp::Sub, d, zero);
    let n1 = unary(&mut g, UnaryOp::Neg, s);
    let n2 = unary(&mut g, UnaryOp::Neg, n1);
    let i = unary(&mut g, UnaryOp::Identity, n2);
    let r = unary(&mut g, UnaryOp::Exp, i);
    g.add_output("y", r);
    let (out, stats) = rewrite(&g, &[tensor(&[2, 3], 1)], 0.0);
    assert_eq!(ops(&out), ["exp"]);
    assert!(stats.applied.iter().any(|a| a.0 == "neutral-operand"), "{stats:?}");
}

#[test]
fn a_neutral_operand_that_broadcasts_stays() {
    // x[3] · ones[2,3] has shape [2,3]: dropping the mul would change the output type.
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[3]));
    let one = konst(&mut g, "one", f32s(&[2, 3], 1.0));
    let m = binary(&mut g, BinaryOp::Mul, x, one);
    g.add_output("y", m);
    let (out, _) = rewrite(&g, &[tensor(&[3], 2)], 0.0);
    assert_eq!(ops(&out), ["mul"]);
}

#[test]
fn transposes_compose_cancel_and_sink_through_elementwise_ops() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[1, 2, 3, 4]));
    // NCHW → NHWC, relu, scale by a per-channel constant (NHWC), back to NCHW.
    let t = transpose(&mut g, x, &[0, 2, 3, 1]);
    let r = unary(&mut g, UnaryOp::Relu, t);
    let s = konst(&mut g, "s", tensor(&[2], 3));
    let m = binary(&mut g, BinaryOp::Mul, r, s);
    let back = transpose(&mut g, m, &[0, 3, 1, 2]);
    // Two transposes that compose into one.
    let t1 = transpose(&mut g, back, &[1, 0, 2, 3]);
    let t2 = transpose(&mut g, t1, &[0, 1, 3, 2]);
    g.add_output("y", t2);
    let (out, _) = rewrite(&g, &[tensor(&[1, 2, 3, 4], 4)], 0.0);
    assert_eq!(ops(&out), ["relu", "mul", "transpose"], "{out}");
    insta::assert_snapshot!(print(&out, Weights::Elided));
}

#[test]
fn reshapes_merge_and_squeezes_are_reshapes() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[2, 3, 4]));
    let s1 = konst(&mut g, "s1", ints(&[6, 4]));
    let r1 = g.add1(Op::Reshape { allowzero: false }, "r1", &[x, s1]).unwrap();
    let e = unary(&mut g, UnaryOp::Exp, r1);
    let s2 = konst(&mut g, "s2", ints(&[4, -1]));
    let r2 = g.add1(Op::Reshape { allowzero: false }, "r2", &[e, s2]).unwrap();
    let axes = konst(&mut g, "axes", ints(&[0]));
    let u = g.add1(Op::Unsqueeze, "u", &[r2, axes]).unwrap();
    let s3 = konst(&mut g, "s3", ints(&[24]));
    let r3 = g.add1(Op::Reshape { allowzero: false }, "r3", &[u, s3]).unwrap();
    g.add_output("y", r3);
    let (out, _) = rewrite(&g, &[tensor(&[2, 3, 4], 5)], 0.0);
    assert_eq!(ops(&out), ["reshape", "exp", "reshape"], "{out}");
}

/// conv(x) with 4 output channels from 3 input channels, 3×3, padding 1.
fn conv_graph(with_bias: bool) -> (Graph, Value) {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::new(DType::F32, vec![Dim::Sym("N".into()), 3.into(), 5.into(), 5.into()]));
    let w = konst(&mut g, "w", tensor(&[4, 3, 3, 3], 6));
    let mut ins = vec![Some(x), Some(w)];
    if with_bias {
        ins.push(Some(konst(&mut g, "b", tensor(&[4], 7))));
    }
    let c = g.add(conv_op(&[1, 1, 1, 1]), "conv1", &ins, 1).unwrap();
    (g, c.into())
}

#[test]
fn batch_norm_folds_into_the_conv_before_it() {
    for with_bias in [true, false] {
        let (mut g, c) = conv_graph(with_bias);
        let params: Vec<Value> = [("scale", tensor(&[4], 8)), ("bias", tensor(&[4], 9)), ("mean", tensor(&[4], 10)), ("var", positive(&[4], 11))]
            .into_iter()
            .map(|(n, t)| konst(&mut g, n, t))
            .collect();
        let ins: Vec<Option<Value>> = std::iter::once(c).chain(params).map(Some).collect();
        let bn = g.add(Op::BatchNorm { epsilon: 1e-5 }, "bn1", &ins, 1).unwrap();
        let r = unary(&mut g, UnaryOp::Relu, bn.into());
        g.add_output("y", r);
        let (out, _) = rewrite(&g, &[tensor(&[2, 3, 5, 5], 12)], 1e-5);
        assert_eq!(ops(&out), ["conv", "relu"], "{out}");
        // The conv keeps the batch norm's name: it computes the batch norm's value.
        let conv = out.nodes.node_weights().find(|n| n.op.name() == "conv").unwrap();
        assert_eq!(conv.name, "bn1");
        if with_bias {
            insta::assert_snapshot!(print(&out, Weights::Elided));
        }
    }
}

#[test]
fn scale_and_bias_by_channel_constants_fold_into_conv() {
    // The Keras and TF bridges write batch norm as mul and add by [C,1,1] constants.
    let (mut g, c) = conv_graph(false);
    let s = konst(&mut g, "s", tensor(&[4, 1, 1], 13));
    let m = binary(&mut g, BinaryOp::Mul, s, c);
    let b = konst(&mut g, "b", tensor(&[1, 4, 1, 1], 14));
    let a = binary(&mut g, BinaryOp::Add, m, b);
    let k = konst(&mut g, "k", scalar(0.5));
    let m2 = binary(&mut g, BinaryOp::Mul, a, k);
    let b2 = konst(&mut g, "b2", tensor(&[4, 1, 1], 15));
    let s2 = binary(&mut g, BinaryOp::Sub, m2, b2);
    g.add_output("y", s2);
    let (out, _) = rewrite(&g, &[tensor(&[1, 3, 5, 5], 16)], 1e-5);
    assert_eq!(ops(&out), ["conv"], "{out}");
}

#[test]
fn a_scale_that_varies_along_space_does_not_fold() {
    let (mut g, c) = conv_graph(true);
    let s = konst(&mut g, "s", tensor(&[1, 5, 5], 17));
    let m = binary(&mut g, BinaryOp::Mul, c, s);
    g.add_output("y", m);
    let (out, _) = rewrite(&g, &[tensor(&[1, 3, 5, 5], 18)], 0.0);
    assert_eq!(ops(&out), ["conv", "mul"]);
}

/// x·s before a conv, s a run-time gate of `gate` shape (squeeze-excitation): the conv's
/// shapes, and the shape the rewritten graph's mul computes.
fn gated_conv(batch: usize, gate: &[usize], group: usize) -> Vec<usize> {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[batch, 8, 16, 16]));
    let s = g.add_input("s", TensorType::known(DType::F32, gate));
    let m = binary(&mut g, BinaryOp::Mul, x, s);
    let w = konst(&mut g, "w", tensor(&[4, 8 / group, 3, 3], 30));
    let op = Op::Conv { auto_pad: AutoPad::NotSet, dilations: vec![], group: group as i64, kernel_shape: vec![3, 3], pads: vec![1, 1, 1, 1], strides: vec![] };
    let c = g.add1(op, "conv", &[m, w]).unwrap();
    g.add_output("y", c);
    let (out, _) = rewrite(&g, &[tensor(&[batch, 8, 16, 16], 31), tensor(gate, 32)], 1e-5);
    assert_eq!(ops(&out), ["mul", "conv"], "{out}");
    let mul = out.nodes.node_indices().find(|&n| out.node(n).op.name() == "mul").unwrap();
    out.node(mul).outputs[0].shape.concrete().unwrap()
}

#[test]
fn a_per_input_channel_gate_scales_the_conv_weights_instead_of_the_feature_map() {
    // 4·8·3·3 weights against 8·16·16 activations: the weights are the smaller pass, and
    // the zero padding stays zero either way.
    assert_eq!(gated_conv(1, &[1, 8, 1, 1], 1), [4, 8, 3, 3]);
    assert_eq!(gated_conv(1, &[8, 1, 1], 1), [4, 8, 3, 3]);
    // Not when the gate differs per image, or the conv is grouped (W has 8/group channels).
    assert_eq!(gated_conv(2, &[2, 8, 1, 1], 1), [2, 8, 16, 16]);
    assert_eq!(gated_conv(1, &[1, 8, 1, 1], 2), [1, 8, 16, 16]);
}

#[test]
fn layer_norm_written_out_as_tf2onnx_exports_it_becomes_one_layer_norm() {
    // Keras' LayerNormalization through tf2onnx: mean, squared difference, mean, + ε,
    // sqrt, reciprocal, then x·g + (−mean·g + β) with g = rstd·γ.
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[1, 6, 16]));
    let pool = || Op::GlobalPool { kind: PoolKind::Average, p: 2 };
    let m = g.add1(pool(), "mean", &[x]).unwrap();
    let neg = unary(&mut g, UnaryOp::Neg, m);
    let d = binary(&mut g, BinaryOp::Sub, x, m);
    let d2 = binary(&mut g, BinaryOp::Mul, d, d);
    let v = g.add1(pool(), "variance", &[d2]).unwrap();
    let eps = konst(&mut g, "eps", scalar(1e-3));
    let ve = binary(&mut g, BinaryOp::Add, v, eps);
    let s = unary(&mut g, UnaryOp::Sqrt, ve);
    let r = unary(&mut g, UnaryOp::Reciprocal, s);
    let gamma = konst(&mut g, "gamma", tensor(&[16], 40));
    let gm = binary(&mut g, BinaryOp::Mul, r, gamma);
    let xg = binary(&mut g, BinaryOp::Mul, x, gm);
    let mg = binary(&mut g, BinaryOp::Mul, neg, gm);
    let beta = konst(&mut g, "beta", tensor(&[16], 41));
    let shift = binary(&mut g, BinaryOp::Add, mg, beta);
    let y = binary(&mut g, BinaryOp::Add, xg, shift);
    g.add_output("y", y);
    let (out, _) = rewrite(&g, &[tensor(&[1, 6, 16], 42)], 1e-5);
    assert_eq!(ops(&out), ["layer_norm"], "{out}");
    // A β that varies along the rows is not LayerNorm's bias: left as it was.
    let mut g2 = g.clone();
    let beta_rows = konst(&mut g2, "beta_rows", tensor(&[6, 1], 43));
    let shift2 = binary(&mut g2, BinaryOp::Add, mg, beta_rows);
    let y2 = binary(&mut g2, BinaryOp::Add, xg, shift2);
    g2.outputs.clear();
    g2.add_output("y", y2);
    g2.remove_dead();
    let (out2, _) = rewrite(&g2, &[tensor(&[1, 6, 16], 42)], 1e-5);
    assert!(!ops(&out2).contains(&"layer_norm"), "{out2}");
}

#[test]
fn scale_and_bias_fold_into_matmul_as_a_gemm() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[2, 3]));
    let w = konst(&mut g, "w", tensor(&[3, 4], 19));
    let mm = g.add1(Op::MatMul, "dense", &[x, w]).unwrap();
    let s = konst(&mut g, "s", tensor(&[4], 20));
    let m = binary(&mut g, BinaryOp::Mul, mm, s);
    let b = konst(&mut g, "b", tensor(&[1, 4], 21));
    let a = binary(&mut g, BinaryOp::Add, m, b);
    g.add_output("y", a);
    let (out, _) = rewrite(&g, &[tensor(&[2, 3], 22)], 1e-5);
    assert_eq!(ops(&out), ["gemm"], "{out}");
}

#[test]
fn zero_padding_folds_into_conv_and_into_max_pool_of_non_negative_values() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[1, 3, 6, 6]));
    let pads = konst(&mut g, "pads", ints(&[0, 0, 1, 2, 0, 0, 1, 0]));
    let p = g.add(Op::Pad { mode: PadMode::Constant }, "pad", &[Some(x), Some(pads), None, None], 1).unwrap();
    let w = konst(&mut g, "w", tensor(&[4, 3, 3, 3], 23));
    let c = g.add1(conv_op(&[]), "conv", &[p.into(), w]).unwrap();
    let r = unary(&mut g, UnaryOp::Relu, c);
    let pads2 = konst(&mut g, "pads2", ints(&[0, 0, 1, 1, 0, 0, 1, 1]));
    let p2 = g.add(Op::Pad { mode: PadMode::Constant }, "pad2", &[Some(r), Some(pads2), None, None], 1).unwrap();
    let pool = Op::Pool {
        kind: PoolKind::Max,
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
        count_include_pad: false,
        dilations: vec![],
        kernel_shape: vec![3, 3],
        pads: vec![],
        strides: vec![2, 2],
        storage_order: 0,
        p: 2,
    };
    let mp = g.add1(pool.clone(), "pool", &[p2.into()]).unwrap();
    // The same padding in front of a max pool of values that may be negative stays.
    let p3 = g.add(Op::Pad { mode: PadMode::Constant }, "pad3", &[Some(c), Some(pads2), None, None], 1).unwrap();
    let mp2 = g.add1(pool, "pool2", &[p3.into()]).unwrap();
    g.add_output("y", mp);
    g.add_output("z", mp2);
    let (out, _) = rewrite(&g, &[tensor(&[1, 3, 6, 6], 24)], 1e-6);
    let mut found = ops(&out);
    found.sort_unstable();
    assert_eq!(found, ["conv", "pad", "pool", "pool", "relu"], "{out}");
    insta::assert_snapshot!(print(&out, Weights::Elided));
}

#[test]
fn a_pad_moves_across_a_layout_transpose_into_the_conv() {
    // The Keras bridge pads in NHWC, then transposes to NCHW for the conv.
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[1, 6, 6, 3]));
    let pads = konst(&mut g, "pads", ints(&[0, 1, 1, 0, 0, 1, 1, 0]));
    let p = g.add(Op::Pad { mode: PadMode::Constant }, "pad", &[Some(x), Some(pads), None, None], 1).unwrap();
    let t = transpose(&mut g, p.into(), &[0, 3, 1, 2]);
    let w = konst(&mut g, "w", tensor(&[4, 3, 3, 3], 27));
    let c = g.add1(conv_op(&[]), "conv", &[t, w]).unwrap();
    g.add_output("y", c);
    let (out, _) = rewrite(&g, &[tensor(&[1, 6, 6, 3], 28)], 1e-6);
    assert_eq!(ops(&out), ["transpose", "conv"], "{out}");
}

#[test]
fn a_spatial_mean_is_a_global_average_pool() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[2, 3, 4, 4]));
    // NHWC mean over H and W, as the Keras bridge writes GlobalAveragePooling2D.
    let t = transpose(&mut g, x, &[0, 2, 3, 1]);
    let axes = konst(&mut g, "axes", ints(&[1, 2]));
    let m = g.add1(Op::Reduce { kind: ReduceKind::Mean, keepdims: false, noop_with_empty_axes: false }, "gap", &[t, axes]).unwrap();
    g.add_output("y", m);
    let (out, _) = rewrite(&g, &[tensor(&[2, 3, 4, 4], 25)], 1e-6);
    assert_eq!(ops(&out), ["global_pool", "reshape"], "{out}");
}

#[test]
fn relu_and_clip_chains_merge() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[8]));
    let r1 = unary(&mut g, UnaryOp::Relu, x);
    let r2 = unary(&mut g, UnaryOp::Relu, r1);
    let (lo, hi) = (konst(&mut g, "lo", scalar(0.0)), konst(&mut g, "hi", scalar(6.0)));
    let c = g.add1(Op::Clip, "relu6", &[r2, lo, hi]).unwrap();
    g.add_output("relu6", c);
    // min(max(x, 0.5), 6) is a clip; max(x, 0) a relu.
    let half = konst(&mut g, "half", scalar(0.5));
    let mx = binary(&mut g, BinaryOp::Max, x, half);
    let mn = binary(&mut g, BinaryOp::Min, mx, hi);
    g.add_output("clip", mn);
    let z = binary(&mut g, BinaryOp::Max, x, lo);
    let e = unary(&mut g, UnaryOp::Exp, z);
    g.add_output("relu", e);
    // min(relu(x2), 6) is relu6 as Keras writes it.
    let x2 = g.add_input("x2", TensorType::known(DType::F32, &[8]));
    let r = unary(&mut g, UnaryOp::Relu, x2);
    let m6 = binary(&mut g, BinaryOp::Min, r, hi);
    g.add_output("keras_relu6", m6);
    let input = Tensor::new(vec![8], vec![-3.0f32, -0.5, 0.0, 0.3, 0.7, 2.0, 6.5, 9.0]).unwrap();
    let (out, _) = rewrite(&g, &[input.clone(), input], 0.0);
    assert_eq!(ops(&out), ["clip", "clip", "relu", "exp", "clip"], "{out}");
}

/// Found by the `graph` fuzz target: clips whose ranges do not overlap merged into a clip
/// with lo > hi, which gives the outer clip's hi everywhere instead of its lo.
#[test]
fn clip_chains_with_disjoint_ranges_merge_to_the_right_constant() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[8]));
    let c = |g: &mut Graph, name: &str, v: f32| konst(g, name, scalar(v));
    let (zero, one, two, three) = (c(&mut g, "zero", 0.0), c(&mut g, "one", 1.0), c(&mut g, "two", 2.0), c(&mut g, "three", 3.0));
    // clip(clip(x, 0, 1), 2, 3) is 2 everywhere; clip(clip(x, 2, 3), 0, 1) is 1 everywhere.
    let low = g.add1(Op::Clip, "low", &[x, zero, one]).unwrap();
    let up = g.add1(Op::Clip, "up", &[low, two, three]).unwrap();
    g.add_output("up", up);
    let high = g.add1(Op::Clip, "high", &[x, two, three]).unwrap();
    let down = g.add1(Op::Clip, "down", &[high, zero, one]).unwrap();
    g.add_output("down", down);
    // An absent inner lower bound: clip(min(x, 1), 2, 3) is 2 everywhere too.
    let open = g.add(Op::Clip, "open", &[Some(x), None, Some(one)], 1).unwrap();
    let closed = g.add1(Op::Clip, "closed", &[open.into(), two, three]).unwrap();
    g.add_output("closed", closed);
    let input = Tensor::new(vec![8], vec![-3.0f32, -0.5, 0.0, 0.3, 0.7, 2.0, 6.5, 9.0]).unwrap();
    let (out, _) = rewrite(&g, &[input], 0.0);
    assert_eq!(ops(&out), ["clip", "clip", "clip"], "{out}");
}

#[test]
fn multi_output_ops_are_opaque_and_keep_their_outputs() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[4, 6]));
    let sizes = konst(&mut g, "sizes", ints(&[2, 4]));
    let sp = g.add(Op::Split { axis: 1 }, "split", &[Some(x), Some(sizes)], 2).unwrap();
    let one = konst(&mut g, "one", scalar(1.0));
    let a = binary(&mut g, BinaryOp::Mul, Value::new(sp, 1), one);
    let n = unary(&mut g, UnaryOp::Neg, Value::new(sp, 0));
    g.add_output("a", a);
    g.add_output("b", n);
    let (out, _) = rewrite(&g, &[tensor(&[4, 6], 26)], 0.0);
    assert_eq!(ops(&out), ["split", "neg"], "{out}");
}

/// A small residual network: conv, batch norm, relu, a second conv with batch norm, the
/// residual add, a transposed view and global pooling.
fn resnet_block() -> Graph {
    let (mut g, c) = conv_graph(true);
    let bn = |g: &mut Graph, x: Value, seed: u32, name: &str| -> Value {
        let params: Vec<Value> = (0..4).map(|i| konst(g, &format!("{name}_{i}"), if i == 3 { positive(&[4], seed + i) } else { tensor(&[4], seed + i) })).collect();
        let ins: Vec<Option<Value>> = std::iter::once(x).chain(params).map(Some).collect();
        g.add(Op::BatchNorm { epsilon: 1e-3 }, name, &ins, 1).unwrap().into()
    };
    let b1 = bn(&mut g, c, 30, "bn1");
    let r1 = unary(&mut g, UnaryOp::Relu, b1);
    let w2 = konst(&mut g, "w2", tensor(&[4, 4, 3, 3], 40));
    let c2 = g.add1(conv_op(&[1, 1, 1, 1]), "conv2", &[r1, w2]).unwrap();
    let b2 = bn(&mut g, c2, 50, "bn2");
    let add = binary(&mut g, BinaryOp::Add, b2, r1);
    let r2 = unary(&mut g, UnaryOp::Relu, add);
    let axes = konst(&mut g, "axes", ints(&[2, 3]));
    let m = g.add1(Op::Reduce { kind: ReduceKind::Mean, keepdims: true, noop_with_empty_axes: false }, "gap", &[r2, axes]).unwrap();
    g.add_output("y", m);
    g
}

#[test]
fn rewriting_is_deterministic() {
    let g = resnet_block();
    let (a, sa) = rewrite(&g, &[tensor(&[1, 3, 5, 5], 60)], 1e-5);
    let (b, sb) = rewrite(&g, &[tensor(&[1, 3, 5, 5], 60)], 1e-5);
    assert_eq!(print(&a, Weights::Inline), print(&b, Weights::Inline));
    assert_eq!(sa, sb);
    assert_eq!(ops(&a), ["conv", "relu", "conv", "add", "relu", "global_pool"], "{a}");
    insta::assert_snapshot!(print(&a, Weights::Elided));
}

#[test]
fn the_pass_runs_in_the_o2_pipeline() {
    let mut g = resnet_block();
    let report = kiln_passes::optimize(&mut g, &kiln_passes::Options { verify: true, ..kiln_passes::Options::level(kiln_passes::Level::O2) }).unwrap();
    assert!(report.passes.iter().any(|p| p.name == "egraph"), "{report}");
    assert!(ops(&g).iter().all(|&o| o != "batch_norm"), "{g}");
}

#[test]
fn parallel_matmuls_sharing_an_input_merge_when_it_pays() {
    // Three small projections of one input (query, key, value): one matmul and a split
    // launch two kernels instead of three.
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[2, 8]));
    for (i, name) in ["q", "k", "v"].into_iter().enumerate() {
        let w = konst(&mut g, &format!("w{name}"), tensor(&[8, 4], 70 + i as u32));
        let m = g.add1(Op::MatMul, name, &[x, w]).unwrap();
        let r = unary(&mut g, UnaryOp::Tanh, m);
        g.add_output(name, r);
    }
    let (out, stats) = rewrite(&g, &[tensor(&[2, 8], 73)], 1e-6);
    assert!(stats.applied.iter().any(|a| a.0 == "merge-parallel"), "{stats:?}");
    assert_eq!(ops(&out), ["matmul", "split", "tanh", "tanh", "tanh"], "{out}");
}

#[test]
fn big_parallel_convs_stay_apart() {
    // Two 1×1 convs of a large input: splitting the merged result moves more bytes than a
    // launch saves.
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[1, 8, 64, 64]));
    let one_by_one = Op::Conv { auto_pad: AutoPad::NotSet, dilations: vec![], group: 1, kernel_shape: vec![1, 1], pads: vec![], strides: vec![] };
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let w = konst(&mut g, &format!("w{name}"), tensor(&[16, 8, 1, 1], 80 + i as u32));
        let c = g.add1(one_by_one.clone(), name, &[x, w]).unwrap();
        g.add_output(name, c);
    }
    let (out, _) = rewrite(&g, &[tensor(&[1, 8, 64, 64], 83)], 1e-6);
    assert_eq!(ops(&out), ["conv", "conv"], "{out}");
}
