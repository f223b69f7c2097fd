//! ONNX bridge tests on small models built here with the protobuf types.

use kiln_bridges::onnx::{load, load_bytes, read_tensor};
use kiln_ir::{CoordinateTransform, DType, Dim, Graph, NearestMode, Op, Tensor};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto;
use onnx_protobuf::*;
use std::path::{Path, PathBuf};

// ── Model building helpers ─────────────────────────────────────────────────────────────

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n.name = outputs
        .first()
        .map(|s| format!("{s}_node"))
        .unwrap_or_default();
    n.attribute = attrs;
    n
}

fn attr_i(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn attr_f(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOATS.into();
    a.floats = v.to_vec();
    a
}

fn attr_g(name: &str, g: GraphProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::GRAPH.into();
    a.g = Some(g).into();
    a
}

enum D {
    V(i64),
    P(&'static str),
}

/// A tensor value-info; elem 1 = f32, 7 = i64, 9 = bool.
fn vi(name: &str, elem: i32, dims: &[D]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = Dimension::new();
        dim.value = Some(match d {
            D::V(v) => dimension::Value::DimValue(*v),
            D::P(p) => dimension::Value::DimParam(p.to_string()),
        });
        shape.dim.push(dim);
    }
    let mut t = type_proto::Tensor::new();
    t.elem_type = elem;
    t.shape = Some(shape).into();
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(t));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(tp).into();
    v
}

fn vi_untyped(name: &str) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v
}

fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = 1;
    t.dims = dims.to_vec();
    t.float_data = data.to_vec();
    t
}

fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = 7;
    t.dims = dims.to_vec();
    t.int64_data = data.to_vec();
    t
}

fn graph(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> GraphProto {
    let mut g = GraphProto::new();
    g.name = "test".into();
    g.node = nodes;
    g.input = inputs;
    g.output = outputs;
    g.initializer = inits;
    g
}

fn model(g: GraphProto, opset: i64) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut o = OperatorSetIdProto::new();
    o.version = opset;
    m.opset_import.push(o);
    m.graph = Some(g).into();
    m
}

fn bytes(m: &ModelProto) -> Vec<u8> {
    m.write_to_bytes().expect("serializes")
}

fn load_model(m: &ModelProto) -> Result<Graph, kiln_bridges::BridgeError> {
    load_bytes(&bytes(m), None, "test.onnx")
}

fn ops(g: &Graph) -> Vec<&'static str> {
    g.op_histogram().into_iter().map(|(n, _)| n).collect()
}

fn count(g: &Graph, op: &str) -> usize {
    g.op_histogram()
        .into_iter()
        .find(|(n, _)| *n == op)
        .map_or(0, |(_, c)| c)
}

fn find_op<'a>(g: &'a Graph, name: &str) -> &'a Op {
    let n = g
        .nodes
        .node_indices()
        .find(|&n| g.node(n).name == name)
        .unwrap_or_else(|| panic!("no node {name}"));
    &g.node(n).op
}

fn x_input(dims: &[D]) -> ValueInfoProto {
    vi("x", 1, dims)
}

fn run(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    kiln_ir::eval::run_graph(g, inputs).expect("runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-onnx-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

// ── Whole models ───────────────────────────────────────────────────────────────────────

#[test]
fn small_conv_net_loads_with_the_right_ops() {
    let w: Vec<f32> = (0..4 * 3 * 3 * 3).map(|i| (i % 7) as f32 * 0.1).collect();
    let fc: Vec<f32> = (0..4 * 4 * 10).map(|i| (i % 5) as f32 * 0.01).collect();
    let g = graph(
        vec![
            node(
                "Conv",
                &["x", "w", "b"],
                &["c"],
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                ],
            ),
            node("Relu", &["c"], &["r"], vec![]),
            node(
                "MaxPool",
                &["r"],
                &["p"],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                ],
            ),
            node("Flatten", &["p"], &["f"], vec![]),
            node(
                "Gemm",
                &["f", "fc", "fcb"],
                &["y"],
                vec![attr_i("transB", 0)],
            ),
        ],
        vec![x_input(&[D::P("N"), D::V(3), D::V(4), D::V(4)])],
        vec![vi("y", 1, &[D::P("N"), D::V(10)])],
        vec![
            f32_tensor("w", &[4, 3, 3, 3], &w),
            f32_tensor("b", &[4], &[0.1, 0.2, 0.3, 0.4]),
            f32_tensor("fc", &[16, 10], &fc),
            f32_tensor("fcb", &[10], &[0.0; 10]),
        ],
    );
    let g = load_model(&model(g, 13)).expect("loads");
    kiln_ir::verify(&g).expect("verifies");
    assert_eq!(
        ops(&g),
        vec!["const", "conv", "flatten", "gemm", "input", "pool", "relu"]
    );
    assert_eq!(count(&g, "const"), 4);
    assert_eq!(g.inputs.len(), 1);
    let x = g.node(g.inputs[0]);
    assert_eq!(x.name, "x");
    assert_eq!(x.outputs[0].shape.dims().unwrap()[0], Dim::Sym("N".into()));
    assert_eq!(g.outputs.len(), 1);
    assert_eq!(g.outputs[0].0, "y");
    let y = g.value_type(g.outputs[0].1);
    assert_eq!(y.dtype, DType::F32);
    assert_eq!(y.shape.dims().unwrap()[1], Dim::Known(10));
    assert!(matches!(
        find_op(&g, "p_node"),
        Op::Pool {
            kind: kiln_ir::PoolKind::Max,
            ..
        }
    ));
}

