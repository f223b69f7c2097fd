//! The classic passes, each on small graphs: the IR they leave (snapshots or exact text) and
//! the values (the graph runs to the same results before and after).

use kiln_ir::eval::run_graph;
use kiln_ir::text::{parse, print, Weights};
use kiln_ir::{Graph, Op, Tensor, UnaryOp};
use kiln_passes::{Cse, Dce, Decompose, Fold, Level, Options, Pass, Pipeline, ShapeFold, Simplify};

fn graph(text: &str) -> Graph {
    parse(text, None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs `passes` with the verifier on.
fn run(g: &mut Graph, passes: Vec<Box<dyn Fn(&mut Pipeline)>>) {
    let mut p = Pipeline::empty(Level::O1);
    for push in passes {
        push(&mut p);
    }
    p.run(
        g,
        &Options {
            verify: true,
            ..Options::default()
        },
    )
    .unwrap();
}

fn with<P: Pass + 'static>(make: fn() -> P) -> Box<dyn Fn(&mut Pipeline)> {
    Box::new(move |p: &mut Pipeline| {
        p.push(make());
    })
}

/// The text of `g` after `passes`, having checked that the results did not change.
fn apply(text: &str, passes: Vec<Box<dyn Fn(&mut Pipeline)>>, inputs: &[Tensor]) -> String {
    let mut g = graph(text);
    let before = run_graph(&g, inputs).unwrap();
    run(&mut g, passes);
    let after = run_graph(&g, inputs).unwrap();
    assert_eq!(
        before,
        after,
        "results changed:\n{}",
        print(&g, Weights::Inline)
    );
    print(&g, Weights::Inline)
}

fn f32s(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    // A small LCG: deterministic data in [-4, 4).
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect();
    Tensor::new(shape.to_vec(), v).unwrap()
}

// ── fold ────────────────────────────────────────────────────────────────────────────────

#[test]
fn fold_evaluates_ops_whose_inputs_are_constants_and_keeps_their_names() {
    let text = r#"graph g(%x: f32[2]) -> (%y: f32[2]) {
      @a = f32[2] [1, 2]
      @b = f32[2] [3, 4]
      %0 = add(@a, @b) : f32[2] "ab"
      %1 = neg(%0) : f32[2] "neg_ab"
      %2 = mul(%x, %1) : f32[2]
      return %2
    }"#;
    let out = apply(text, vec![with(|| Fold), with(|| Dce)], &[f32s(&[2], 1)]);
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[2]) -> (%y: f32[2]) {
      @neg_ab = f32[2] [-4.0,-6.0]
      %0 = mul(%x, @neg_ab) : f32[2]
      return %0
    }
    "#);
}

#[test]
fn fold_leaves_big_results_computed() {
    // 20M elements from a two-element shape: folding would grow the model by 80 MB.
    let text = r#"graph g() -> (%y: f32[5000,4000]) {
      @s = i64[2] [5000, 4000]
      %0 = constant_of_shape(@s) {value=f32[1] [1]} : f32[5000,4000]
      return %0
    }"#;
    let mut g = graph(text);
    run(&mut g, vec![with(|| Fold)]);
    assert!(print(&g, Weights::Inline).contains("constant_of_shape(@s)"));
}

#[test]
fn fold_leaves_an_op_the_evaluator_rejects_for_the_run_time_to_report() {
    let text = r#"graph g(%x: i64[]) -> (%y: i64[]) {
      @d = i64[3] [1, 2, 3]
      @i = i64[] [7]
      %0 = gather(@d, @i) {axis=0} : i64[]
      %1 = add(%0, %x) : i64[]
      return %1
    }"#;
    let mut g = graph(text);
    let before = print(&g, Weights::Inline);
    run(&mut g, vec![with(|| Fold)]);
    assert_eq!(print(&g, Weights::Inline), before);
    let e = run_graph(&g, &[Tensor::scalar(1i64)]).unwrap_err();
    assert!(e.to_string().contains("gather"), "{e}");
}

