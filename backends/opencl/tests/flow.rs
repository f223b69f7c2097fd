//! Control flow on OPENCL against REFERENCE: If, Loop and Scan run their regions as
//! sub-plans on the device; what follows a Loop (whose stacked outputs have as many rows as
//! iterations ran) is compiled once the run has told their shapes.

mod common;

use common::{check, data};
use kiln_ir::Tensor;

/// Carried values, a captured weight, a scan output and a body condition that ends the loop
/// before the trip count; the loop's outputs feed kernels compiled after it ran.
const LOOP: &str = r#"graph g(%m: i64[], %x: f32[3], %w: f32[3]) -> (%last: f32[3], %stacked: f32[?,3], %total: f32[3]) {
  @t = bool[] [true]
  @ax0 = i64[1] [0]
  %0 = loop(%m, @t, %x, %w) {
    body=graph b(%i: i64[], %c: bool[], %s: f32[3], %wc: f32[3]) -> (%co: bool[], %so: f32[3], %y: f32[3]) {
      @four = i64[] [4]
      input %i
      input %c
      input %s
      input %wc
      %0 = cast(%i) {to=f32} : f32[] "fi"
      %1 = mul(%s, %wc) : f32[3] "mul"
      %2 = add(%1, %0) : f32[3] "add"
      %3 = less(%i, @four) : bool[] "less"
      %4 = tanh(%2) : f32[3] "tanh"
      return %3, %2, %4
    },
    num_captured=1
  } : (f32[3], f32[?,3]) "loop"
  %1 = reduce(%0.1, @ax0) {kind=sum, keepdims=false, noop_with_empty_axes=false} : f32[3] "sum"
  %2 = add(%1, %0.0) : f32[3] "after"
  return %0.0, %0.1, %2
}"#;

#[test]
fn loop_with_carried_captured_and_scanned_values() {
    // The trip count ends it (3 iterations), then the body's condition does (after i = 4).
    for m in [3i64, 10] {
        check(LOOP, &[Tensor::scalar(m), data(&[3]), data(&[3])]);
    }
}

#[test]
fn loop_of_no_iterations_gives_empty_stacked_outputs() {
    check(LOOP, &[Tensor::scalar(0i64), data(&[3]), data(&[3])]);
}

#[test]
fn if_runs_the_branch_its_condition_picks() {
    let src = r#"graph g(%c: bool[], %x: f32[2,3], %y: f32[3]) -> (%o: f32[2,3]) {
  %0 = if(%c, %x, %y) {
    then_branch=graph t(%a: f32[2,3], %b: f32[3]) -> (%r: f32[2,3]) {
      input %a
      input %b
      %0 = add(%a, %b) : f32[2,3] "add"
      return %0
    },
    else_branch=graph e(%a: f32[2,3], %b: f32[3]) -> (%r: f32[2,3]) {
      input %a
      input %b
      %0 = mul(%a, %a) : f32[2,3] "sq"
      %1 = sigmoid(%0) : f32[2,3] "sig"
      return %1
    }
  } : (f32[2,3]) "if"
  %1 = relu(%0) : f32[2,3] "relu"
  return %1
}"#;
    for c in [true, false] {
        check(src, &[Tensor::scalar(c), data(&[2, 3]), data(&[3])]);
    }
}

#[test]
fn scan_over_a_middle_axis_reversed_into_another() {
    // Slices along axis 1 (strided rows: a rectangular copy), read last to first, stacked
    // along axis 2 last to first; a state carried and a captured value read whole.
    let src = r#"graph g(%s: f32[3,2], %x: f32[3,5,2], %k: f32[2]) -> (%st: f32[3,2], %ys: f32[3,2,5]) {
  %0 = scan(%s, %x, %k) {
    body=graph b(%si: f32[3,2], %xi: f32[3,2], %ki: f32[2]) -> (%so: f32[3,2], %yo: f32[3,2]) {
      input %si
      input %xi
      input %ki
      %0 = add(%si, %xi) : f32[3,2] "acc"
      %1 = mul(%0, %ki) : f32[3,2] "scale"
      return %0, %1
    },
    num_scan_inputs=1,
    num_captured=1,
    scan_input_axes=[1],
    scan_input_directions=[1],
    scan_output_axes=[2],
    scan_output_directions=[1]
  } : (f32[3,2], f32[3,2,5]) "scan"
  return %0.0, %0.1
}"#;
    check(src, &[data(&[3, 2]), data(&[3, 5, 2]), data(&[2])]);
}