#[test]
fn input_with_an_initializer_is_a_constant_and_unnamed_nodes_take_their_output_name() {
    let mut n = node("Add", &["x", "k"], &["y"], vec![]);
    n.name.clear();
    let g = graph(
        vec![n],
        vec![x_input(&[D::V(2)]), vi("k", 1, &[D::V(2)])],
        vec![vi("y", 1, &[D::V(2)])],
        vec![f32_tensor("k", &[2], &[1.0, 2.0])],
    );
    let g = load_model(&model(g, 14)).expect("loads");
    assert_eq!(g.inputs.len(), 1);
    assert!(matches!(
        find_op(&g, "y"),
        Op::Binary(kiln_ir::BinaryOp::Add)
    ));
    let out = run(&g, &[Tensor::new(vec![2], vec![10f32, 20.0]).unwrap()]);
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[11.0, 22.0]);
}

#[test]
fn nodes_out_of_order_are_sorted() {
    let g = graph(
        vec![
            node("Neg", &["a"], &["y"], vec![]),
            node("Abs", &["x"], &["a"], vec![]),
        ],
        vec![x_input(&[D::V(2)])],
        vec![vi("y", 1, &[D::V(2)])],
        vec![],
    );
    let g = load_model(&model(g, 13)).expect("loads");
    let out = run(&g, &[Tensor::new(vec![2], vec![-1f32, 2.0]).unwrap()]);
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-1.0, -2.0]);
}

// ── Old opsets ─────────────────────────────────────────────────────────────────────────

#[test]
fn softmax_before_13_flattens_at_the_axis() {
    let g = graph(
        vec![node("Softmax", &["x"], &["y"], vec![attr_i("axis", 1)])],
        vec![x_input(&[D::V(2), D::V(2), D::V(2)])],
        vec![vi("y", 1, &[D::V(2), D::V(2), D::V(2)])],
        vec![],
    );
    let g = load_model(&model(g, 11)).expect("loads");
    kiln_ir::verify(&g).expect("verifies");
    for op in ["shape", "flatten", "softmax", "reshape"] {
        assert_eq!(count(&g, op), 1, "{op}");
    }
    // Softmax over the 4 trailing elements of each batch row, not over axis 1 alone.
    let x = Tensor::new(vec![2, 2, 2], vec![0f32, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
    let y = run(&g, &[x]);
    assert_eq!(y[0].shape(), &[2, 2, 2]);
    for v in y[0].as_slice::<f32>().unwrap() {
        assert!((v - 0.25).abs() < 1e-6);
    }
}

#[test]
fn softmax_before_13_on_the_last_axis_is_direct() {
    let g = graph(
        vec![node("LogSoftmax", &["x"], &["y"], vec![attr_i("axis", 2)])],
        vec![x_input(&[D::V(2), D::V(2), D::V(3)])],
        vec![vi("y", 1, &[])],
        vec![],
    );
    let g = load_model(&model(g, 9)).expect("loads");
    assert_eq!(count(&g, "flatten"), 0);
    assert_eq!(find_op(&g, "y_node"), &Op::LogSoftmax { axis: -1 });
}

#[test]
fn clip_with_attributes_becomes_clip_with_constant_inputs() {
    let g = graph(
        vec![node(
            "Clip",
            &["x"],
            &["y"],
            vec![attr_f("min", -1.0), attr_f("max", 1.0)],
        )],
        vec![x_input(&[D::V(3)])],
        vec![vi("y", 1, &[D::V(3)])],
        vec![],
    );
    let g = load_model(&model(g, 7)).expect("loads");
    kiln_ir::verify(&g).expect("verifies");
    assert_eq!(count(&g, "const"), 2);
    let y = run(&g, &[Tensor::new(vec![3], vec![-5f32, 0.5, 5.0]).unwrap()]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[-1.0, 0.5, 1.0]);
}

#[test]
fn upsample_is_asymmetric_nearest_floor_resize() {
    let g = graph(
        vec![node(
            "Upsample",
            &["x"],
            &["y"],
            vec![attr_floats("scales", &[1.0, 1.0, 2.0, 2.0])],
        )],
        vec![x_input(&[D::V(1), D::V(1), D::V(2), D::V(2)])],
        vec![vi("y", 1, &[D::V(1), D::V(1), D::V(4), D::V(4)])],
        vec![],
    );
    let g = load_model(&model(g, 7)).expect("loads");
    match find_op(&g, "y_node") {
        Op::Resize {
            coordinate_transformation_mode,
            nearest_mode,
            ..
        } => {
            assert_eq!(
                *coordinate_transformation_mode,
                CoordinateTransform::Asymmetric
            );
            assert_eq!(*nearest_mode, NearestMode::Floor);
        }
        other => panic!("{other:?}"),
    }
    let y = run(
        &g,
        &[Tensor::new(vec![1, 1, 2, 2], vec![1f32, 2.0, 3.0, 4.0]).unwrap()],
    );
    assert_eq!(y[0].shape(), &[1, 1, 4, 4]);
    assert_eq!(&y[0].as_slice::<f32>().unwrap()[..4], &[1.0, 1.0, 2.0, 2.0]);
}

#[test]
fn attributes_moved_to_inputs_become_constant_inputs() {
    let g = graph(
        vec![
            node(
                "Split",
                &["x"],
                &["s0", "s1"],
                vec![attr_ints("split", &[1, 3]), attr_i("axis", 1)],
            ),
            node("Squeeze", &["s0"], &["q"], vec![attr_ints("axes", &[1])]),
            node(
                "ReduceSum",
                &["s1"],
                &["r"],
                vec![attr_ints("axes", &[1]), attr_i("keepdims", 0)],
            ),
            node("Unsqueeze", &["r"], &["u"], vec![attr_ints("axes", &[0])]),
            node(
                "Slice",
                &["x"],
                &["sl"],
                vec![
                    attr_ints("starts", &[1]),
                    attr_ints("ends", &[3]),
                    attr_ints("axes", &[1]),
                ],
            ),
        ],
        vec![x_input(&[D::V(2), D::V(4)])],
        vec![vi("q", 1, &[]), vi("u", 1, &[]), vi("sl", 1, &[])],
        vec![],
    );
    // Slice's attributes are opset < 10; Split/Squeeze/Reduce's are < 13. Opset 9 covers both.
    let g = load_model(&model(g, 9)).expect("loads");
    kiln_ir::verify(&g).expect("verifies");
    let x = Tensor::new(vec![2, 4], vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
    let y = run(&g, &[x]);
    assert_eq!(y[0].shape(), &[2]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1.0, 5.0]);
    assert_eq!(y[1].shape(), &[1, 2]);
    assert_eq!(y[1].as_slice::<f32>().unwrap(), &[9.0, 21.0]);
    assert_eq!(y[2].as_slice::<f32>().unwrap(), &[2.0, 3.0, 6.0, 7.0]);
}

#[test]
fn pad_with_attributes() {
    let g = graph(
        vec![node(
            "Pad",
            &["x"],
            &["y"],
            vec![attr_ints("pads", &[1, 0]), attr_f("value", 9.0)],
        )],
        vec![x_input(&[D::V(2)])],
        vec![vi("y", 1, &[])],
        vec![],
    );
    let g = load_model(&model(g, 10)).expect("loads");
    let y = run(&g, &[Tensor::new(vec![2], vec![1f32, 2.0]).unwrap()]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[9.0, 1.0, 2.0]);
}

#[test]
fn variadic_sum_and_mean_are_chains() {
    let g = graph(
        vec![
            node("Sum", &["x", "x", "x"], &["s"], vec![]),
            node("Mean", &["x", "s"], &["m"], vec![]),
        ],
        vec![x_input(&[D::V(1)])],
        vec![vi("s", 1, &[]), vi("m", 1, &[])],
        vec![],
    );
    let g = load_model(&model(g, 13)).expect("loads");
    assert_eq!(count(&g, "add"), 3);
    assert_eq!(count(&g, "div"), 1);
    let y = run(&g, &[Tensor::new(vec![1], vec![2f32]).unwrap()]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[6.0]);
    assert_eq!(y[1].as_slice::<f32>().unwrap(), &[4.0]);
}

#[test]
fn batchnorm_training_outputs_are_refused() {
    let inits = vec![
        f32_tensor("s", &[1], &[1.0]),
        f32_tensor("b", &[1], &[0.0]),
        f32_tensor("m", &[1], &[0.0]),
        f32_tensor("v", &[1], &[1.0]),
    ];
    let g = graph(
        vec![node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "rm", "rv"],
            vec![],
        )],
        vec![x_input(&[D::V(1), D::V(1), D::V(2)])],
        vec![vi("y", 1, &[])],
        inits,
    );
    let e = load_model(&model(g, 9)).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("y_node"));
    assert!(e.message.contains("training"), "{e}");
}