#[test]
fn fold_keeps_f16_weights_compressed() {
    let text = r#"graph g(%x: f32[16]) -> (%y: f32[16]) {
      @w = f16[16] [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]
      %0 = cast(@w) {to=f32} : f32[16]
      %1 = mul(%x, %0) : f32[16]
      return %1
    }"#;
    let out = apply(text, vec![with(|| Fold)], &[f32s(&[16], 2)]);
    assert!(out.contains("cast(@w)"), "{out}");
}

#[test]
fn fold_works_inside_nested_graphs_whose_inputs_are_not_constants() {
    let text = r#"graph g(%c: bool[], %x: f32[2]) -> (%y: f32[2]) {
      %0 = if(%c, %x) {then_branch=graph t(%tx: f32[2]) -> (%ty: f32[2]) {
          @a = f32[2] [1, 2]
          %0 = exp(@a) : f32[2]
          %1 = add(%tx, %0) : f32[2]
          return %1
        }, else_branch=graph e(%ex: f32[2]) -> (%ey: f32[2]) {
          %0 = neg(%ex) : f32[2]
          return %0
        }} : f32[2]
      return %0
    }"#;
    for c in [true, false] {
        let out = apply(
            text,
            vec![with(|| Fold), with(|| Dce)],
            &[Tensor::scalar(c), f32s(&[2], 3)],
        );
        assert!(
            out.contains("add(%tx, @0)") && !out.contains("exp("),
            "{out}"
        );
    }
}

// ── shape-fold ──────────────────────────────────────────────────────────────────────────

const SHAPE_CHAIN: &str = r#"graph g(%x: f32[N,4,8]) -> (%y: f32[?,?], %n: i64[], %s: i64[2]) {
  @zero = i64[] [0]
  @one = i64[1] [1]
  @two = i64[1] [2]
  @axes = i64[1] [0]
  %0 = shape(%x) {start=0} : i64[3]
  %1 = gather(%0, @zero) {axis=0} : i64[]
  %2 = unsqueeze(%1, @axes) : i64[1]
  %3 = gather(%0, @one) {axis=0} : i64[1]
  %4 = gather(%0, @two) {axis=0} : i64[1]
  %5 = mul(%3, %4) : i64[1]
  %6 = concat(%2, %5) {axis=0} : i64[2]
  %7 = reshape(%x, %6) {allowzero=false} : f32[?,?]
  %8 = size(%7) : i64[]
  %9 = shape(%7) {start=0} : i64[2]
  return %7, %8, %9
}"#;

#[test]
fn shape_fold_makes_shape_chains_constant_and_keeps_symbolic_dims_symbolic() {
    let x = f32s(&[3, 4, 8], 4);
    let mut g = graph(SHAPE_CHAIN);
    let before = run_graph(&g, &[x.clone()]).unwrap();
    let p = {
        let mut p = Pipeline::empty(Level::O1);
        p.push(ShapeFold).push(Fold).push(Dce);
        p
    };
    p.run(
        &mut g,
        &Options {
            verify: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(run_graph(&g, &[x]).unwrap(), before);
    let out = print(&g, Weights::Inline);
    // The dims 4 and 8 were known: their product folds; N stays a copy of x's dim 0, and
    // the reshape now knows its result is [N,32]. The graph's signature is untouched.
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[N,4,8]) -> (%y: f32[?,?], %n: i64[], %s: i64[2]) {
      @shape = i64[2] [0,32]
      %0 = reshape(%x, @shape) {allowzero=false} : f32[?,?]
      %1 = size(%0) : i64[]
      %2 = shape(%0) {start=0} : i64[2]
      return %0, %1, %2
    }
    "#);
}

#[test]
fn shape_fold_reinfers_types_downstream_but_not_the_signature() {
    let text = r#"graph g(%x: f32[N,4,8]) -> (%y: f32[?,?]) {
      @axes = i64[1] [0]
      @rest = i64[1] [32]
      %0 = shape(%x) {start=0, end=1} : i64[1]
      %1 = concat(%0, @rest) {axis=0} : i64[2]
      %2 = reshape(%x, %1) {allowzero=false} : f32[?,?]
      %3 = relu(%2) : f32[?,?]
      %4 = shape(%3) {start=1} : i64[1]
      %5 = cast(%4) {to=f32} : f32[1]
      %6 = add(%3, %5) : f32[?,?]
      return %6
    }"#;
    let out = apply(
        text,
        vec![with(|| ShapeFold), with(|| Fold), with(|| Dce)],
        &[f32s(&[2, 4, 8], 5)],
    );
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[N,4,8]) -> (%y: f32[?,?]) {
      @0 = f32[1] [32.0]
      @shape = i64[2] [0,32]
      %0 = reshape(%x, @shape) {allowzero=false} : f32[N,32]
      %1 = relu(%0) : f32[N,32]
      %2 = add(%1, @0) : f32[?,?]
      return %2
    }
    "#);
}

