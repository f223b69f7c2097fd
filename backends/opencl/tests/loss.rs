//! OPENCL against REFERENCE for the losses, scatter/gather_nd, one_hot, topk,
//! reverse_sequence, bitcast and center_crop_pad generators: odd shapes, and each attribute
//! that changes the generated code. Each test skips (printing why) only when this machine
//! has no OpenCL platform; CI installs PoCL, so they run there.

use kiln_backends::Backend;
use kiln_ir::{text, Tensor};
use kiln_opencl::OpenCl;

mod common;
use common::{check, data};

/// Deterministic integers in [0, m).
fn ints(shape: &[usize], m: i64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<i64> = (0..n as i64).map(|i| (i * 7 + 3) % m).collect();
    Tensor::new(shape.to_vec(), v).unwrap()
}

#[test]
fn nll_loss_reductions_weights_and_ignore_index() {
    // Class 2 is ignored; the target holds it (ints cycles through 0..5).
    let src = r#"graph g(%x: f32[3,5,2,3], %t: i64[3,2,3], %w: f32[5]) -> (%none: f32[3,2,3], %mean: f32[], %sum: f32[], %plain: f32[]) {
  %0 = nll_loss(%x, %t, %w) {reduction=none, ignore_index=2} : f32[3,2,3] "none"
  %1 = nll_loss(%x, %t, %w) {reduction=mean, ignore_index=2} : f32[] "mean"
  %2 = nll_loss(%x, %t) {reduction=sum} : f32[] "sum"
  %3 = nll_loss(%x, %t) {reduction=mean} : f32[] "plain"
  return %0, %1, %2, %3
}"#;
    let w = Tensor::new(vec![5], vec![0.5f32, 1.0, 2.0, 0.25, 3.0]).unwrap();
    check(src, &[data(&[3, 5, 2, 3]), ints(&[3, 2, 3], 5), w]);
}

#[test]
fn nll_loss_mean_of_only_ignored_targets_is_nan() {
    let src = r#"graph g(%x: f64[2,3], %t: i32[2]) -> (%mean: f64[]) {
  %0 = nll_loss(%x, %t) {reduction=mean, ignore_index=-1} : f64[] "mean"
  return %0
}"#;
    let x = Tensor::new(vec![2, 3], vec![0.1f64, 0.2, 0.3, 0.4, 0.5, 0.6]).unwrap();
    check(src, &[x, Tensor::new(vec![2], vec![-1i32, -1]).unwrap()]);
}

#[test]
fn softmax_cross_entropy_with_log_prob() {
    let src = r#"graph g(%x: f32[2,4,3], %t: i64[2,3], %w: f32[4]) -> (%mean: f32[], %lp: f32[2,4,3], %none: f32[2,3], %sum: f32[]) {
  %0 = softmax_cross_entropy_loss(%x, %t, %w) {reduction=mean, ignore_index=0} : (f32[], f32[2,4,3]) "sce"
  %1 = softmax_cross_entropy_loss(%x, %t) {reduction=none} : f32[2,3] "none"
  %2 = softmax_cross_entropy_loss(%x, %t, %w) {reduction=sum} : f32[] "sum"
  return %0.0, %0.1, %1, %2
}"#;
    let w = Tensor::new(vec![4], vec![1.5f32, 0.5, 1.0, 2.0]).unwrap();
    check(src, &[data(&[2, 4, 3]), ints(&[2, 3], 4), w]);
}

#[test]
fn scatter_elements_every_reduction_with_duplicates() {
    // Indices [2,2] into data [3,4] along axis 1, with a duplicate and a negative index.
    let mut src = String::from("graph g(%d: f32[3,4], %i: i64[2,2], %u: f32[2,2]) -> (");
    let kinds = ["none", "add", "mul", "max", "min"];
    src += &kinds.iter().map(|k| format!("%{k}: f32[3,4]")).collect::<Vec<_>>().join(", ");
    src += ") {\n";
    for (j, k) in kinds.iter().enumerate() {
        src += &format!("  %{j} = scatter_elements(%d, %i, %u) {{axis=-1, reduction={k}}} : f32[3,4] \"{k}\"\n");
    }
    src += "  return %0, %1, %2, %3, %4\n}";
    let i = Tensor::new(vec![2, 2], vec![1i64, 1, -1, 0]).unwrap();
    let u = Tensor::new(vec![2, 2], vec![f32::NAN, 3.0, -1.5, 0.5]).unwrap();
    check(&src, &[data(&[3, 4]), i, u.clone()]);
    // Without the NaN, so max and min compare numbers.
    let u = Tensor::new(vec![2, 2], vec![2.0f32, 3.0, -1.5, 0.5]).unwrap();
    check(&src, &[data(&[3, 4]), Tensor::new(vec![2, 2], vec![1i64, 1, -1, 0]).unwrap(), u]);
}

