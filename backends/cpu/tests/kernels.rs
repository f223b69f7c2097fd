//! The CPU device's own kernels against REFERENCE (`ir::eval`): elementwise groups run as
//! generated code, pooling, softmax, normalisation, reductions, concat and transpose, on
//! odd shapes, every padding mode, and NaN where the op gives it a meaning.
//!
//! Tolerance: rtol 1e-4, atol 1e-5 (the zoo's); the reference accumulates in f64, these
//! kernels in f32. NaN must be NaN at the same place.

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::Cpu;
use kiln_ir::{AutoPad, BinaryOp, DType, Graph, Op, PoolKind, Tensor, TensorType, UnaryOp, Value};

mod common;
use common::Rng;

/// `t` with NaN written at the given flat positions.
fn with_nans(t: &Tensor, at: &[usize]) -> Tensor {
    let mut v = t.as_slice::<f32>().unwrap().to_vec();
    for &i in at {
        v[i] = f32::NAN;
    }
    Tensor::new(t.shape().to_vec(), v).unwrap()
}

/// Runs `g` on CPU (2 threads) and on REFERENCE, compares every output, and returns the
/// CPU plan's step kinds.
fn check(g: &Graph, inputs: &[Tensor]) -> Vec<String> {
    check_on(Cpu::new(), g, inputs)
}

/// [`check`] on a given device (the portable kernels' one, say).
fn check_on(cpu: Cpu, g: &Graph, inputs: &[Tensor]) -> Vec<String> {
    kiln_ir::verify(g).unwrap();
    let want = kiln_ir::eval::run_graph(g, inputs).unwrap();
    let exe = cpu
        .compile(&Program::new(g.clone()), &CompileOptions::default())
        .unwrap();
    let got = exe.run(inputs, None).unwrap();
    assert_eq!(got.len(), want.len());
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.shape(), b.shape(), "output {k} shape");
        assert_eq!(a.dtype(), b.dtype(), "output {k} dtype");
        if a.dtype() != DType::F32 {
            assert_eq!(a, b, "output {k}");
            continue;
        }
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let same = if y.is_nan() {
                x.is_nan()
            } else {
                (x - y).abs() <= 1e-5 + 1e-4 * y.abs() || x == y
            };
            assert!(same, "output {k} element {i}: {x} but expected {y}");
        }
    }
    kiln_cpu::program::compile(g).unwrap().kinds()
}

fn input(g: &mut Graph, shape: &[usize]) -> Value {
    let name = format!("x{}", g.inputs.len());
    g.add_input(name, TensorType::known(DType::F32, shape))
}

/// A graph of one op on one f32 input of `shape`.
fn one_op(op: Op, shape: &[usize]) -> Graph {
    let mut g = Graph::new("one");
    let x = input(&mut g, shape);
    let y = g.add1(op, "op", &[x]).unwrap();
    g.add_output("y", y);
    g
}

#[allow(clippy::too_many_arguments)]
fn pool(
    kind: PoolKind,
    kernel: &[i64],
    strides: &[i64],
    pads: &[i64],
    dilations: &[i64],
    auto_pad: AutoPad,
    ceil_mode: bool,
    count_include_pad: bool,
) -> Op {
    Op::Pool {
        kind,
        auto_pad,
        ceil_mode,
        count_include_pad,
        dilations: dilations.to_vec(),
        kernel_shape: kernel.to_vec(),
        pads: pads.to_vec(),
        strides: strides.to_vec(),
        storage_order: 0,
        p: 2,
    }
}

#[test]
fn max_and_average_pooling_match_the_reference_in_every_geometry() {
    let mut rng = Rng(11);
    // Rows of 40 have long runs of columns whose windows lie inside the row (the vector path)
    // besides the border columns. 113 columns give 56 outputs at stride 2 (a whole number
    // of vectors) with an odd padded span; NaN in a plane's first and last columns is where
    // the padded path repeats the border.
    let wide = with_nans(&rng.tensor(&[1, 2, 5, 113]), &[0, 112, 113, 2 * 113 - 1, 5 * 113 + 56]);
    // 19 small planes: two groups of 8 planes in the lanes and 3 left over, NaN in the
    // first, a middle and the last plane.
    let small = with_nans(&rng.tensor(&[1, 19, 6, 7]), &[0, 8 * 42 + 5, 19 * 42 - 1]);
    // Rows of 8 or more: eight planes go into the lanes (and back) eight positions at a
    // time through a register transpose; inception's 17² planes, and 10×11 planes whose
    // rows end in a partial run of eight.
    let rows17 = with_nans(&rng.tensor(&[1, 9, 17, 17]), &[0, 17 * 17 + 16, 8 * 289 + 288]);
    let rows11 = with_nans(&rng.tensor(&[1, 17, 10, 11]), &[0, 110 + 10, 9 * 110 + 55, 17 * 110 - 1]);
    // Eight planes of more than 400 outputs also go into the lanes (at stride 1 here).
    let big = with_nans(&rng.tensor(&[1, 8, 30, 41]), &[0, 1229, 3 * 1230 + 600, 8 * 1230 - 1]);
    // Rows of 300: many blocks of 16 columns per row on the AVX-512 path, and a last one
    // partial at either stride.
    let long = with_nans(&rng.tensor(&[1, 2, 6, 300]), &[37, 300 + 150, 4 * 300 + 299, 11 * 300 + 70]);
    let xs = [rng.tensor(&[2, 3, 11, 9]), with_nans(&rng.tensor(&[1, 2, 7, 40]), &[45, 46, 300]), wide, rng.tensor(&[1, 1, 17, 17]), small, rows17, rows11, big, long];
    // (kernel, strides, pads, dilations, auto_pad, ceil_mode)
    let cases: &[(&[i64], &[i64], &[i64], &[i64], AutoPad, bool)] = &[
        (&[3, 3], &[2, 2], &[1, 1, 1, 1], &[], AutoPad::NotSet, false), // resnet's stem
        (&[3, 3], &[1, 1], &[1, 1, 1, 1], &[], AutoPad::NotSet, false), // inception's average pools
        // Stride 1 with the input's size from uneven pads: the flat AVX-512 path's masks
        // (a column tap that wraps to the next row must read nothing).
        (&[3, 3], &[1, 1], &[0, 2, 2, 0], &[], AutoPad::NotSet, false),
        (&[4, 2], &[1, 1], &[], &[], AutoPad::SameUpper, false),
        (&[2, 2], &[2, 2], &[], &[], AutoPad::NotSet, false),
        (&[3, 2], &[1, 2], &[0, 1, 2, 0], &[], AutoPad::NotSet, false),
        (&[3, 3], &[2, 2], &[], &[], AutoPad::NotSet, true),
        (&[2, 3], &[3, 2], &[1, 0, 1, 1], &[2, 1], AutoPad::NotSet, true),
        (&[3, 3], &[2, 2], &[], &[], AutoPad::SameUpper, false),
        (&[4, 2], &[3, 1], &[], &[], AutoPad::SameLower, false),
        (&[3, 3], &[1, 1], &[], &[2, 2], AutoPad::Valid, false),
    ];
    // Inception's 3×3 planes, in the cases whose windows fit them: the flat path takes 16
    // of them at a time (9 blocks of 16 positions), here a whole run and a short one.
    let tiny = with_nans(&rng.tensor(&[1, 19, 3, 3]), &[4, 2 * 9, 16 * 9 + 8]);
    for kind in [PoolKind::Max, PoolKind::Average] {
        for include_pad in [false, true] {
            for &(k, s, p, d, auto_pad, ceil) in cases {
                let fits = (k.iter().zip(d.iter().chain([&1, &1]))).all(|(&k, &d)| (k - 1) * d < 3);
                let xs = xs.iter().chain(fits.then_some(&tiny));
                for x in xs {
                    let op = pool(kind, k, s, p, d, auto_pad, ceil, include_pad);
                    let g = one_op(op, x.shape());
                    let kinds = check(&g, std::slice::from_ref(x));
                    assert_eq!(kinds, ["pool (native)"]);
                    let portable = Cpu::with_kernel(kiln_cpu::gemm::module::Kernel::Portable);
                    check_on(portable, &g, std::slice::from_ref(x));
                }
            }
        }
    }
}