// ── dce ─────────────────────────────────────────────────────────────────────────────────

#[test]
fn dce_keeps_a_node_one_of_whose_outputs_is_read_and_cleans_nested_graphs() {
    let text = r#"graph g(%c: bool[], %x: f32[4]) -> (%y: f32[2]) {
      @s = i64[2] [2, 2]
      %0 = split(%x, @s) {axis=0} : (f32[2], f32[2])
      %1 = relu(%x) : f32[4]
      %2 = if(%c, %0.0) {then_branch=graph t(%a: f32[2]) -> (%b: f32[2]) {
          %0 = exp(%a) : f32[2]
          %1 = neg(%a) : f32[2]
          return %1
        }, else_branch=graph e(%a: f32[2]) -> (%b: f32[2]) {
          return %a
        }} : f32[2]
      return %2
    }"#;
    let out = apply(
        text,
        vec![with(|| Dce)],
        &[Tensor::scalar(true), f32s(&[4], 6)],
    );
    assert!(
        out.contains("split(%x, @s)") && !out.contains("relu") && !out.contains("exp"),
        "{out}"
    );
}

// ── cse ─────────────────────────────────────────────────────────────────────────────────

#[test]
fn cse_merges_equal_nodes_and_equal_constants_keeping_the_first() {
    let text = r#"graph g(%x: f32[3]) -> (%y: f32[3], %z: f32[3]) {
      @a = f32[3] [1, 2, 3]
      @b = f32[3] [1, 2, 3]
      @pz = f32[] [0]
      @nz = f32[] [-0.0]
      %0 = relu(%x) : f32[3] "first"
      %1 = relu(%x) : f32[3] "second"
      %2 = add(%0, @a) : f32[3]
      %3 = add(%1, @b) : f32[3]
      %4 = div(@a, @pz) : f32[3]
      %5 = div(@a, @nz) : f32[3]
      %6 = sub(%4, %5) : f32[3]
      %7 = mul(%2, %6) : f32[3]
      return %7, %3
    }"#;
    let out = apply(text, vec![with(|| Cse), with(|| Dce)], &[f32s(&[3], 7)]);
    // 0.0 and -0.0 are equal numbers but different constants (1/x tells them apart).
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[3]) -> (%y: f32[3], %z: f32[3]) {
      @a = f32[3] [1.0,2.0,3.0]
      @pz = f32[] [0.0]
      @nz = f32[] [-0.0]
      %0 = relu(%x) : f32[3] "first"
      %1 = add(%0, @a) : f32[3]
      %2 = div(@a, @pz) : f32[3]
      %3 = div(@a, @nz) : f32[3]
      %4 = sub(%2, %3) : f32[3]
      %5 = mul(%1, %4) : f32[3]
      return %5, %1
    }
    "#);
}

