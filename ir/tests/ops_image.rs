//! Image and signal ops against values from ONNX's reference implementation
//! (`onnx.reference.ReferenceEvaluator`, onnx 1.23.2, numpy 2.4).

use kiln_ir::eval::eval_op;
use kiln_ir::infer::infer;
use kiln_ir::*;

fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
}
fn i64t(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
}
fn iota(shape: &[usize], from: f32) -> Tensor {
    let n: usize = shape.iter().product();
    f32t(shape, &(0..n).map(|i| from + i as f32).collect::<Vec<_>>())
}

fn run(op: &Op, inputs: Vec<Option<Tensor>>) -> Tensor {
    eval_op(op, &inputs, 1)
        .unwrap_or_else(|e| panic!("{}: {e}", op.name()))
        .remove(0)
}

fn run_err(op: &Op, inputs: Vec<Option<Tensor>>) -> String {
    match eval_op(op, &inputs, 1) {
        Ok(_) => panic!("{} should have failed", op.name()),
        Err(e) => e.message,
    }
}

/// Asserts shape and values within the conformance tolerances (rtol 1e-3, atol 1e-6 here).
fn check(got: &Tensor, shape: &[usize], want: &[f64]) {
    assert_eq!(got.shape(), shape, "shape");
    let g = got.to_f64_vec();
    assert_eq!(g.len(), want.len());
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6 + 1e-3 * b.abs(),
            "element {i}: got {a}, want {b}\n got {g:?}"
        );
    }
}

fn resize(mode: ResizeMode, ct: CoordinateTransform) -> Op {
    Op::Resize {
        antialias: false,
        axes: vec![],
        coordinate_transformation_mode: ct,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        keep_aspect_ratio_policy: KeepAspectRatio::Stretch,
        mode,
        nearest_mode: NearestMode::RoundPreferFloor,
    }
}

fn with_resize(mut op: Op, f: impl FnOnce(&mut Op)) -> Op {
    f(&mut op);
    op
}

#[test]
fn resize_nearest_upsample_by_scales() {
    let op = resize(ResizeMode::Nearest, CoordinateTransform::HalfPixel);
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 1, 2, 2], 1.0)),
            None,
            Some(f32t(&[4], &[1.0, 1.0, 2.0, 1.5])),
        ],
    );
    check(
        &y,
        &[1, 1, 4, 3],
        &[1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 3.0, 3.0, 4.0],
    );
}

#[test]
fn resize_nearest_ceil_asymmetric_by_sizes() {
    let op = with_resize(
        resize(ResizeMode::Nearest, CoordinateTransform::Asymmetric),
        |op| {
            if let Op::Resize { nearest_mode, .. } = op {
                *nearest_mode = NearestMode::Ceil;
            }
        },
    );
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 1, 2, 2], 1.0)),
            None,
            None,
            Some(i64t(&[4], &[1, 1, 3, 5])),
        ],
    );
    check(
        &y,
        &[1, 1, 3, 5],
        &[
            1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 3.0, 4.0, 4.0, 4.0, 4.0,
        ],
    );
}

#[test]
fn resize_linear_half_pixel_downsample() {
    let op = resize(ResizeMode::Linear, CoordinateTransform::HalfPixel);
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 1, 4, 4], 1.0)),
            None,
            Some(f32t(&[4], &[1.0, 1.0, 0.6, 0.6])),
        ],
    );
    check(
        &y,
        &[1, 1, 2, 2],
        &[2.6666665, 4.333333, 9.333333, 10.999999],
    );
}

#[test]
fn resize_linear_align_corners_upsample() {
    let op = resize(ResizeMode::Linear, CoordinateTransform::AlignCorners);
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 1, 2, 2], 1.0)),
            None,
            Some(f32t(&[4], &[1.0, 1.0, 2.0, 2.0])),
        ],
    );
    let t = 1.0 / 3.0;
    #[rustfmt::skip]
    let want = [1.0, 1.0 + t, 1.0 + 2.0 * t, 2.0, 1.0 + 2.0 * t, 2.0, 2.0 + t, 2.0 + 2.0 * t,
                2.0 + t, 2.0 + 2.0 * t, 3.0, 3.0 + t, 3.0, 3.0 + t, 3.0 + 2.0 * t, 4.0];
    check(&y, &[1, 1, 4, 4], &want);
}