#[test]
fn a_body_with_an_op_the_device_refuses_makes_the_loop_unsupported() {
    use kiln_backends::Backend;
    let g = kiln_ir::text::parse(LOOP, None).unwrap();
    let loop_node = g.nodes.node_indices().find(|&n| g.node(n).op.name() == "loop").unwrap();
    let node = g.node(loop_node);
    assert!(kiln_opencl::OpenCl::new().refusing("").supports(&kiln_backends::Kernel { node }));
    assert!(!kiln_opencl::OpenCl::new().refusing("tanh").supports(&kiln_backends::Kernel { node }));
    assert!(!kiln_opencl::OpenCl::new().refusing("flow").supports(&kiln_backends::Kernel { node }));
}

#[test]
fn shape_arithmetic_of_an_unfused_graph_folds_on_the_host() {
    // As the expanded layer norms at -O0: the reshape targets come from Shape, Size,
    // ConstantOfShape and Concat, whose declared types are unknown until folded.
    let src = r#"graph g(%x: f32[2,3,4]) -> (%y: f32[?,?], %m: f32[*]) {
  @zero = i64[1] [0]
  @one = i64[1] [1]
  @two = i64[1] [2]
  %0 = shape(%x) {start=0} : i64[3] "shape"
  %1 = size(%0) : i64[] "rank"
  %2 = slice(%0, @zero, @two) : i64[2] "prefix"
  %3 = sub(%1, @two) : i64[1] "n"
  %4 = constant_of_shape(%3) {value=i64[1] [1]} : i64[?] "ones"
  %5 = concat(%2, %4) {axis=0} : i64[?] "reduced"
  %6 = reduce(%x, @two) {kind=mean, keepdims=true, noop_with_empty_axes=false} : f32[2,3,1] "mean"
  %7 = reshape(%6, %5) {allowzero=false} : f32[*] "m"
  @flat = i64[2] [6, 4]
  %8 = reshape(%x, @flat) {allowzero=false} : f32[6,4] "x2"
  %9 = sub(%8, %8) : f32[6,4] "zero"
  %10 = shape(%9) {start=0} : i64[2] "s2"
  %11 = reshape(%x, %10) {allowzero=false} : f32[?,?] "y"
  return %11, %7
}"#;
    check(src, &[data(&[2, 3, 4])]);
}

#[test]
fn a_fused_output_folded_to_a_constant_is_uploaded() {
    // Once shapes are known, the kernel's first output (shape arithmetic) is a constant:
    // it leaves the kernel, which generates the rest.
    let src = r#"graph g(%x: f32[2,5]) -> (%s: f32[1], %r: f32[2,5], %t: f32[2,5]) {
  %0 = fused(%x) {
    body=graph k(%a: f32[2,5]) -> (%s: f32[1], %r: f32[2,5]) {
      input %a
      %0 = shape(%a) {start=1} : i64[1] "shape"
      %1 = cast(%0) {to=f32} : f32[1] "dims"
      %2 = relu(%a) : f32[2,5] "relu"
      return %1, %2
    }
  } : (f32[1], f32[2,5]) "kernel"
  %1 = add(%0.1, %0.0) : f32[2,5] "after"
  return %0.0, %0.1, %1
}"#;
    // An input of a symbolic batch makes specializing (not the passes) fold the output.
    let sym = src.replace("f32[2,5]", "f32[N,5]");
    check(src, &[data(&[2, 5])]);
    check(&sym, &[data(&[2, 5])]);
}

fn as_type(t: &Tensor, d: kiln_ir::DType) -> Tensor {
    Tensor::from_f64(d, t.shape().to_vec(), &t.to_f64_vec()).unwrap()
}