#[test]
fn one_dimensional_pooling_and_windows_that_see_only_padding() {
    let mut rng = Rng(12);
    let x = rng.tensor(&[1, 4, 13]);
    for kind in [PoolKind::Max, PoolKind::Average] {
        let op = pool(kind, &[4], &[3], &[2, 3], &[], AutoPad::NotSet, true, true);
        check(&one_op(op, x.shape()), std::slice::from_ref(&x));
    }
    // pads larger than the kernel: the first and last windows read no input at all
    // (max gives 0; average 0 / padded count, or NaN without count_include_pad).
    let x = rng.tensor(&[1, 2, 3, 3]);
    for kind in [PoolKind::Max, PoolKind::Average] {
        for include_pad in [false, true] {
            let op = pool(kind, &[2, 2], &[3, 3], &[3, 3, 3, 3], &[], AutoPad::NotSet, false, include_pad);
            check(&one_op(op, x.shape()), std::slice::from_ref(&x));
        }
    }
}

#[test]
fn max_pooling_keeps_a_leading_nan_and_skips_a_later_one() {
    let mut rng = Rng(13);
    // x [1, 1, 4, 4]; 2×2 windows with stride 2: NaN first in window 0, last in window 3.
    let x = with_nans(&rng.tensor(&[1, 1, 4, 4]), &[0, 15]);
    let op = pool(PoolKind::Max, &[2, 2], &[2, 2], &[], &[], AutoPad::NotSet, false, false);
    check(&one_op(op.clone(), x.shape()), std::slice::from_ref(&x));
    let exe = Cpu::new()
        .compile(&Program::new(one_op(op, x.shape())), &CompileOptions::default())
        .unwrap();
    let y = exe.run(std::slice::from_ref(&x), None).unwrap();
    let y = y[0].as_slice::<f32>().unwrap();
    assert!(y[0].is_nan() && !y[3].is_nan());
    let avg = pool(PoolKind::Average, &[2, 2], &[2, 2], &[], &[], AutoPad::NotSet, false, false);
    check(&one_op(avg, x.shape()), &[x]);
}

/// Concat joins blocks along any axis, each thread copying an equal range of the output
/// that may start and end inside a block: small and large (split over the threads)
/// outputs, inputs of different lengths on the axis, an empty one, and a negative axis.
#[test]
fn concat_along_every_axis_in_one_pass_over_the_output() {
    let mut rng = Rng(14);
    let cases: &[(&[&[usize]], i64)] = &[
        (&[&[2, 3, 5], &[2, 1, 5], &[2, 4, 5]], 1),
        (&[&[1, 128, 31, 31], &[1, 32, 31, 31]], 1), // densenet's join, over the threads
        (&[&[3, 7, 200], &[3, 7, 1], &[3, 7, 333]], -1),
        (&[&[4, 3], &[0, 3], &[5, 3]], 0),
        (&[&[400, 300], &[1, 300]], 0),
    ];
    for &(shapes, axis) in cases {
        let mut g = Graph::new("concat");
        let ins: Vec<Value> = shapes.iter().map(|s| input(&mut g, s)).collect();
        let y = g.add1(Op::Concat { axis }, "cat", &ins).unwrap();
        g.add_output("y", y);
        let xs: Vec<Tensor> = shapes.iter().map(|s| rng.tensor(s)).map(|t| if !t.is_empty() { with_nans(&t, &[0]) } else { t }).collect();
        assert_eq!(check(&g, &xs), ["concat (native)"], "{shapes:?} axis {axis}");
    }
}

/// Resize runs natively on the taps `ir::eval` uses, one pass per resized axis: linear
/// upsampling as unet_mix does it, nearest downsampling, cubic, and tf_crop_and_resize
/// with positions outside the input (the extrapolation value); NaN spreads to the
/// outputs whose taps read it.
#[test]
fn resize_in_every_mode_runs_natively() {
    use kiln_ir::{CoordinateTransform as Ct, KeepAspectRatio, NearestMode, ResizeMode as Mode};
    let mut rng = Rng(15);
    let x = with_nans(&rng.tensor(&[1, 3, 9, 13]), &[40, 200]);
    let cases: &[(Mode, Ct, &[f32], Option<&[f32]>)] = &[
        (Mode::Linear, Ct::HalfPixel, &[1.0, 1.0, 2.0, 2.0], None),
        (Mode::Nearest, Ct::Asymmetric, &[1.0, 1.0, 0.5, 0.4], None),
        (Mode::Cubic, Ct::AlignCorners, &[1.0, 1.0, 1.7, 0.8], None),
        (Mode::Linear, Ct::TfCropAndResize, &[1.0, 1.0, 1.5, 1.5], Some(&[0.0, 0.0, -0.2, 0.1, 1.0, 1.0, 0.9, 1.3])),
    ];
    for &(mode, ct, scales, roi) in cases {
        let mut g = Graph::new("resize");
        let xi = input(&mut g, x.shape());
        let roi = roi.map(|r| g.add_const("roi", Tensor::new(vec![r.len()], r.to_vec()).unwrap()));
        let scales = g.add_const("scales", Tensor::new(vec![4], scales.to_vec()).unwrap());
        let op = Op::Resize {
            antialias: false,
            axes: vec![],
            coordinate_transformation_mode: ct,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 7.0,
            keep_aspect_ratio_policy: KeepAspectRatio::Stretch,
            mode,
            nearest_mode: NearestMode::Floor,
        };
        let y = g.add(op, "resize", &[Some(xi), roi, Some(scales)], 1).unwrap();
        g.add_output("y", Value::new(y, 0));
        assert_eq!(check(&g, std::slice::from_ref(&x)), ["resize (native)"], "{mode:?} {ct:?}");
    }
}

