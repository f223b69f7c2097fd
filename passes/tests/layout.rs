//! The layout pass: NHWC graphs as the TensorFlow and Keras bridges make them (every conv,
//! pool… wrapped in transposes) lose every transpose between two ops; only those the
//! graph's inputs and outputs demand stay. Each test checks the IR after the pass and that
//! the graph computes the same outputs before and after.

use kiln_ir::eval::run_graph;
use kiln_ir::text::{parse, print, Weights};
use kiln_ir::{DType, Dim, Graph, Op, Tensor};
use kiln_passes::layout::{transpose_count, Layout};
use kiln_passes::{Level, Options, Pipeline};

/// Inputs for `g`: symbolic dims are 2, values a fixed spread of positives and negatives.
fn inputs(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let ty = &g.node(n).outputs[0];
            let shape: Vec<usize> = ty
                .shape
                .dims()
                .unwrap()
                .iter()
                .map(|d| if let Dim::Known(k) = d { *k } else { 2 })
                .collect();
            let len: usize = shape.iter().product();
            let vals: Vec<f64> = (0..len).map(|i| (((i * 7 + k * 3) % 17) as f64 - 8.0) * 0.25).collect();
            Tensor::from_f64(ty.dtype, shape, &vals).unwrap()
        })
        .collect()
}

fn assert_same(before: &[Tensor], after: &[Tensor]) {
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(after) {
        assert_eq!((a.dtype(), a.shape()), (b.dtype(), b.shape()));
        for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
            // Reductions may add in another order in the new layout.
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
}

/// Runs the layout pass (verifying the result) and checks the outputs did not change.
fn layout(text: &str) -> Graph {
    let before = parse(text, None).unwrap();
    kiln_ir::verify(&before).unwrap();
    let mut after = before.clone();
    let mut p = Pipeline::empty(Level::O2);
    p.push(Layout);
    p.run(
        &mut after,
        &Options {
            verify: true,
            ..Options::default()
        },
    )
    .unwrap();
    let x = inputs(&before);
    assert_same(&run_graph(&before, &x).unwrap(), &run_graph(&after, &x).unwrap());
    // The signature is kept.
    let sig = |g: &Graph| {
        g.outputs
            .iter()
            .map(|(n, v)| (n.clone(), g.value_type(*v).clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(sig(&before), sig(&after));
    after
}

/// The ops in topological order, with each transpose's perm: a compact view of the IR.
fn ops(g: &Graph) -> Vec<String> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .filter_map(|n| match &g.node(n).op {
            Op::Input | Op::Const { .. } => None,
            Op::Transpose { perm: Some(p) } => Some(format!("transpose{p:?}")),
            op => Some(op.name().to_string()),
        })
        .collect()
}

fn ir(g: &Graph) -> String {
    print(g, Weights::Inline)
}

const CONV: &str = "auto_pad=valid, dilations=[1,1], group=1, kernel_shape=[1,1], pads=[], strides=[1,1]";

/// The Keras pattern: conv wrapped in transposes, batch norm as mul and add on NHWC,
/// relu, a second conv and a residual add.
#[test]
fn transposes_around_convs_vanish_and_channel_constants_become_c_1_1() {
    let text = format!(
        r#"graph g(%x: f32[N,3,3,3]) -> (%y: f32[N,3,3,2]) {{
          @w0 = f32[2,3,1,1] [1, 0, -1, 0.5, 0.5, 0.5]
          @b0 = f32[2] [0.1, -0.2]
          @s = f32[2] [2, 3]
          @t = f32[2] [-1, 1]
          @w1 = f32[2,2,1,1] [1, -1, 0.5, 2]
          %0 = transpose(%x) {{perm=[0,3,1,2]}} : f32[N,3,3,3]
          %1 = conv(%0, @w0, @b0) {{{CONV}}} : f32[N,2,3,3]
          %2 = transpose(%1) {{perm=[0,2,3,1]}} : f32[N,3,3,2]
          %3 = mul(%2, @s) : f32[N,3,3,2]
          %4 = add(%3, @t) : f32[N,3,3,2]
          %5 = relu(%4) : f32[N,3,3,2]
          %6 = transpose(%5) {{perm=[0,3,1,2]}} : f32[N,2,3,3]
          %7 = conv(%6, @w1) {{{CONV}}} : f32[N,2,3,3]
          %8 = transpose(%7) {{perm=[0,2,3,1]}} : f32[N,3,3,2]
          %9 = add(%8, %5) : f32[N,3,3,2]
          return %9
        }}"#
    );
    let g = layout(&text);
    assert_eq!(
        ops(&g),
        [
            "transpose[0, 3, 1, 2]",
            "conv",
            "mul",
            "add",
            "relu",
            "conv",
            "add",
            "transpose[0, 2, 3, 1]"
        ]
    );
    assert_eq!(
        ir(&g),
        r#"graph g(%x: f32[N,3,3,3]) -> (%y: f32[N,3,3,2]) {
  @w0 = f32[2,3,1,1] [1.0,0.0,-1.0,0.5,0.5,0.5]
  @b0 = f32[2] [0.1,-0.2]
  @w1 = f32[2,2,1,1] [1.0,-1.0,0.5,2.0]
  %0 = transpose(%x) {perm=[0,3,1,2]} : f32[N,3,3,3] "x/layout"
  %1 = conv(%0, @w0, @b0) {auto_pad=valid, dilations=[1,1], group=1, kernel_shape=[1,1], pads=[], strides=[1,1]} : f32[N,2,3,3]
  @0 = f32[2,1,1] [2.0,3.0] "layout1"
  %2 = mul(%1, @0) : f32[N,2,3,3]
  @1 = f32[2,1,1] [-1.0,1.0] "layout1"
  %3 = add(%2, @1) : f32[N,2,3,3]
  %4 = relu(%3) : f32[N,2,3,3]
  %5 = conv(%4, @w1) {auto_pad=valid, dilations=[1,1], group=1, kernel_shape=[1,1], pads=[], strides=[1,1]} : f32[N,2,3,3]
  %6 = add(%5, %4) : f32[N,2,3,3]
  %7 = transpose(%6) {perm=[0,2,3,1]} : f32[N,3,3,2] "layout"
  return %7
}
"#
    );
}