#[test]
fn cast_to_an_unsupported_type_names_the_node() {
    let g = graph(
        vec![node("Cast", &["x"], &["y"], vec![attr_i("to", 8)])],
        vec![x_input(&[D::V(1)])],
        vec![vi("y", 8, &[])],
        vec![],
    );
    let e = load_model(&model(g, 13)).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("y_node"));
    assert!(e.message.contains("STRING"), "{e}");
}

#[test]
fn other_domains_are_refused_by_name() {
    let mut n = node("LabelEncoder", &["x"], &["y"], vec![]);
    n.domain = "ai.onnx.ml".into();
    let g = graph(
        vec![n],
        vec![x_input(&[D::V(1)])],
        vec![vi("y", 1, &[])],
        vec![],
    );
    let e = load_model(&model(g, 13)).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("y_node"));
    assert!(
        e.message.contains("ai.onnx.ml") && e.message.contains("LabelEncoder"),
        "{e}"
    );
    assert!(e.to_string().starts_with("test.onnx: node y_node: "), "{e}");
}

// ── Subgraphs and functions ────────────────────────────────────────────────────────────

#[test]
fn if_branches_capture_outer_values_in_one_order() {
    // then: y = x + a ; else: y = b (reads a different outer value)
    let then_g = graph(
        vec![node("Add", &["x", "a"], &["t"], vec![])],
        vec![],
        vec![vi("t", 1, &[D::V(1)])],
        vec![],
    );
    let else_g = graph(
        vec![node("Identity", &["b"], &["e"], vec![])],
        vec![],
        vec![vi("e", 1, &[D::V(1)])],
        vec![],
    );
    let g = graph(
        vec![
            node("Neg", &["x"], &["a"], vec![]),
            node("Abs", &["x"], &["b"], vec![]),
            node(
                "If",
                &["c"],
                &["y"],
                vec![attr_g("then_branch", then_g), attr_g("else_branch", else_g)],
            ),
        ],
        vec![vi("c", 9, &[]), x_input(&[D::V(1)])],
        vec![vi("y", 1, &[D::V(1)])],
        vec![],
    );
    let g = load_model(&model(g, 13)).expect("loads");
    kiln_ir::verify(&g).expect("verifies");
    let Op::If {
        then_branch,
        else_branch,
    } = find_op(&g, "y_node")
    else {
        panic!()
    };
    let names = |g: &Graph| {
        g.inputs
            .iter()
            .map(|&n| g.node(n).name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(then_branch), vec!["x", "a", "b"]);
    assert_eq!(names(else_branch), vec!["x", "a", "b"]);
    let x = Tensor::new(vec![1], vec![-3f32]).unwrap();
    let y = run(&g, &[Tensor::scalar(true), x.clone()]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[0.0]);
    let y = run(&g, &[Tensor::scalar(false), x]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[3.0]);
}

#[test]
fn loop_body_captures_through_a_nested_if() {
    // for i < 3: acc = acc + (cond2 ? x : x)   — x comes from two levels up.
    let inner_then = graph(
        vec![node("Identity", &["x"], &["tv"], vec![])],
        vec![],
        vec![vi("tv", 1, &[])],
        vec![],
    );
    let inner_else = graph(
        vec![node("Identity", &["x"], &["ev"], vec![])],
        vec![],
        vec![vi("ev", 1, &[])],
        vec![],
    );
    let body = graph(
        vec![
            node("Identity", &["cond_in"], &["cond_out"], vec![]),
            node(
                "If",
                &["cond_in"],
                &["picked"],
                vec![
                    attr_g("then_branch", inner_then),
                    attr_g("else_branch", inner_else),
                ],
            ),
            node("Add", &["acc_in", "picked"], &["acc_out"], vec![]),
        ],
        vec![vi("i", 7, &[]), vi("cond_in", 9, &[]), vi_untyped("acc_in")],
        vec![vi("cond_out", 9, &[]), vi("acc_out", 1, &[])],
        vec![],
    );
    let g = graph(
        vec![node(
            "Loop",
            &["n", "", "zero"],
            &["acc"],
            vec![attr_g("body", body)],
        )],
        vec![x_input(&[D::V(2)])],
        vec![vi("acc", 1, &[])],
        vec![
            i64_tensor("n", &[], &[3]),
            f32_tensor("zero", &[2], &[0.0, 0.0]),
        ],
    );
    let g = load_model(&model(g, 13)).expect("loads");
    kiln_ir::verify(&g).expect("verifies");
    let Op::Loop { body, num_captured } = find_op(&g, "acc_node") else {
        panic!()
    };
    assert_eq!(*num_captured, 1);
    let names: Vec<_> = body
        .inputs
        .iter()
        .map(|&n| body.node(n).name.clone())
        .collect();
    assert_eq!(names, vec!["i", "cond_in", "acc_in", "x"]);
    let y = run(&g, &[Tensor::new(vec![2], vec![1f32, 2.0]).unwrap()]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[3.0, 6.0]);
}

#[test]
fn model_local_functions_are_inlined() {
    // f(a) = a * s + a  with attribute s via ref_attr_name on a Constant.
    let mut f = FunctionProto::new();
    f.name = "AxPlusA".into();
    f.domain = "local".into();
    f.input = vec!["a".into()];
    f.output = vec!["out".into()];
    f.attribute = vec!["s".into()];
    let mut k = AttributeProto::new();
    k.name = "value_float".into();
    k.ref_attr_name = "s".into();
    k.type_ = AttributeType::FLOAT.into();
    f.node = vec![
        node("Constant", &[], &["k"], vec![k]),
        node("Mul", &["a", "k"], &["m"], vec![]),
        node("Add", &["m", "a"], &["out"], vec![]),
    ];
    let mut o = OperatorSetIdProto::new();
    o.version = 13;
    f.opset_import.push(o);
    let mut call = node("AxPlusA", &["x"], &["y"], vec![attr_f("s", 3.0)]);
    call.domain = "local".into();
    let g = graph(
        vec![call],
        vec![x_input(&[D::V(1)])],
        vec![vi("y", 1, &[])],
        vec![],
    );
    let mut m = model(g, 13);
    let mut o = OperatorSetIdProto::new();
    o.domain = "local".into();
    o.version = 1;
    m.opset_import.push(o);
    m.functions.push(f);
    let g = load_model(&m).expect("loads");
    let y = run(&g, &[Tensor::new(vec![1], vec![2f32]).unwrap()]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[8.0]);
}

// ── Bad input ──────────────────────────────────────────────────────────────────────────

fn relu_model() -> ModelProto {
    model(
        graph(
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![x_input(&[D::V(2)])],
            vec![vi("y", 1, &[])],
            vec![],
        ),
        13,
    )
}

#[test]
fn truncated_file_is_an_error() {
    let b = bytes(&relu_model());
    for cut in [1, b.len() / 2, b.len() - 1] {
        let e = load_bytes(&b[..cut], None, "cut.onnx").unwrap_err();
        assert_eq!(e.file, "cut.onnx");
        assert!(
            e.message.contains("protobuf") || e.message.contains("no graph"),
            "{e}"
        );
    }
    let e = load_bytes(&[0xff; 16], None, "junk.onnx").unwrap_err();
    assert!(e.message.contains("protobuf"), "{e}");
}

#[test]
fn dangling_input_is_an_error_naming_node_and_value() {
    let g = graph(
        vec![node("Relu", &["nowhere"], &["y"], vec![])],
        vec![x_input(&[D::V(2)])],
        vec![vi("y", 1, &[])],
        vec![],
    );
    let e = load_model(&model(g, 13)).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("y_node"));
    assert!(e.message.contains("nowhere"), "{e}");
}