/// ConvTranspose runs natively (a GEMM, then each plane adds its contributions) on eval's
/// geometry: unet_mix's 2×2/2 upsampling, overlapping 3×3/2 windows with pads and
/// output_padding, dilation, groups with a bias, and a NaN spreading to the outputs its
/// input position reaches.
#[test]
fn conv_transpose_in_every_geometry_runs_natively() {
    let mut rng = Rng(16);
    // (x, w, group, strides, pads, output_padding, dilations, bias)
    let cases: &[(&[usize], &[usize], i64, &[i64], &[i64], &[i64], &[i64], bool)] = &[
        (&[1, 8, 6, 7], &[8, 4, 2, 2], 1, &[2, 2], &[], &[], &[], false),
        (&[2, 3, 5, 4], &[3, 5, 3, 3], 1, &[2, 2], &[1, 0, 1, 2], &[1, 1], &[], true),
        (&[1, 4, 5, 5], &[4, 3, 3, 2], 1, &[1, 2], &[0, 1, 2, 0], &[], &[2, 1], true),
        (&[1, 6, 4, 3], &[6, 2, 2, 3], 3, &[3, 1], &[], &[], &[], true),
    ];
    for &(xs, ws, group, strides, pads, output_padding, dilations, bias) in cases {
        let mut g = Graph::new("conv_transpose");
        let x = input(&mut g, xs);
        let w = g.add_const("w", rng.tensor(ws));
        let b = bias.then(|| g.add_const("b", rng.tensor(&[ws[1] * group as usize])));
        let op = Op::ConvTranspose {
            auto_pad: AutoPad::NotSet,
            dilations: dilations.to_vec(),
            group,
            kernel_shape: vec![],
            output_padding: output_padding.to_vec(),
            output_shape: vec![],
            pads: pads.to_vec(),
            strides: strides.to_vec(),
        };
        let y = g.add(op, "ct", &[Some(x), Some(w), b], 1).unwrap();
        g.add_output("y", Value::new(y, 0));
        let xv = with_nans(&rng.tensor(xs), &[3]);
        assert_eq!(check(&g, &[xv]), ["conv_transpose (native)"], "x {xs:?} w {ws:?}");
    }
}

#[test]
fn global_pooling() {
    let mut rng = Rng(14);
    // Planes under 64 elements take four running sums (averages with AVX-512: whole
    // vectors, pairs of them and a masked tail, 16, 17, 32 and 33 long here), longer ones
    // 32 partial sums.
    for shape in [&[2, 5, 7, 7][..], &[1, 130, 3], &[1, 3, 224, 224], &[3, 2], &[1, 150, 3, 3], &[1, 3, 63], &[1, 3, 64], &[1, 70, 16], &[1, 70, 17], &[1, 3, 32], &[1, 3, 33]] {
        let x = with_nans(&rng.tensor(shape), &[1]);
        for kind in [PoolKind::Max, PoolKind::Average] {
            let kinds = check(&one_op(Op::GlobalPool { kind, p: 2 }, shape), std::slice::from_ref(&x));
            assert_eq!(kinds, ["global_pool (native)"]);
        }
    }
}

/// A pooling kernel of another dtype or Lp pooling runs through `ir::eval`.
#[test]
fn lp_pooling_stays_on_eval() {
    let mut rng = Rng(15);
    let x = rng.tensor(&[1, 2, 5, 5]);
    let op = pool(PoolKind::Lp, &[2, 2], &[1, 1], &[], &[], AutoPad::NotSet, false, false);
    assert_eq!(check(&one_op(op, x.shape()), &[x]), ["pool (eval)"]);
}

#[test]
fn elementwise_nodes_group_into_one_generated_kernel() {
    let mut rng = Rng(21);
    let mut g = Graph::new("gelu");
    let x = input(&mut g, &[3, 37]);
    let half = g.add_const("half", Tensor::scalar(0.5f32));
    let c = g.add_const("c", Tensor::scalar(std::f32::consts::FRAC_1_SQRT_2));
    let one = g.add_const("one", Tensor::scalar(1.0f32));
    let a = g.add1(Op::Binary(BinaryOp::Mul), "a", &[half, x]).unwrap();
    let b = g.add1(Op::Binary(BinaryOp::Mul), "b", &[x, c]).unwrap();
    let e = g.add1(Op::Unary(UnaryOp::Erf), "e", &[b]).unwrap();
    let s = g.add1(Op::Binary(BinaryOp::Add), "s", &[one, e]).unwrap();
    let y = g.add1(Op::Binary(BinaryOp::Mul), "y", &[a, s]).unwrap();
    g.add_output("y", y);
    // `b` is read outside too: the group then has two outputs.
    g.add_output("b", b);
    let kinds = check(&g, &[rng.tensor(&[3, 37])]);
    assert_eq!(kinds, ["mul+mul+erf+add+mul (generated)"]);
}

/// A group never swallows a node whose other input depends on the group through a node
/// outside it: that would need the group to run both before and after that node.
#[test]
fn a_group_stays_convex() {
    let mut rng = Rng(22);
    let mut g = Graph::new("convex");
    let x = input(&mut g, &[4, 9]);
    let a = g.add1(Op::Unary(UnaryOp::Neg), "a", &[x]).unwrap();
    let r = g.add1(Op::Softmax { axis: -1 }, "r", &[a]).unwrap();
    let c = g.add1(Op::Binary(BinaryOp::Add), "c", &[a, r]).unwrap();
    let d = g.add1(Op::Unary(UnaryOp::Exp), "d", &[c]).unwrap();
    g.add_output("d", d);
    let kinds = check(&g, &[rng.tensor(&[4, 9])]);
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(kinds[0], "neg (generated)");
    assert_eq!(kinds[2], "add+exp (generated)");
}

/// Nodes of different shapes are separate groups (a kernel writes outputs of one shape).
#[test]
fn broadcasting_groups_split_by_shape() {
    let mut rng = Rng(23);
    let mut g = Graph::new("shapes");
    let x = input(&mut g, &[5, 1]);
    let z = input(&mut g, &[5, 6]);
    let a = g.add1(Op::Unary(UnaryOp::Exp), "a", &[x]).unwrap();
    let b = g.add1(Op::Binary(BinaryOp::Mul), "b", &[a, z]).unwrap();
    let c = g.add1(Op::Unary(UnaryOp::Tanh), "c", &[b]).unwrap();
    g.add_output("c", c);
    g.add_output("a", a);
    let kinds = check(&g, &[rng.tensor(&[5, 1]), rng.tensor(&[5, 6])]);
    assert_eq!(kinds, ["exp (generated)", "mul+tanh (generated)"]);
}