/// Elementwise ops with attributes, scalar and per-channel constants, a constant
/// condition: the transpose into NHWC meets its inverse after them and both vanish.
#[test]
fn elementwise_ops_with_attributes_let_transposes_through() {
    let g = layout(
        r#"graph g(%x: f32[1,3,2,2]) -> (%y: f32[1,3,2,2]) {
          @lo = f32[] [-1]
          @hi = f32[] [1.5]
          @cond = bool[2,1,3] [true, false, true, false, true, true]
          @zero = f32[] [0]
          @slope = f32[3] [0.1, 0.2, 0.3]
          %0 = transpose(%x) {perm=[0,2,3,1]} : f32[1,2,2,3]
          %1 = leaky_relu(%0) {alpha=0.5} : f32[1,2,2,3]
          %2 = clip(%1, @lo, @hi) : f32[1,2,2,3]
          %3 = where(@cond, %2, @zero) : f32[1,2,2,3]
          %4 = prelu(%3, @slope) : f32[1,2,2,3]
          %5 = cast(%4) {to=f64} : f64[1,2,2,3]
          %6 = cast(%5) {to=f32} : f32[1,2,2,3]
          %7 = transpose(%6) {perm=[0,3,1,2]} : f32[1,3,2,2]
          return %7
        }"#,
    );
    assert_eq!(ops(&g), ["leaky_relu", "clip", "where", "prelu", "cast", "cast"]);
    let printed = ir(&g);
    // The condition [2,1,3] over H,W,C is [3,2,1] over C,H,W; the slope [3] is [3,1,1].
    assert!(
        printed.contains("bool[3,2,1] [true,false,false,true,true,true]"),
        "{printed}"
    );
    assert!(printed.contains("f32[3,1,1] [0.1,0.2,0.3]"), "{printed}");
}

