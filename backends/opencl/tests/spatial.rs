//! OPENCL against REFERENCE for the image, signal and normalization generators
//! (src/gen/spatial/): odd shapes and the attributes that change the generated code. Each
//! test skips (printing why) only when this machine has no OpenCL platform.

use kiln_ir::{DType, Tensor};

mod common;
use common::{check, data};

fn f32s(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_f64(DType::F32, shape.to_vec(), v).unwrap()
}

fn i64s(shape: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::new(shape.to_vec(), v).unwrap()
}

#[test]
fn resize_modes_with_constant_targets() {
    // Cubic antialias downsampling (a filter wider than 4 taps), linear upsampling with
    // half_pixel_symmetric, nearest with a keep-aspect-ratio policy on listed axes, cubic
    // with exclude_outside, and an integer tensor (rounded and saturated).
    check(
        r#"graph g(%x: f32[2,3,7,5], %q: u8[1,1,5,6]) -> (%a: f32[2,3,4,3], %b: f32[2,3,10,8], %c: f32[2,3,10,7], %d: f32[2,3,7,12], %e: u8[1,1,9,8]) {
  @s1 = f32[4] [1, 1, 0.6, 0.7]
  @s2 = f32[4] [1, 1, 1.5, 1.7]
  @z3 = i64[2] [7, 10]
  @s4 = f32[2] [2.5, 1]
  @z5 = i64[4] [1, 1, 9, 8]
  %0 = resize(%x, _, @s1) {antialias=true, axes=[], coordinate_transformation_mode=half_pixel, cubic_coeff_a=-0.75, exclude_outside=false, extrapolation_value=0.0, keep_aspect_ratio_policy=stretch, mode=cubic, nearest_mode=round_prefer_floor} : f32[2,3,4,3] "a"
  %1 = resize(%x, _, @s2) {antialias=false, axes=[], coordinate_transformation_mode=half_pixel_symmetric, cubic_coeff_a=-0.75, exclude_outside=false, extrapolation_value=0.0, keep_aspect_ratio_policy=stretch, mode=linear, nearest_mode=round_prefer_floor} : f32[2,3,10,8] "b"
  %2 = resize(%x, _, _, @z3) {antialias=false, axes=[3,2], coordinate_transformation_mode=asymmetric, cubic_coeff_a=-0.75, exclude_outside=false, extrapolation_value=0.0, keep_aspect_ratio_policy=not_smaller, mode=nearest, nearest_mode=round_prefer_ceil} : f32[2,3,10,7] "c"
  %3 = resize(%x, _, @s4) {antialias=false, axes=[3,2], coordinate_transformation_mode=align_corners, cubic_coeff_a=-0.5, exclude_outside=true, extrapolation_value=0.0, keep_aspect_ratio_policy=stretch, mode=cubic, nearest_mode=round_prefer_floor} : f32[2,3,7,12] "d"
  %4 = resize(%q, _, _, @z5) {antialias=true, axes=[], coordinate_transformation_mode=pytorch_half_pixel, cubic_coeff_a=-0.75, exclude_outside=false, extrapolation_value=0.0, keep_aspect_ratio_policy=stretch, mode=linear, nearest_mode=floor} : u8[1,1,9,8] "e"
  return %0, %1, %2, %3, %4
}"#,
        &[data(&[2, 3, 7, 5]), Tensor::new(vec![1, 1, 5, 6], (0..30u8).map(|i| i.wrapping_mul(37)).collect::<Vec<u8>>()).unwrap()],
    );
}

#[test]
fn resize_crop_with_roi_and_scales_given_as_inputs() {
    // roi and scales are graph inputs: the device specializes on their values.
    check(
        r#"graph g(%x: f32[1,2,5,6], %roi: f32[4], %s: f32[2]) -> (%y: f32[1,2,?,?]) {
  %0 = resize(%x, %roi, %s) {antialias=false, axes=[2,3], coordinate_transformation_mode=tf_crop_and_resize, cubic_coeff_a=-0.75, exclude_outside=false, extrapolation_value=7.5, keep_aspect_ratio_policy=stretch, mode=linear, nearest_mode=round_prefer_floor} : f32[1,2,?,?] "y"
  return %0
}"#,
        &[data(&[1, 2, 5, 6]), f32s(&[4], &[-0.2, 0.3, 0.9, 1.4]), f32s(&[2], &[1.6, 0.8])],
    );
}

