//! Fusion: which ops share a kernel, what a kernel's body looks like, and that the fused
//! graph computes exactly what the original did (REFERENCE runs a kernel by running its
//! body).

use kiln_ir::text::{parse, print, Weights};
use kiln_ir::{Graph, Op, Tensor};
use kiln_passes::fusion::{Fusion, KernelView, Source};
use kiln_passes::{Level, Options, Pipeline};

/// Weights for `bin(offset, nbytes)` references: small values of both signs.
fn weights() -> Vec<u8> {
    (0..16384)
        .flat_map(|i| ((i as f32 * 0.731).sin() * 0.5).to_le_bytes())
        .collect()
}

/// An input of type `t`'s shape: values of both signs, none repeating soon.
fn sample(g: &Graph, input: usize) -> Tensor {
    let t = &g.node(g.inputs[input]).outputs[0];
    let dims = t.shape.concrete().expect("test inputs have known shapes");
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i + 7 * input) as f32 * 1.37).sin() * 2.0)
        .collect();
    Tensor::new(dims, data).unwrap()
}

/// Parses `text`, fuses it (verifying the result), checks that the fused graph gives the same
/// outputs on sample inputs, and returns the fused graph's text.
fn fuse(text: &str) -> (Graph, String) {
    let bin = weights();
    let before = parse(text, Some(&bin)).unwrap();
    kiln_ir::verify(&before).unwrap();
    let mut after = before.clone();
    let mut p = Pipeline::empty(Level::O2);
    p.push(Fusion);
    p.run(
        &mut after,
        &Options {
            verify: true,
            ..Options::default()
        },
    )
    .unwrap();
    let inputs: Vec<Tensor> = (0..before.inputs.len())
        .map(|i| sample(&before, i))
        .collect();
    let want = kiln_ir::eval::run_graph(&before, &inputs).unwrap();
    let got = kiln_ir::eval::run_graph(&after, &inputs).unwrap();
    assert_eq!(want, got, "fusion changed the results");
    let printed = print(&after, Weights::Elided);
    (after, printed)
}

fn kernels(g: &Graph) -> Vec<&Graph> {
    let order = g.topo_order().unwrap();
    order
        .into_iter()
        .filter_map(|n| match &g.node(n).op {
            Op::Fused { body } => Some(&**body),
            _ => None,
        })
        .collect()
}

fn kinds(g: &Graph) -> Vec<&str> {
    kernels(g).iter().map(|b| b.name.as_str()).collect()
}

const CONV: &str =
    "{auto_pad=explicit, dilations=[], group=1, kernel_shape=[], pads=[1,1,1,1], strides=[1,1]}";

#[test]
fn a_conv_takes_its_bias_and_activation() {
    let text = format!(
        r#"graph g(%x: f32[1,3,8,8]) -> (%y: f32[1,4,8,8]) {{
  @w = f32[4,3,3,3] bin(0, 432)
  @b = f32[1,4,1,1] [0.5,-0.5,0.25,0.0]
  %0 = conv(%x, @w) {CONV} : f32[1,4,8,8] "conv"
  %1 = add(%0, @b) : f32[1,4,8,8] "bias"
  %2 = relu(%1) : f32[1,4,8,8] "relu"
  return %2
}}"#
    );
    let (g, printed) = fuse(&text);
    assert_eq!(kinds(&g), ["conv+add+relu"]);
    insta::assert_snapshot!(printed);
}

#[test]
fn a_conv_takes_an_affine_a_residual_add_and_a_clip() {
    // Two convs: the second takes the first's output as its data and the model input as
    // its residual, so the model input is its second kernel input.
    let text = format!(
        r#"graph g(%x: f32[1,4,8,8]) -> (%y: f32[1,4,8,8]) {{
  @w1 = f32[4,4,3,3] bin(0, 576)
  @w2 = f32[4,4,3,3] bin(64, 576)
  @scale = f32[1,4,1,1] [1.5,0.5,-1.0,2.0]
  @shift = f32[1,4,1,1] [0.1,0.2,0.3,0.4]
  @lo = f32[] [0.0]
  @hi = f32[] [6.0]
  %0 = conv(%x, @w1) {CONV} : f32[1,4,8,8] "conv1"
  %1 = relu(%0) : f32[1,4,8,8] "relu1"
  %2 = conv(%1, @w2) {CONV} : f32[1,4,8,8] "conv2"
  %3 = mul(%2, @scale) : f32[1,4,8,8] "bn_scale"
  %4 = add(%3, @shift) : f32[1,4,8,8] "bn_shift"
  %5 = add(%4, %x) : f32[1,4,8,8] "residual"
  %6 = clip(%5, @lo, @hi) : f32[1,4,8,8] "relu6"
  return %6
}}"#
    );
    let (g, printed) = fuse(&text);
    assert_eq!(kinds(&g), ["conv+relu", "conv+mul+add+add+clip"]);
    let last = kernels(&g)[1];
    assert_eq!(
        last.inputs.len(),
        2,
        "the first kernel's output and the residual"
    );
    insta::assert_snapshot!(printed);
}