/// `input → pad → transpose → conv`: the transpose the input's NHWC layout demands moves
/// up to the input, and the pads follow the axes.
#[test]
fn a_transpose_below_a_pad_moves_up_to_the_input() {
    let g = layout(&format!(
        r#"graph g(%x: f32[N,2,2,2]) -> (%y: f32[N,4,4,2]) {{
          @pads = i64[8] [0,1,1,0, 0,1,1,0]
          @w = f32[2,2,1,1] [2, 1, -1, 0.5]
          %0 = pad(%x, @pads) {{mode=constant}} : f32[N,4,4,2]
          %1 = transpose(%0) {{perm=[0,3,1,2]}} : f32[N,2,4,4]
          %2 = conv(%1, @w) {{{CONV}}} : f32[N,2,4,4]
          %3 = transpose(%2) {{perm=[0,2,3,1]}} : f32[N,4,4,2]
          return %3
        }}"#
    ));
    assert_eq!(
        ops(&g),
        ["transpose[0, 3, 1, 2]", "pad", "conv", "transpose[0, 2, 3, 1]"]
    );
    assert!(ir(&g).contains("i64[8] [0,0,1,1,0,0,1,1]"), "{}", ir(&g));
}

/// Global average pooling of NHWC (a mean over H and W without kept dims) gives [N,C] in
/// either layout; a squeeze-excite scale (mean with kept dims, then a product with the
/// feature map) stays in the held layout.
#[test]
fn reductions_remap_their_axes() {
    let g = layout(
        r#"graph g(%x: f32[N,3,2,2]) -> (%gap: f32[N,3], %se: f32[N,3,2,2]) {
          @hw = i64[2] [1,2]
          %0 = transpose(%x) {perm=[0,2,3,1]} : f32[N,2,2,3]
          %1 = reduce(%0, @hw) {kind=mean, keepdims=false, noop_with_empty_axes=false} : f32[N,3]
          %2 = reduce(%0, @hw) {kind=max, keepdims=true, noop_with_empty_axes=false} : f32[N,1,1,3]
          %3 = sigmoid(%2) : f32[N,1,1,3]
          %4 = mul(%0, %3) : f32[N,2,2,3]
          %5 = transpose(%4) {perm=[0,3,1,2]} : f32[N,3,2,2]
          return %1, %5
        }"#,
    );
    assert_eq!(ops(&g), ["reduce", "reduce", "sigmoid", "mul"]);
    assert!(ir(&g).contains("i64[2] [2,3]"), "{}", ir(&g));
}

/// Concat and split along the channels of NHWC become concat and split along axis 1.
#[test]
fn concat_and_split_follow_the_channel_axis() {
    let g = layout(
        r#"graph g(%a: f32[1,2,2,2], %b: f32[1,1,2,2]) -> (%p: f32[1,1,2,2], %q: f32[1,2,2,2]) {
          @sizes = i64[2] [1,2]
          %0 = transpose(%a) {perm=[0,2,3,1]} : f32[1,2,2,2]
          %1 = transpose(%b) {perm=[0,2,3,1]} : f32[1,2,2,1]
          %2 = concat(%0, %1) {axis=-1} : f32[1,2,2,3]
          %3 = split(%2, @sizes) {axis=3} : (f32[1,2,2,1], f32[1,2,2,2])
          %4 = transpose(%3.0) {perm=[0,3,1,2]} : f32[1,1,2,2]
          %5 = transpose(%3.1) {perm=[0,3,1,2]} : f32[1,2,2,2]
          return %4, %5
        }"#,
    );
    assert_eq!(ops(&g), ["concat", "split"]);
    let printed = ir(&g);
    assert!(
        printed.contains("concat(%a, %b) {axis=1}") && printed.contains("{axis=1} : (f32[1,1,2,2], f32[1,2,2,2])"),
        "{printed}"
    );
}

