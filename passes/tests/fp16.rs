//! fp16 weight compression: half the bytes, values within f16 rounding, same types and uses.

use kiln_ir::half::f16;
use kiln_ir::text::{print, Weights};
use kiln_ir::*;
use kiln_passes::fp16::{compress_weights, Stats};

fn f32s(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(shape.to_vec(), (0..n).map(f).collect::<Vec<f32>>()).unwrap()
}

/// Weights spanning f16's range: ordinary, tiny (subnormal in f16), large but in range.
fn weight(i: usize) -> f32 {
    let x = ((i * 7919) % 2003) as f32 / 1001.0 - 1.0;
    match i % 5 {
        0 => x * 1e-6,
        1 => x * 6e4,
        _ => x,
    }
}

fn ty(dtype: DType, dims: &[usize]) -> TensorType {
    TensorType::known(dtype, dims)
}

fn model() -> Graph {
    let mut g = Graph::new("m");
    let x = g.add_input("x", ty(DType::F32, &[4, 32]));
    let w = g.add_const("fc.weight", f32s(&[32, 64], weight));
    let b = g.add_const("fc.bias", f32s(&[16], |i| i as f32 * 0.1));
    let small = g.add_const("eps", f32s(&[4], |_| 1e-5));
    let shape = g.add_const("shape", Tensor::new(vec![32], (0..32).collect::<Vec<i64>>()).unwrap());
    let huge = g.add_const("huge", f32s(&[16], |i| if i == 3 { 1e6 } else { 1.0 }));
    let mm = g.add_node_typed(Op::MatMul, "mm", &[Some(x), Some(w)], vec![ty(DType::F32, &[4, 64])]);
    let _ = (small, shape, huge);

    // The same weight feeds two nodes; the bias is also a graph output.
    let mm2 = g.add_node_typed(Op::MatMul, "mm2", &[Some(x), Some(w)], vec![ty(DType::F32, &[4, 64])]);
    let add = g.add_node_typed(
        Op::Binary(BinaryOp::Add),
        "add",
        &[Some(mm.into()), Some(mm2.into())],
        vec![ty(DType::F32, &[4, 64])],
    );

    let mut body = Graph::new("then");
    let bx = body.add_input("x", ty(DType::F32, &[16]));
    let bw = body.add_const("inner", f32s(&[16], |i| -(i as f32)));
    let by = body.add_node_typed(
        Op::Binary(BinaryOp::Mul),
        "mul",
        &[Some(bx), Some(bw)],
        vec![ty(DType::F32, &[16])],
    );
    body.add_output("y", by.into());
    let mut other = Graph::new("else");
    let ox = other.add_input("x", ty(DType::F32, &[16]));
    other.add_output("y", ox);
    let c = g.add_input("c", ty(DType::Bool, &[]));
    let r = g.add_node_typed(
        Op::If {
            then_branch: Box::new(body),
            else_branch: Box::new(other),
        },
        "if",
        &[Some(c), Some(b)],
        vec![ty(DType::F32, &[16])],
    );
    g.add_output("y", add.into());
    g.add_output("bias", b);
    g.add_output("r", r.into());
    g
}

