//! The text form: snapshots of small graphs, exact round trips, and errors on bad text.

use kiln_ir::half::{bf16, f16};
use kiln_ir::text::{parse, print, Weights};
use kiln_ir::*;

fn dims(ds: &[&str]) -> Vec<Dim> {
    ds.iter()
        .map(|d| match *d {
            "?" => Dim::Unknown,
            s => s
                .parse::<usize>()
                .map(Dim::Known)
                .unwrap_or_else(|_| Dim::Sym(s.to_string())),
        })
        .collect()
}

fn ty(dtype: DType, ds: &[&str]) -> TensorType {
    TensorType::new(dtype, dims(ds))
}

fn f32s(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(shape.to_vec(), (0..n).map(f).collect::<Vec<f32>>()).unwrap()
}

fn node(g: &mut Graph, op: Op, name: &str, ins: &[Value], out: TensorType) -> Value {
    let ins: Vec<Option<Value>> = ins.iter().map(|&v| Some(v)).collect();
    g.add_node_typed(op, name, &ins, vec![out]).into()
}

fn conv(pads: Vec<i64>, strides: Vec<i64>) -> Op {
    Op::Conv {
        auto_pad: AutoPad::NotSet,
        dilations: vec![],
        group: 1,
        kernel_shape: vec![],
        pads,
        strides,
    }
}

/// The design document's example, small enough to read.
fn small_cnn() -> Graph {
    let mut g = Graph::new("small_cnn");
    let x = g.add_input("x", ty(DType::F32, &["N", "3", "32", "32"]));
    let w0 = g.add_const("w0", f32s(&[16, 3, 3, 3], |i| (i as f32 * 0.37).sin()));
    let b0 = g.add_const("b0", f32s(&[16], |i| i as f32 / 16.0));
    let w1 = g.add_const("w1", f32s(&[10, 16], |i| (i as f32).cos()));
    let b1 = g.add_const("b1", f32s(&[10], |_| 0.0));
    let c = node(
        &mut g,
        conv(vec![1, 1, 1, 1], vec![1, 1]),
        "conv1",
        &[x, w0, b0],
        ty(DType::F32, &["N", "16", "32", "32"]),
    );
    let r = node(
        &mut g,
        Op::Unary(UnaryOp::Relu),
        "conv1/Relu",
        &[c],
        ty(DType::F32, &["N", "16", "32", "32"]),
    );
    let p = node(
        &mut g,
        Op::GlobalPool {
            kind: PoolKind::Average,
            p: 2,
        },
        "gap",
        &[r],
        ty(DType::F32, &["N", "16", "1", "1"]),
    );
    let f = node(
        &mut g,
        Op::Flatten { axis: 1 },
        "flatten",
        &[p],
        ty(DType::F32, &["N", "16"]),
    );
    let y = node(
        &mut g,
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        },
        "fc",
        &[f, w1, b1],
        ty(DType::F32, &["N", "10"]),
    );
    g.add_output("y", y);
    g
}

/// A branch or body graph: `inputs` of the given types, each output `op(input)`.
fn unary_graph(name: &str, op: UnaryOp, t: TensorType) -> Graph {
    let mut g = Graph::new(name);
    let x = g.add_input("x", t.clone());
    let y = node(&mut g, Op::Unary(op), "", &[x], t);
    g.add_output("y", y);
    g
}