/// A crop (slice over H and W) and a softmax over the channels run on NCHW; the one
/// transpose the NHWC output demands stays, at the output.
#[test]
fn slice_and_softmax_remap_their_axes_up_to_the_output() {
    let g = layout(
        r#"graph g(%x: f32[N,2,4,4]) -> (%y: f32[N,2,2,2]) {
          @starts = i64[2] [1,1]
          @ends = i64[2] [-1,-1]
          @axes = i64[2] [1,2]
          %0 = transpose(%x) {perm=[0,2,3,1]} : f32[N,4,4,2]
          %1 = slice(%0, @starts, @ends, @axes) : f32[N,2,2,2]
          %2 = softmax(%1) {axis=-1} : f32[N,2,2,2]
          return %2
        }"#,
    );
    assert_eq!(ops(&g), ["slice", "softmax", "transpose[0, 2, 3, 1]"]);
    let printed = ir(&g);
    assert!(
        printed.contains("i64[2] [2,3]") && printed.contains("softmax(%0) {axis=1}"),
        "{printed}"
    );
}

/// Upsampling is separable per axis: the scales follow the layout.
#[test]
fn resize_scales_follow_the_axes() {
    let g = layout(
        r#"graph g(%x: f32[1,2,2,2]) -> (%y: f32[1,2,4,4]) {
          @scales = f32[4] [1, 2, 2, 1]
          %0 = transpose(%x) {perm=[0,2,3,1]} : f32[1,2,2,2]
          %1 = resize(%0, _, @scales, _) {antialias=false, axes=[], coordinate_transformation_mode=half_pixel, cubic_coeff_a=-0.75, exclude_outside=false, extrapolation_value=0.0, keep_aspect_ratio_policy=stretch, mode=linear, nearest_mode=floor} : f32[1,4,4,2]
          %2 = transpose(%1) {perm=[0,3,1,2]} : f32[1,2,4,4]
          return %2
        }"#,
    );
    assert_eq!(ops(&g), ["resize"]);
    assert!(ir(&g).contains("f32[4] [1.0,1.0,2.0,2.0]"), "{}", ir(&g));
}

/// A squeeze-excite block as EfficientNet's Keras graph has it: [N,C] reshaped to
/// [N,1,1,C] and transposed to [N,C,1,1] for a 1×1 conv. A transpose that only moves unit
/// axes is a reshape.
#[test]
fn a_transpose_of_unit_axes_becomes_a_reshape() {
    let g = layout(&format!(
        r#"graph g(%x: f32[N,2]) -> (%y: f32[N,1,1,2]) {{
          @shape = i64[4] [0,1,1,2]
          @w = f32[2,2,1,1] [1, 2, 3, 4]
          %0 = reshape(%x, @shape) {{allowzero=false}} : f32[N,1,1,2]
          %1 = transpose(%0) {{perm=[0,3,1,2]}} : f32[N,2,1,1]
          %2 = conv(%1, @w) {{{CONV}}} : f32[N,2,1,1]
          %3 = transpose(%2) {{perm=[0,2,3,1]}} : f32[N,1,1,2]
          return %3
        }}"#
    ));
    assert_eq!(ops(&g), ["reshape", "reshape", "conv", "reshape"]);
}