#[test]
fn an_elementwise_chain_with_broadcasts_is_one_kernel() {
    let text = r#"graph g(%x: f32[2,3], %b: f32[3]) -> (%y: f32[2,3]) {
  @two = f32[] [2.0]
  %0 = mul(%x, @two) : f32[2,3] "double"
  %1 = add(%0, %b) : f32[2,3] "shift"
  %2 = sigmoid(%1) : f32[2,3] "squash"
  %3 = leaky_relu(%2) {alpha=0.1} : f32[2,3] "leaky"
  return %3
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["mul+add+sigmoid+leaky_relu"]);
    assert_eq!(kiln_passes::op_count(&g), 1);
    insta::assert_snapshot!(printed);
}

#[test]
fn a_softmax_takes_its_elementwise_prologue_and_epilogue() {
    let text = r#"graph g(%s: f32[1,2,4,4]) -> (%y: f32[1,2,4,4]) {
  @scale = f32[] [0.5]
  @mask = f32[1,1,4,4] bin(0, 64)
  @k = f32[] [3.0]
  %0 = mul(%s, @scale) : f32[1,2,4,4] "scale"
  %1 = add(%0, @mask) : f32[1,2,4,4] "mask"
  %2 = softmax(%1) {axis=-1} : f32[1,2,4,4] "softmax"
  %3 = mul(%2, @k) : f32[1,2,4,4] "after"
  return %3
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["softmax+mul+add+mul"]);
    insta::assert_snapshot!(printed);

    let body = kernels(&g)[0];
    let view = KernelView::of(body).unwrap();
    let names = |ns: &[kiln_ir::NodeId]| {
        ns.iter()
            .map(|&n| body.node(n).name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(body.node(view.anchor.unwrap()).name, "softmax");
    assert_eq!(names(&view.prologue), ["scale", "mask"]);
    assert_eq!(names(&view.epilogue), ["after"]);
    // The kernel's one input feeds the prologue's first op.
    assert_eq!(view.feeds, [vec![(view.prologue[0], 0)]]);
    assert!(matches!(view.anchor_inputs()[..], [Some(Source::Op(_))]));
}

#[test]
fn a_value_read_outside_the_kernel_is_one_of_its_outputs() {
    // The residual sum feeds the layer norm inside the kernel and is returned too.
    let text = r#"graph g(%x: f32[2,4], %r: f32[2,4]) -> (%sum: f32[2,4], %y: f32[2,4]) {
  @gamma = f32[4] [1.0,0.5,2.0,1.0]
  @beta = f32[4] [0.0,0.1,0.0,-0.1]
  %0 = add(%x, %r) : f32[2,4] "residual"
  %1 = layer_norm(%0, @gamma, @beta) {axis=-1, epsilon=1e-5, stash_type=f32} : f32[2,4] "ln"
  return %0, %1
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["layer_norm+add"]);
    assert_eq!(kernels(&g)[0].outputs.len(), 2);
    insta::assert_snapshot!(printed);
}

#[test]
fn a_reduction_outputs_the_prologue_value_its_consumers_still_need() {
    // A softmax written out: the exponentials are summed inside the kernel and divided
    // outside it, so the kernel returns both; the division reads the prologue's value, not
    // the anchor's, so it does not join.
    let text = r#"graph g(%x: f32[2,5]) -> (%y: f32[2,5]) {
  @axes = i64[1] [1]
  %0 = exp(%x) : f32[2,5] "exp"
  %1 = reduce(%0, @axes) {kind=sum, keepdims=true, noop_with_empty_axes=false} : f32[2,1] "sum"
  %2 = div(%0, %1) : f32[2,5] "normalize"
  return %2
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["reduce+exp"]);
    assert_eq!(kernels(&g)[0].outputs.len(), 2);
    assert_eq!(kiln_passes::op_count(&g), 2);
    insta::assert_snapshot!(printed);
}

#[test]
fn an_op_whose_other_input_depends_on_the_kernel_does_not_join_it() {
    // `join` reads the relu and a cumsum of it: in the relu's kernel it would make the
    // kernel both feed the cumsum and wait for it.
    let text = r#"graph g(%x: f32[2,3]) -> (%y: f32[2,3]) {
  @axis = i64[] [1]
  %0 = relu(%x) : f32[2,3] "relu"
  %1 = cumsum(%0, @axis) {exclusive=false, reverse=false} : f32[2,3] "scan"
  %2 = add(%0, %1) : f32[2,3] "join"
  %3 = neg(%2) : f32[2,3] "neg"
  return %3
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["add+neg"]);
    assert_eq!(kiln_passes::op_count(&g), 3);
    insta::assert_snapshot!(printed);
}