/// Every attribute kind, multi-output nodes, absent optional inputs, nested graphs two
/// levels deep, symbolic and unknown dims, names that need quoting.
fn kitchen_sink() -> Graph {
    let mut g = Graph::new("kitchen sink");
    let x = g.add_input("input:0", ty(DType::F32, &["batch size", "8", "?"]));
    let cond = g.add_input("cond", ty(DType::Bool, &[]));
    let any = g.add_input("any", TensorType::unknown_shape(DType::I64));
    let w = g.add_const("conv1.weight", f32s(&[2, 8, 1], |i| i as f32 - 3.5));
    let sizes = g.add_const("sizes", Tensor::new(vec![2], vec![4i64, 4]).unwrap());
    let axes = g.add_const("", Tensor::new(vec![1], vec![-1i64]).unwrap());
    let hi = g.add_const("", Tensor::scalar(6.0f32));

    let f = |s: &[&str]| ty(DType::F32, s);
    // Int, Word, Ints and empty lists.
    let c = node(
        &mut g,
        conv(vec![0, 0], vec![1]),
        "conv1",
        &[x, w],
        f(&["batch size", "2", "?"]),
    );
    // An absent optional input in the middle.
    let cl = g.add_node_typed(
        Op::Clip,
        "clip",
        &[Some(c), None, Some(hi)],
        vec![f(&["batch size", "2", "?"])],
    );
    // Two outputs, used separately.
    let sp = g.add_node_typed(
        Op::Split { axis: 1 },
        "split",
        &[Some(cl.into()), Some(sizes)],
        vec![f(&["batch size", "1", "?"]), f(&["batch size", "1", "?"])],
    );
    let sum = node(
        &mut g,
        Op::Binary(BinaryOp::Add),
        "sum",
        &[Value::new(sp, 1), Value::new(sp, 0)],
        f(&["batch size", "1", "?"]),
    );
    // Bool attrs and an i64 output; TopK has two outputs, one of them unused.
    let k = g.add_const("k", Tensor::new(vec![1], vec![1i64]).unwrap());
    let tk = g.add_node_typed(
        Op::TopK {
            axis: -1,
            largest: true,
            sorted: false,
        },
        "topk",
        &[Some(sum), Some(k)],
        vec![f(&["batch size", "1", "1"]), ty(DType::I64, &["batch size", "1", "1"])],
    );
    // Floats: ordinary, infinite, negative zero.
    let lr = node(
        &mut g,
        Op::LeakyRelu { alpha: 0.01 },
        "leaky",
        &[Value::new(tk, 0)],
        f(&["batch size", "1", "1"]),
    );
    let hs = node(
        &mut g,
        Op::HardSigmoid {
            alpha: f32::INFINITY,
            beta: -0.0,
        },
        "hs",
        &[lr],
        f(&["batch size", "1", "1"]),
    );
    // Str.
    let es = node(
        &mut g,
        Op::Einsum {
            equation: "bij,bjk->bik".into(),
        },
        "einsum",
        &[hs, hs],
        f(&["batch size", "1", "1"]),
    );
    // Strs, Floats, an Option that is set and one that is not.
    let rnn = g.add_node_typed(
        Op::Rnn {
            kind: RnnKind::Lstm,
            direction: Direction::Forward,
            hidden_size: 4,
            activations: vec!["sigmoid".into(), "tanh".into(), "a \"quoted\"\nname".into()],
            activation_alpha: vec![0.5, 1e-7],
            activation_beta: vec![],
            clip: Some(3.0),
            layout: 0,
            input_forget: false,
            linear_before_reset: false,
        },
        "lstm",
        &[Some(es), Some(w), Some(w), None, None, None, None, None],
        vec![f(&["1", "1", "1", "4"]), f(&["1", "1", "4"]), f(&["1", "1", "4"])],
    );
    // A dtype word and a tensor-valued attribute.
    let shape = node(
        &mut g,
        Op::Shape { start: 0, end: None },
        "shape",
        &[Value::new(rnn, 1)],
        ty(DType::I64, &["3"]),
    );
    let fill = node(
        &mut g,
        Op::ConstantOfShape {
            value: Tensor::new(vec![1], vec![f16::from_f32(0.1)]).unwrap(),
        },
        "fill",
        &[shape],
        ty(DType::F16, &["1", "1", "4"]),
    );
    let cast = node(
        &mut g,
        Op::Cast { to: DType::F32 },
        "to_f32",
        &[fill],
        f(&["1", "1", "4"]),
    );
    let tr = node(
        &mut g,
        Op::Transpose {
            perm: Some(vec![2, 0, 1]),
        },
        "t",
        &[cast],
        f(&["4", "1", "1"]),
    );
    let sq = node(&mut g, Op::Squeeze, "sq", &[tr, axes], f(&["4", "1"]));

    // If whose else-branch holds a Loop whose body holds an If.
    let inner_if = Op::If {
        then_branch: Box::new(unary_graph("then", UnaryOp::Neg, f(&["4", "1"]))),
        else_branch: Box::new(unary_graph("else", UnaryOp::Abs, f(&["4", "1"]))),
    };
    let mut body = Graph::new("body");
    let _i = body.add_input("i", ty(DType::I64, &[]));
    let bc = body.add_input("cond", ty(DType::Bool, &[]));
    let carried = body.add_input("v", f(&["4", "1"]));
    let bif = node(&mut body, inner_if, "inner_if", &[bc, carried], f(&["4", "1"]));
    body.add_output("cond_out", bc);
    body.add_output("v_out", bif);
    let mut else_g = Graph::new("else");
    let ex = else_g.add_input("x", f(&["4", "1"]));
    let trip = else_g.add_const("trip", Tensor::scalar(3i64));
    let lp = else_g.add_node_typed(
        Op::Loop { body: Box::new(body), num_captured: 0 },
        "loop",
        &[Some(trip), None, Some(ex)],
        vec![f(&["4", "1"])],
    );
    else_g.add_output("y", lp.into());
    let outer_if = Op::If {
        then_branch: Box::new(unary_graph("then", UnaryOp::Relu, f(&["4", "1"]))),
        else_branch: Box::new(else_g),
    };
    let res = node(&mut g, outer_if, "if", &[cond, sq], f(&["4", "1"]));
    let anyc = node(
        &mut g,
        Op::Unary(UnaryOp::Identity),
        "",
        &[any],
        TensorType::unknown_shape(DType::I64),
    );

    g.add_output("y:0", res);
    g.add_output("indices", Value::new(tk, 1));
    g.add_output("any", anyc);
    g.add_output("weight", w);
    g
}