// ── simplify ────────────────────────────────────────────────────────────────────────────

#[test]
fn simplify_removes_identities_and_no_ops() {
    let text = r#"graph g(%x: f32[N,4]) -> (%y: f32[N,4]) {
      @one = f32[] [1]
      @zero = f32[4] [0, 0, 0, 0]
      @shape = i64[2] [0, 4]
      @perm_pads = i64[4] [0, 0, 0, 0]
      @big1 = f32[1,1,1] [1]
      @flat = i64[2] [-1, 4]
      %0 = identity(%x) : f32[N,4]
      %1 = dropout(%0) : f32[N,4]
      %2 = cast(%1) {to=f32} : f32[N,4]
      %3 = reshape(%2, @shape) {allowzero=false} : f32[N,4]
      %4 = transpose(%3) {perm=[0,1]} : f32[N,4]
      %5 = mul(%4, @one) : f32[N,4]
      %6 = add(@zero, %5) : f32[N,4]
      %7 = pad(%6, @perm_pads) {mode=constant} : f32[N,4]
      %8 = concat(%7) {axis=0} : f32[N,4]
      %9 = relu(%8) : f32[N,4]
      %10 = mul(%9, @big1) : f32[1,N,4]
      %11 = reshape(%10, @flat) {allowzero=false} : f32[N,4]
      return %11
    }"#;
    let out = apply(
        text,
        vec![with(|| Simplify), with(|| Dce)],
        &[f32s(&[3, 4], 8)],
    );
    // x·1 with a [1,1,1] one broadcasts x to rank 3: it stays.
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[N,4]) -> (%y: f32[N,4]) {
      @big1 = f32[1,1,1] [1.0]
      @flat = i64[2] [-1,4]
      %0 = relu(%x) : f32[N,4]
      %1 = mul(%0, @big1) : f32[1,N,4]
      %2 = reshape(%1, @flat) {allowzero=false} : f32[N,4]
      return %2
    }
    "#);
}

#[test]
fn simplify_rewires_graph_outputs_and_keeps_their_types() {
    let text = r#"graph g(%x: f32[N,4]) -> (%y: f32[N,4], %z: f32[?,4], %m: bool[N,4]) {
      %0 = identity(%x) : f32[N,4]
      %1 = identity(%x) : f32[?,4]
      %2 = dropout(%x) : (f32[N,4], bool[N,4])
      %3 = relu(%2.0) : f32[N,4]
      return %0, %1, %2.1
    }"#;
    let out = apply(
        text,
        vec![with(|| Simplify), with(|| Dce)],
        &[f32s(&[2, 4], 9)],
    );
    // y is x itself now; z's declared type differs from x's, so its identity stays; the
    // dropout's mask is read, so the dropout stays.
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[N,4]) -> (%y: f32[N,4], %z: f32[?,4], %m: bool[N,4]) {
      %0 = identity(%x) : f32[?,4]
      %1 = dropout(%x) : (f32[N,4], bool[N,4])
      return %x, %0, %1.1
    }
    "#);
}