#[test]
fn resize_cubic_pytorch_half_pixel_sizes_on_axes() {
    let op = with_resize(
        resize(ResizeMode::Cubic, CoordinateTransform::PytorchHalfPixel),
        |op| {
            if let Op::Resize { axes, .. } = op {
                *axes = vec![2, 3];
            }
        },
    );
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 1, 4, 4], 1.0)),
            None,
            None,
            Some(i64t(&[2], &[3, 5])),
        ],
    );
    #[rustfmt::skip]
    let want = [1.4438839, 2.1153848, 3.0046341, 3.8938851, 4.5653858, 6.9392514, 7.6107521, 8.5,
                9.3892517, 10.060752, 12.434625, 13.106126, 13.995373, 14.884626, 15.556127];
    check(&y, &[1, 1, 3, 5], &want);
}

#[test]
fn resize_cubic_antialias_downsample() {
    let op = with_resize(
        resize(ResizeMode::Cubic, CoordinateTransform::HalfPixel),
        |op| {
            if let Op::Resize { antialias, .. } = op {
                *antialias = true;
            }
        },
    );
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 1, 4, 4], 1.0)),
            None,
            Some(f32t(&[4], &[1.0, 1.0, 0.5, 0.75])),
        ],
    );
    check(
        &y,
        &[1, 1, 2, 3],
        &[
            3.1159394, 4.4609375, 5.8059359, 11.194064, 12.539063, 13.884061,
        ],
    );
}

#[test]
fn resize_tf_crop_and_resize_extrapolates() {
    let op = with_resize(
        resize(ResizeMode::Linear, CoordinateTransform::TfCropAndResize),
        |op| {
            if let Op::Resize {
                extrapolation_value,
                ..
            } = op
            {
                *extrapolation_value = 10.0;
            }
        },
    );
    let roi = f32t(&[8], &[0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 1.2, 1.7]);
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 1, 4, 4], 1.0)),
            Some(roi),
            None,
            Some(i64t(&[4], &[1, 1, 3, 3])),
        ],
    );
    check(
        &y,
        &[1, 1, 3, 3],
        &[
            7.6000004, 10.0, 10.0, 12.400001, 10.0, 10.0, 10.0, 10.0, 10.0,
        ],
    );
}

#[test]
fn resize_u8_linear_rounds_half_to_even() {
    let op = resize(ResizeMode::Linear, CoordinateTransform::HalfPixel);
    let x = Tensor::new(vec![2, 3], vec![0u8, 50, 100, 150, 200, 250]).unwrap();
    let y = run(&op, vec![Some(x), None, Some(f32t(&[2], &[1.0, 2.0]))]);
    assert_eq!(
        y.as_slice::<u8>().unwrap(),
        &[0, 12, 38, 62, 88, 100, 150, 162, 188, 212, 238, 250]
    );
}