#[test]
fn grid_sample_modes_and_padding() {
    let g2 = data(&[2, 3, 5, 2]);
    let g3 = data(&[1, 2, 3, 2, 3]);
    check(
        r#"graph g(%x: f32[2,3,4,5], %g: f32[2,3,5,2], %v: f32[1,2,3,4,2], %h: f32[1,2,3,2,3]) -> (%a: f32[2,3,3,5], %b: f32[2,3,3,5], %c: f32[2,3,3,5], %d: f32[1,2,2,3,2], %e: f32[2,3,3,5]) {
  %0 = grid_sample(%x, %g) {align_corners=false, mode=cubic, padding_mode=zeros} : f32[2,3,3,5] "a"
  %1 = grid_sample(%x, %g) {align_corners=true, mode=linear, padding_mode=reflection} : f32[2,3,3,5] "b"
  %2 = grid_sample(%x, %g) {align_corners=false, mode=nearest, padding_mode=border} : f32[2,3,3,5] "c"
  %3 = grid_sample(%v, %h) {align_corners=false, mode=linear, padding_mode=zeros} : f32[1,2,2,3,2] "d"
  %4 = grid_sample(%x, %g) {align_corners=false, mode=cubic, padding_mode=reflection} : f32[2,3,3,5] "e"
  return %0, %1, %2, %3, %4
}"#,
        &[data(&[2, 3, 4, 5]), g2, data(&[1, 2, 3, 4, 2]), g3],
    );
}

#[test]
fn affine_grid_2d_and_3d() {
    check(
        r#"graph g(%t: f32[2,2,3], %u: f32[1,3,4]) -> (%a: f32[2,3,5,2], %b: f32[1,2,1,3,3]) {
  @s2 = i64[4] [2, 1, 3, 5]
  @s3 = i64[5] [1, 1, 2, 1, 3]
  %0 = affine_grid(%t, @s2) {align_corners=true} : f32[2,3,5,2] "a"
  %1 = affine_grid(%u, @s3) {align_corners=false} : f32[1,2,1,3,3] "b"
  return %0, %1
}"#,
        &[data(&[2, 2, 3]), data(&[1, 3, 4])],
    );
}

#[test]
fn conv_transpose_geometry() {
    // Groups with strides, dilations, pads and output_padding; an output_shape; same_lower
    // padding; 1-D with a bias.
    check(
        r#"graph g(%x: f32[1,4,3,4], %w: f32[4,3,3,2], %y: f32[2,3,5], %v: f32[3,2,3], %b: f32[2]) -> (%a: f32[1,6,9,8], %c: f32[1,6,9,10], %d: f32[1,6,6,8], %e: f32[2,2,17]) {
  %0 = conv_transpose(%x, %w) {auto_pad=explicit, dilations=[1,2], group=2, kernel_shape=[], output_padding=[1,0], output_shape=[], pads=[1,0,0,1], strides=[3,2]} : f32[1,6,9,8] "a"
  %1 = conv_transpose(%x, %w) {auto_pad=explicit, dilations=[], group=2, kernel_shape=[], output_padding=[], output_shape=[9,10], pads=[], strides=[3,2]} : f32[1,6,9,10] "c"
  %2 = conv_transpose(%x, %w) {auto_pad=same_lower, dilations=[], group=2, kernel_shape=[], output_padding=[], output_shape=[], pads=[], strides=[2,2]} : f32[1,6,6,8] "d"
  %3 = conv_transpose(%y, %v, %b) {auto_pad=explicit, dilations=[2], group=1, kernel_shape=[3], output_padding=[], output_shape=[], pads=[], strides=[3]} : f32[2,2,17] "e"
  return %0, %1, %2, %3
}"#,
        &[data(&[1, 4, 3, 4]), data(&[4, 3, 3, 2]), data(&[2, 3, 5]), data(&[3, 2, 3]), data(&[2])],
    );
}

