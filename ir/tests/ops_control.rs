//! If, Loop and Scan. Region bodies here only use ops of this worktree's own groups, so the
//! arithmetic is done by an RNN with an Affine(1, 0) activation and identity weights: one
//! step of it computes h' = x + h, an adder. Expected values are worked by hand (numpy
//! would give the same sums; they are exact in f32).

use kiln_ir::eval::run_graph;
use kiln_ir::{DType, Dim, Direction, Graph, Op, RnnKind, Shape, Tensor, TensorType, Value};

fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
}

fn ty(d: DType, shape: &[usize]) -> TensorType {
    TensorType::known(d, shape)
}

/// Adds `a + b` (both f32[1,1,2]) inside `g`.
fn add(g: &mut Graph, a: Value, b: Value) -> Value {
    let eye = f32s(&[1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let w = g.add_const("w", eye.clone());
    let r = g.add_const("r", eye);
    let op = Op::Rnn {
        kind: RnnKind::Rnn,
        direction: Direction::Forward,
        hidden_size: 2,
        activations: vec!["Affine".into()],
        activation_alpha: vec![1.0],
        activation_beta: vec![0.0],
        clip: None,
        layout: 0,
        input_forget: false,
        linear_before_reset: false,
    };
    // x is [seq=1, batch=1, 2]; initial_h is [dirs=1, batch=1, 2]: both are a's and b's shape.
    let n = g
        .add(
            op,
            "add",
            &[Some(a), Some(w), Some(r), None, None, Some(b)],
            2,
        )
        .unwrap();
    Value::new(n, 1)
}

/// Loop body: (iter, cond, sum, inc) → (cond, sum + inc, sum + inc, iter).
fn running_sum_body(cond_out_false: bool) -> Graph {
    let mut b = Graph::new("body");
    let it = b.add_input("iter", ty(DType::I64, &[]));
    let cond = b.add_input("cond", ty(DType::Bool, &[]));
    let sum = b.add_input("sum", ty(DType::F32, &[1, 1, 2]));
    let inc = b.add_input("inc", ty(DType::F32, &[1, 1, 2]));
    let next = add(&mut b, inc, sum);
    let cond_out = if cond_out_false {
        b.add_const("stop", Tensor::scalar(false))
    } else {
        cond
    };
    b.add_output("cond_out", cond_out);
    b.add_output("sum_out", next);
    b.add_output("scan_sum", next);
    b.add_output("scan_iter", it);
    b
}

/// A Loop node over `body` with the given optional trip count and condition constants.
fn loop_graph(body: Graph, trip: Option<i64>, cond: Option<bool>) -> (Graph, kiln_ir::NodeId) {
    let mut g = Graph::new("main");
    let sum0 = g.add_input("sum0", ty(DType::F32, &[1, 1, 2]));
    let inc = g.add_input("inc", ty(DType::F32, &[1, 1, 2]));
    let m = trip.map(|m| g.add_const("m", Tensor::scalar(m)));
    let c = cond.map(|c| g.add_const("c", Tensor::scalar(c)));
    let op = Op::Loop {
        body: Box::new(body),
        num_captured: 1,
    };
    let n = g
        .add(op, "loop", &[m, c, Some(sum0), Some(inc)], 3)
        .unwrap();
    for k in 0..3 {
        g.add_output(format!("o{k}"), Value::new(n, k));
    }
    (g, n)
}

fn feeds() -> Vec<Tensor> {
    vec![
        f32s(&[1, 1, 2], &[1.0, 2.0]),
        f32s(&[1, 1, 2], &[0.5, -1.0]),
    ]
}

#[test]
fn loop_running_sum_with_scan_outputs() {
    let (g, n) = loop_graph(running_sum_body(false), Some(3), Some(true));
    // Types: carried keeps its shape, scan outputs gain an unknown leading dim.
    assert_eq!(g.value_type(Value::new(n, 0)), &ty(DType::F32, &[1, 1, 2]));
    assert_eq!(
        g.value_type(Value::new(n, 1)).shape,
        Shape(Some(vec![
            Dim::Unknown,
            Dim::Known(1),
            Dim::Known(1),
            Dim::Known(2)
        ]))
    );
    assert_eq!(
        g.value_type(Value::new(n, 2)).shape,
        Shape(Some(vec![Dim::Unknown]))
    );
    let out = run_graph(&g, &feeds()).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2.5, -1.0]);
    assert_eq!(out[1].shape(), &[3, 1, 1, 2]);
    assert_eq!(
        out[1].as_slice::<f32>().unwrap(),
        &[1.5, 1.0, 2.0, 0.0, 2.5, -1.0]
    );
    assert_eq!(out[2].as_slice::<i64>().unwrap(), &[0, 1, 2]);
}