#[test]
fn a_model_input_transpose_and_a_pad_are_the_convs_prologue() {
    let text = r#"graph g(%x: f32[1,6,6,3]) -> (%y: f32[1,4,8,8]) {
  @w = f32[4,3,1,1] bin(0, 48)
  @pads = i64[8] [0,0,1,1,0,0,1,1]
  %0 = transpose(%x) {perm=[0,3,1,2]} : f32[1,3,6,6] "to_nchw"
  %1 = pad(%0, @pads) {mode=constant} : f32[1,3,8,8] "pad"
  %2 = conv(%1, @w) {auto_pad=explicit, dilations=[], group=1, kernel_shape=[], pads=[0,0,0,0], strides=[1,1]} : f32[1,4,8,8] "conv"
  %3 = relu(%2) : f32[1,4,8,8] "relu"
  return %3
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["conv+transpose+pad+relu"]);
    let view = KernelView::of(kernels(&g)[0]).unwrap();
    assert_eq!(view.prologue.len(), 2);
    insta::assert_snapshot!(printed);
}

#[test]
fn views_join_the_kernel_they_follow_and_a_matmul_takes_gelu() {
    let text = r#"graph g(%x: f32[1,3,4,4]) -> (%y: f32[1,2]) {
  @w = f32[3,2] [0.5,-1.0,0.25,2.0,-0.5,1.0]
  @b = f32[2] [0.1,-0.1]
  %0 = global_pool(%x) {kind=average, p=2} : f32[1,3,1,1] "gap"
  %1 = flatten(%0) {axis=1} : f32[1,3] "flatten"
  %2 = matmul(%1, @w) : f32[1,2] "dense"
  %3 = add(%2, @b) : f32[1,2] "dense_bias"
  %4 = gelu(%3) {approximate=none} : f32[1,2] "gelu"
  return %4
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["global_pool+flatten", "matmul+add+gelu"]);
    insta::assert_snapshot!(printed);
}

#[test]
fn an_op_broadcasting_a_kernel_value_wider_starts_its_own_kernel() {
    // The relu computes 4 elements, the add 12: fused, the relu would run three times.
    let text = r#"graph g(%a: f32[4], %b: f32[3,4]) -> (%y: f32[3,4]) {
  %0 = relu(%a) : f32[4] "relu"
  %1 = add(%0, %b) : f32[3,4] "add"
  return %1
}"#;
    let (g, printed) = fuse(text);
    assert!(
        kinds(&g).is_empty(),
        "two kernels of one op each stay plain nodes"
    );
    assert_eq!(kiln_passes::op_count(&g), 2);
    insta::assert_snapshot!(printed);
}

#[test]
fn an_op_may_feed_two_kernels_and_several_kernel_outputs() {
    // The relu is returned and also feeds two consumers inside its kernel.
    let text = r#"graph g(%x: f32[2,3]) -> (%r: f32[2,3], %y: f32[2,3]) {
  @k = f32[] [2.0]
  %0 = relu(%x) : f32[2,3] "relu"
  %1 = mul(%0, @k) : f32[2,3] "twice"
  %2 = sigmoid(%0) : f32[2,3] "gate"
  %3 = mul(%1, %2) : f32[2,3] "gated"
  return %0, %3
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["relu+mul+sigmoid+mul"]);
    insta::assert_snapshot!(printed);
}

#[test]
fn small_cnn_fuses_to_one_kernel_per_conv_and_pool_and_the_same_results() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/models/small_cnn/model.onnx"
    );
    let before = kiln_bridges::onnx::load(std::path::Path::new(path)).unwrap();
    let mut after = before.clone();
    let mut p = Pipeline::empty(Level::O2);
    p.push(Fusion);
    p.run(
        &mut after,
        &Options {
            verify: true,
            ..Options::default()
        },
    )
    .unwrap();
    let inputs: Vec<Tensor> = (0..before.inputs.len())
        .map(|i| sample(&before, i))
        .collect();
    assert_eq!(
        kiln_ir::eval::run_graph(&before, &inputs).unwrap(),
        kiln_ir::eval::run_graph(&after, &inputs).unwrap()
    );
    for body in kernels(&after) {
        KernelView::of(body).unwrap();
    }
    insta::assert_snapshot!(kiln_passes::fusion::kernel_kinds(&after)
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join("\n"));
    // Deterministic: fusing again from scratch prints the same IR.
    let mut again = before.clone();
    p.run(&mut again, &Options::default()).unwrap();
    assert_eq!(
        print(&after, Weights::Elided),
        print(&again, Weights::Elided)
    );
}

#[test]
fn unknown_dims_still_fuse_where_an_op_keeps_its_input_shape() {
    // The matmul's batch dim is known only at run time, but adding a bias and scaling by a
    // scalar provably keep it; adding a wider tensor does not.
    let text = r#"graph g(%x: f32[2,3], %w: f32[3,4], %z: f32[2,4]) -> (%y: f32[?,4], %u: f32[?,4]) {
  @b = f32[4] [0.5,-0.5,1.0,0.0]
  @s = f32[] [2.0]
  %0 = matmul(%x, %w) : f32[?,4] "mm"
  %1 = add(%0, @b) : f32[?,4] "bias"
  %2 = mul(%1, @s) : f32[?,4] "scale"
  %3 = add(%2, %z) : f32[?,4] "wider"
  return %2, %3
}"#;
    let (g, printed) = fuse(text);
    assert_eq!(kinds(&g), ["matmul+add+mul"]);
    insta::assert_snapshot!(printed);
}
