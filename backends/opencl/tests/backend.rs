//! OPENCL against REFERENCE on small graphs, one per op family. Each test skips (printing
//! why) only when this machine has no OpenCL platform; CI installs PoCL, so they run there.

mod common;

use common::{check, data};
use kiln_backends::{Backend, CompileOptions, Program};
use kiln_ir::{Tensor, text};
use kiln_opencl::OpenCl;

#[test]
fn elementwise_with_broadcast_and_nan() {
    let mut x = data(&[2, 3, 4]).to_f64_vec();
    x[0] = f64::NAN;
    x[1] = f64::INFINITY;
    let x = Tensor::from_f64(kiln_ir::DType::F32, vec![2, 3, 4], &x).unwrap();
    check(
        r#"graph g(%x: f32[2,3,4], %y: f32[4]) -> (%o: f32[2,3,4], %m: f32[2,3,4], %c: bool[2,3,4]) {
  %0 = add(%x, %y) : f32[2,3,4] "add"
  %1 = sigmoid(%0) : f32[2,3,4] "sig"
  %2 = max(%1, %x) : f32[2,3,4] "max"
  %3 = gelu(%2) {approximate=none} : f32[2,3,4] "gelu"
  %4 = greater(%x, %y) : bool[2,3,4] "gt"
  return %3, %2, %4
}"#,
        &[x, data(&[4])],
    );
}

#[test]
fn conv_with_bias_and_relu_and_pooling() {
    check(
        r#"graph g(%x: f32[1,3,9,9], %w: f32[4,3,3,3], %b: f32[4]) -> (%y: f32[1,4,3,3], %z: f32[1,4,1,1]) {
  %0 = conv(%x, %w, %b) {auto_pad=explicit, dilations=[], group=1, kernel_shape=[3,3], pads=[1,1,1,1], strides=[2,2]} : f32[1,4,5,5] "conv"
  %1 = relu(%0) : f32[1,4,5,5] "relu"
  %2 = pool(%1) {kind=max, auto_pad=explicit, ceil_mode=false, count_include_pad=false, dilations=[], kernel_shape=[3,3], pads=[0,0,0,0], strides=[2,2], storage_order=0, p=2} : f32[1,4,2,2] "mp"
  %3 = pool(%1) {kind=average, auto_pad=explicit, ceil_mode=true, count_include_pad=true, dilations=[], kernel_shape=[2,2], pads=[1,1,1,1], strides=[2,2], storage_order=0, p=2} : f32[1,4,3,3] "ap"
  %4 = global_pool(%2) {kind=average, p=2} : f32[1,4,1,1] "gap"
  return %3, %4
}"#,
        &[data(&[1, 3, 9, 9]), data(&[4, 3, 3, 3]), data(&[4])],
    );
}

#[test]
fn depthwise_conv() {
    check(
        r#"graph g(%x: f32[1,4,6,6], %w: f32[4,1,3,3]) -> (%y: f32[1,4,6,6]) {
  %0 = conv(%x, %w) {auto_pad=same_upper, dilations=[], group=4, kernel_shape=[3,3], pads=[], strides=[]} : f32[1,4,6,6] "dw"
  return %0
}"#,
        &[data(&[1, 4, 6, 6]), data(&[4, 1, 3, 3])],
    );
}

#[test]
fn matmul_batched_and_gemm() {
    check(
        r#"graph g(%a: f32[2,3,5], %b: f32[5,4], %c: f32[4]) -> (%y: f32[2,3,4], %z: f32[3,4]) {
  @s = i64[2] [6,5]
  @st = i64[1] [0]
  @en = i64[1] [3]
  %0 = matmul(%a, %b) : f32[2,3,4] "mm"
  %1 = reshape(%a, @s) {allowzero=false} : f32[6,5] "r"
  %2 = slice(%1, @st, @en) : f32[3,5] "sl"
  %3 = gemm(%2, %b, %c) {alpha=0.5, beta=2.0, trans_a=false, trans_b=false} : f32[3,4] "gemm"
  return %0, %3
}"#,
        &[data(&[2, 3, 5]), data(&[5, 4]), data(&[4])],
    );
}