/// One constant of every dtype, with the awkward values of each.
fn all_dtypes() -> Graph {
    let mut g = Graph::new("dtypes");
    let h = |v: f32| f16::from_f32(v);
    let b = |v: f32| bf16::from_f32(v);
    let mut add = |name: &str, t: Tensor| {
        let v = g.add_const(name, t);
        g.add_output(name, v);
    };
    add(
        "f32",
        Tensor::new(
            vec![7],
            vec![0.1f32, -0.0, 1e-45, f32::MAX, f32::MIN_POSITIVE, 16777217.0, 3.0],
        )
        .unwrap(),
    );
    add(
        "f64",
        Tensor::new(vec![2, 2], vec![0.1f64, -1e300, 5e-324, 1.0 / 3.0]).unwrap(),
    );
    add(
        "f16",
        Tensor::new(
            vec![6],
            vec![h(0.1), h(-0.0), h(65504.0), f16::from_bits(1), h(1.0 / 3.0), h(2.0)],
        )
        .unwrap(),
    );
    add(
        "bf16",
        Tensor::new(
            vec![5],
            vec![b(0.1), b(-0.0), b(3.0e38), bf16::from_bits(1), b(1.0 / 3.0)],
        )
        .unwrap(),
    );
    add("i8", Tensor::new(vec![3], vec![i8::MIN, 0, i8::MAX]).unwrap());
    add("i16", Tensor::new(vec![2], vec![i16::MIN, i16::MAX]).unwrap());
    add("i32", Tensor::new(vec![2], vec![i32::MIN, i32::MAX]).unwrap());
    add("i64", Tensor::new(vec![2], vec![i64::MIN, i64::MAX]).unwrap());
    add("u8", Tensor::new(vec![2], vec![0u8, u8::MAX]).unwrap());
    add("u16", Tensor::new(vec![1], vec![u16::MAX]).unwrap());
    add("u32", Tensor::new(vec![1], vec![u32::MAX]).unwrap());
    add("u64", Tensor::new(vec![1], vec![u64::MAX]).unwrap());
    add("bool", Tensor::new(vec![2], vec![true, false]).unwrap());
    add("scalar", Tensor::scalar(2.5f32));
    add("empty", Tensor::new(vec![0, 3], Vec::<f32>::new()).unwrap());
    g
}