#[test]
fn softmax_and_log_softmax_on_every_axis_with_nan_and_infinities() {
    let mut rng = Rng(31);
    let x = rng.tensor(&[3, 5, 17]);
    for axis in [-1, 0, 1, 2] {
        for op in [Op::Softmax { axis }, Op::LogSoftmax { axis }] {
            let name = op.name();
            let kinds = check(&one_op(op, x.shape()), std::slice::from_ref(&x));
            assert_eq!(kinds, [format!("{name} (native)")]);
        }
    }
    // A NaN poisons its row; a row with +inf gives NaN there and 0 elsewhere (the max is
    // taken as 0 when it is not finite); a row of -inf is all NaN.
    let mut v = rng.tensor(&[4, 6]).as_slice::<f32>().unwrap().to_vec();
    v[2] = f32::NAN;
    v[8] = f32::INFINITY;
    v[12..18].fill(f32::NEG_INFINITY);
    v[19] = 80.0;
    let x = Tensor::new(vec![4, 6], v).unwrap();
    for op in [Op::Softmax { axis: 1 }, Op::LogSoftmax { axis: 1 }] {
        check(&one_op(op, x.shape()), std::slice::from_ref(&x));
    }
}

#[test]
fn layer_norm_over_the_trailing_axes() {
    let mut rng = Rng(21);
    let x = with_nans(&rng.tensor(&[2, 5, 33]), &[40]);
    // (axis, scale and bias shape): the native kernel takes a scale and bias covering the
    // normalised axes; for one that broadcasts it declines at run time and the step
    // replays `ir::eval` (the same values either way).
    let cases: &[(i64, &[usize])] = &[(-1, &[33]), (1, &[5, 33]), (-1, &[1])];
    for &(axis, sshape) in cases {
        let mut g = Graph::new("ln");
        let xi = input(&mut g, x.shape());
        let s = g.add_const("scale", rng.tensor(sshape));
        let b = g.add_const("bias", rng.tensor(sshape));
        let op = Op::LayerNorm { axis, epsilon: 1e-5, stash_type: DType::F32 };
        let y = g.add1(op, "ln", &[xi, s, b]).unwrap();
        g.add_output("y", y);
        assert_eq!(check(&g, std::slice::from_ref(&x)), ["layer_norm (native)"]);
    }
}

#[test]
fn the_native_exp_is_within_four_ten_millionths() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.5 {
        let want = (x as f64).exp();
        let got = kiln_cpu::exp_f32(x) as f64;
        worst = worst.max(((got - want) / want).abs());
        x += 0.000_37;
    }
    assert!(worst < 4e-7, "max relative error {worst}");
    assert!(kiln_cpu::exp_f32(f32::NAN).is_nan());
    assert_eq!(kiln_cpu::exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(kiln_cpu::exp_f32(-200.0), 0.0);
    assert_eq!(kiln_cpu::exp_f32(89.0), f32::INFINITY);
    assert_eq!(kiln_cpu::exp_f32(f32::INFINITY), f32::INFINITY);
    assert_eq!(kiln_cpu::exp_f32(0.0), 1.0);
}

#[test]
fn transpose_merges_dims_that_move_together() {
    let mut rng = Rng(41);
    let cases: &[(&[usize], Option<&[i64]>)] = &[
        (&[1, 128, 4, 64], Some(&[0, 2, 1, 3])), // attention heads
        (&[2, 3, 5, 7], Some(&[0, 2, 3, 1])),    // NCHW → NHWC
        (&[2, 3, 5, 7], Some(&[3, 1, 0, 2])),
        (&[6, 1, 9], Some(&[1, 2, 0])),
        (&[4, 1, 1, 5], Some(&[0, 2, 1, 3])), // only size-1 dims move: a copy
        (&[3, 8], None),
        (&[7], None),
    ];
    for &(shape, perm) in cases {
        let x = rng.tensor(shape);
        let op = Op::Transpose { perm: perm.map(|p| p.to_vec()) };
        assert_eq!(check(&one_op(op, shape), &[x]), ["transpose (native)"]);
    }
}

/// Depthwise convolution with stride 2 reads split even/odd columns (rows wider than 256
/// outputs; narrower ones go 8 planes at a time, or with AVX-512 and a 3-wide kernel on
/// rows of 16 outputs or more, split by permutes in registers): every padding, dilation,
/// kernel width and input width parity.
#[test]
fn stride_two_depthwise_convolution() {
    let mut rng = Rng(51);
    // (input width, kernel, pads [t, l, b, r], dilation)
    let cases: &[(usize, usize, [i64; 4], i64)] = &[
        (12, 3, [1, 1, 1, 1], 1),
        (13, 3, [0, 1, 1, 0], 1),
        (13, 5, [2, 2, 2, 2], 1),
        (11, 3, [1, 2, 1, 2], 2),
        (9, 4, [0, 0, 0, 3], 1),
        (2, 3, [1, 1, 1, 1], 1),
        (131, 3, [1, 1, 1, 1], 1),
        (140, 5, [2, 2, 2, 2], 1),
        (135, 3, [1, 2, 1, 2], 2),
        (137, 4, [0, 0, 0, 3], 1),
    ];
    for &(w, k, pads, d) in cases {
        let mut g = Graph::new("dw");
        let x = input(&mut g, &[1, 5, 7, w]);
        let wt = g.add_const("w", rng.tensor(&[5, 1, k, k]));
        let op = Op::Conv {
            auto_pad: AutoPad::NotSet,
            dilations: vec![d, d],
            group: 5,
            kernel_shape: vec![],
            pads: pads.to_vec(),
            strides: vec![2, 2],
        };
        let y = g.add1(op, "conv", &[x, wt]).unwrap();
        g.add_output("y", y);
        assert_eq!(check(&g, &[rng.tensor(&[1, 5, 7, w])]), ["conv (direct)"]);
    }
}