fn find(g: &Graph, name: &str) -> NodeId {
    g.nodes
        .node_indices()
        .find(|&n| g.node(n).name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn const_of(g: &Graph, name: &str) -> Tensor {
    match &g.node(find(g, name)).op {
        Op::Const { value } => value.clone(),
        op => panic!("{name} is {}", op.name()),
    }
}

#[test]
fn compresses_large_f32_weights_only() {
    let mut g = model();
    let stats = compress_weights(&mut g);
    // fc.weight, fc.bias and the If branch's constant; eps is small, shape is i64, huge is
    // out of f16's range.
    assert_eq!(
        stats,
        Stats {
            compressed: 3,
            out_of_range: 1,
            bytes_before: (2048 + 16 + 16) * 4,
            bytes_after: (2048 + 16 + 16) * 2
        }
    );
    assert_eq!(const_of(&g, "fc.weight").dtype(), DType::F16);
    assert_eq!(const_of(&g, "fc.bias").dtype(), DType::F16);
    assert_eq!(const_of(&g, "eps").dtype(), DType::F32);
    assert_eq!(const_of(&g, "shape").dtype(), DType::I64);
    assert_eq!(const_of(&g, "huge").dtype(), DType::F32);
    let Op::If { then_branch, .. } = &g.node(find(&g, "if")).op else {
        panic!()
    };
    assert_eq!(const_of(then_branch, "inner").dtype(), DType::F16);
    assert!(then_branch.nodes.node_weights().any(|n| n.name == "inner/to_f32"));
    // A second run has nothing left to do.
    assert_eq!(compress_weights(&mut g).compressed, 0);
}

#[test]
fn uses_go_through_a_cast_with_the_same_type() {
    let mut g = model();
    compress_weights(&mut g);
    let w = find(&g, "fc.weight");
    let cast = find(&g, "fc.weight/to_f32");
    assert_eq!(g.node(cast).op, Op::Cast { to: DType::F32 });
    assert_eq!(g.node(cast).outputs, vec![TensorType::known(DType::F32, &[32, 64])]);
    assert_eq!(g.node(w).outputs, vec![TensorType::known(DType::F16, &[32, 64])]);
    assert_eq!(g.inputs_of(cast), vec![Some(Value::from(w))]);
    // The weight's only user is its cast; both matmuls read the cast.
    assert_eq!(g.uses_of(w.into()), vec![(cast, 0)]);
    assert_eq!(g.uses_of(cast.into()), {
        let mut u = vec![(find(&g, "mm"), 1), (find(&g, "mm2"), 1)];
        u.sort();
        u
    });
    // A graph output that was the bias is now the bias's cast.
    let bias_cast = find(&g, "fc.bias/to_f32");
    assert_eq!(g.outputs[1], ("bias".to_string(), Value::from(bias_cast)));
    assert_eq!(g.uses_of(bias_cast.into()), vec![(find(&g, "if"), 1)]);
    // Types of every pre-existing node are unchanged.
    let before = model();
    for n in before
        .nodes
        .node_weights()
        .filter(|n| !matches!(n.op, Op::Const { .. }))
    {
        assert_eq!(g.node(find(&g, &n.name)).outputs, n.outputs, "{}", n.name);
    }
}

#[test]
fn values_stay_within_f16_rounding() {
    let before = model();
    let mut g = before.clone();
    compress_weights(&mut g);
    for name in ["fc.weight", "fc.bias"] {
        let orig = const_of(&before, name);
        let comp = const_of(&g, name);
        for (&x, &h) in orig
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(comp.as_slice::<f16>().unwrap())
        {
            // Half an f16 ulp: 2^-11 relative for normal numbers, 2^-25 absolute below them.
            let err = (h.to_f32() - x).abs();
            assert!(err <= x.abs() * 2f32.powi(-11) + 2f32.powi(-25), "{x} became {h}");
        }
    }
}

#[test]
fn saved_weights_take_about_half_the_bytes() {
    let mut before = Vec::new();
    print(&model(), Weights::External(&mut before));
    let mut g = model();
    compress_weights(&mut g);
    let mut after = Vec::new();
    let text = print(&g, Weights::External(&mut after));
    // The 8 KB weight dominates; the rest is alignment and the kept constants.
    let ratio = after.len() as f64 / before.len() as f64;
    assert!(
        (0.45..0.56).contains(&ratio),
        "{} -> {} bytes",
        before.len(),
        after.len()
    );
    assert!(text.contains("@\"fc.weight\" = f16[32,64] bin("), "{text}");
    assert!(
        text.contains("= cast(@\"fc.weight\") {to=f32} : f32[32,64] \"fc.weight/to_f32\""),
        "{text}"
    );
    // And it reads back as the same graph.
    assert!(text::parse(&text, Some(&after)).unwrap() == g);
}