/// Non-finite values, NaN payloads included: graphs holding NaN are never `==` (IEEE), so
/// these are compared by their exact text.
fn non_finite() -> Graph {
    let mut g = Graph::new("non_finite");
    let nan_payload = f32::from_bits(0x7fc0_1234);
    let neg_nan = f32::from_bits(0xffc0_0000);
    let signalling = f32::from_bits(0x7f80_0001);
    let t = Tensor::new(vec![5], vec![f32::NAN, nan_payload, neg_nan, f32::INFINITY, signalling]).unwrap();
    let a = g.add_const("f32", t);
    let t = Tensor::new(
        vec![3],
        vec![f64::NAN, f64::NEG_INFINITY, f64::from_bits(0x7ff0_0000_0000_0abc)],
    )
    .unwrap();
    let b = g.add_const("f64", t);
    let t = Tensor::new(vec![3], vec![f16::NAN, f16::NEG_INFINITY, f16::from_bits(0x7d01)]).unwrap();
    let c = g.add_const("f16", t);
    let t = Tensor::new(vec![3], vec![bf16::NAN, bf16::INFINITY, bf16::from_bits(0xff81)]).unwrap();
    let d = g.add_const("bf16", t);
    let x = g.add_input("x", ty(DType::F32, &["2"]));
    let e = node(
        &mut g,
        Op::LeakyRelu {
            alpha: f32::from_bits(0x7fa0_0000),
        },
        "",
        &[x],
        ty(DType::F32, &["2"]),
    );
    for (n, v) in [("a", a), ("b", b), ("c", c), ("d", d), ("e", e)] {
        g.add_output(n, v);
    }
    g
}

/// parse(print(g)) == g, and printing the parse gives the same text.
fn round_trip(g: &Graph) -> String {
    let text = print(g, Weights::Inline);
    let back = parse(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        back == *g,
        "round trip changed the graph:\n{text}\n---\n{}",
        print(&back, Weights::Inline)
    );
    assert_eq!(print(&back, Weights::Inline), text);
    text
}

#[test]
fn snapshot_small_cnn_elided() {
    insta::assert_snapshot!(print(&small_cnn(), Weights::Elided));
}

#[test]
fn snapshot_small_cnn_external() {
    let mut bin = Vec::new();
    let text = print(&small_cnn(), Weights::External(&mut bin));
    insta::assert_snapshot!(text);
    // w0 at 0 (1728 bytes), b0 at 1728 (already aligned, 64 bytes), w1 at 1792 (640 bytes);
    // b1 has 10 elements: also external, at 2432.
    assert_eq!(bin.len(), 2432 + 40);
    let back = parse(&text, Some(&bin)).unwrap();
    assert!(back == small_cnn());
}

#[test]
fn snapshot_kitchen_sink() {
    insta::assert_snapshot!(print(&kitchen_sink(), Weights::Elided));
}

#[test]
fn snapshot_dtypes_inline() {
    insta::assert_snapshot!(print(&all_dtypes(), Weights::Inline));
}

#[test]
fn snapshot_non_finite() {
    insta::assert_snapshot!(print(&non_finite(), Weights::Inline));
}

#[test]
fn display_is_elided() {
    let g = small_cnn();
    assert_eq!(g.to_string(), print(&g, Weights::Elided));
}

#[test]
fn round_trips() {
    round_trip(&small_cnn());
    round_trip(&kitchen_sink());
    round_trip(&all_dtypes());
    round_trip(&Graph::new("empty"));
}

#[test]
fn non_finite_round_trips_bit_for_bit() {
    let g = non_finite();
    let text = print(&g, Weights::Inline);
    let back = parse(&text, None).unwrap();
    assert_eq!(print(&back, Weights::Inline), text);
    let bits = |g: &Graph| -> Vec<Vec<u8>> {
        let order = g.topo_order().unwrap();
        order
            .iter()
            .filter_map(|&n| g.const_value(n.into()).map(|t| t.to_le_bytes()))
            .collect()
    };
    assert_eq!(bits(&back), bits(&g));
    let Op::LeakyRelu { alpha } = back
        .nodes
        .node_weights()
        .find(|n| n.op.name() == "leaky_relu")
        .unwrap()
        .op
    else {
        panic!()
    };
    assert_eq!(alpha.to_bits(), 0x7fa0_0000);
}