#[test]
fn cycle_is_an_error_naming_a_node_on_it() {
    let g = graph(
        vec![
            node("Relu", &["x"], &["a"], vec![]),
            node("Add", &["a", "c"], &["b"], vec![]),
            node("Neg", &["b"], &["c"], vec![]),
        ],
        vec![x_input(&[D::V(2)])],
        vec![vi("c", 1, &[])],
        vec![],
    );
    let e = load_model(&model(g, 13)).unwrap_err();
    assert!(
        matches!(e.node.as_deref(), Some("b_node") | Some("c_node")),
        "{e}"
    );
    assert!(e.message.contains("cycle"), "{e}");
}

#[test]
fn huge_and_negative_shapes_are_refused_before_allocating() {
    let mut t = f32_tensor("w", &[1 << 30, 1 << 30], &[]);
    t.raw_data = vec![0; 16];
    let g = graph(
        vec![node("Relu", &["w"], &["y"], vec![])],
        vec![],
        vec![vi("y", 1, &[])],
        vec![t],
    );
    let e = load_model(&model(g, 13)).unwrap_err();
    assert!(e.message.contains("`w`"), "{e}");
    let mut t = f32_tensor("w", &[1 << 31, 1 << 31, 1 << 31], &[]);
    t.raw_data = vec![0; 16];
    let g = graph(
        vec![node("Relu", &["w"], &["y"], vec![])],
        vec![],
        vec![vi("y", 1, &[])],
        vec![t],
    );
    load_model(&model(g, 13)).unwrap_err();
    let t = f32_tensor("w", &[-1, 2], &[1.0, 2.0]);
    let g = graph(
        vec![node("Relu", &["w"], &["y"], vec![])],
        vec![],
        vec![vi("y", 1, &[])],
        vec![t],
    );
    let e = load_model(&model(g, 13)).unwrap_err();
    assert!(e.message.contains("negative"), "{e}");
    // Typed data whose length disagrees with the dims.
    let t = f32_tensor("w", &[3], &[1.0, 2.0]);
    let g = graph(
        vec![node("Relu", &["w"], &["y"], vec![])],
        vec![],
        vec![vi("y", 1, &[])],
        vec![t],
    );
    let e = load_model(&model(g, 13)).unwrap_err();
    assert!(e.message.contains("3 elements"), "{e}");
}