/// Depthwise convolution with bias, a residual add and a clip in its epilogue, on rows
/// long enough for the vector loop (blocks of 32 and 8) and every remainder, stride 1 and
/// 2, kernels 3, 5 and 1×7, pads on either side, dilation; NaN in the input and in the
/// residual must come out as NaN through the clip. Once with the vector path (where the
/// CPU has it) and once with the portable loop.
#[test]
fn depthwise_convolution_with_epilogue_on_long_rows() {
    let mut rng = Rng(52);
    // (input height, width, kernel [h, w], stride, pads [t, l, b, r], dilation)
    let cases: &[(usize, usize, [usize; 2], i64, [i64; 4], i64)] = &[
        (6, 112, [3, 3], 1, [1, 1, 1, 1], 1),
        (5, 113, [3, 3], 2, [0, 0, 1, 1], 1),
        (7, 112, [3, 3], 2, [1, 1, 1, 1], 1),
        (4, 47, [5, 5], 1, [2, 2, 2, 2], 1),
        (6, 81, [5, 5], 2, [1, 2, 2, 1], 1),
        (3, 41, [3, 3], 1, [1, 1, 1, 1], 2),
        (5, 66, [3, 3], 2, [2, 2, 2, 2], 2),
        (3, 40, [1, 7], 1, [0, 3, 0, 3], 1),
        (4, 9, [3, 3], 1, [1, 1, 1, 1], 1),
        (3, 33, [3, 3], 1, [0, 0, 0, 0], 1),
        (2, 3, [3, 3], 1, [1, 1, 1, 1], 1),
        // Stride-2 rows of 48 outputs and more: 5- and 7-wide kernels, pads wider than a
        // block's reach, dilation with a kernel taller than the input.
        (4, 95, [3, 3], 2, [1, 1, 1, 1], 1),
        (3, 100, [5, 5], 2, [2, 2, 2, 2], 1),
        (5, 96, [7, 7], 2, [3, 3, 3, 3], 1),
        (3, 110, [3, 3], 2, [1, 9, 1, 9], 1),
        (3, 120, [3, 3], 2, [8, 8, 8, 8], 8),
        (3, 104, [3, 3], 2, [2, 1, 2, 1], 3),
        (3, 24, [3, 3], 1, [1, 1, 1, 1], 1),
        // Stride-2 3-wide kernels of other heights (AVX-512 sums kernel rows in pairs, an
        // odd last row alone).
        (6, 70, [4, 3], 2, [1, 1, 2, 1], 1),
        (5, 66, [5, 3], 2, [2, 1, 2, 1], 1),
        (4, 40, [1, 3], 2, [0, 1, 0, 1], 1),
        // Rows over 64 outputs (8 planes at a time up to 256, as the rows above) and over
        // 256 (plane at a time) for every stride, kernel and dilation above.
        (3, 600, [3, 3], 2, [1, 1, 1, 1], 1),
        (3, 531, [5, 5], 2, [2, 1, 2, 2], 1),
        (2, 300, [3, 3], 1, [1, 1, 1, 1], 1),
        (3, 290, [1, 7], 1, [0, 3, 0, 3], 1),
        (3, 270, [3, 3], 1, [1, 1, 1, 1], 2),
        (3, 150, [3, 3], 2, [1, 1, 1, 1], 1),
        (3, 141, [5, 5], 2, [2, 1, 2, 2], 1),
        (3, 160, [3, 3], 2, [2, 2, 2, 2], 2),
        (4, 130, [5, 5], 1, [2, 2, 2, 2], 1),
        (3, 100, [1, 7], 1, [0, 3, 0, 3], 1),
        (3, 90, [3, 3], 1, [1, 1, 1, 1], 2),
    ];
    for &(h, w, [kh, kw], s, pads, d) in cases {
        let c = 3;
        let mut g = Graph::new("dw");
        let x = input(&mut g, &[2, c, h, w]);
        let wt = g.add_const("w", rng.tensor(&[c, 1, kh, kw]));
        let b = g.add_const("b", rng.tensor(&[c]));
        let op = Op::Conv {
            auto_pad: AutoPad::NotSet,
            dilations: vec![d, d],
            group: c as i64,
            kernel_shape: vec![],
            pads: pads.to_vec(),
            strides: vec![s, s],
        };
        let y: Value = g.add(op, "conv", &[Some(x), Some(wt), Some(b)], 1).unwrap().into();
        let out_shape: Vec<usize> = match g.value_type(y).shape.dims() {
            Some(dims) => dims.iter().map(|d| d.known().unwrap()).collect(),
            None => panic!("the conv's output shape is known"),
        };
        let r = input(&mut g, &out_shape);
        let y = g.add1(Op::Binary(BinaryOp::Add), "residual", &[y, r]).unwrap();
        let lo = g.add_const("lo", Tensor::scalar(-0.5f32));
        let hi = g.add_const("hi", Tensor::scalar(0.75f32));
        let y = g.add1(Op::Clip, "clip", &[y, lo, hi]).unwrap();
        g.add_output("y", y);
        let xs = with_nans(&rng.tensor(&[2, c, h, w]), &[w + 1, c * h * w + 2 * w - 1]);
        let n: usize = out_shape.iter().product();
        let rs = with_nans(&rng.tensor(&out_shape), &[n - 1]);
        let ins = [xs, rs];
        assert_eq!(check(&g, &ins), ["conv+add+clip (direct)"], "{h}×{w} k{kh}×{kw} s{s} d{d}");
        // The loop CPUs without AVX2 and FMA run.
        let portable = Cpu::with_kernel(kiln_cpu::gemm::module::Kernel::Portable);
        assert_eq!(check_on(portable, &g, &ins), ["conv+add+clip (direct)"], "portable {h}×{w}");
    }
}