#[test]
fn scatter_nd_and_gather_nd() {
    // Slices of data: index tuples of length 1 with a duplicate and a negative index;
    // gather_nd with one batch dim; element tuples (length 2) multiplied into integers.
    let src = r#"graph g(%d: f32[4,3,2], %i: i64[3,1], %u: f32[3,3,2], %e: f32[2,3,2], %b: i64[2,2,1]) -> (%add: f32[4,3,2], %none: f32[4,3,2], %g: f32[2,2,2], %m: i32[2,3]) {
  %0 = scatter_nd(%d, %i, %u) {reduction=add} : f32[4,3,2] "add"
  %1 = scatter_nd(%d, %i, %u) {reduction=none} : f32[4,3,2] "none"
  %2 = gather_nd(%e, %b) {batch_dims=1} : f32[2,2,2] "gnd"
  @ei = i64[3,2] [0,1,1,2,0,1]
  @ed = i32[2,3] [1,2,3,4,5,6]
  @eu = i32[3] [10,20,30]
  %3 = scatter_nd(@ed, @ei, @eu) {reduction=mul} : i32[2,3] "elems"
  return %0, %1, %2, %3
}"#;
    let i = Tensor::new(vec![3, 1], vec![2i64, -1, 2]).unwrap();
    let b = Tensor::new(vec![2, 2, 1], vec![2i64, 0, -1, 1]).unwrap();
    check(src, &[data(&[4, 3, 2]), i, data(&[3, 3, 2]), data(&[2, 3, 2]), b]);
}

#[test]
fn one_hot_axes_and_out_of_range_indices() {
    let src = r#"graph g(%i: i64[2,3], %f: f32[2,3]) -> (%a: f32[2,5,3], %b: i32[2,3,5]) {
  @depth = i64[] [5]
  @v = f32[2] [-1.0, 2.5]
  @vi = i32[2] [0, 7]
  %0 = one_hot(%i, @depth, @v) {axis=1} : f32[2,5,3] "a"
  %1 = one_hot(%f, @depth, @vi) {axis=-1} : i32[2,3,5] "b"
  return %0, %1
}"#;
    let i = Tensor::new(vec![2, 3], vec![0i64, 4, -1, -5, 5, -6]).unwrap();
    let f = Tensor::new(vec![2, 3], vec![1.7f32, -0.5, -2.2, 4.9, 9.0, 3.0]).unwrap();
    check(src, &[i, f]);
}

#[test]
fn topk_largest_smallest_ties_and_nan() {
    let src = r#"graph g(%x: f32[3,5], %n: i32[2,6]) -> (%v: f32[3,3], %i: i64[3,3], %s: f32[3,1], %sj: i64[3,1], %sv: i32[2,6], %si: i64[2,6], %iv: i32[1,6]) {
  @k = i64[1] [3]
  @k2 = i64[1] [1]
  @k0 = i64[1] [2]
  %0 = topk(%x, @k) {axis=1, largest=true, sorted=true} : (f32[3,3], i64[3,3]) "large"
  %1 = topk(%x, @k2) {axis=-1, largest=false, sorted=false} : (f32[3,1], i64[3,1]) "small"
  %2 = topk(%n, @k0) {axis=0, largest=false, sorted=true} : (i32[2,6], i64[2,6]) "ints"
  %3 = topk(%n, @k2) {axis=0, largest=true, sorted=true} : (i32[1,6], i64[1,6]) "intl"
  return %0.0, %0.1, %1.0, %1.1, %2.0, %2.1, %3.0
}"#;
    let x = Tensor::new(vec![3, 5], vec![1.0f32, 3.0, 3.0, -1.0, 2.0, f32::NAN, 0.5, f32::NAN, 0.5, 7.0, -2.0, -2.0, -2.0, -2.0, -2.0]).unwrap();
    let n = Tensor::new(vec![2, 6], vec![4i32, 1, 1, -3, 0, 9, 4, 2, 1, -3, -1, 9]).unwrap();
    check(src, &[x, n]);
}