#[test]
fn resize_keeps_symbolic_dims_and_refuses_huge_sizes() {
    let op = resize(ResizeMode::Nearest, CoordinateTransform::HalfPixel);
    let sym = |s: &str| Dim::Sym(s.to_string());
    let x = TensorType::new(
        DType::F32,
        vec![sym("N"), Dim::Known(3), Dim::Known(4), Dim::Known(5)],
    );
    let scales = f32t(&[4], &[1.0, 1.0, 2.0, 2.0]);
    let st = TensorType::known(DType::F32, &[4]);
    let out = infer(
        &op,
        &[Some(&x), None, Some(&st)],
        &[None, None, Some(&scales)],
        1,
    )
    .unwrap();
    assert_eq!(
        out[0],
        TensorType::new(
            DType::F32,
            vec![sym("N"), Dim::Known(3), Dim::Known(8), Dim::Known(10)]
        )
    );

    // A symbolic dim that is resized becomes unknown; sizes make it exact again.
    let x = TensorType::new(
        DType::F32,
        vec![sym("N"), Dim::Known(3), sym("H"), Dim::Known(5)],
    );
    let out = infer(
        &op,
        &[Some(&x), None, Some(&st)],
        &[None, None, Some(&scales)],
        1,
    )
    .unwrap();
    assert_eq!(
        out[0],
        TensorType::new(
            DType::F32,
            vec![sym("N"), Dim::Known(3), Dim::Unknown, Dim::Known(10)]
        )
    );
    let sizes = i64t(&[4], &[2, 3, 7, 9]);
    let zt = TensorType::known(DType::I64, &[4]);
    let out = infer(
        &op,
        &[Some(&x), None, None, Some(&zt)],
        &[None, None, None, Some(&sizes)],
        1,
    )
    .unwrap();
    assert_eq!(out[0], TensorType::known(DType::F32, &[2, 3, 7, 9]));

    // Scales not known until run time: the resized axes are unknown.
    let out = infer(&op, &[Some(&x), None, Some(&st)], &[None, None, None], 1).unwrap();
    assert_eq!(out[0].shape, Shape::of_rank(4));

    let big = i64t(&[4], &[1, 1, 1 << 20, 1 << 20]);
    let msg = run_err(
        &op,
        vec![Some(iota(&[1, 1, 2, 2], 0.0)), None, None, Some(big)],
    );
    assert!(msg.contains("2^31"), "{msg}");
    let msg = run_err(
        &op,
        vec![
            Some(iota(&[1, 1, 2, 2], 0.0)),
            None,
            Some(f32t(&[4], &[1.0, 1.0, -2.0, 1.0])),
        ],
    );
    assert!(msg.contains("positive"), "{msg}");
}

fn grid_input() -> (Tensor, Tensor) {
    let x = iota(&[1, 1, 3, 4], 0.0);
    let g = f32t(
        &[1, 2, 3, 2],
        &[
            -1.0, -1.0, -0.3, 0.2, 0.9, -0.8, 1.2, 0.5, 0.0, 0.0, -0.7, 1.1,
        ],
    );
    (x, g)
}

#[test]
fn grid_sample_bilinear_zeros() {
    let (x, g) = grid_input();
    let op = Op::GridSample {
        align_corners: false,
        mode: GridSampleMode::Linear,
        padding_mode: GridPaddingMode::Zeros,
    };
    check(
        &run(&op, vec![Some(x), Some(g)]),
        &[1, 1, 2, 3],
        &[0.0, 6.1000004, 1.6800001, 0.999999, 5.5, 2.8350012],
    );
}

#[test]
fn grid_sample_bicubic_border_align_corners() {
    let (x, g) = grid_input();
    let op = Op::GridSample {
        align_corners: true,
        mode: GridSampleMode::Cubic,
        padding_mode: GridPaddingMode::Border,
    };
    check(
        &run(&op, vec![Some(x), Some(g)]),
        &[1, 1, 2, 3],
        &[0.0, 6.1593733, 3.4946592, 9.375, 5.5, 8.360281],
    );
}

#[test]
fn grid_sample_nearest_reflection() {
    let (x, g) = grid_input();
    let op = Op::GridSample {
        align_corners: false,
        mode: GridSampleMode::Nearest,
        padding_mode: GridPaddingMode::Reflection,
    };
    check(
        &run(&op, vec![Some(x), Some(g)]),
        &[1, 1, 2, 3],
        &[0.0, 5.0, 3.0, 11.0, 6.0, 8.0],
    );
}

#[test]
fn affine_grid_2d() {
    let op = Op::AffineGrid {
        align_corners: false,
    };
    let theta = f32t(&[1, 2, 3], &[1.0, 0.5, 0.1, -0.2, 0.9, 0.3]);
    let y = run(&op, vec![Some(theta), Some(i64t(&[4], &[1, 1, 2, 3]))]);
    #[rustfmt::skip]
    let want = [-0.81666666, -0.016666641, -0.15, -0.14999998, 0.51666665, -0.2833333,
                -0.31666666, 0.88333333, 0.35, 0.75, 1.0166667, 0.61666667];
    check(&y, &[1, 2, 3, 2], &want);
}

fn roi_input() -> (Tensor, Tensor, Tensor) {
    let x: Vec<f32> = (0..50).map(|i| i as f32 / 7.0).collect();
    let rois = f32t(&[2, 4], &[0.5, 0.5, 3.2, 3.9, 1.0, 0.0, 4.0, 2.5]);
    (f32t(&[2, 1, 5, 5], &x), rois, i64t(&[2], &[1, 0]))
}