#[test]
fn col2im_with_strides_pads_and_dilations() {
    check(
        r#"graph g(%x: f32[2,6,16]) -> (%y: f32[2,1,5,8]) {
  @im = i64[2] [5, 8]
  @bl = i64[2] [2, 3]
  %0 = col2im(%x, @im, @bl) {dilations=[2,1], pads=[1,0,0,1], strides=[1,2]} : f32[2,1,5,8] "y"
  return %0
}"#,
        &[data(&[2, 6, 16])],
    );
}

#[test]
fn deform_conv_with_mask_groups_and_offset_groups() {
    check(
        r#"graph g(%x: f32[1,4,5,6], %w: f32[4,2,2,3], %off: f32[1,24,3,3], %b: f32[4], %m: f32[1,12,3,3]) -> (%y: f32[1,4,3,3]) {
  %0 = deform_conv(%x, %w, %off, %b, %m) {dilations=[1,2], group=2, kernel_shape=[2,3], offset_group=2, pads=[1,0,1,1], strides=[2,1]} : f32[1,4,3,3] "y"
  return %0
}"#,
        &[data(&[1, 4, 5, 6]), data(&[4, 2, 2, 3]), data(&[1, 24, 3, 3]), data(&[4]), data(&[1, 12, 3, 3])],
    );
}

#[test]
fn roi_align_average_and_max() {
    let rois = f32s(&[3, 4], &[0.0, 0.0, 6.0, 5.0, 1.5, 2.0, 7.5, 8.0, 4.0, 3.0, 4.5, 3.2]);
    check(
        r#"graph g(%x: f32[2,3,9,8], %r: f32[3,4], %i: i64[3]) -> (%a: f32[3,3,3,2], %b: f32[3,3,2,3]) {
  %0 = roi_align(%x, %r, %i) {coordinate_transformation_mode=half_pixel, mode=average, output_height=3, output_width=2, sampling_ratio=0, spatial_scale=0.8} : f32[3,3,3,2] "a"
  %1 = roi_align(%x, %r, %i) {coordinate_transformation_mode=output_half_pixel, mode=max, output_height=2, output_width=3, sampling_ratio=2, spatial_scale=1.0} : f32[3,3,2,3] "b"
  return %0, %1
}"#,
        &[data(&[2, 3, 9, 8]), rois, i64s(&[3], vec![1, 0, 1])],
    );
}

#[test]
fn normalizations() {
    check(
        r#"graph g(%x: f32[2,6,3,5], %s: f32[6], %b: f32[6]) -> (%a: f32[2,6,3,5], %c: f32[2,6,3,5], %d: f32[2,6,3,5], %e: f32[2,6,3,5]) {
  %0 = instance_norm(%x, %s, %b) {epsilon=1e-5} : f32[2,6,3,5] "a"
  %1 = group_norm(%x, %s, %b) {epsilon=1e-3, num_groups=3, stash_type=f32} : f32[2,6,3,5] "c"
  %2 = mean_variance_normalization(%x) {axes=[1,3]} : f32[2,6,3,5] "d"
  %3 = lrn(%x) {alpha=0.001, beta=0.75, bias=1.5, size=4} : f32[2,6,3,5] "e"
  return %0, %1, %2, %3
}"#,
        &[data(&[2, 6, 3, 5]), data(&[6]), data(&[6])],
    );
}