/// Planes with rows up to 256 outputs go 8 planes at a time, the planes in the vector
/// lanes: channel counts that leave a partial last group, batch 2 (a group spans both
/// images), strides 1 and 2, 3×3, 5×5, 1×7 and 11×11 kernels, asymmetric pads, dilation,
/// planes narrower than a vector, inputs whose last rows no output reads, tall planes in
/// several strips of rows (with stride 2, dilation, and a kernel taller than a strip's
/// budget); bias, residual and clip with NaN in the input and the residual.
#[test]
fn depthwise_convolution_of_small_planes_eight_at_a_time() {
    let mut rng = Rng(55);
    // (channels, height, width, kernel [h, w], stride, pads [t, l, b, r], dilation)
    let cases: &[(usize, usize, usize, [usize; 2], i64, [i64; 4], i64)] = &[
        (19, 14, 14, [3, 3], 1, [1, 1, 1, 1], 1),
        (16, 7, 7, [3, 3], 1, [1, 1, 1, 1], 1),
        (11, 28, 28, [3, 3], 2, [0, 0, 1, 1], 1),
        (9, 14, 14, [5, 5], 2, [1, 1, 2, 2], 1),
        (5, 7, 7, [5, 5], 1, [2, 2, 2, 2], 1),
        (8, 6, 30, [1, 7], 1, [0, 3, 0, 3], 1),
        (13, 12, 12, [3, 3], 1, [2, 2, 2, 2], 2),
        (3, 4, 5, [3, 3], 1, [0, 1, 2, 0], 1),
        (7, 15, 16, [3, 3], 2, [0, 0, 0, 0], 1),
        (10, 3, 3, [3, 3], 1, [1, 1, 1, 1], 1),
        (5, 40, 56, [3, 3], 1, [1, 1, 1, 1], 1),
        (3, 70, 30, [3, 3], 1, [1, 1, 1, 1], 1),
        (2, 90, 31, [5, 5], 2, [2, 2, 2, 2], 1),
        (3, 66, 28, [3, 3], 1, [2, 2, 2, 2], 2),
        (5, 17, 113, [3, 3], 2, [0, 0, 1, 1], 1),
        (2, 30, 64, [11, 11], 1, [10, 10, 10, 10], 2),
    ];
    for &(c, h, w, [kh, kw], s, pads, d) in cases {
        let mut g = Graph::new("dw");
        let x = input(&mut g, &[2, c, h, w]);
        let wt = g.add_const("w", rng.tensor(&[c, 1, kh, kw]));
        let b = g.add_const("b", rng.tensor(&[c]));
        let op = Op::Conv {
            auto_pad: AutoPad::NotSet,
            dilations: vec![d, d],
            group: c as i64,
            kernel_shape: vec![],
            pads: pads.to_vec(),
            strides: vec![s, s],
        };
        let y: Value = g.add(op, "conv", &[Some(x), Some(wt), Some(b)], 1).unwrap().into();
        let out_shape: Vec<usize> = match g.value_type(y).shape.dims() {
            Some(dims) => dims.iter().map(|d| d.known().unwrap()).collect(),
            None => panic!("the conv's output shape is known"),
        };
        let r = input(&mut g, &out_shape);
        let y = g.add1(Op::Binary(BinaryOp::Add), "residual", &[y, r]).unwrap();
        let lo = g.add_const("lo", Tensor::scalar(-0.5f32));
        let hi = g.add_const("hi", Tensor::scalar(0.75f32));
        let y = g.add1(Op::Clip, "clip", &[y, lo, hi]).unwrap();
        g.add_output("y", y);
        let xs = with_nans(&rng.tensor(&[2, c, h, w]), &[w + 1, c * h * w + 2 * w - 1]);
        let n: usize = out_shape.iter().product();
        let rs = with_nans(&rng.tensor(&out_shape), &[n - 1, n / 2]);
        let ins = [xs, rs];
        let what = format!("c{c} {h}×{w} k{kh}×{kw} s{s} d{d}");
        assert_eq!(check(&g, &ins), ["conv+add+clip (direct)"], "{what}");
        let portable = Cpu::with_kernel(kiln_cpu::gemm::module::Kernel::Portable);
        assert_eq!(check_on(portable, &g, &ins), ["conv+add+clip (direct)"], "portable {what}");
    }
}

/// A 3×3 depthwise convolution with bias and padding 1 at stride `s` over a new input of
/// `shape` (NCHW).
fn depthwise_3x3(g: &mut Graph, rng: &mut Rng, shape: [usize; 4], s: i64) -> Value {
    let c = shape[1];
    let x = input(g, &shape);
    let wt = g.add_const("w", rng.tensor(&[c, 1, 3, 3]));
    let b = g.add_const("b", rng.tensor(&[c]));
    let op = Op::Conv {
        auto_pad: AutoPad::NotSet,
        dilations: vec![1, 1],
        group: c as i64,
        kernel_shape: vec![],
        pads: vec![1, 1, 1, 1],
        strides: vec![s, s],
    };
    g.add(op, "conv", &[Some(x), Some(wt), Some(b)], 1).unwrap().into()
}

/// Depthwise convolution with only a clip after it, or nothing (mobilenet's relu6): whole
/// groups of 8 planes store through registers, a partial group or a residual through the
/// general epilogue. Channel counts with and without a partial group, planes whose size is
/// not a multiple of 8, rows from 7 to 224 wide, strides 1 and 2, NaN and ±∞ in the input.
#[test]
fn depthwise_convolution_with_only_a_clip_eight_planes_at_a_time() {
    let mut rng = Rng(56);
    // (channels, height, width, stride, clip)
    let cases: &[(usize, usize, usize, i64, bool)] = &[
        (16, 7, 7, 1, true),
        (24, 14, 14, 2, true),
        (8, 13, 11, 1, true),
        (19, 28, 28, 1, true),
        (32, 9, 112, 1, true),
        (16, 6, 150, 2, true),
        (8, 5, 224, 1, true),
        (16, 14, 14, 1, false),
        (11, 9, 57, 2, false),
    ];
    for &(c, h, w, s, clip) in cases {
        let mut g = Graph::new("dw");
        let mut y = depthwise_3x3(&mut g, &mut rng, [2, c, h, w], s);
        if clip {
            let lo = g.add_const("lo", Tensor::scalar(0.0f32));
            let hi = g.add_const("hi", Tensor::scalar(0.75f32));
            y = g.add1(Op::Clip, "clip", &[y, lo, hi]).unwrap();
        }
        g.add_output("y", y);
        let n = 2 * c * h * w;
        let xs = scaled_with_specials(&rng.tensor(&[2, c, h, w]), 1.0, w + 1, n / 2 + 3, n - 2);
        let want: &[&str] = if clip { &["conv+clip (direct)"] } else { &["conv (direct)"] };
        assert_eq!(check(&g, &[xs]), want, "c{c} {h}×{w} s{s} clip {clip}");
    }
}

/// A recurrent cell as ONNX Loop (tf2onnx's form of a Keras RNN): h ← tanh(h·W + x[t]),
/// W carried through unchanged, every h scanned out. `trips` iterations (0: the loop
/// never runs, which `ir::eval` answers).
fn rnn_loop(trips: i64, rng: &mut Rng) -> Graph {
    let mut body = Graph::new("cell");
    let it = body.add_input("it", TensorType::known(DType::I64, &[]));
    let cond = body.add_input("cond", TensorType::known(DType::Bool, &[]));
    let h = body.add_input("h", TensorType::known(DType::F32, &[1, 4]));
    let w = body.add_input("w", TensorType::known(DType::F32, &[4, 4]));
    let xs = body.add_input("xs", TensorType::known(DType::F32, &[6, 1, 4]));
    let xt = body.add1(Op::Gather { axis: 0 }, "xt", &[xs, it]).unwrap();
    let hw = body.add1(Op::MatMul, "hw", &[h, w]).unwrap();
    let a = body.add1(Op::Binary(BinaryOp::Add), "a", &[hw, xt]).unwrap();
    let h2 = body.add1(Op::Unary(UnaryOp::Tanh), "h2", &[a]).unwrap();
    let c2 = body.add1(Op::Unary(UnaryOp::Identity), "c2", &[cond]).unwrap();
    body.add_output("cond", c2);
    body.add_output("h", h2);
    body.add_output("w", w);
    body.add_output("hs", h2);

    let mut g = Graph::new("rnn");
    let xs = input(&mut g, &[6, 1, 4]);
    let h0 = input(&mut g, &[1, 4]);
    let trips = g.add_const("trips", Tensor::scalar(trips));
    let yes = g.add_const("yes", Tensor::scalar(true));
    let w = g.add_const("w", rng.tensor(&[4, 4]));
    let op = Op::Loop { body: Box::new(body), num_captured: 1 };
    let l = g.add(op, "loop", &[Some(trips), Some(yes), Some(h0), Some(w), Some(xs)], 3).unwrap();
    g.add_output("h", Value::new(l, 0));
    g.add_output("hs", Value::new(l, 2));
    g
}

