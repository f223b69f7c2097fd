//! A graph of 100,000 nodes in a chain loads, compiles at the default level and runs on
//! every device without overflowing the stack: nothing in the IR, the passes, the text form
//! or the devices may recurse once per node or go quadratic in the node count.


use kiln_ir::{BinaryOp, DType, Graph, Op, Shape, Tensor, TensorType, UnaryOp};

const NODES: usize = 100_000;

/// x → relu → add(c0) → relu → add(c1) → … ; the constants differ so CSE cannot merge them.
fn chain() -> Graph {
    let mut g = Graph::new("deep_chain");
    let mut v = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[4])));
    for i in 0..NODES / 2 {
        v = g.add1(Op::Unary(UnaryOp::Relu), format!("relu{i}"), &[v]).unwrap();
        let c = g.add_const(format!("c{i}"), Tensor::new(vec![4], vec![(i % 7) as f32 * 1e-3 - 2e-3; 4]).unwrap());
        v = g.add1(Op::Binary(BinaryOp::Add), format!("add{i}"), &[v, c]).unwrap();
    }
    g.add_output("y", v);
    g
}

/// What the chain computes, step by step in plain Rust.
fn expected(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&a| {
            let mut a = a;
            for i in 0..NODES / 2 {
                a = a.max(0.0) + ((i % 7) as f32 * 1e-3 - 2e-3);
            }
            a
        })
        .collect()
}

#[test]
fn a_chain_of_100000_nodes_saves_loads_compiles_and_runs() {
    let dir = std::env::temp_dir().join(format!("kiln-deep-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chain.kir");
    kiln_ir::kir::save(&chain(), &path).unwrap();
    let model = kiln_runtime::load(&path).unwrap();
    assert!(model.graph.nodes.node_count() >= NODES);
    let x = Tensor::new(vec![4], vec![-1.0f32, 0.5, 2.0, 3.0]).unwrap();
    let want = expected(x.as_slice::<f32>().unwrap());
    for device in ["REFERENCE", "CPU"] {
        let compiled = kiln_runtime::compile(&model, device).unwrap();
        // the e-graph pass declines a graph this large; every other pass runs
        assert!(compiled.report().passes.iter().any(|p| p.name == "egraph" && p.skipped.is_some()), "{}", compiled.report());
        let out = compiled.request().infer(&[("x", &x)]).unwrap();
        let got = out[0].1.as_slice::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            // 50,000 f32 additions in a different association order than the passes may pick
            assert!((g - w).abs() <= 1e-2 * w.abs().max(1.0), "{device}: {got:?} vs {want:?}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