#[test]
fn reverse_sequence_both_layouts() {
    let src = r#"graph g(%x: f32[4,3,2], %l: i64[3], %y: f32[3,4], %m: i64[3]) -> (%a: f32[4,3,2], %b: f32[3,4]) {
  %0 = reverse_sequence(%x, %l) {batch_axis=1, time_axis=0} : f32[4,3,2] "time"
  %1 = reverse_sequence(%y, %m) {batch_axis=0, time_axis=1} : f32[3,4] "batch"
  return %0, %1
}"#;
    let l = Tensor::new(vec![3], vec![4i64, 0, 3]).unwrap();
    let m = Tensor::new(vec![3], vec![1i64, 4, 2]).unwrap();
    check(src, &[data(&[4, 3, 2]), l, data(&[3, 4]), m]);
}

#[test]
fn bitcast_between_same_size_types() {
    let src = r#"graph g(%x: f32[2,3], %i: i64[3], %b: bool[4]) -> (%a: i32[2,3], %f: f32[2,3], %d: f64[3], %u: u8[4]) {
  %0 = bitcast(%x) {to=i32} : i32[2,3] "f2i"
  %1 = bitcast(%0) {to=f32} : f32[2,3] "i2f"
  %2 = bitcast(%i) {to=f64} : f64[3] "i2d"
  %3 = bitcast(%b) {to=u8} : u8[4] "b2u"
  return %0, %1, %2, %3
}"#;
    let i = Tensor::new(vec![3], vec![4607182418800017408i64, -4616189618054758400, 1]).unwrap();
    let b = Tensor::new(vec![4], vec![true, false, false, true]).unwrap();
    check(src, &[data(&[2, 3]), i, b]);
}

#[test]
fn center_crop_pad_crops_and_pads_chosen_axes() {
    let src = r#"graph g(%x: f32[5,4,3]) -> (%a: f32[3,7,3], %b: f32[5,2,6]) {
  @s = i64[2] [3,7]
  @t = i64[2] [6,2]
  %0 = center_crop_pad(%x, @s) {axes=[0,1]} : f32[3,7,3] "crop_pad"
  %1 = center_crop_pad(%x, @t) {axes=[-1,1]} : f32[5,2,6] "hwc"
  return %0, %1
}"#;
    check(src, &[data(&[5, 4, 3])]);
}

#[test]
fn compress_with_a_pinned_or_constant_condition() {
    // The condition given as a graph input decides the output shape: the device compiles
    // on the first run with it pinned as a constant.
    let src = r#"graph g(%x: f32[3,4], %c: bool[4]) -> (%a: f32[3,?], %b: f32[3], %z: f32[0,4]) {
  @flat = bool[5] [false,true,false,true,true]
  @none = bool[2] [false,false]
  %0 = compress(%x, %c) {axis=-1} : f32[3,?] "axis"
  %1 = compress(%x, @flat) : f32[3] "flat"
  %2 = compress(%x, @none) {axis=0} : f32[0,4] "empty"
  return %0, %1, %2
}"#;
    let c = Tensor::new(vec![4], vec![true, false, true, true]).unwrap();
    check(src, &[data(&[3, 4]), c]);
}

#[test]
fn quantize_dequantize_per_tensor_axis_and_block() {
    // Halves (0.5, 1.5, -2.5 after scaling) check rounding half to even; 300 saturates.
    let src = r#"graph g(%x: f32[2,6]) -> (%q: u8[2,6], %a: i8[2,6], %b: i16[2,6], %d: f32[2,6], %e: f32[2,6], %y: u8[2,6], %s: f32[], %z: u8[]) {
  @s1 = f32[] [0.5]
  @z1 = u8[] [128]
  @sa = f32[6] [0.5, 1.0, 0.25, 2.0, 0.01, 1.5]
  @za = i8[6] [0, 1, -1, 2, -128, 127]
  @sb = f32[2,2] [0.5, 0.2, 1.0, 0.03]
  @zb = i16[2,2] [-3, 7, 0, 1000]
  %0 = quantize_linear(%x, @s1, @z1) {axis=1, block_size=0, saturate=true} : u8[2,6] "q"
  %1 = quantize_linear(%x, @sa, @za) {axis=-1, block_size=0, saturate=true} : i8[2,6] "qa"
  %2 = quantize_linear(%x, @sb, @zb) {axis=1, block_size=4, saturate=true} : i16[2,6] "qb"
  %3 = dequantize_linear(%1, @sa, @za) {axis=1, block_size=0} : f32[2,6] "da"
  %4 = dequantize_linear(%2, @sb, @zb) {axis=1, block_size=4} : f32[2,6] "db"
  %5 = dynamic_quantize_linear(%x) : (u8[2,6], f32[], u8[]) "dyn"
  return %0, %1, %2, %3, %4, %5.0, %5.1, %5.2
}"#;
    let x = Tensor::new(vec![2, 6], vec![0.25f32, 0.75, -1.25, 3.0, 300.0, -7.3, 1.0, -0.5, 2.2, f32::NAN, -0.013, 0.9]).unwrap();
    check(src, &[x]);
    check(src, &[data(&[2, 6])]);
}