#[test]
fn a_loop_runs_its_body_as_a_compiled_plan() {
    let mut rng = Rng(61);
    for trips in [6, 1] {
        let g = rnn_loop(trips, &mut rng);
        let kinds = check(&g, &[rng.tensor(&[6, 1, 4]), rng.tensor(&[1, 4])]);
        assert_eq!(kinds, ["loop (native)"]);
    }
    // Zero iterations: the scan output is empty, as ir::eval makes it.
    let g = rnn_loop(0, &mut rng);
    check(&g, &[rng.tensor(&[6, 1, 4]), rng.tensor(&[1, 4])]);
}

/// `t` times `k`, with NaN and ±∞ written at the given flat positions.
fn scaled_with_specials(t: &Tensor, k: f32, nan: usize, inf: usize, neg_inf: usize) -> Tensor {
    let mut v: Vec<f32> = t.as_slice::<f32>().unwrap().iter().map(|x| x * k).collect();
    v[nan] = f32::NAN;
    v[inf] = f32::INFINITY;
    v[neg_inf] = f32::NEG_INFINITY;
    Tensor::new(t.shape().to_vec(), v).unwrap()
}

/// The activations efficientnet and mobilenet_v3 put after their depthwise convolutions
/// (swish as sigmoid and mul, the Swish op, ONNX HardSwish, Keras' hard swish as add, clip
/// and muls or a div) run in the depthwise step's epilogue, after its bias and clip; on
/// inputs large enough to reach the sigmoid's tails, with NaN and ±∞, on rows with vector
/// blocks and remainders, stride 1 and 2, vector and portable paths.
#[test]
fn depthwise_convolution_with_an_activation_in_its_epilogue() {
    let mut rng = Rng(53);
    // Builds the activation of `v` and returns its result.
    type Act = fn(&mut Graph, Value) -> Value;
    let swish: Act = |g, v| {
        let s = g
            .add1(Op::Unary(UnaryOp::Sigmoid), "sigmoid", &[v])
            .unwrap();
        g.add1(Op::Binary(BinaryOp::Mul), "swish", &[v, s]).unwrap()
    };
    let swish_op: Act = |g, v| g.add1(Op::Swish { alpha: 1.5 }, "swish", &[v]).unwrap();
    let hard_swish: Act = |g, v| g.add1(Op::Unary(UnaryOp::HardSwish), "hs", &[v]).unwrap();
    // mobilenet_v3 (tf2onnx): v · (clip(v + 3, 0, 6) · (1/6)).
    let keras: Act = |g, v| {
        let three = g.add_const("three", Tensor::scalar(3.0f32));
        let (lo, hi) = (
            g.add_const("lo", Tensor::scalar(0.0f32)),
            g.add_const("hi", Tensor::scalar(6.0f32)),
        );
        let sixth = g.add_const("sixth", Tensor::scalar(1.0f32 / 6.0));
        let a = g
            .add1(Op::Binary(BinaryOp::Add), "add", &[v, three])
            .unwrap();
        let c = g.add1(Op::Clip, "relu6", &[a, lo, hi]).unwrap();
        let t = g
            .add1(Op::Binary(BinaryOp::Mul), "scale", &[c, sixth])
            .unwrap();
        g.add1(Op::Binary(BinaryOp::Mul), "hs", &[v, t]).unwrap()
    };
    // (v · clip(v + 3, 0, 6)) / 6, the product first.
    let keras_div: Act = |g, v| {
        let three = g.add_const("three", Tensor::scalar(3.0f32));
        let (lo, hi) = (
            g.add_const("lo", Tensor::scalar(0.0f32)),
            g.add_const("hi", Tensor::scalar(6.0f32)),
        );
        let six = g.add_const("six", Tensor::scalar(6.0f32));
        let a = g
            .add1(Op::Binary(BinaryOp::Add), "add", &[three, v])
            .unwrap();
        let c = g.add1(Op::Clip, "relu6", &[a, lo, hi]).unwrap();
        let p = g
            .add1(Op::Binary(BinaryOp::Mul), "product", &[c, v])
            .unwrap();
        g.add1(Op::Binary(BinaryOp::Div), "hs", &[p, six]).unwrap()
    };
    let acts: [(Act, &str); 5] = [
        (swish, "conv+sigmoid+mul (direct)"),
        (swish_op, "conv+swish (direct)"),
        (hard_swish, "conv+hard_swish (direct)"),
        (keras, "conv+add+clip+mul+mul (direct)"),
        (keras_div, "conv+add+clip+mul+div (direct)"),
    ];
    // (height, width, stride, with bias and relu6 before the activation)
    let cases: &[(usize, usize, i64, bool)] =
        &[(5, 77, 1, false), (6, 83, 2, true), (3, 9, 1, true), (14, 14, 1, false), (7, 28, 2, true), (4, 150, 2, true)];
    for (act, kind) in acts {
        for &(h, w, s, clipped) in cases {
            // One partial group of planes, or a whole group of 8 and a partial one. Without
            // the clip the activation runs on the group's sums before they are transposed
            // back; with it, on the vectors after the clip.
            let c = if h % 2 == 0 { 10 } else { 3 };
            let mut g = Graph::new("dw");
            let mut y = depthwise_3x3(&mut g, &mut rng, [1, c, h, w], s);
            if clipped {
                let lo = g.add_const("clo", Tensor::scalar(-20.0f32));
                let hi = g.add_const("chi", Tensor::scalar(20.0f32));
                y = g.add1(Op::Clip, "clip", &[y, lo, hi]).unwrap();
            }
            let y = act(&mut g, y);
            g.add_output("y", y);
            let n = c * h * w;
            let xs = scaled_with_specials(&rng.tensor(&[1, c, h, w]), 60.0, w + 2, n / 2, n - 3);
            let want = if clipped {
                kind.replace("conv+", "conv+clip+")
            } else {
                kind.to_string()
            };
            assert_eq!(check(&g, &[xs.clone()]), [want.as_str()], "{h}×{w} s{s}");
            let portable = Cpu::with_kernel(kiln_cpu::gemm::module::Kernel::Portable);
            assert_eq!(
                check_on(portable, &g, &[xs]),
                [want.as_str()],
                "portable {h}×{w} s{s}"
            );
        }
    }
}