#[test]
fn reductions_softmax_and_layer_norm() {
    check(
        r#"graph g(%x: f32[2,3,8]) -> (%s: f32[2,1,8], %m: f32[2,3], %sm: f32[2,3,8], %ln: f32[2,3,8], %am: i64[2,8]) {
  @ax1 = i64[1] [1]
  @ax2 = i64[1] [-1]
  %0 = reduce(%x, @ax1) {kind=sum, keepdims=true, noop_with_empty_axes=false} : f32[2,1,8] "sum"
  %1 = reduce(%x, @ax2) {kind=log_sum_exp, keepdims=false, noop_with_empty_axes=false} : f32[2,3] "lse"
  %2 = softmax(%x) {axis=-1} : f32[2,3,8] "softmax"
  @sc = f32[8] [1.0,2.0,0.5,1.0,1.0,1.0,1.0,1.5]
  @bi = f32[8] [0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7]
  %3 = layer_norm(%x, @sc, @bi) {axis=-1, epsilon=0.00001, stash_type=f32} : f32[2,3,8] "ln"
  %4 = arg_reduce(%x) {max=true, axis=1, keepdims=false, select_last_index=false} : i64[2,8] "argmax"
  return %0, %1, %2, %3, %4
}"#,
        &[data(&[2, 3, 8])],
    );
}

#[test]
fn data_movement() {
    let idx = Tensor::new(vec![2], vec![2i64, -1]).unwrap();
    check(
        r#"graph g(%x: f32[2,3,4], %i: i64[2]) -> (%t: f32[4,2,3], %c: f32[2,6,4], %g: f32[2,2,4], %p: f32[2,5,6]) {
  %0 = transpose(%x) {perm=[2,0,1]} : f32[4,2,3] "tr"
  %1 = concat(%x, %x) {axis=1} : f32[2,6,4] "cat"
  %2 = gather(%x, %i) {axis=1} : f32[2,2,4] "gather"
  @pads = i64[6] [0,1,1,0,1,1]
  %3 = pad(%x, @pads) {mode=reflect} : f32[2,5,6] "pad"
  return %0, %1, %2, %3
}"#,
        &[data(&[2, 3, 4]), idx],
    );
}

#[test]
fn integer_elementwise() {
    let a = Tensor::new(vec![6], vec![7i64, -7, 7, -7, 0, 5]).unwrap();
    let b = Tensor::new(vec![6], vec![2i64, 2, -2, -2, 3, 5]).unwrap();
    check(
        r#"graph g(%a: i64[6], %b: i64[6]) -> (%d: i64[6], %m: i64[6], %c: f32[6]) {
  %0 = div(%a, %b) : i64[6] "div"
  %1 = mod(%a, %b) : i64[6] "mod"
  %2 = cast(%1) {to=f32} : f32[6] "cast"
  return %0, %1, %2
}"#,
        &[a, b],
    );
}

#[test]
fn unsupported_op_is_an_error_naming_the_node() {
    let graph = text::parse(
        r#"graph g(%x: f32[40,40]) -> (%y: f32[]) {
  %0 = det(%x) : f32[] "running"
  return %0
}"#,
        None,
    )
    .unwrap();
    let program = Program::new(graph);
    let e = OpenCl::new().compile(&program, &CompileOptions::default()).err().expect("det of a matrix too large for private memory is refused");
    assert_eq!(e.node.as_deref(), Some("running"));
    let refusing = OpenCl::new().refusing("conv,matmul");
    let g = text::parse(
        r#"graph g(%a: f32[2,2], %b: f32[2,2]) -> (%y: f32[2,2]) {
  %0 = matmul(%a, %b) : f32[2,2] "mm"
  return %0
}"#,
        None,
    )
    .unwrap();
    let node = g.node(*g.topo_order().unwrap().iter().find(|&&n| g.node(n).name == "mm").unwrap());
    assert_eq!(node.name, "mm");
    assert!(!refusing.supports(&kiln_backends::Kernel { node }));
    assert!(OpenCl::new().refusing("").supports(&kiln_backends::Kernel { node }));
}