#[test]
fn half_types_are_stored_as_halves_and_round_after_every_op() {
    // A fused body of f16 ops: each value rounds to f16 as `ir::eval` rounds each op, so
    // the chain matches REFERENCE; bf16 the same, and casts between them and f32.
    let src = r#"graph g(%x: f16[3,7], %y: f16[7], %b: bf16[3,7]) -> (%h: f16[3,7], %s: f16[3], %bb: bf16[3,7], %f: f32[3,7]) {
  @ax = i64[1] [1]
  %0 = fused(%x, %y) {
    body=graph k(%a: f16[3,7], %c: f16[7]) -> (%o: f16[3,7]) {
      @third = f16[] [0.3333]
      input %a
      input %c
      %0 = mul(%a, @third) : f16[3,7] "scale"
      %1 = add(%0, %c) : f16[3,7] "add"
      %2 = sigmoid(%1) : f16[3,7] "sig"
      %3 = mul(%2, %1) : f16[3,7] "swish"
      return %3
    }
  } : (f16[3,7]) "kernel"
  %1 = reduce(%0, @ax) {kind=sum, keepdims=false, noop_with_empty_axes=false} : f16[3] "sum"
  %2 = mul(%b, %b) : bf16[3,7] "bsq"
  %3 = cast(%2) {to=f32} : f32[3,7] "bf"
  %4 = cast(%0) {to=f32} : f32[3,7] "hf"
  %5 = add(%3, %4) : f32[3,7] "f"
  %6 = cast(%5) {to=bf16} : bf16[3,7] "fb"
  return %0, %1, %6, %5
}"#;
    use kiln_ir::DType::{BF16, F16};
    let inputs = [as_type(&data(&[3, 7]), F16), as_type(&data(&[7]), F16), as_type(&data(&[3, 7]), BF16)];
    check(src, &inputs);
    // Rounded per op, the elementwise chain is not just close but equal to REFERENCE's.
    if let Some((got, want)) = common::run_both(src, &inputs) {
        for k in [0, 2] {
            assert_eq!(got[k].to_f64_vec(), want[k].to_f64_vec(), "output {k}");
        }
    }
}

#[test]
fn branches_of_different_shapes_compile_what_follows_per_shape() {
    // The If's output is [?,3]: the relu after it compiles once the run has picked a branch.
    let src = r#"graph g(%c: bool[], %x: f32[2,3]) -> (%o: f32[?,3]) {
  %0 = if(%c, %x) {
    then_branch=graph t(%a: f32[2,3]) -> (%r: f32[2,3]) {
      input %a
      %0 = neg(%a) : f32[2,3] "neg"
      return %0
    },
    else_branch=graph e(%a: f32[2,3]) -> (%r: f32[4,3]) {
      input %a
      %0 = concat(%a, %a) {axis=0} : f32[4,3] "twice"
      return %0
    }
  } : (f32[?,3]) "if"
  %1 = relu(%0) : f32[?,3] "relu"
  return %1
}"#;
    for c in [true, false] {
        check(src, &[Tensor::scalar(c), data(&[2, 3])]);
    }
}

#[test]
fn inputs_read_only_after_a_run_time_shape_reach_the_rest_of_the_graph() {
    // The rest of the graph after the If compiles on the first run; %y and %z are read only
    // there, and their input nodes come after the If in the topological order (as ONNX
    // files can place them).
    let src = r#"graph g(%c: bool[], %x: f32[2,3], %y: f32[3], %z: f32[1,3]) -> (%o: f32[?,3]) {
  %0 = if(%c, %x) {
    then_branch=graph t(%a: f32[2,3]) -> (%r: f32[2,3]) {
      input %a
      %0 = neg(%a) : f32[2,3] "neg"
      return %0
    },
    else_branch=graph e(%a: f32[2,3]) -> (%r: f32[4,3]) {
      input %a
      %0 = concat(%a, %a) {axis=0} : f32[4,3] "twice"
      return %0
    }
  } : (f32[?,3]) "if"
  input %y
  input %z
  %1 = add(%0, %y) : f32[?,3] "add"
  %2 = mul(%1, %z) : f32[?,3] "mul"
  return %2
}"#;
    for c in [true, false] {
        check(src, &[Tensor::scalar(c), data(&[2, 3]), data(&[3]), data(&[1, 3])]);
    }
}