#[test]
fn roi_align_average_half_pixel() {
    let (x, rois, bi) = roi_input();
    let op = Op::RoiAlign {
        coordinate_transformation_mode: CoordinateTransform::HalfPixel,
        mode: RoiPoolMode::Average,
        output_height: 2,
        output_width: 3,
        sampling_ratio: 2,
        spatial_scale: 1.0,
    };
    let y = run(&op, vec![Some(x), Some(rois), Some(bi)]);
    #[rustfmt::skip]
    let want = [4.242857, 4.3714285, 4.5, 5.4571428, 5.5857143, 5.7142854,
                0.29910716, 0.4419643, 0.58482146, 1.125, 1.2678572, 1.4107143];
    check(&y, &[2, 1, 2, 3], &want);
}

#[test]
fn roi_align_max_output_half_pixel() {
    let (x, rois, bi) = roi_input();
    let op = Op::RoiAlign {
        coordinate_transformation_mode: CoordinateTransform::OutputHalfPixel,
        mode: RoiPoolMode::Max,
        output_height: 2,
        output_width: 2,
        sampling_ratio: 0,
        spatial_scale: 1.0,
    };
    let y = run(&op, vec![Some(x.clone()), Some(rois.clone()), Some(bi)]);
    check(
        &y,
        &[2, 1, 2, 2],
        &[
            3.4307587, 3.7611172, 3.0658484, 3.3113847, 0.8203125, 0.9375, 1.21875, 1.3203125,
        ],
    );
    let msg = run_err(&op, vec![Some(x), Some(rois), Some(i64t(&[2], &[0, 2]))]);
    assert!(msg.contains("out of range"), "{msg}");
}

#[test]
fn non_max_suppression_per_class_with_thresholds() {
    #[rustfmt::skip]
    let boxes = f32t(&[1, 6, 4], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, -0.1, 1.0, 0.9,
                                   0.0, 10.0, 1.0, 11.0, 0.0, 10.1, 1.0, 11.1, 0.0, 100.0, 1.0, 101.0]);
    #[rustfmt::skip]
    let scores = f32t(&[1, 2, 6], &[0.9, 0.75, 0.6, 0.95, 0.5, 0.3, 0.1, 0.8, 0.2, 0.3, 0.9, 0.05]);
    let op = Op::NonMaxSuppression {
        center_point_box: false,
    };
    let inputs = vec![
        Some(boxes),
        Some(scores),
        Some(i64t(&[1], &[2])),
        Some(f32t(&[1], &[0.5])),
        Some(f32t(&[1], &[0.25])),
    ];
    let y = run(&op, inputs.clone());
    assert_eq!(y.shape(), &[4, 3]);
    assert_eq!(
        y.as_slice::<i64>().unwrap(),
        &[0, 0, 3, 0, 0, 0, 0, 1, 4, 0, 1, 1]
    );
    // Without max_output_boxes_per_class nothing is selected (its ONNX default is 0).
    let mut none = inputs;
    none[2] = None;
    assert_eq!(run(&op, none).shape(), &[0, 3]);
}

#[test]
fn dft_forward_onesided_and_round_trip() {
    let sig = f32t(&[1, 5, 1], &[1.0, 2.0, -1.0, 0.5, 3.0]);
    let fwd = Op::Dft {
        inverse: false,
        onesided: false,
    };
    let y = run(&fwd, vec![Some(sig.clone()), None, None]);
    #[rustfmt::skip]
    let want = [5.5, 0.0, 2.9495935, 1.8327343, -3.1995935, -0.83879954, -3.1995935, 0.83879954, 2.9495935, -1.8327343];
    check(&y, &[1, 5, 2], &want);

    // A one-sided, zero-padded transform of length 8 along axis 1.
    let rfft = Op::Dft {
        inverse: false,
        onesided: true,
    };
    let y8 = run(
        &rfft,
        vec![
            Some(sig.clone()),
            Some(i64t(&[], &[8])),
            Some(i64t(&[], &[1])),
        ],
    );
    check(
        &y8,
        &[1, 5, 2],
        &[
            5.5,
            0.0,
            -0.9393398,
            -0.76776695,
            5.0,
            -1.5,
            -3.0606601,
            -2.767767,
            0.5,
            0.0,
        ],
    );

    // The inverse brings the complex signal back; the one-sided inverse brings the real one.
    let inv = Op::Dft {
        inverse: true,
        onesided: false,
    };
    let back = run(&inv, vec![Some(y), None, None]);
    check(
        &back,
        &[1, 5, 2],
        &[1.0, 0.0, 2.0, 0.0, -1.0, 0.0, 0.5, 0.0, 3.0, 0.0],
    );
    let irfft = Op::Dft {
        inverse: true,
        onesided: true,
    };
    let back8 = run(&irfft, vec![Some(y8), Some(i64t(&[], &[8])), None]);
    check(
        &back8,
        &[1, 8, 1],
        &[1.0, 2.0, -1.0, 0.5, 3.0, 0.0, 0.0, 0.0],
    );
}