#[test]
fn einsum_cumulative_and_lane_ops() {
    check(
        r#"graph g(%a: f32[2,3,4], %b: f32[2,4,5], %x: f32[3,4]) -> (%e: f32[2,3,5], %d: f32[3], %c: f32[3,4], %p: f32[3,4], %h: f32[3,4], %l: f32[3,4], %t: f32[3,4], %u: f32[3,4]) {
  %0 = einsum(%a, %b) {equation="bij,bjk->bik"} : f32[2,3,5] "bmm"
  %1 = einsum(%x) {equation="ij->i"} : f32[3] "rowsum"
  @ax = i64[] [1]
  %2 = cumsum(%x, @ax) {exclusive=false, reverse=true} : f32[3,4] "cs"
  %3 = cumprod(%x, @ax) {exclusive=true, reverse=false} : f32[3,4] "cp"
  %4 = hardmax(%x) {axis=0} : f32[3,4] "hm"
  %5 = lp_normalization(%x) {axis=1, p=2} : f32[3,4] "lp"
  @k = i64[] [1]
  %6 = trilu(%x, @k) {upper=true} : f32[3,4] "triu"
  %7 = trilu(%x) {upper=false} : f32[3,4] "tril"
  return %0, %1, %2, %3, %4, %5, %6, %7
}"#,
        &[data(&[2, 3, 4]), data(&[2, 4, 5]), data(&[3, 4])],
    );
}

/// A bidirectional LSTM with biases, sequence lengths and initial state, and a reverse and
/// a bidirectional GRU (whose second direction takes the second pair of activations): one
/// work-group per sequence carries the state through its steps.
#[test]
fn recurrent_ops() {
    use kiln_ir::{DType, Direction, Graph, Op, RnnKind, TensorType};
    let rnn = |kind, direction| Op::Rnn {
        kind,
        direction,
        hidden_size: 5,
        activations: vec![],
        activation_alpha: vec![],
        activation_beta: vec![],
        clip: None,
        layout: 0,
        input_forget: false,
        linear_before_reset: false,
    };
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[4, 2, 3]));
    let scaled = |shape: &[usize]| Tensor::from_f64(DType::F32, shape.to_vec(), &data(shape).to_f64_vec().iter().map(|v| v * 0.3).collect::<Vec<_>>()).unwrap();
    let w = g.add_const("w", scaled(&[2, 20, 3]));
    let r = g.add_const("r", scaled(&[2, 20, 5]));
    let b = g.add_const("b", scaled(&[2, 40]));
    let lens = g.add_const("lens", Tensor::new(vec![2], vec![4i32, 2]).unwrap());
    let h0 = g.add_const("h0", scaled(&[2, 2, 5]));
    let lstm = g.add(rnn(RnnKind::Lstm, Direction::Bidirectional), "lstm", &[Some(x), Some(w), Some(r), Some(b), Some(lens), Some(h0)], 3).unwrap();
    let gw = g.add_const("gw", scaled(&[1, 15, 3]));
    let gr = g.add_const("gr", scaled(&[1, 15, 5]));
    let gru = g.add(rnn(RnnKind::Gru, Direction::Reverse), "gru", &[Some(x), Some(gw), Some(gr)], 2).unwrap();
    let bw = g.add_const("bw", scaled(&[2, 15, 3]));
    let br = g.add_const("br", scaled(&[2, 15, 5]));
    let bigru = g.add(rnn(RnnKind::Gru, Direction::Bidirectional), "bigru", &[Some(x), Some(bw), Some(br)], 1).unwrap();
    for (name, v) in [("y", kiln_ir::Value::new(lstm, 0)), ("yh", kiln_ir::Value::new(lstm, 1)), ("yc", kiln_ir::Value::new(lstm, 2)), ("gy", kiln_ir::Value::new(gru, 0)), ("by", kiln_ir::Value::new(bigru, 0))] {
        g.add_output(name, v);
    }
    check(&text::print(&g, text::Weights::Inline), &[data(&[4, 2, 3])]);
}
