//! OPENCL against REFERENCE for attention and rotary embedding, with odd shapes and the
//! attributes that change the generated code. Each test skips (printing why) only when this
//! machine has no OpenCL platform; CI installs PoCL, so they run there.

use kiln_ir::{DType, Tensor};

mod common;
use common::{check, data};

fn data_f64(shape: &[usize]) -> Tensor {
    Tensor::from_f64(DType::F64, shape.to_vec(), &data(shape).to_f64_vec()).unwrap()
}

/// 4-D with a past cache, a causal mask and a float mask shorter than the keys (padded with
/// -inf), v's head size unlike q's: all four outputs, for each qk_matmul_output mode.
#[test]
fn attention_4d_past_present_short_mask_every_qk_mode() {
    for mode in 0..4 {
        let src = format!(
            r#"graph g(%q: f32[2,3,3,5], %k: f32[2,3,4,5], %v: f32[2,3,4,7], %m: f32[3,5], %pk: f32[2,3,2,5], %pv: f32[2,3,2,7]) -> (%y: f32[2,3,3,7], %ok: f32[2,3,6,5], %ov: f32[2,3,6,7], %qk: f32[2,3,3,6]) {{
  %0 = attention(%q, %k, %v, %m, %pk, %pv, _) {{is_causal=true, qk_matmul_output_mode={mode}, softcap=0.0, left_window_size=-1, right_window_size=-1}} : (f32[2,3,3,7], f32[2,3,6,5], f32[2,3,6,7], f32[2,3,3,6]) "att"
  return %0.0, %0.1, %0.2, %0.3
}}"#
        );
        check(
            &src,
            &[
                data(&[2, 3, 3, 5]),
                data(&[2, 3, 4, 5]),
                data(&[2, 3, 4, 7]),
                data(&[3, 5]),
                data(&[2, 3, 2, 5]),
                data(&[2, 3, 2, 7]),
            ],
        );
    }
}

/// 3-D inputs split into heads, 4 query heads sharing 2 kv heads (GQA), explicit scale,
/// softcap, a bool mask and a two-sided sliding window.
#[test]
fn attention_3d_gqa_softcap_bool_mask_window() {
    let mask: Vec<bool> = (0..15).map(|i| i % 4 != 1).collect();
    check(
        r#"graph g(%q: f32[2,3,12], %k: f32[2,5,6], %v: f32[2,5,10], %m: bool[3,5]) -> (%y: f32[2,3,20]) {
  %0 = attention(%q, %k, %v, %m, _, _, _) {is_causal=false, kv_num_heads=2, q_num_heads=4, qk_matmul_output_mode=0, scale=0.3, softcap=1.5, left_window_size=1, right_window_size=2} : f32[2,3,20] "att"
  return %0
}"#,
        &[
            data(&[2, 3, 12]),
            data(&[2, 5, 6]),
            data(&[2, 5, 10]),
            Tensor::new(vec![3, 5], mask).unwrap(),
        ],
    );
}

/// nonpad_kv_seqlen (an external cache): batch 1 sees no key at all, so its rows are fully
/// masked and their probabilities and outputs are zero.
#[test]
fn attention_nonpad_and_fully_masked_rows() {
    check(
        r#"graph g(%q: f32[2,1,3,4], %k: f32[2,1,5,4], %v: f32[2,1,5,4], %n: i64[2]) -> (%y: f32[2,1,3,4], %qk: f32[2,1,3,5]) {
  %0 = attention(%q, %k, %v, _, _, _, %n) {is_causal=true, qk_matmul_output_mode=3, softcap=0.0, left_window_size=-1, right_window_size=-1} : (f32[2,1,3,4], f32[2,1,5,4], f32[2,1,5,4], f32[2,1,3,5]) "att"
  return %0.0, %0.3
}"#,
        &[
            data(&[2, 1, 3, 4]),
            data(&[2, 1, 5, 4]),
            data(&[2, 1, 5, 4]),
            Tensor::new(vec![2], vec![4i64, 0]).unwrap(),
        ],
    );
}