#[test]
fn typed_fields_decode_narrow_types() {
    let mut t = TensorProto::new();
    t.name = "h".into();
    t.data_type = 10; // f16 bit patterns in int32_data
    t.dims = vec![2];
    t.int32_data = vec![0x3c00, 0xc000];
    let v = kiln_bridges::onnx::tensor_from_proto(&t, None).expect("decodes");
    assert_eq!(v.to_f64_vec(), vec![1.0, -2.0]);
    t.data_type = 9;
    t.int32_data = vec![0, 1];
    let v = kiln_bridges::onnx::tensor_from_proto(&t, None).expect("decodes");
    assert_eq!(v.as_slice::<bool>().unwrap(), &[false, true]);
    let mut t = TensorProto::new();
    t.data_type = 12;
    t.dims = vec![0, 3];
    let v = kiln_bridges::onnx::tensor_from_proto(&t, None).expect("zero-size tensors are fine");
    assert_eq!(v.shape(), &[0, 3]);
}

// ── Files: external data and tensor files ──────────────────────────────────────────────

fn external_model(location: &str, offset: u64, length: u64) -> ModelProto {
    let mut t = TensorProto::new();
    t.name = "w".into();
    t.data_type = 1;
    t.dims = vec![2];
    t.data_location = DataLocation::EXTERNAL.into();
    for (k, v) in [
        ("location", location.to_string()),
        ("offset", offset.to_string()),
        ("length", length.to_string()),
    ] {
        let mut e = StringStringEntryProto::new();
        e.key = k.into();
        e.value = v;
        t.external_data.push(e);
    }
    model(
        graph(
            vec![node("Add", &["x", "w"], &["y"], vec![])],
            vec![x_input(&[D::V(2)])],
            vec![vi("y", 1, &[])],
            vec![t],
        ),
        13,
    )
}

fn write_model(dir: &Path, m: &ModelProto) -> PathBuf {
    let p = dir.join("model.onnx");
    std::fs::write(&p, bytes(m)).expect("writes");
    p
}