#[test]
fn integer_and_quantized_matmul() {
    // Batched A with a zero point per row, B with one per column; QLinearMatMul with a
    // per-column b_scale, saturating into i8.
    let src = r#"graph g(%a: u8[2,3,4], %b: u8[4,5], %c: i8[3,4], %d: i8[4]) -> (%p: i32[2,3,5], %q: i8[3,5], %v: i32[3]) {
  @za = u8[3] [0, 128, 7]
  @zb = u8[5] [1, 2, 250, 0, 9]
  %0 = matmul_integer(%a, %b, @za, @zb) : i32[2,3,5] "mmi"
  @sa = f32[] [0.05]
  @zc = i8[] [-3]
  @sb = f32[5] [0.1, 0.02, 0.5, 0.3, 0.001]
  @zd = i8[] [4]
  @sy = f32[] [0.2]
  @zy = i8[] [-10]
  @e = i8[4,5] [1,-2,3,-4,5, 6,-7,8,-9,10, 11,-12,13,-14,15, 127,-128,0,64,-64]
  %1 = qlinear_matmul(%c, @sa, @zc, @e, @sb, @zd, @sy, @zy) : i8[3,5] "qmm"
  %2 = matmul_integer(%c, %d) : i32[3] "vec"
  return %0, %1, %2
}"#;
    let u8s = |shape: &[usize], mul: usize| {
        let n: usize = shape.iter().product();
        Tensor::new(shape.to_vec(), (0..n).map(|i| (i * mul % 256) as u8).collect::<Vec<_>>()).unwrap()
    };
    let i8s = |shape: &[usize], mul: usize| {
        let n: usize = shape.iter().product();
        Tensor::new(shape.to_vec(), (0..n).map(|i| (i * mul % 256) as u8 as i8).collect::<Vec<_>>()).unwrap()
    };
    check(src, &[u8s(&[2, 3, 4], 37), u8s(&[4, 5], 91), i8s(&[3, 4], 53), i8s(&[4], 101)]);
}

#[test]
fn integer_and_quantized_conv() {
    // Two groups, stride 2 with padding, w zero points per output channel, an i32 bias,
    // and a y scale small enough to saturate.
    let src = r#"graph g(%x: u8[1,4,5,5], %w: u8[4,2,3,3]) -> (%y: i32[1,4,3,3], %q: u8[1,4,3,3]) {
  @zx = u8[] [3]
  @zw = u8[4] [0, 100, 7, 255]
  %0 = conv_integer(%x, %w, @zx, @zw) {auto_pad=explicit, dilations=[], group=2, kernel_shape=[3,3], pads=[1,1,1,1], strides=[2,2]} : i32[1,4,3,3] "ci"
  @sx = f32[] [0.02]
  @sw = f32[4] [0.5, 0.01, 0.003, 0.2]
  @sy = f32[] [0.7]
  @zy = u8[] [120]
  @b = i32[4] [-500, 0, 12345, -2147483648]
  %1 = qlinear_conv(%x, @sx, @zx, %w, @sw, @zw, @sy, @zy, @b) {auto_pad=same_upper, dilations=[], group=2, kernel_shape=[3,3], pads=[], strides=[2,2]} : u8[1,4,3,3] "qc"
  return %0, %1
}"#;
    let u8s = |shape: &[usize], mul: usize| {
        let n: usize = shape.iter().product();
        Tensor::new(shape.to_vec(), (0..n).map(|i| (i * mul % 256) as u8).collect::<Vec<_>>()).unwrap()
    };
    check(src, &[u8s(&[1, 4, 5, 5], 37), u8s(&[4, 2, 3, 3], 91)]);
}