/// When a value inside the activation is read elsewhere too, the activation stays a
/// generated kernel of its own (the step may leave only its last node's result).
#[test]
fn an_activation_whose_inner_value_is_read_elsewhere_stays_separate() {
    let mut rng = Rng(54);
    let mut g = Graph::new("dw");
    let x = input(&mut g, &[1, 4, 6, 20]);
    let wt = g.add_const("w", rng.tensor(&[4, 1, 3, 3]));
    let op = Op::Conv {
        auto_pad: AutoPad::NotSet,
        dilations: vec![1, 1],
        group: 4,
        kernel_shape: vec![],
        pads: vec![1, 1, 1, 1],
        strides: vec![1, 1],
    };
    let v = g.add1(op, "conv", &[x, wt]).unwrap();
    let s = g
        .add1(Op::Unary(UnaryOp::Sigmoid), "sigmoid", &[v])
        .unwrap();
    let y = g.add1(Op::Binary(BinaryOp::Mul), "swish", &[v, s]).unwrap();
    g.add_output("y", y);
    g.add_output("gate", s);
    let kinds = check(&g, &[rng.tensor(&[1, 4, 6, 20])]);
    assert_eq!(kinds, ["conv (direct)", "sigmoid+mul (generated)"]);
}

/// An elementwise group that is exactly swish or hard swish of one input (after a GEMM
/// convolution, or alone, grouped by the CPU or by the fusion pass) runs as the native
/// activation kernel: values with NaN and ±∞, lengths that are not whole blocks of 8, one
/// thread's block and several.
#[test]
fn swish_and_hard_swish_groups_run_as_the_native_activation() {
    let mut rng = Rng(55);
    for n in [13usize, 5000, 70_001] {
        let mut g = Graph::new("act");
        let x = input(&mut g, &[1, n]);
        let s = g.add1(Op::Unary(UnaryOp::Sigmoid), "sigmoid", &[x]).unwrap();
        let y = g.add1(Op::Binary(BinaryOp::Mul), "swish", &[s, x]).unwrap();
        g.add_output("y", y);
        let xs = scaled_with_specials(&rng.tensor(&[1, n]), 120.0, 1, n / 2, n - 1);
        assert_eq!(check(&g, &[xs.clone()]), ["sigmoid+mul (native)"], "{n}");
        let portable = Cpu::with_kernel(kiln_cpu::gemm::module::Kernel::Portable);
        assert_eq!(check_on(portable, &g.clone(), &[xs.clone()]), ["sigmoid+mul (native)"], "portable {n}");
        // The same group made an `Op::Fused` by the fusion pass.
        let mut f = Graph::new("fused");
        let fx = input(&mut f, &[1, n]);
        let fy = f.add1(Op::Fused { body: Box::new(g) }, "swish", &[fx]).unwrap();
        f.add_output("y", fy);
        assert_eq!(check(&f, &[xs]), ["sigmoid+mul (native)"], "fused {n}");
    }
    // A 1×1 convolution (on the GEMM) followed by Keras' hard swish.
    let mut g = Graph::new("conv");
    let x = input(&mut g, &[1, 8, 5, 7]);
    let w = g.add_const("w", rng.tensor(&[6, 8, 1, 1]));
    let op = Op::Conv {
        auto_pad: AutoPad::NotSet,
        dilations: vec![],
        group: 1,
        kernel_shape: vec![],
        pads: vec![],
        strides: vec![],
    };
    let v = g.add1(op, "conv", &[x, w]).unwrap();
    let three = g.add_const("three", Tensor::scalar(3.0f32));
    let (lo, hi) = (g.add_const("lo", Tensor::scalar(0.0f32)), g.add_const("hi", Tensor::scalar(6.0f32)));
    let sixth = g.add_const("sixth", Tensor::scalar(1.0f32 / 6.0));
    let a = g.add1(Op::Binary(BinaryOp::Add), "add", &[v, three]).unwrap();
    let c = g.add1(Op::Clip, "relu6", &[a, lo, hi]).unwrap();
    let t = g.add1(Op::Binary(BinaryOp::Mul), "scale", &[c, sixth]).unwrap();
    let y = g.add1(Op::Binary(BinaryOp::Mul), "hs", &[v, t]).unwrap();
    g.add_output("y", y);
    let xs = scaled_with_specials(&rng.tensor(&[1, 8, 5, 7]), 4.0, 3, 40, 100);
    assert_eq!(check(&g, &[xs]), ["conv (gemm)", "add+clip+mul+mul (native)"]);
}

/// A fused kernel of transposes and reshapes runs as one strided copy of the final view:
/// the transformer's head split (transpose → reshape that drops size-1 dims and merges →
/// transpose), a reshape that cannot be a view of the transposed data (it merges dims the
/// transpose separated, so the kernel copies first), and squeeze/unsqueeze/flatten.
#[test]
fn movement_only_fused_kernels_run_as_one_strided_copy() {
    let mut rng = Rng(56);
    // Each body: (input shape, builder of the chain on the body's input).
    type Build = fn(&mut Graph, Value) -> Value;
    let head_split: Build = |g, x| {
        let t = g.add1(Op::Transpose { perm: Some(vec![0, 3, 2, 4, 1]) }, "t0", &[x]).unwrap();
        let s = g.add_const("s", Tensor::new(vec![3], vec![4i64, -1, 6]).unwrap());
        let r = g.add1(Op::Reshape { allowzero: false }, "r", &[t, s]).unwrap();
        g.add1(Op::Transpose { perm: Some(vec![0, 2, 1]) }, "t1", &[r]).unwrap()
    };
    let needs_copy: Build = |g, x| {
        let t = g.add1(Op::Transpose { perm: Some(vec![0, 2, 1, 3, 4]) }, "t0", &[x]).unwrap();
        let s = g.add_const("s", Tensor::new(vec![2], vec![6i64, -1]).unwrap());
        g.add1(Op::Reshape { allowzero: false }, "r", &[t, s]).unwrap()
    };
    let squeezes: Build = |g, x| {
        let t = g.add1(Op::Transpose { perm: None }, "t0", &[x]).unwrap();
        let f = g.add1(Op::Flatten { axis: 2 }, "f", &[t]).unwrap();
        let a = g.add_const("axes", Tensor::new(vec![1], vec![0i64]).unwrap());
        g.add1(Op::Unsqueeze, "u", &[f, a]).unwrap()
    };
    for (build, name) in [(head_split, "head split"), (needs_copy, "copy"), (squeezes, "flatten")] {
        let in_shape = [1usize, 6, 1, 4, 5];
        let mut body = Graph::new("body");
        let bx = input(&mut body, &in_shape);
        let by = build(&mut body, bx);
        body.add_output("y", by);
        kiln_ir::verify(&body).unwrap();
        let out_ty = body.value_type(by).clone();
        let mut g = Graph::new("g");
        let x = input(&mut g, &in_shape);
        let y = g.add1(Op::Fused { body: Box::new(body) }, "fused", &[x]).unwrap();
        assert_eq!(*g.value_type(y), out_ty);
        g.add_output("y", y);
        let kinds = check(&g, &[rng.tensor(&in_shape)]);
        assert_eq!(kinds.len(), 1, "{name}");
        assert!(kinds[0].ends_with("(native)"), "{name}: {kinds:?}");
    }
}