#[test]
fn loop_zero_iterations_gives_initial_values_and_empty_scans() {
    let (g, _) = loop_graph(running_sum_body(false), Some(0), None);
    let out = run_graph(&g, &feeds()).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1.0, 2.0]);
    assert_eq!(out[1].shape(), &[0, 1, 1, 2]);
    assert_eq!(out[2].shape(), &[0]);
    assert_eq!(out[2].dtype(), DType::I64);
}

#[test]
fn loop_false_initial_condition_runs_nothing() {
    let (g, _) = loop_graph(running_sum_body(false), Some(5), Some(false));
    let out = run_graph(&g, &feeds()).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1.0, 2.0]);
    assert_eq!(out[1].shape(), &[0, 1, 1, 2]);
}

#[test]
fn loop_without_trip_count_ends_when_the_body_says_so() {
    // No trip count and no condition input: the body's false condition ends it after one pass.
    let (g, _) = loop_graph(running_sum_body(true), None, None);
    let out = run_graph(&g, &feeds()).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1.5, 1.0]);
    assert_eq!(out[2].as_slice::<i64>().unwrap(), &[0]);
    // With a trip count of 10 the body's condition still stops it.
    let (g, _) = loop_graph(running_sum_body(true), Some(10), Some(true));
    let out = run_graph(&g, &feeds()).unwrap();
    assert_eq!(out[1].shape(), &[1, 1, 1, 2]);
}

#[test]
fn loop_rejects_counts_that_do_not_fit_the_body() {
    let mut g = Graph::new("main");
    let sum0 = g.add_input("sum0", ty(DType::F32, &[1, 1, 2]));
    let inc = g.add_input("inc", ty(DType::F32, &[1, 1, 2]));
    // Claims 3 captured values, but the node has only 2 values after (trip count, cond).
    let op = Op::Loop {
        body: Box::new(running_sum_body(false)),
        num_captured: 3,
    };
    let err = g
        .add(op, "loop", &[None, None, Some(sum0), Some(inc)], 3)
        .unwrap_err();
    assert!(err.message.contains("needs at least"), "{err}");
    // A body that takes fewer inputs than the node passes.
    let op = Op::Loop {
        body: Box::new(running_sum_body(false)),
        num_captured: 1,
    };
    let x = g.add_input("x", ty(DType::F32, &[1, 1, 2]));
    let err = g
        .add(
            op,
            "loop2",
            &[None, None, Some(sum0), Some(inc), Some(x)],
            3,
        )
        .unwrap_err();
    assert!(err.message.contains("the body takes 4 inputs"), "{err}");
}