#[test]
fn external_data_inside_the_folder_is_read() {
    let dir = scratch("ext-ok");
    let mut data = vec![0u8; 4];
    data.extend(1.5f32.to_le_bytes());
    data.extend(2.5f32.to_le_bytes());
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    std::fs::write(dir.join("weights/w.bin"), &data).unwrap();
    let p = write_model(&dir, &external_model("weights/w.bin", 4, 8));
    let g = load(&p).expect("loads");
    let y = run(&g, &[Tensor::new(vec![2], vec![1f32, 1.0]).unwrap()]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[2.5, 3.5]);
    // Past the end of the file, and a length that does not match the tensor.
    let p = write_model(&dir, &external_model("weights/w.bin", 8, 8));
    assert!(load(&p).unwrap_err().message.contains("past the end"));
    let p = write_model(&dir, &external_model("weights/w.bin", 0, 12));
    assert!(load(&p).unwrap_err().message.contains("needs 8 bytes"));
    // From bytes with no folder, external data is refused.
    let e = load_bytes(&bytes(&external_model("weights/w.bin", 4, 8)), None, "mem").unwrap_err();
    assert!(e.message.contains("external"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn external_data_leaving_the_folder_is_refused() {
    let dir = scratch("ext-escape");
    let inner = dir.join("model");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(dir.join("secret.bin"), [0u8; 8]).unwrap();
    let outside = dir.join("secret.bin");
    for loc in [
        "../secret.bin",
        outside.to_str().unwrap(),
        "a/../../secret.bin",
    ] {
        let p = write_model(&inner, &external_model(loc, 0, 8));
        let e = load(&p).unwrap_err();
        assert!(
            e.message.contains("inside the model's folder"),
            "{loc}: {e}"
        );
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, inner.join("link.bin")).unwrap();
        let p = write_model(&inner, &external_model("link.bin", 0, 8));
        let e = load(&p).unwrap_err();
        assert!(e.message.contains("leaves the model's folder"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_tensor_reads_a_tensor_file() {
    let dir = scratch("tensor");
    let p = dir.join("input_0.pb");
    std::fs::write(
        &p,
        i64_tensor("x", &[3], &[1, -2, 3]).write_to_bytes().unwrap(),
    )
    .unwrap();
    let (name, t) = read_tensor(&p).expect("reads");
    assert_eq!(name, "x");
    assert_eq!(t.as_slice::<i64>().unwrap(), &[1, -2, 3]);
    std::fs::write(&p, [0x0a, 0xff]).unwrap();
    let e = read_tensor(&p).unwrap_err();
    assert!(e.file.ends_with("input_0.pb"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn functions_calling_themselves_twice_are_bounded() {
    let mut f = FunctionProto::new();
    f.name = "Twice".into();
    f.domain = "local".into();
    f.input = vec!["a".into()];
    f.output = vec!["out".into()];
    let mut c1 = node("Twice", &["a"], &["m"], vec![]);
    c1.domain = "local".into();
    let mut c2 = node("Twice", &["m"], &["out"], vec![]);
    c2.domain = "local".into();
    f.node = vec![c1, c2];
    let mut call = node("Twice", &["x"], &["y"], vec![]);
    call.domain = "local".into();
    let g = graph(
        vec![call],
        vec![x_input(&[D::V(1)])],
        vec![vi("y", 1, &[])],
        vec![],
    );
    let mut m = model(g, 13);
    m.functions.push(f);
    let e = load_model(&m).unwrap_err();
    assert!(
        e.message.contains("nest deeper") || e.message.contains("more than"),
        "{e}"
    );
}

/// A model exercising most of the loader: initializers, a Loop with an If inside, old-opset
/// rewrites.
fn busy_model() -> ModelProto {
    let inner_then = graph(
        vec![node("Identity", &["x"], &["tv"], vec![])],
        vec![],
        vec![vi("tv", 1, &[])],
        vec![],
    );
    let inner_else = graph(
        vec![node("Neg", &["x"], &["ev"], vec![])],
        vec![],
        vec![vi("ev", 1, &[])],
        vec![],
    );
    let body = graph(
        vec![
            node("Identity", &["cond_in"], &["cond_out"], vec![]),
            node(
                "If",
                &["cond_in"],
                &["picked"],
                vec![
                    attr_g("then_branch", inner_then),
                    attr_g("else_branch", inner_else),
                ],
            ),
            node("Add", &["acc_in", "picked"], &["acc_out"], vec![]),
        ],
        vec![
            vi("i", 7, &[]),
            vi("cond_in", 9, &[]),
            vi("acc_in", 1, &[D::V(2)]),
        ],
        vec![vi("cond_out", 9, &[]), vi("acc_out", 1, &[D::V(2)])],
        vec![],
    );
    model(
        graph(
            vec![
                node(
                    "Loop",
                    &["n", "", "zero"],
                    &["acc"],
                    vec![attr_g("body", body)],
                ),
                node("Softmax", &["acc"], &["s"], vec![attr_i("axis", 0)]),
                node("Clip", &["s"], &["c"], vec![attr_f("min", 0.1)]),
                node(
                    "Upsample",
                    &["c"],
                    &["u"],
                    vec![attr_floats("scales", &[2.0])],
                ),
            ],
            vec![x_input(&[D::P("N")])],
            vec![vi("u", 1, &[])],
            vec![
                i64_tensor("n", &[], &[3]),
                f32_tensor("zero", &[2], &[0.0, 0.0]),
            ],
        ),
        8,
    )
}

#[test]
fn mutated_models_never_panic() {
    let good = bytes(&busy_model());
    load_bytes(&good, None, "busy.onnx").expect("the unmutated model loads");
    // A fixed xorshift sequence: byte flips, truncations and insertions.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[i] = next() as u8,
                1 => b.truncate(i.max(1)),
                _ => b.insert(i, next() as u8),
            }
        }
        let _ = load_bytes(&b, None, "mutant.onnx");
    }
}

// ── Opsets 1 to 6 ──────────────────────────────────────────────────────────────────────

fn attr_s(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec();
    a
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_slice::<f32>().expect("f32").to_vec()
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}

/// Loads a one-input-`x` model at `opset` with `outputs` and runs it on `x`.
fn run_old(
    nodes: Vec<NodeProto>,
    x_dims: &[i64],
    x: &[f32],
    inits: Vec<TensorProto>,
    outputs: &[&str],
    opset: i64,
) -> Vec<Tensor> {
    let dims: Vec<D> = x_dims.iter().map(|&d| D::V(d)).collect();
    let outs = outputs.iter().map(|o| vi_untyped(o)).collect();
    let g = graph(nodes, vec![x_input(&dims)], outs, inits);
    let g = load_model(&model(g, opset)).expect("loads");
    let shape = x_dims.iter().map(|&d| d as usize).collect();
    run(&g, &[Tensor::new(shape, x.to_vec()).unwrap()])
}

#[test]
fn opset6_binary_broadcast_aligns_b_at_axis() {
    let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let broadcast = || attr_i("broadcast", 1);
    let nodes = vec![
        // B (3,) against dim 1 of A (2,3,2).
        node(
            "Add",
            &["x", "b3"],
            &["y1"],
            vec![broadcast(), attr_i("axis", 1)],
        ),
        // B (2,) against dim 0.
        node(
            "Sub",
            &["x", "b2"],
            &["y2"],
            vec![broadcast(), attr_i("axis", 0)],
        ),
        // No axis: suffix alignment, B (2,) against dim 2.
        node("Mul", &["x", "b2"], &["y3"], vec![broadcast()]),
        // A negative axis counts from A's end: -2 is dim 1.
        node(
            "Div",
            &["x", "b3"],
            &["y4"],
            vec![broadcast(), attr_i("axis", -2)],
        ),
        // Same shapes without broadcast (consumed_inputs is a no-op hint).
        node(
            "Add",
            &["x", "x"],
            &["y5"],
            vec![attr_ints("consumed_inputs", &[0, 0])],
        ),
    ];
    let inits = vec![
        f32_tensor("b3", &[3], &[10.0, 20.0, 30.0]),
        f32_tensor("b2", &[2], &[1.0, 2.0]),
    ];
    let y = run_old(
        nodes,
        &[2, 3, 2],
        &x,
        inits,
        &["y1", "y2", "y3", "y4", "y5"],
        6,
    );
    let idx = |i: usize, j: usize, k: usize| i * 6 + j * 2 + k;
    let (mut w1, mut w2, mut w3, mut w4) =
        (vec![0.0; 12], vec![0.0; 12], vec![0.0; 12], vec![0.0; 12]);
    let b3 = [10.0f32, 20.0, 30.0];
    let b2 = [1.0f32, 2.0];
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..2 {
                let a = x[idx(i, j, k)];
                w1[idx(i, j, k)] = a + b3[j];
                w2[idx(i, j, k)] = a - b2[i];
                w3[idx(i, j, k)] = a * b2[k];
                w4[idx(i, j, k)] = a / b3[j];
            }
        }
    }
    for yi in &y[..4] {
        assert_eq!(yi.shape(), &[2, 3, 2]);
    }
    close(&f32s(&y[0]), &w1);
    close(&f32s(&y[1]), &w2);
    close(&f32s(&y[2]), &w3);
    close(&f32s(&y[3]), &w4);
    close(&f32s(&y[4]), &x.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
}

#[test]
fn opset1_pow_broadcasts_at_axis_and_a_misfit_axis_names_the_node() {
    let nodes = vec![node(
        "Pow",
        &["x", "e"],
        &["y"],
        vec![attr_i("broadcast", 1), attr_i("axis", 0)],
    )];
    let inits = vec![f32_tensor("e", &[2], &[2.0, 3.0])];
    let y = run_old(nodes, &[2, 2], &[1.0, 2.0, 3.0, 4.0], inits, &["y"], 1);
    close(&f32s(&y[0]), &[1.0, 4.0, 27.0, 64.0]);

    let g = graph(
        vec![node(
            "Add",
            &["x", "e"],
            &["y"],
            vec![attr_i("broadcast", 1), attr_i("axis", 1)],
        )],
        vec![x_input(&[D::V(2), D::V(2)])],
        vec![vi_untyped("y")],
        vec![f32_tensor("e", &[2, 2], &[0.0; 4])],
    );
    let e = load_model(&model(g, 6)).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("y_node"));
    assert!(e.message.contains("axis 1"), "{e}");
}

#[test]
fn opset6_gemm_broadcasts_c() {
    let nodes = vec![node(
        "Gemm",
        &["x", "w", "c"],
        &["y"],
        vec![
            attr_i("broadcast", 1),
            attr_i("transB", 1),
            attr_f("beta", 2.0),
        ],
    )];
    // x (2,3), w (2,3) transposed, c (2,) per output column.
    let inits = vec![
        f32_tensor("w", &[2, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
        f32_tensor("c", &[2], &[10.0, 100.0]),
    ];
    let y = run_old(
        nodes,
        &[2, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        inits,
        &["y"],
        6,
    );
    assert_eq!(y[0].shape(), &[2, 2]);
    close(&f32s(&y[0]), &[21.0, 205.0, 24.0, 211.0]);
}

#[test]
fn opset6_prelu_slope_is_per_channel() {
    // x (1, C=2, 2): numpy alignment would pair the slope with the last axis instead.
    let nodes = vec![node("PRelu", &["x", "s"], &["y"], vec![])];
    let inits = vec![f32_tensor("s", &[2], &[0.1, 0.5])];
    let y = run_old(nodes, &[1, 2, 2], &[-1.0, 2.0, -3.0, 4.0], inits, &["y"], 6);
    close(&f32s(&y[0]), &[-0.1, 2.0, -1.5, 4.0]);
    // One shared slope value.
    let nodes = vec![node("PRelu", &["x", "s"], &["y"], vec![])];
    let inits = vec![f32_tensor("s", &[1], &[0.25])];
    let y = run_old(nodes, &[1, 2, 2], &[-1.0, 2.0, -3.0, 4.0], inits, &["y"], 1);
    close(&f32s(&y[0]), &[-0.25, 2.0, -0.75, 4.0]);
}

#[test]
fn opset6_batchnorm_needs_is_test() {
    let bn = |attrs: Vec<AttributeProto>| {
        vec![node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            attrs,
        )]
    };
    let inits = || {
        vec![
            f32_tensor("s", &[2], &[2.0, 3.0]),
            f32_tensor("b", &[2], &[0.5, 1.0]),
            f32_tensor("m", &[2], &[1.0, 0.0]),
            f32_tensor("v", &[2], &[4.0, 1.0]),
        ]
    };
    let attrs = vec![
        attr_i("is_test", 1),
        attr_f("epsilon", 0.0),
        attr_f("momentum", 0.9),
        attr_i("spatial", 1),
        attr_ints("consumed_inputs", &[0, 0, 0, 1, 1]),
    ];
    let y = run_old(bn(attrs), &[1, 2, 1], &[3.0, 2.0], inits(), &["y"], 1);
    close(&f32s(&y[0]), &[2.5, 7.0]);

    for attrs in [vec![], vec![attr_i("is_test", 0)]] {
        let g = graph(
            bn(attrs),
            vec![x_input(&[D::V(1), D::V(2), D::V(1)])],
            vec![vi_untyped("y")],
            inits(),
        );
        let e = load_model(&model(g, 6)).unwrap_err();
        assert_eq!(e.node.as_deref(), Some("y_node"));
        assert!(e.message.contains("is_test"), "{e}");
    }
}

#[test]
fn opset1_average_pool_excludes_padding() {
    let nodes = vec![node(
        "AveragePool",
        &["x"],
        &["y"],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("strides", &[1, 1]),
        ],
    )];
    let y = run_old(
        nodes,
        &[1, 1, 2, 2],
        &[1.0, 2.0, 3.0, 4.0],
        vec![],
        &["y"],
        1,
    );
    assert_eq!(y[0].shape(), &[1, 1, 3, 3]);
    close(&f32s(&y[0]), &[1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]);
}

#[test]
fn opset1_cast_names_its_type() {
    let nodes = vec![node("Cast", &["x"], &["y"], vec![attr_s("to", "INT64")])];
    let y = run_old(nodes, &[2], &[1.7, -2.2], vec![], &["y"], 1);
    assert_eq!(y[0].as_slice::<i64>().unwrap(), &[1, -2]);

    let g = graph(
        vec![node("Cast", &["x"], &["y"], vec![attr_s("to", "NOPE")])],
        vec![x_input(&[D::V(1)])],
        vec![vi_untyped("y")],
        vec![],
    );
    let e = load_model(&model(g, 5)).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("y_node"));
    assert!(e.message.contains("NOPE"), "{e}");
}

#[test]
fn opset1_concat_pad_reshape_defaults_and_spellings() {
    let nodes = vec![
        // Concat-1: axis defaults to 1.
        node("Concat", &["x", "x"], &["c"], vec![]),
        // Pad-1 spells `paddings`: [x1_begin, x2_begin, x1_end, x2_end].
        node(
            "Pad",
            &["x"],
            &["p"],
            vec![attr_ints("paddings", &[0, 1, 0, 0]), attr_f("value", 9.0)],
        ),
        // Reshape-1 takes the shape as an attribute; 0 copies a dim.
        node(
            "Reshape",
            &["c"],
            &["r"],
            vec![attr_ints("shape", &[0, 2, -1])],
        ),
    ];
    let y = run_old(nodes, &[1, 2], &[1.0, 2.0], vec![], &["c", "p", "r"], 1);
    assert_eq!(y[0].shape(), &[1, 4]);
    close(&f32s(&y[0]), &[1.0, 2.0, 1.0, 2.0]);
    assert_eq!(y[1].shape(), &[1, 3]);
    close(&f32s(&y[1]), &[9.0, 1.0, 2.0]);
    assert_eq!(y[2].shape(), &[1, 2, 2]);
}

#[test]
fn opset1_split_takes_float_sizes_and_needs_an_axis() {
    let nodes = vec![node(
        "Split",
        &["x", "sizes"],
        &["a", "b"],
        vec![attr_i("axis", 1)],
    )];
    let inits = vec![f32_tensor("sizes", &[2], &[1.0, 2.0])];
    let y = run_old(nodes, &[1, 3], &[1.0, 2.0, 3.0], inits, &["a", "b"], 1);
    close(&f32s(&y[0]), &[1.0]);
    close(&f32s(&y[1]), &[2.0, 3.0]);

    let g = graph(
        vec![node(
            "Split",
            &["x"],
            &["a", "b"],
            vec![attr_ints("split", &[1, 2])],
        )],
        vec![x_input(&[D::V(1), D::V(3)])],
        vec![vi_untyped("a"), vi_untyped("b")],
        vec![],
    );
    let e = load_model(&model(g, 1)).unwrap_err();
    assert!(e.message.contains("axis"), "{e}");
    // Split-2 defaults the axis to 0.
    let g = graph(
        vec![node(
            "Split",
            &["x"],
            &["a", "b"],
            vec![attr_ints("split", &[1, 1])],
        )],
        vec![x_input(&[D::V(2), D::V(3)])],
        vec![vi_untyped("a"), vi_untyped("b")],
        vec![],
    );
    load_model(&model(g, 2)).expect("Split-2 loads");
}

#[test]
fn opset1_tile_repeats_along_one_axis() {
    let nodes = vec![node("Tile", &["x", "tiles", "axis"], &["y"], vec![])];
    let inits = vec![
        f32_tensor("tiles", &[], &[3.0]),
        f32_tensor("axis", &[], &[1.0]),
    ];
    let y = run_old(nodes, &[2, 1], &[1.0, 2.0], inits, &["y"], 1);
    assert_eq!(y[0].shape(), &[2, 3]);
    close(&f32s(&y[0]), &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);

    let g = graph(
        vec![node("Tile", &["x", "tiles", "axis"], &["y"], vec![])],
        vec![x_input(&[D::V(2)]), vi("tiles", 1, &[]), vi("axis", 1, &[])],
        vec![vi_untyped("y")],
        vec![],
    );
    let e = load_model(&model(g, 1)).unwrap_err();
    assert!(e.message.contains("constant"), "{e}");
}

#[test]
fn opset1_selu_upsample_and_lp_pool() {
    let nodes = vec![
        node("Selu", &["x"], &["s"], vec![]),
        node(
            "Upsample",
            &["x4"],
            &["u"],
            vec![attr_f("height_scale", 2.0), attr_f("width_scale", 3.0)],
        ),
        node("GlobalLpPool", &["x4"], &["g"], vec![attr_f("p", 1.0)]),
        node(
            "LpPool",
            &["x4"],
            &["l"],
            vec![attr_f("p", 2.0), attr_ints("kernel_shape", &[1, 2])],
        ),
        node(
            "Reshape",
            &["x"],
            &["x4"],
            vec![attr_ints("shape", &[1, 1, 1, 2])],
        ),
    ];
    let y = run_old(nodes, &[2], &[-1.0, 2.0], vec![], &["s", "u", "g", "l"], 1);
    let (alpha, gamma) = (1.6732f32, 1.0507f32);
    close(
        &f32s(&y[0]),
        &[gamma * alpha * ((-1f32).exp() - 1.0), gamma * 2.0],
    );
    assert_eq!(y[1].shape(), &[1, 1, 2, 6]);
    close(
        &f32s(&y[1]),
        &[
            -1.0, -1.0, -1.0, 2.0, 2.0, 2.0, -1.0, -1.0, -1.0, 2.0, 2.0, 2.0,
        ],
    );
    close(&f32s(&y[2]), &[3.0]);
    close(&f32s(&y[3]), &[5f32.sqrt()]);

    let g = graph(
        vec![node("GlobalLpPool", &["x"], &["y"], vec![attr_f("p", 1.5)])],
        vec![x_input(&[D::V(1), D::V(1), D::V(2)])],
        vec![vi_untyped("y")],
        vec![],
    );
    let e = load_model(&model(g, 1)).unwrap_err();
    assert!(e.message.contains("1.5"), "{e}");
}

#[test]
fn ops_newer_than_the_model_are_refused_and_unchanged_ops_load() {
    let g = graph(
        vec![node("Cos", &["x"], &["y"], vec![])],
        vec![x_input(&[D::V(1)])],
        vec![vi_untyped("y")],
        vec![],
    );
    let e = load_model(&model(g, 6)).unwrap_err();
    assert_eq!(e.node.as_deref(), Some("y_node"));
    assert!(e.message.contains("does not exist before opset 7"), "{e}");
    let g = graph(
        vec![node("Transpose", &["x"], &["y"], vec![])],
        vec![x_input(&[D::V(1)])],
        vec![vi_untyped("y")],
        vec![],
    );
    load_model(&model(g, 1)).expect("Transpose reads the same at opset 1");
}