#[test]
fn an_op_on_every_output_of_a_split_moves_before_it() {
    // y: the same clip (bounds given by equal constants) on each output of a split, the
    // shape the e-graph's merge of sibling convs leaves: one clip before the split.
    // z: a relu and an exp after the split stay. w: a relu on every output but one output
    // is also a graph output: it stays too.
    let text = r#"graph g(%x: f32[1,6,2,2]) -> (%a: f32[1,1,2,2], %b: f32[1,2,2,2], %c: f32[1,3,2,2], %d: f32[1,3,2,2], %e: f32[1,3,2,2], %f: f32[1,3,2,2], %h: f32[1,3,2,2]) {
      @s = i64[3] [1,2,3]
      @lo = f32[] [0]
      @hi = f32[] [6]
      @lo2 = f32[] [0]
      @hi2 = f32[] [6]
      %0 = split(%x, @s) {axis=1} : (f32[1,1,2,2], f32[1,2,2,2], f32[1,3,2,2])
      %1 = clip(%0.0, @lo, @hi) : f32[1,1,2,2]
      %2 = clip(%0.1, @lo2, @hi2) : f32[1,2,2,2]
      %3 = clip(%0.2, @lo, @hi) : f32[1,3,2,2]
      %4 = split(%x) {axis=1} : (f32[1,3,2,2], f32[1,3,2,2])
      %5 = relu(%4.0) : f32[1,3,2,2]
      %6 = exp(%4.1) : f32[1,3,2,2]
      %7 = split(%x) {axis=1} : (f32[1,3,2,2], f32[1,3,2,2])
      %8 = relu(%7.0) : f32[1,3,2,2]
      %9 = relu(%7.1) : f32[1,3,2,2]
      return %1, %2, %3, %5, %6, %9, %7.1
    }"#;
    let out = apply(text, vec![with(|| Simplify), with(|| Dce)], &[f32s(&[1, 6, 2, 2], 11)]);
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[1,6,2,2]) -> (%a: f32[1,1,2,2], %b: f32[1,2,2,2], %c: f32[1,3,2,2], %d: f32[1,3,2,2], %e: f32[1,3,2,2], %f: f32[1,3,2,2], %h: f32[1,3,2,2]) {
      @s = i64[3] [1,2,3]
      @lo = f32[] [0.0]
      @hi = f32[] [6.0]
      %0 = clip(%x, @lo, @hi) : f32[1,6,2,2]
      %1 = split(%0, @s) {axis=1} : (f32[1,1,2,2], f32[1,2,2,2], f32[1,3,2,2])
      %2 = split(%x) {axis=1} : (f32[1,3,2,2], f32[1,3,2,2])
      %3 = relu(%2.0) : f32[1,3,2,2]
      %4 = exp(%2.1) : f32[1,3,2,2]
      %5 = split(%x) {axis=1} : (f32[1,3,2,2], f32[1,3,2,2])
      %6 = relu(%5.1) : f32[1,3,2,2]
      return %1.0, %1.1, %1.2, %3, %4, %6, %5.1
    }
    "#);
}

#[test]
fn a_slice_that_takes_off_exactly_what_a_pad_added_reads_the_unpadded_input() {
    // y: pad 1 row above and below, 2 columns left, then slice them away (negative end,
    // an end past the dim): x itself. z: the same pad, but its slice keeps a padded row.
    let text = r#"graph g(%x: f32[1,3,4,5]) -> (%y: f32[1,3,4,5], %z: f32[1,3,4,5]) {
      @pads = i64[8] [0,0,1,2,0,0,1,0]
      @starts = i64[2] [1,2]
      @ends = i64[2] [-1,9223372036854775807]
      @axes = i64[2] [2,3]
      @starts_z = i64[2] [0,2]
      @ends_z = i64[2] [4,7]
      %0 = pad(%x, @pads) {mode=reflect} : f32[1,3,6,7]
      %1 = slice(%0, @starts, @ends, @axes) : f32[1,3,4,5]
      %2 = slice(%0, @starts_z, @ends_z, @axes) : f32[1,3,4,5]
      %3 = relu(%1) : f32[1,3,4,5]
      return %3, %2
    }"#;
    let out = apply(
        text,
        vec![with(|| Simplify), with(|| Dce)],
        &[f32s(&[1, 3, 4, 5], 10)],
    );
    insta::assert_snapshot!(out, @r#"
    graph g(%x: f32[1,3,4,5]) -> (%y: f32[1,3,4,5], %z: f32[1,3,4,5]) {
      @pads = i64[8] [0,0,1,2,0,0,1,0]
      @axes = i64[2] [2,3]
      @starts_z = i64[2] [0,2]
      @ends_z = i64[2] [4,7]
      %0 = pad(%x, @pads) {mode=reflect} : f32[1,3,6,7]
      %1 = slice(%0, @starts_z, @ends_z, @axes) : f32[1,3,4,5]
      %2 = relu(%x) : f32[1,3,4,5]
      return %2, %1
    }
    "#);
}