#[test]
fn stft_with_window() {
    let op = Op::Stft { onesided: true };
    let sig = f32t(&[1, 7, 1], &[1.0, 2.0, 3.0, 4.0, 0.0, -1.0, 2.0]);
    let y = run(
        &op,
        vec![
            Some(sig),
            Some(i64t(&[], &[2])),
            Some(f32t(&[3], &[0.5, 1.0, 0.5])),
            None,
        ],
    );
    #[rustfmt::skip]
    let want = [4.0, 0.0, -1.25, -0.4330127, 5.5, 0.0, -0.5, -3.4641016, 0.0, 0.0, 0.0, 1.7320508];
    check(&y, &[1, 3, 2, 2], &want);
}

#[test]
fn window_functions() {
    let six = || vec![Some(i64t(&[], &[6]))];
    let w = |kind, periodic| Op::Window {
        kind,
        periodic,
        output_dtype: DType::F32,
    };
    check(
        &run(&w(WindowKind::Hann, true), six()),
        &[6],
        &[0.0, 0.25, 0.75, 1.0, 0.75, 0.25],
    );
    check(
        &run(&w(WindowKind::Hann, false), six()),
        &[6],
        &[0.0, 0.3454915, 0.9045085, 0.9045085, 0.3454915, 0.0],
    );
    check(
        &run(&w(WindowKind::Hamming, true), six()),
        &[6],
        &[0.08695652, 0.3152174, 0.7717391, 1.0, 0.7717391, 0.3152174],
    );
    check(
        &run(&w(WindowKind::Hamming, false), six()),
        &[6],
        &[
            0.08695652, 0.4024053, 0.9128121, 0.9128121, 0.4024053, 0.08695652,
        ],
    );
    check(
        &run(&w(WindowKind::Blackman, true), six()),
        &[6],
        &[0.0, 0.13, 0.63, 1.0, 0.63, 0.13],
    );
    check(
        &run(&w(WindowKind::Blackman, false), six()),
        &[6],
        &[0.0, 0.20077014, 0.8492299, 0.8492299, 0.20077014, 0.0],
    );
    let f64w = Op::Window {
        kind: WindowKind::Hann,
        periodic: true,
        output_dtype: DType::F64,
    };
    assert_eq!(run(&f64w, six()).dtype(), DType::F64);
    let msg = run_err(&w(WindowKind::Hann, true), vec![Some(i64t(&[], &[-3]))]);
    assert!(msg.contains("window size"), "{msg}");
    let t = infer(
        &w(WindowKind::Hann, true),
        &[Some(&TensorType::known(DType::I64, &[]))],
        &[Some(&i64t(&[], &[6]))],
        1,
    )
    .unwrap();
    assert_eq!(t[0], TensorType::known(DType::F32, &[6]));
}