/// Squeeze, unsqueeze and an arg-max across held layouts.
#[test]
fn squeeze_unsqueeze_and_arg_max_remap_their_axes() {
    let g = layout(
        r#"graph g(%x: f32[1,3,1,2]) -> (%y: f32[1,3,1,2], %i: i64[1,1,2]) {
          @one = i64[1] [1]
          %0 = transpose(%x) {perm=[0,2,3,1]} : f32[1,1,2,3]
          %1 = squeeze(%0, @one) : f32[1,2,3]
          %2 = exp(%1) : f32[1,2,3]
          %3 = unsqueeze(%2, @one) : f32[1,1,2,3]
          %4 = transpose(%3) {perm=[0,3,1,2]} : f32[1,3,1,2]
          %5 = arg_reduce(%0) {max=true, axis=3, keepdims=false, select_last_index=false} : i64[1,1,2]
          return %4, %5
        }"#,
    );
    assert_eq!(transpose_count(&g), 0, "{}", ir(&g));
}

/// Keras `Flatten` after NHWC conv blocks, an inference Dropout, then `Dense`: the rows of
/// the dense weight take the layout, so no transpose is left before the flatten.
#[test]
fn a_flatten_into_a_dense_layer_permutes_the_weight_rows() {
    let g = layout(&format!(
        r#"graph g(%x: f32[N,2,2,2]) -> (%y: f32[N,2]) {{
          @w = f32[2,2,1,1] [1, -1, 2, 0.5]
          @dense = f32[8,2] [1,2, 3,4, 5,6, 7,8, 9,10, 11,12, 13,14, 15,16]
          %0 = conv(%x, @w) {{{CONV}}} : f32[N,2,2,2]
          %1 = transpose(%0) {{perm=[0,2,3,1]}} : f32[N,2,2,2]
          %2 = flatten(%1) {{axis=1}} : f32[N,8]
          %3 = identity(%2) : f32[N,8]
          %4 = matmul(%3, @dense) : f32[N,2]
          return %4
        }}"#
    ));
    assert_eq!(ops(&g), ["conv", "flatten", "identity", "matmul"]);
    // Row (h,w,c) of the NHWC weight is row (c,h,w) of the new one.
    assert!(
        ir(&g).contains("f32[8,2] [1.0,2.0,5.0,6.0,9.0,10.0,13.0,14.0,3.0,4.0,7.0,8.0,11.0,12.0,15.0,16.0]"),
        "{}",
        ir(&g)
    );
}

/// A whole small Keras CNN on an NHWC input: conv with bias, batch norm as mul and add,
/// relu, max pool, flatten, dense, softmax. No transpose is left between two ops; the one
/// the one-channel NHWC input needs moves a unit axis only, so it is a reshape.
#[test]
fn a_small_nhwc_cnn_keeps_no_transpose_between_ops() {
    let g = layout(
        r#"graph small_cnn(%image: f32[N,4,4,1]) -> (%probs: f32[N,3]) {
          @w = f32[2,1,3,3] [1,0,-1, 2,0,-2, 1,0,-1, 0.5,0.5,0.5, 0,0,0, -0.5,-0.5,-0.5]
          @b = f32[2] [0.1, -0.1]
          @gamma = f32[2] [1.5, 0.5]
          @beta = f32[2] [0.2, -0.3]
          @dense = f32[8,3] [1,0,0, 0,1,0, 0,0,1, 1,1,0, 0,1,1, 1,0,1, 1,1,1, -1,0,1]
          @bias = f32[3] [0, 0.5, -0.5]
          %0 = transpose(%image) {perm=[0,3,1,2]} : f32[N,1,4,4]
          %1 = conv(%0, @w, @b) {auto_pad=same_upper, dilations=[1,1], group=1, kernel_shape=[3,3], pads=[], strides=[1,1]} : f32[N,2,4,4]
          %2 = transpose(%1) {perm=[0,2,3,1]} : f32[N,4,4,2]
          %3 = mul(%2, @gamma) : f32[N,4,4,2]
          %4 = add(%3, @beta) : f32[N,4,4,2]
          %5 = relu(%4) : f32[N,4,4,2]
          %6 = transpose(%5) {perm=[0,3,1,2]} : f32[N,2,4,4]
          %7 = pool(%6) {kind=max, auto_pad=valid, ceil_mode=false, count_include_pad=false, dilations=[], kernel_shape=[2,2], pads=[], strides=[2,2], storage_order=0, p=2} : f32[N,2,2,2]
          %8 = transpose(%7) {perm=[0,2,3,1]} : f32[N,2,2,2]
          %9 = flatten(%8) {axis=1} : f32[N,8]
          %10 = matmul(%9, @dense) : f32[N,3]
          %11 = add(%10, @bias) : f32[N,3]
          %12 = softmax(%11) {axis=-1} : f32[N,3]
          return %12
        }"#,
    );
    assert_eq!(
        ops(&g),
        ["reshape", "conv", "mul", "add", "relu", "pool", "flatten", "matmul", "add", "softmax"]
    );
}