// ── decompose ───────────────────────────────────────────────────────────────────────────

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    assert_eq!(a.dtype(), b.dtype(), "{what}");
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        // f32 arithmetic step by step against the reference's f64: a few ulps per step.
        assert!(
            (x - y).abs() <= 1e-5 * y.abs().max(1.0),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Decomposes the one op of `text` and compares with the composite on random data.
fn check_decomposition(text: &str, inputs: &[Tensor]) -> String {
    let mut g = graph(text);
    let before = run_graph(&g, inputs).unwrap();
    let composite = g
        .nodes
        .node_weights()
        .find(|n| !matches!(n.op, Op::Input | Op::Const { .. }))
        .unwrap()
        .op
        .name();
    let mut p = Pipeline::empty(Level::O1);
    p.push(Decompose::new(|_| false));
    p.run(
        &mut g,
        &Options {
            verify: true,
            ..Options::default()
        },
    )
    .unwrap();
    let out = print(&g, Weights::Inline);
    assert!(
        !g.nodes.node_weights().any(|n| n.op.name() == composite),
        "{out}"
    );
    let after = run_graph(&g, inputs).unwrap();
    for (a, b) in after.iter().zip(&before) {
        assert_close(a, b, &out);
    }
    out
}

fn unary_graph(op: &str) -> String {
    format!("graph g(%x: f32[2,3,4,5]) -> (%y: f32[2,3,4,5]) {{\n %0 = {op} : f32[2,3,4,5]\n return %0\n}}")
}

#[test]
fn decompose_activations_compute_what_the_composites_compute() {
    let x = [f32s(&[2, 3, 4, 5], 10)];
    for op in [
        "gelu(%x) {approximate=none}",
        "gelu(%x) {approximate=tanh}",
        "swish(%x) {alpha=1.0}",
        "swish(%x) {alpha=1.702}",
        "hard_swish(%x)",
        "mish(%x)",
        "softplus(%x)",
        "selu(%x) {alpha=1.67326, gamma=1.0507}",
        "elu(%x) {alpha=0.7}",
        "hard_sigmoid(%x) {alpha=0.2, beta=0.5}",
        "softmax(%x) {axis=1}",
        "log_softmax(%x) {axis=-1}",
    ] {
        let out = check_decomposition(&unary_graph(op), &x);
        // Mish becomes tanh of a softplus, which is taken apart in turn.
        assert!(!out.contains("softplus("), "{out}");
    }
}

#[test]
fn decompose_softplus_does_not_overflow() {
    let x = Tensor::new(
        vec![2, 3, 4, 5],
        (0..120)
            .map(|i| (i as f32 - 60.0) * 3.0)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    check_decomposition(&unary_graph("softplus(%x)"), &[x]);
}

#[test]
fn decompose_normalizations_gemm_and_flatten() {
    let layer_norm = r#"graph g(%x: f32[2,3,8], %s: f32[8], %b: f32[8]) -> (%y: f32[2,3,8], %m: f32[2,3,1], %r: f32[2,3,1]) {
      %0 = layer_norm(%x, %s, %b) {axis=-1, epsilon=1e-5, stash_type=f32} : (f32[2,3,8], f32[2,3,1], f32[2,3,1])
      return %0.0, %0.1, %0.2
    }"#;
    check_decomposition(
        layer_norm,
        &[f32s(&[2, 3, 8], 11), f32s(&[8], 12), f32s(&[8], 13)],
    );

    let batch_norm = r#"graph g(%x: f32[2,3,4,4]) -> (%y: f32[2,3,4,4]) {
      @s = f32[3] [1, 0.5, 2]
      @b = f32[3] [0, 1, -1]
      @m = f32[3] [0.1, 0.2, 0.3]
      @v = f32[3] [1, 2, 0.5]
      %0 = batch_norm(%x, @s, @b, @m, @v) {epsilon=1e-5} : f32[2,3,4,4]
      return %0
    }"#;
    let out = check_decomposition(batch_norm, &[f32s(&[2, 3, 4, 4], 14)]);
    assert!(out.contains("mul(%x, @\"/scale\")"), "{out}");

    let gemm = r#"graph g(%a: f32[4,3], %b: f32[5,4], %c: f32[5]) -> (%y: f32[3,5]) {
      %0 = gemm(%a, %b, %c) {alpha=0.5, beta=2.0, trans_a=true, trans_b=true} : f32[3,5]
      return %0
    }"#;
    check_decomposition(
        gemm,
        &[f32s(&[4, 3], 15), f32s(&[5, 4], 16), f32s(&[5], 17)],
    );

    let flatten = r#"graph g(%x: f32[N,3,4]) -> (%y: f32[N,12]) {
      %0 = flatten(%x) {axis=1} : f32[N,12]
      return %0
    }"#;
    let out = check_decomposition(flatten, &[f32s(&[2, 3, 4], 18)]);
    assert!(out.contains("i64[2] [0,-1]"), "{out}");
}