#[test]
fn negative_zero_survives() {
    // -0.0 == 0.0, so `==` alone would not notice a lost sign.
    let text = print(&all_dtypes(), Weights::Inline);
    assert!(text.contains("[0.1,-0.0,1e-45,"), "{text}");
    let g = parse(&text, None).unwrap();
    let f = g.nodes.node_weights().find(|n| n.name == "f32").unwrap();
    let Op::Const { value } = &f.op else { panic!() };
    assert_eq!(value.as_slice::<f32>().unwrap()[1].to_bits(), (-0.0f32).to_bits());
}

#[test]
fn half_floats_print_short() {
    let text = print(&all_dtypes(), Weights::Inline);
    // 0.1 rounds to 0.0999755859375 in f16; the shortest decimal that reads back is 0.1.
    // Likewise 65500 is the shortest that rounds to f16's largest value, 65504.
    assert!(
        text.contains("@f16 = f16[6] [0.1,-0.0,65500.0,6e-8,0.3333,2.0]"),
        "{text}"
    );
    assert!(text.contains("@bf16 = bf16[5] [0.1,-0.0,3e38,9e-41,0.334]"), "{text}");
}

#[test]
fn duplicate_and_empty_const_names_get_numbers() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", ty(DType::F32, &["2"]));
    let a = g.add_const("w", f32s(&[2], |i| i as f32));
    let b = g.add_const("w", f32s(&[2], |i| -(i as f32)));
    let c = g.add_const("", f32s(&[2], |_| 1.0));
    let s = node(&mut g, Op::Binary(BinaryOp::Add), "", &[x, a], ty(DType::F32, &["2"]));
    let s = node(&mut g, Op::Binary(BinaryOp::Sub), "", &[s, b], ty(DType::F32, &["2"]));
    let s = node(&mut g, Op::Binary(BinaryOp::Mul), "", &[s, c], ty(DType::F32, &["2"]));
    g.add_output("y", s);
    let text = round_trip(&g);
    assert!(
        text.contains("@0 = f32[2] [0.0,1.0] \"w\"\n  @1 = f32[2] [-0.0,-1.0] \"w\"\n  @2 = f32[2] [1.0,1.0]\n"),
        "{text}"
    );
}

#[test]
fn inputs_out_of_order_are_placed() {
    // A bridge that adds weights first, and an input discovered late, as a captured value is.
    let mut g = Graph::new("late");
    let w = g.add_const("w", f32s(&[2], |i| i as f32));
    let b = g.add_input("b", ty(DType::F32, &["2"]));
    let a = g.add_input("a", ty(DType::F32, &["2"]));
    let s = node(&mut g, Op::Binary(BinaryOp::Add), "", &[a, w], ty(DType::F32, &["2"]));
    let c = g.add_input("c", ty(DType::F32, &["2"]));
    let s = node(&mut g, Op::Binary(BinaryOp::Add), "", &[s, c], ty(DType::F32, &["2"]));
    let s = node(&mut g, Op::Binary(BinaryOp::Add), "", &[s, b], ty(DType::F32, &["2"]));
    g.inputs = vec![a.node, b.node, c.node];
    g.add_output("y", s);
    let text = round_trip(&g);
    insta::assert_snapshot!(text);
}

#[test]
fn unusual_nodes_print_generically() {
    // A constant whose declared type is not its tensor's, and an input node that is not a
    // graph input: both malformed for the verifier, both still exact in text.
    let mut g = Graph::new("odd");
    let c = g.add_node_typed(
        Op::Const {
            value: f32s(&[2], |i| i as f32),
        },
        "c",
        &[],
        vec![ty(DType::F32, &["N"])],
    );
    let i = g.add_node_typed(Op::Input, "stray", &[], vec![ty(DType::F32, &["2"])]);
    let z = g.add_node_typed(Op::Dropout { seed: Some(7) }, "", &[None, None], vec![]);
    g.add_output("c", c.into());
    g.add_output("i", i.into());
    let _ = z;
    let text = round_trip(&g);
    assert!(
        text.contains("%0 = const() {value=f32[2] [0.0,1.0]} : f32[N] \"c\""),
        "{text}"
    );
    assert!(text.contains("%1 = input() : f32[2] \"stray\""), "{text}");
    assert!(text.contains("%2 = dropout(_, _) {seed=7} : ()"), "{text}");
}