fn if_graph(then_len: usize) -> Graph {
    let mut then_b = Graph::new("then");
    let a = then_b.add_input("a", ty(DType::F32, &[2]));
    then_b.add_output("out", a);
    let mut else_b = Graph::new("else");
    else_b.add_input("a", ty(DType::F32, &[2]));
    let k = else_b.add_const("k", f32s(&[then_len], &vec![7.0; then_len]));
    else_b.add_output("out", k);
    let mut g = Graph::new("main");
    let cond = g.add_input("cond", ty(DType::Bool, &[]));
    let a = g.add_input("a", ty(DType::F32, &[2]));
    let op = Op::If {
        then_branch: Box::new(then_b),
        else_branch: Box::new(else_b),
    };
    let n = g.add(op, "if", &[Some(cond), Some(a)], 1).unwrap();
    g.add_output("y", n.into());
    g
}

#[test]
fn if_chooses_a_branch_with_a_captured_value() {
    let g = if_graph(2);
    assert_eq!(g.value_type(g.outputs[0].1), &ty(DType::F32, &[2]));
    let a = f32s(&[2], &[1.0, -2.0]);
    let out = run_graph(&g, &[Tensor::scalar(true), a.clone()]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1.0, -2.0]);
    let out = run_graph(&g, &[Tensor::scalar(false), a]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[7.0, 7.0]);
}

#[test]
fn if_merges_branch_shapes() {
    let g = if_graph(3);
    assert_eq!(
        g.value_type(g.outputs[0].1).shape,
        Shape(Some(vec![Dim::Unknown]))
    );
    let out = run_graph(&g, &[Tensor::scalar(false), f32s(&[2], &[0.0, 0.0])]).unwrap();
    assert_eq!(out[0].shape(), &[3]);
}

/// Scan over rows of x [3, 1, 1, 2] with a running-sum state [1, 1, 2].
fn scan_graph(input_reverse: bool, output_axis: i64, output_reverse: bool) -> Graph {
    let mut b = Graph::new("body");
    let sum = b.add_input("sum", ty(DType::F32, &[1, 1, 2]));
    let row = b.add_input("row", ty(DType::F32, &[1, 1, 2]));
    let next = add(&mut b, row, sum);
    b.add_output("sum_out", next);
    b.add_output("scan_out", next);
    let mut g = Graph::new("main");
    let init = g.add_input("init", ty(DType::F32, &[1, 1, 2]));
    let x = g.add_input("x", ty(DType::F32, &[3, 1, 1, 2]));
    let op = Op::Scan {
        body: Box::new(b),
        num_scan_inputs: 1,
        num_captured: 0,
        scan_input_axes: vec![],
        scan_input_directions: vec![input_reverse as i64],
        scan_output_axes: vec![output_axis],
        scan_output_directions: vec![output_reverse as i64],
    };
    let n = g.add(op, "scan", &[Some(init), Some(x)], 2).unwrap();
    g.add_output("sum", Value::new(n, 0));
    g.add_output("sums", Value::new(n, 1));
    g
}

#[test]
fn scan_sums_rows() {
    let x = f32s(&[3, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let init = f32s(&[1, 1, 2], &[0.0, 0.0]);
    let g = scan_graph(false, 0, false);
    assert_eq!(g.value_type(g.outputs[1].1), &ty(DType::F32, &[3, 1, 1, 2]));
    let out = run_graph(&g, &[init.clone(), x.clone()]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[9.0, 12.0]);
    assert_eq!(
        out[1].as_slice::<f32>().unwrap(),
        &[1.0, 2.0, 4.0, 6.0, 9.0, 12.0]
    );

    // Reversed input, stacked on axis -1 (the new last axis), in reverse order.
    let g = scan_graph(true, -1, true);
    assert_eq!(g.value_type(g.outputs[1].1), &ty(DType::F32, &[1, 1, 2, 3]));
    let out = run_graph(&g, &[init, x]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[9.0, 12.0]);
    // Partial sums from the end: [5,6], [8,10], [9,12]; stored last-first, then per element.
    assert_eq!(out[1].shape(), &[1, 1, 2, 3]);
    assert_eq!(
        out[1].as_slice::<f32>().unwrap(),
        &[9.0, 8.0, 5.0, 12.0, 10.0, 6.0]
    );
}