#[test]
fn mel_weight_matrix_small() {
    let op = Op::MelWeightMatrix {
        output_dtype: DType::F32,
    };
    let s = |v: i64| Some(i64t(&[], &[v]));
    let y = run(
        &op,
        vec![
            s(3),
            s(16),
            s(8000),
            Some(f32t(&[], &[100.0])),
            Some(f32t(&[], &[3000.0])),
        ],
    );
    let mut want = vec![0.0; 27];
    for (r, c, v) in [(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (3, 2, 0.5)] {
        want[r * 3 + c] = v;
    }
    check(&y, &[9, 3], &want);
}

#[test]
fn col2im_sums_overlapping_blocks() {
    let op = Op::Col2Im {
        dilations: vec![],
        pads: vec![],
        strides: vec![1, 1],
    };
    let x = iota(&[1, 4, 6], 1.0);
    let y = run(
        &op,
        vec![
            Some(x),
            Some(i64t(&[2], &[3, 4])),
            Some(i64t(&[2], &[2, 2])),
        ],
    );
    check(
        &y,
        &[1, 1, 3, 4],
        &[
            1.0, 9.0, 11.0, 9.0, 17.0, 48.0, 52.0, 33.0, 16.0, 39.0, 41.0, 24.0,
        ],
    );

    let op = Op::Col2Im {
        dilations: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        strides: vec![2, 2],
    };
    let y = run(
        &op,
        vec![
            Some(iota(&[1, 8, 4], 1.0)),
            Some(i64t(&[2], &[3, 3])),
            Some(i64t(&[2], &[2, 2])),
        ],
    );
    let mut want = vec![0.0; 18];
    want[4] = 34.0;
    want[13] = 98.0;
    check(&y, &[1, 2, 3, 3], &want);
}

#[test]
fn max_unpool_scatters_into_output_shape() {
    let op = Op::MaxUnpool {
        kernel_shape: vec![2, 2],
        pads: vec![],
        strides: vec![2, 2],
    };
    let x = f32t(&[1, 1, 2, 2], &[5.0, 6.0, 7.0, 8.0]);
    let idx = i64t(&[1, 1, 2, 2], &[5, 7, 13, 15]);
    let y = run(&op, vec![Some(x.clone()), Some(idx.clone()), None]);
    let mut want = vec![0.0; 16];
    for (i, v) in [(5, 5.0), (7, 6.0), (13, 7.0), (15, 8.0)] {
        want[i] = v;
    }
    check(&y, &[1, 1, 4, 4], &want);
    // With a larger output shape the unpooled block sits in its leading corner.
    let y = run(
        &op,
        vec![Some(x.clone()), Some(idx), Some(i64t(&[4], &[1, 1, 5, 5]))],
    );
    let mut want = vec![0.0; 25];
    for (i, v) in [(6, 5.0), (8, 6.0), (16, 7.0), (18, 8.0)] {
        want[i] = v;
    }
    check(&y, &[1, 1, 5, 5], &want);
    let msg = run_err(
        &op,
        vec![Some(x), Some(i64t(&[1, 1, 2, 2], &[0, 1, 2, 99])), None],
    );
    assert!(msg.contains("out of range"), "{msg}");
}

#[test]
fn center_crop_pad_crops_and_pads() {
    let op = Op::CenterCropPad { axes: vec![] };
    let y = run(
        &op,
        vec![Some(iota(&[3, 5], 0.0)), Some(i64t(&[2], &[5, 2]))],
    );
    check(
        &y,
        &[5, 2],
        &[0.0, 0.0, 1.0, 2.0, 6.0, 7.0, 11.0, 12.0, 0.0, 0.0],
    );
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let empty = f32t(&[0], &[]);
    let cases: Vec<(Op, Vec<Option<Tensor>>)> = vec![
        (
            resize(ResizeMode::Cubic, CoordinateTransform::AlignCorners),
            vec![
                Some(f32t(&[1, 0], &[])),
                None,
                None,
                Some(i64t(&[2], &[1, 3])),
            ],
        ),
        (
            resize(ResizeMode::Linear, CoordinateTransform::HalfPixel),
            vec![
                Some(iota(&[2, 2], 0.0)),
                None,
                Some(f32t(&[2], &[f32::NAN, 1.0])),
            ],
        ),
        (
            resize(ResizeMode::Linear, CoordinateTransform::HalfPixel),
            vec![
                Some(iota(&[2, 2], 0.0)),
                None,
                Some(f32t(&[3], &[1.0, 1.0, 1.0])),
            ],
        ),
        (
            resize(ResizeMode::Linear, CoordinateTransform::TfCropAndResize),
            vec![
                Some(iota(&[2, 2], 0.0)),
                Some(f32t(&[4], &[0.0, f32::INFINITY, 1.0, 1.0])),
                Some(f32t(&[2], &[2.0, 2.0])),
            ],
        ),
        (
            Op::Col2Im {
                dilations: vec![i64::MAX, 1],
                pads: vec![i64::MAX, 0, i64::MAX, 0],
                strides: vec![1, 1],
            },
            vec![
                Some(iota(&[1, 4, 6], 0.0)),
                Some(i64t(&[2], &[3, 4])),
                Some(i64t(&[2], &[2, 2])),
            ],
        ),
        (
            Op::Col2Im {
                dilations: vec![],
                pads: vec![],
                strides: vec![],
            },
            vec![
                Some(iota(&[1, 4, 6], 0.0)),
                Some(i64t(&[2], &[1 << 40, 4])),
                Some(i64t(&[2], &[1 << 40, 2])),
            ],
        ),
        (
            Op::MaxUnpool {
                kernel_shape: vec![i64::MAX, 2],
                pads: vec![],
                strides: vec![i64::MAX, 2],
            },
            vec![
                Some(iota(&[1, 1, 2, 2], 0.0)),
                Some(i64t(&[1, 1, 2, 2], &[0, 1, 2, 3])),
                None,
            ],
        ),
        (
            Op::GridSample {
                align_corners: true,
                mode: GridSampleMode::Cubic,
                padding_mode: GridPaddingMode::Reflection,
            },
            vec![
                Some(f32t(&[1, 1, 1, 1], &[2.0])),
                Some(f32t(&[1, 1, 2, 2], &[f32::INFINITY, f32::NAN, -1e30, 1e30])),
            ],
        ),
        (
            Op::GridSample {
                align_corners: false,
                mode: GridSampleMode::Linear,
                padding_mode: GridPaddingMode::Border,
            },
            vec![
                Some(f32t(&[1, 1, 0, 3], &[])),
                Some(f32t(&[1, 1, 1, 2], &[0.0, 0.0])),
            ],
        ),
        (
            Op::AffineGrid {
                align_corners: true,
            },
            vec![
                Some(f32t(&[1, 2, 3], &[0.0; 6])),
                Some(i64t(&[4], &[1, 1, 1 << 30, 1 << 30])),
            ],
        ),
        (
            Op::Dft {
                inverse: true,
                onesided: true,
            },
            vec![Some(f32t(&[1, 0, 2], &[])), None, None],
        ),
        (
            Op::Dft {
                inverse: false,
                onesided: false,
            },
            vec![Some(f32t(&[3, 3], &[0.0; 9])), None, Some(i64t(&[], &[-1]))],
        ),
        (
            Op::Stft { onesided: true },
            vec![
                Some(f32t(&[1, 4, 1], &[0.0; 4])),
                Some(i64t(&[], &[0])),
                None,
                Some(i64t(&[], &[8])),
            ],
        ),
        (
            Op::MelWeightMatrix {
                output_dtype: DType::F32,
            },
            vec![
                Some(i64t(&[], &[4])),
                Some(i64t(&[], &[8])),
                Some(i64t(&[], &[10])),
                Some(f32t(&[], &[0.0])),
                Some(f32t(&[], &[1e9])),
            ],
        ),
        (
            Op::NonMaxSuppression {
                center_point_box: true,
            },
            vec![
                Some(f32t(&[1, 2, 4], &[0.0; 8])),
                Some(f32t(&[1, 1, 3], &[0.0; 3])),
                None,
                None,
                None,
            ],
        ),
        (
            Op::CenterCropPad { axes: vec![0, 0] },
            vec![Some(iota(&[2, 2], 0.0)), Some(i64t(&[2], &[1, 1]))],
        ),
        (
            Op::RoiAlign {
                coordinate_transformation_mode: CoordinateTransform::HalfPixel,
                mode: RoiPoolMode::Average,
                output_height: 1,
                output_width: 1,
                sampling_ratio: 0,
                spatial_scale: 1.0,
            },
            vec![
                Some(iota(&[1, 1, 2, 2], 0.0)),
                Some(f32t(&[1, 4], &[0.0, 0.0, 1e30, 1e30])),
                Some(i64t(&[1], &[0])),
            ],
        ),
    ];
    for (op, inputs) in cases {
        let r = eval_op(&op, &inputs, 1);
        // Either outcome is fine; the point is that nothing panics. Most of these are errors.
        let _ = r;
    }
    let _ = empty;
}