#[test]
fn hand_written_text_parses() {
    let text = r#"
        # comments and free layout are fine
        graph g(%x: f32[N,4]) -> (%y: f32[N,4], %"z 2": f32[N,2]) {
          @s = i64[2] [2, 2]
          @w = f32[4] [1, 2, 3, 4.5]   # integers are fine for floats
          %7 = mul(%x, @w) : f32[N,4]
          %3 = split(%7, @s) {axis=1} : (f32[N,2], f32[N,2])
          return %7, %3.1
        }"#;
    let g = parse(text, None).unwrap();
    assert_eq!(g.outputs.len(), 2);
    assert_eq!(g.outputs[1].0, "z 2");
    let p = print(&g, Weights::Inline);
    assert!(p.contains("@w = f32[4] [1.0,2.0,3.0,4.5]"), "{p}");
    assert!(p.contains("%1 = split(%0, @s) {axis=1} : (f32[N,2], f32[N,2])"), "{p}");
    assert!(p.contains("return %0, %1.1"), "{p}");
    // Used before it is defined: an error that names it.
    let late = text
        .replace("          @s = i64[2] [2, 2]\n", "")
        .replace("return", "@s = i64[2] [2, 2]\n return");
    let e = parse(&late, None).unwrap_err().to_string();
    assert!(e.contains("6:26: @s is not defined before this point"), "{e}");
}

#[test]
fn deep_nesting_is_bounded() {
    fn nested(depth: usize) -> String {
        let mut s = String::from("graph g0() -> () {\n return\n}");
        for d in 1..=depth {
            s = format!(
                "graph g{d}(%c: bool[]) -> () {{\n %0 = if(%c) {{then_branch={s}, else_branch=graph e() -> () {{ return }}}} : ()\n return\n}}"
            );
        }
        s
    }
    assert!(parse(&nested(64), None).is_ok());
    let e = parse(&nested(65), None).unwrap_err().to_string();
    assert!(e.contains("graphs nest more than 64 deep"), "{e}");
    // Far deeper than any stack would take, still just an error.
    let e = parse(
        &"graph g(%c: bool[]) -> () { %0 = if(%c) {then_branch=".repeat(100_000),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("nest"), "{e}");
}