#[test]
fn max_pool_indices_and_max_unpool() {
    // Indices in both storage orders; unpooling them back, to the inferred shape and to a
    // larger output_shape.
    check(
        r#"graph g(%x: f32[2,3,6,6]) -> (%y: f32[2,3,3,3], %i: i64[2,3,3,3], %j: i64[2,3,3,3], %u: f32[2,3,6,6], %v: f32[2,3,8,7]) {
  @os = i64[4] [2, 3, 8, 7]
  %0 = pool(%x) {kind=max, auto_pad=explicit, ceil_mode=false, count_include_pad=false, dilations=[], kernel_shape=[3,2], pads=[1,0,0,0], strides=[2,2], storage_order=0, p=2} : (f32[2,3,3,3], i64[2,3,3,3]) "mp"
  %1 = pool(%x) {kind=max, auto_pad=explicit, ceil_mode=false, count_include_pad=false, dilations=[], kernel_shape=[3,2], pads=[1,0,0,0], strides=[2,2], storage_order=1, p=2} : (f32[2,3,3,3], i64[2,3,3,3]) "mp1"
  %2 = max_unpool(%0.0, %0.1) {kernel_shape=[3,2], pads=[1,0,0,0], strides=[2,2]} : f32[2,3,6,6] "u"
  %3 = max_unpool(%0.0, %0.1, @os) {kernel_shape=[3,2], pads=[1,0,0,0], strides=[2,2]} : f32[2,3,8,7] "v"
  return %0.0, %0.1, %1.1, %2, %3
}"#,
        &[data(&[2, 3, 6, 6])],
    );
}

/// Windows and mel matrices of at most 2^16 elements are folded on the host when
/// specializing; these are larger, so the generated kernels compute them.
#[test]
fn large_windows_and_mel_matrix() {
    check(
        r#"graph g() -> (%a: f32[70001], %b: f64[66000], %c: f32[66001], %h: f32[513,130]) {
  @n1 = i64[] [70001]
  @n2 = i32[] [66000]
  @n3 = i64[] [66001]
  @bins = i32[] [130]
  @dl = i32[] [1024]
  @rate = i32[] [16000]
  @lo = f32[] [20]
  @hi = f32[] [7900]
  %0 = window(@n1) {kind=hann, periodic=true, output_dtype=f32} : f32[70001] "a"
  %1 = window(@n2) {kind=hamming, periodic=false, output_dtype=f64} : f64[66000] "b"
  %2 = window(@n3) {kind=blackman, periodic=true, output_dtype=f32} : f32[66001] "c"
  %3 = mel_weight_matrix(@bins, @dl, @rate, @lo, @hi) {output_dtype=f32} : f32[513,130] "h"
  return %0, %1, %2, %3
}"#,
        &[],
    );
}

#[test]
fn dft_stft_and_det() {
    check(
        r#"graph g(%x: f32[2,7,2], %r: f32[3,5,1], %sig: f32[2,20,1], %win: f32[6], %m: f64[2,3,5,5]) -> (%d: f32[2,7,2], %e: f32[3,5,2], %f: f32[2,12,1], %g: f32[2,8,4,2], %k: f64[2,3]) {
  @ax1 = i64[] [1]
  @ax0 = i64[] [0]
  @len12 = i64[] [12]
  @step = i64[] [2]
  %3 = dft(%x, _, @ax1) {inverse=false, onesided=false} : f32[2,7,2] "d"
  %4 = dft(%r, _, @ax1) {inverse=false, onesided=true} : f32[3,3,2] "e0"
  %5 = dft(%r, _, @ax0) {inverse=true, onesided=false} : f32[3,5,2] "e"
  %6 = dft(%x, @len12, @ax1) {inverse=true, onesided=true} : f32[2,12,1] "f"
  %7 = stft(%sig, @step, %win) {onesided=true} : f32[2,8,4,2] "g"
  %9 = det(%m) : f64[2,3] "k"
  return %3, %5, %6, %7, %9
}"#,
        &[data(&[2, 7, 2]), data(&[3, 5, 1]), data(&[2, 20, 1]), data(&[6]), Tensor::from_f64(DType::F64, vec![2, 3, 5, 5], &data(&[2, 3, 5, 5]).to_f64_vec()).unwrap()],
    );
}