#[test]
fn decompose_leaves_the_ops_the_backend_keeps() {
    let mut g = graph(&unary_graph("mish(%x)"));
    let mut p = Pipeline::empty(Level::O1);
    p.push(Decompose::new(|op| {
        matches!(op, Op::Unary(UnaryOp::Softplus))
    }));
    p.run(
        &mut g,
        &Options {
            verify: true,
            ..Options::default()
        },
    )
    .unwrap();
    let out = print(&g, Weights::Inline);
    assert!(
        out.contains("softplus(%x)") && !out.contains("mish"),
        "{out}"
    );
}

// ── the -O1 pipeline ────────────────────────────────────────────────────────────────────

#[test]
fn o1_runs_the_classic_passes_in_order() {
    assert_eq!(
        Pipeline::standard(Level::O1).names(),
        ["simplify", "shape-fold", "fold", "dce", "cse", "dce"]
    );
    let mut g = graph(SHAPE_CHAIN);
    let x = f32s(&[2, 4, 8], 19);
    let before = run_graph(&g, &[x.clone()]).unwrap();
    kiln_passes::optimize(
        &mut g,
        &Options {
            verify: true,
            ..Options::level(Level::O1)
        },
    )
    .unwrap();
    assert_eq!(run_graph(&g, &[x]).unwrap(), before);
}

#[test]
fn small_cnn_after_o1() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/models/small_cnn/model.onnx"
    );
    let mut g = kiln_bridges::onnx::load(std::path::Path::new(path)).unwrap();
    let x = f32s(&[1, 32, 32, 3], 20);
    let before = run_graph(&g, &[x.clone()]).unwrap();
    kiln_passes::optimize(
        &mut g,
        &Options {
            verify: true,
            ..Options::level(Level::O1)
        },
    )
    .unwrap();
    assert_eq!(run_graph(&g, &[x]).unwrap(), before);
    insta::assert_snapshot!(print(&g, Weights::Elided));
}

#[test]
fn passes_leave_dtypes_of_graph_outputs_alone() {
    // A regression guard for CSE: merging must not retype a graph output.
    let text = r#"graph g(%x: f32[N]) -> (%a: f32[N], %b: f32[?]) {
      %0 = relu(%x) : f32[N]
      %1 = relu(%x) : f32[?]
      return %0, %1
    }"#;
    let out = apply(text, vec![with(|| Cse), with(|| Dce)], &[f32s(&[3], 21)]);
    assert!(out.contains("-> (%a: f32[N], %b: f32[?])"), "{out}");
}