/// (text, expected part of the error message)
const BAD: &[(&str, &str)] = &[
    ("", "1:1: expected `graph`, found the end of the text"),
    (
        "graph g() -> () { return }\nextra",
        "2:1: expected the end of the text after the graph",
    ),
    (
        "graph g(%x: f33[2]) -> () { return }",
        "1:13: unknown element type `f33`",
    ),
    ("graph g(%x: f32[2,) -> () { return }", "1:19: expected a dimension"),
    (
        "graph g(%x: f32[-2]) -> () { return }",
        "1:17: `-2` is not a dimension size",
    ),
    ("graph g(%x: f32[2) -> () { return }", "1:18: expected `,` or `]`"),
    (
        "graph g(%x: f32[99999999999999999999999]) -> () { return }",
        "is not a dimension size",
    ),
    (
        "graph g(%x: f32[2], %x: f32[2]) -> () { return }",
        "1:21: two graph inputs are named x",
    ),
    (
        "graph g(%0: f32[2]) -> () { return }",
        "1:9: expected a named parameter",
    ),
    (
        "graph g() -> (%y: f32[2]) { return %z }",
        "1:36: %z is not defined before this point",
    ),
    (
        "graph g() -> (%y: f32[2]) { return }",
        "1:29: the graph declares 1 outputs but returns 0 values",
    ),
    (
        "graph g(%x: f32[2]) -> (%y: f32[3]) { return %x }",
        "1:46: output %y is declared f32[3] but %x is f32[2]",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = frobnicate(%x) : f32[2]\n return }",
        "1:34: unknown op `frobnicate`",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = relu(%x) {alpha=1.0} : f32[2]\n return }",
        "op `relu` has no attribute `alpha`",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = leaky_relu(%x) {alpha=\"big\"} : f32[2]\n return }",
        "attribute `alpha`: expected a number",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = leaky_relu(%x) : f32[2]\n return }",
        "attribute `alpha`: expected a number, found None",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = flatten(%x) {axis=1, axis=2} : f32[2]\n return }",
        "1:55: attribute `axis` is given twice",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = cast(%x) {to=f128} : f32[2]\n return }",
        "attribute `to`: expected a dtype",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = relu(%x) : f32[2]\n %0 = relu(%x) : f32[2]\n return }",
        "2:2: %0 is defined twice",
    ),
    (
        "graph g() -> () { @w = f32[1] [1.0]\n @w = f32[1] [2.0]\n return }",
        "2:2: @w is defined twice",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = relu(%1) : f32[2]\n return }",
        "1:39: %1 is not defined before this point",
    ),
    (
        "graph g(%x: f32[2]) -> () { %x = relu(%x) : f32[2]\n return }",
        "1:29: a node is numbered",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = split(%x) {axis=0} : (f32[1], f32[1])\n %1 = relu(%0) : f32[1]\n return }",
        "2:12: %0 has 2 outputs; say which one, as in %0.0",
    ),
    (
        "graph g(%x: f32[2]) -> () { %0 = relu(%x.1) : f32[2]\n return }",
        "1:39: %x.1 asks for output 1 but the node has 1",
    ),
    (
        "graph g() -> () { @w = f32[2] [1.0]\n return }",
        "1:24: f32[2] holds 2 elements but 1 are given",
    ),
    (
        "graph g() -> () { @w = f32[N] [1.0]\n return }",
        "1:24: a constant's shape must be fully known",
    ),
    (
        "graph g() -> () { @w = f32[1000000000000] [1.0]\n return }",
        "holds 1000000000000 elements but 1 are given",
    ),
    (
        "graph g() -> () { @w = f32[4294967296,4294967296,4294967296] [1.0]\n return }",
        "more elements than fit in memory",
    ),
    (
        "graph g() -> () { @w = i8[1] [128]\n return }",
        "1:31: 128 is out of range for i8",
    ),
    (
        "graph g() -> () { @w = u8[1] [-1]\n return }",
        "1:31: -1 is out of range for u8",
    ),
    (
        "graph g() -> () { @w = i32[1] [1.5]\n return }",
        "1:32: expected an integer, found `1.5`",
    ),
    (
        "graph g() -> () { @w = bool[1] [1]\n return }",
        "1:33: expected true or false",
    ),
    (
        "graph g() -> () { @w = f16[1] [0x10000]\n return }",
        "1:32: 0x10000 has more bits than the element type",
    ),
    (
        "graph g() -> () { @w = f32[1] [nan]\n return }",
        "1:32: expected a number, found `nan`",
    ),
    (
        "graph g() -> () { @w = f32[1000]\n return }",
        "2:2: expected the values of this f32[1000] constant",
    ),
    (
        "graph g() -> () { @w = f32[2] bin(0, 8)\n return }",
        "1:24: the text refers to a .bin of weights but none was given",
    ),
    (
        "graph g() -> () { @w = \"f32\"[2] [1.0, 2.0]\n return }",
        "1:24: expected a type like `f32[N,3]`",
    ),
    (
        "graph g() -> () { %0 = relu(%x) : f32[2] \"unterminated\n return }",
        "1:42: the string is not closed",
    ),
    (
        "graph g() -> () { %0 = relu(_) : f32[2] \"bad \\q escape\"\n return }",
        "1:46: unknown escape",
    ),
    ("graph g() -> () { $ }", "1:19: unexpected character '$'"),
    (
        "graph g() -> () { % }",
        "1:19: expected a name or a number right after `%`",
    ),
    ("graph g() -> () { 12abc }", "1:19: a number runs into a name"),
    (
        "graph g() -> () { input %q\n return }",
        "1:25: %q is not an input of this graph",
    ),
    (
        "graph g(%q: f32[1]) -> () { input %q\n input %q\n return }",
        "2:8: input %q is placed twice",
    ),
    (
        "graph g(%q: f32[1]) -> () { %0 = relu(%q) : f32[1]\n input %q\n return }",
        "1:39: %q is not defined before this point",
    ),
    (
        "graph g() -> () { %0 = if() {then_branch=graph t() -> () { return }} : ()\n return }",
        "attribute `else_branch`: expected a graph",
    ),
    ("graph g() -> () { %0 = relu() : f32[2] \n", "2:1: expected a statement"),
    (
        "graph g() -> () { %0 = transpose() {perm=[1, \"a\"]} : f32[2]\n return }",
        "1:46: a list holds numbers or strings, not both",
    ),
    (
        "graph g() -> () { %0 = relu() : f32[2] : f32[2]\n return }",
        "1:40: expected a statement",
    ),
    (
        "graph g() -> () { %99999999999999999999999 = relu() : f32[2]\n return }",
        "1:19: the number 99999999999999999999999 is too large",
    ),
];