#[test]
fn fused_outputs_folded_to_constants_become_constants() {
    // With %s pinned on the first run, the first kernel's outputs are all shape arithmetic
    // (the kernel goes away) and the second's first output is (it keeps computing the
    // relu). Both kernels' outputs are read by other nodes and by the graph's outputs.
    let src = r#"graph g(%x: f32[5,4], %s: i64[2]) -> (%y: f32[?,?], %e: i64[2], %r: f32[5,4]) {
  %0 = fused(%s) {
    body=graph "div+add"(%x0: i64[2]) -> (%y0: i64[2], %y1: i64[2]) {
      @k = i64[1] [2]
      %0 = div(%x0, @k) : i64[2] "start"
      %1 = add(%0, %x0) : i64[2] "end"
      return %0, %1
    }
  } : (i64[2], i64[2]) "bounds"
  %1 = slice(%x, %0.0, %0.1) : f32[?,?] "y"
  %2 = fused(%s, %x) {
    body=graph "neg+relu"(%x0: i64[2], %x1: f32[5,4]) -> (%y0: i64[2], %y1: f32[5,4]) {
      %0 = neg(%x0) : i64[2] "neg"
      %1 = relu(%x1) : f32[5,4] "relu"
      return %0, %1
    }
  } : (i64[2], f32[5,4]) "mixed"
  return %1, %0.1, %2.1
}"#;
    check(src, &[data(&[5, 4]), Tensor::new(vec![2], vec![2i64, 3]).unwrap()]);
}

#[test]
fn shape_arithmetic_with_unknown_declared_types_folds() {
    // As an unoptimized model declares it (-O0): the shape arithmetic's types are unknown
    // until the input shape is, so folding must judge sizes from the re-inferred types.
    let src = r#"graph g(%x: f32[3,4]) -> (%y: f32[*]) {
  %0 = shape(%x) {start=0} : i64[2] "shape"
  %1 = size(%0) : i64[] "rank"
  @zero = i64[1] [0]
  @one = i64[1] [1]
  %2 = slice(%0, @zero, @one) : i64[?] "prefix"
  %3 = sub(%1, @one) : i64[1] "count"
  %4 = constant_of_shape(%3) {value=i64[1] [-1]} : i64[?] "suffix"
  %5 = concat(%2, %4) {axis=0} : i64[?] "target"
  %6 = reshape(%x, %5) {allowzero=false} : f32[*] "y"
  return %6
}"#;
    check(src, &[data(&[3, 4])]);
}

#[test]
fn refuse_lists_name_these_ops_by_their_kind() {
    let g = text::parse(
        r#"graph g(%d: f32[3,4], %i: i64[2,2], %u: f32[2,2], %t: i64[3]) -> (%s: f32[3,4], %b: i32[3,4], %l: f32[]) {
  %0 = scatter_elements(%d, %i, %u) {axis=1, reduction=add} : f32[3,4] "scatter"
  %1 = bitcast(%0) {to=i32} : i32[3,4] "bits"
  %2 = nll_loss(%d, %t) {reduction=mean} : f32[] "loss"
  return %0, %1, %2
}"#,
        None,
    )
    .unwrap();
    let node = |name: &str| g.node(*g.topo_order().unwrap().iter().find(|&&n| g.node(n).name == name).unwrap());
    let supports = |refuse: &str, name: &str| OpenCl::new().refusing(refuse).supports(&kiln_backends::Kernel { node: node(name) });
    assert!(!supports("movement", "scatter") && supports("elementwise,reduce", "scatter"));
    assert!(!supports("elementwise", "bits") && supports("movement,reduce", "bits"));
    assert!(!supports("reduce", "loss") && supports("movement,elementwise", "loss"));
    assert!(!supports("nll_loss", "loss") && supports("", "loss"));
    let q = text::parse(
        r#"graph g(%a: u8[2,3], %b: u8[3,2]) -> (%y: i32[2,2]) {
  %0 = matmul_integer(%a, %b) : i32[2,2] "mmi"
  return %0
}"#,
        None,
    )
    .unwrap();
    let mmi = q.node(*q.topo_order().unwrap().iter().find(|&&n| q.node(n).name == "mmi").unwrap());
    assert!(!OpenCl::new().refusing("matmul").supports(&kiln_backends::Kernel { node: mmi }));
    assert!(OpenCl::new().refusing("conv,reduce").supports(&kiln_backends::Kernel { node: mmi }));
}