/// A held value that two graph outputs need in the model's layout would cost two
/// transposes where the graph has one: the pass leaves such a graph as it was.
#[test]
fn the_pass_never_adds_transposes() {
    let text = format!(
        r#"graph g(%x: f32[1,2,2,2]) -> (%a: f32[1,2,2,2], %b: f32[1,2,2,2]) {{
          @w = f32[2,2,1,1] [1, -1, 2, 0.5]
          %0 = conv(%x, @w) {{{CONV}}} : f32[1,2,2,2]
          %1 = transpose(%0) {{perm=[0,2,3,1]}} : f32[1,2,2,2]
          %2 = relu(%1) : f32[1,2,2,2]
          return %1, %2
        }}"#
    );
    let g = layout(&text);
    assert_eq!(ir(&g), ir(&parse(&text, None).unwrap()));
}

/// Two transposes in a row are one.
#[test]
fn consecutive_transposes_merge() {
    let g = layout(
        r#"graph g(%x: f32[2,3,4]) -> (%y: f32[4,2,3]) {
          %0 = transpose(%x) {perm=[1,2,0]} : f32[3,4,2]
          %1 = transpose(%0) {perm=[1,2,0]} : f32[4,2,3]
          return %1
        }"#,
    );
    assert_eq!(ops(&g), ["transpose[2, 0, 1]"]);
}

/// The -O2 pipeline runs the layout pass.
#[test]
fn the_full_pipeline_runs_layout() {
    assert!(Pipeline::standard(Level::O2).names().contains(&"layout"));
    assert!(!Pipeline::standard(Level::O1).names().contains(&"layout"));
    let _ = DType::F32;
}

/// TensorFlow's frozen graphs flatten with a Reshape and multiply with a Gemm, here with
/// its weight stored transposed: the weight's columns take the layout.
#[test]
fn a_reshape_into_a_gemm_with_a_transposed_weight_permutes_its_columns() {
    let g = layout(&format!(
        r#"graph g(%x: f32[1,2,2,2]) -> (%y: f32[1,2]) {{
          @w = f32[2,2,1,1] [1, -1, 2, 0.5]
          @shape = i64[2] [1, 8]
          @dense = f32[2,8] [1,2,3,4,5,6,7,8, 9,10,11,12,13,14,15,16]
          %0 = conv(%x, @w) {{{CONV}}} : f32[1,2,2,2]
          %1 = transpose(%0) {{perm=[0,2,3,1]}} : f32[1,2,2,2]
          %2 = reshape(%1, @shape) {{allowzero=true}} : f32[1,8]
          %3 = gemm(%2, @dense) {{alpha=1.0, beta=1.0, trans_a=false, trans_b=true}} : f32[1,2]
          return %3
        }}"#
    ));
    assert_eq!(ops(&g), ["conv", "reshape", "gemm"]);
    assert!(
        ir(&g).contains("f32[2,8] [1.0,3.0,5.0,7.0,2.0,4.0,6.0,8.0,9.0,11.0,13.0,15.0,10.0,12.0,14.0,16.0]"),
        "{}",
        ir(&g)
    );
}