#[test]
fn errors_say_where_and_what() {
    for (text, want) in BAD {
        match parse(text, None) {
            Ok(g) => panic!("parsed but should not:\n{text}\n{}", print(&g, Weights::Inline)),
            Err(e) => assert!(e.to_string().contains(want), "for\n{text}\nwanted `{want}`, got `{e}`"),
        }
    }
}

#[test]
fn bin_references_are_checked() {
    let text = |off: usize, len: usize| format!("graph g() -> () {{ @w = f32[2] bin({off}, {len})\n return }}");
    let bin = [0u8; 16];
    assert!(parse(&text(8, 8), Some(&bin)).is_ok());
    let e = parse(&text(12, 8), Some(&bin)).unwrap_err().to_string();
    assert!(
        e.contains("bin(12, 8) lies outside the .bin, which holds 16 bytes"),
        "{e}"
    );
    let e = parse(&text(usize::MAX, 8), Some(&bin)).unwrap_err().to_string();
    assert!(e.contains("lies outside"), "{e}");
    let e = parse(&text(0, 4), Some(&bin)).unwrap_err().to_string();
    assert!(e.contains("f32[2] needs 8 bytes, bin(…) gives 4"), "{e}");
    // The same bytes referenced many times cannot multiply the file in memory.
    let many = format!(
        "graph g() -> () {{ {} return }}",
        (0..3)
            .map(|i| format!("@w{i} = f32[2] bin(0, 8)\n"))
            .collect::<String>()
    );
    let e = parse(&many, Some(&bin)).unwrap_err().to_string();
    assert!(e.contains("add up to more bytes than the .bin holds"), "{e}");
}

#[test]
fn mangled_text_never_panics() {
    let mut bin = Vec::new();
    let texts = [
        print(&kitchen_sink(), Weights::Inline),
        print(&small_cnn(), Weights::External(&mut bin)),
    ];
    for text in &texts {
        // Every prefix.
        for (i, _) in text.char_indices() {
            let _ = parse(&text[..i], Some(&bin));
        }
        // Single-byte substitutions with bytes that matter to the grammar.
        let bytes = text.as_bytes();
        let mut seed = 12345u64;
        for _ in 0..3000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (seed >> 33) as usize % bytes.len();
            let with = b"(){}[],=:%@\"._-0x9e?*#\n graphinput"[(seed >> 20) as usize % 34];
            let mut m = bytes.to_vec();
            m[at] = with;
            if let Ok(s) = std::str::from_utf8(&m) {
                if let Ok(g) = parse(s, Some(&bin)) {
                    // Whatever parses prints and parses again to the same text.
                    let again = print(&g, Weights::Inline);
                    assert_eq!(print(&parse(&again, None).unwrap(), Weights::Inline), again);
                }
            }
        }
    }
}