/// f64 attention: no rounding steps, the whole computation in double.
#[test]
fn attention_f64() {
    check(
        r#"graph g(%q: f64[1,2,3,4], %k: f64[1,2,5,4], %v: f64[1,2,5,3]) -> (%y: f64[1,2,3,3]) {
  %0 = attention(%q, %k, %v, _, _, _, _) {is_causal=false, qk_matmul_output_mode=0, softcap=0.0, left_window_size=-1, right_window_size=-1} : f64[1,2,3,3] "att"
  return %0
}"#,
        &[
            data_f64(&[1, 2, 3, 4]),
            data_f64(&[1, 2, 5, 4]),
            data_f64(&[1, 2, 5, 3]),
        ],
    );
}

/// Rotary embedding: 4-D, interleaved pairs over part of the head, caches indexed by
/// position ids; and 3-D split into heads, halves, caches per (batch, position).
#[test]
fn rotary_embedding_interleaved_partial_and_3d() {
    check(
        r#"graph g(%x: f32[2,3,4,10], %c: f32[7,3], %s: f32[7,3], %p: i64[2,4]) -> (%y: f32[2,3,4,10]) {
  %0 = rotary_embedding(%x, %c, %s, %p) {interleaved=true, rotary_embedding_dim=6} : f32[2,3,4,10] "rot"
  return %0
}"#,
        &[
            data(&[2, 3, 4, 10]),
            data(&[7, 3]),
            data(&[7, 3]),
            Tensor::new(vec![2, 4], vec![0i64, 6, 2, 3, 5, 1, 4, 0]).unwrap(),
        ],
    );
    check(
        r#"graph g(%x: f32[2,3,18], %c: f32[2,3,3], %s: f32[2,3,3]) -> (%y: f32[2,3,18]) {
  %0 = rotary_embedding(%x, %c, %s) {interleaved=false, num_heads=3, rotary_embedding_dim=0} : f32[2,3,18] "rot"
  return %0
}"#,
        &[data(&[2, 3, 18]), data(&[2, 3, 3]), data(&[2, 3, 3])],
    );
}

/// The expanded forms of RMS and layer normalization compute their reduce axes with Range
/// and their output shape with ConstantOfShape and Concat from `shape(x)`: specializing
/// must fold those (their lengths are unknown until their inputs are) so every kernel's
/// shape is concrete.
#[test]
fn expanded_norm_shape_arithmetic_folds() {
    check(
        r#"graph g(%x: f32[2,3,5]) -> (%y: f32[2,3,5], %m: f32[*]) {
  @axis = i64[] [-2]
  @one = i64[] [1]
  @one1 = i64[1] [1]
  %0 = shape(%x) {start=0} : i64[3] "xshape"
  %1 = size(%0) : i64[] "rank"
  %2 = add(%1, @axis) : i64[] "pos_axis"
  %3 = range(%2, %1, @one) : i64[?] "reduce_axes"
  %4 = mul(%x, %x) : f32[2,3,5] "sq"
  %5 = reduce(%4, %3) {kind=mean, keepdims=true, noop_with_empty_axes=false} : f32[?,?,?] "mean_sq"
  %6 = sqrt(%5) : f32[?,?,?] "rms"
  %7 = div(%x, %6) : f32[2,3,5] "y"
  %8 = sub(%1, @one1) : i64[1] "n_reduced"
  %9 = constant_of_shape(%8) {value=i64[1] [1]} : i64[?] "suffix"
  @zero1 = i64[1] [0]
  %10 = slice(%0, @zero1, @one1) : i64[1] "prefix"
  %11 = concat(%10, %9) {axis=0} : i64[?] "reduced_shape"
  %12 = reshape(%5, %11) {allowzero=false} : f32[*] "m"
  return %7, %12
}"#,
        &[data(&[2, 3, 5])],
    );
}
