//! The pass manager's contract, and the fused-kernel node every pass and backend shares.

use kiln_ir::{text, BinaryOp, DType, Graph, Op, Tensor, TensorType, UnaryOp};
use kiln_passes::{Level, Options, Pass, Pipeline};

fn relu_add() -> Graph {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::known(DType::F32, &[4]));
    let one = g.add_const("one", Tensor::new(vec![4], vec![1.0f32; 4]).unwrap());
    let a = g.add1(Op::Binary(BinaryOp::Add), "add", &[x, one]).unwrap();
    let r = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[a]).unwrap();
    g.add_output("y", r);
    g
}

fn input() -> Tensor {
    Tensor::new(vec![4], vec![-3.0f32, -0.5, 0.0, 2.0]).unwrap()
}

/// Replaces every op node of `g` by one fused kernel holding a copy of the graph.
struct FuseAll;

impl Pass for FuseAll {
    fn name(&self) -> &'static str {
        "fuse-all"
    }
    fn run(&self, g: &mut Graph) -> kiln_ir::Result<()> {
        let body = Box::new(g.clone());
        let mut out = Graph::new(g.name.clone());
        let ins: Vec<_> = g.inputs.iter().map(|&n| Some(out.add_input(g.node(n).name.clone(), g.node(n).outputs[0].clone()))).collect();
        let k = out.add(Op::Fused { body }, "kernel", &ins, g.outputs.len())?;
        for (i, (name, _)) in g.outputs.iter().enumerate() {
            out.add_output(name.clone(), kiln_ir::Value::new(k, i));
        }
        *g = out;
        Ok(())
    }
}

/// Breaks the graph: the verifier must catch it and name the pass.
struct Break;

impl Pass for Break {
    fn name(&self) -> &'static str {
        "break"
    }
    fn run(&self, g: &mut Graph) -> kiln_ir::Result<()> {
        let n = g.outputs[0].1.node;
        g.nodes[n].outputs[0] = TensorType::known(DType::I64, &[4]);
        Ok(())
    }
}

#[test]
fn a_fused_kernel_is_a_node_holding_its_body_and_runs_as_the_body_does() {
    let mut g = relu_add();
    let before = kiln_ir::eval::run_graph(&g, &[input()]).unwrap();
    let mut p = Pipeline::empty(Level::O2);
    p.push(FuseAll);
    let report = p.run(&mut g, &Options { verify: true, ..Options::default() }).unwrap();
    assert_eq!(report.passes.len(), 1);
    assert_eq!((report.passes[0].nodes_before, report.passes[0].nodes_after), (2, 1));
    let after = kiln_ir::eval::run_graph(&g, &[input()]).unwrap();
    assert_eq!(before, after);
    assert_eq!(after[0].as_slice::<f32>().unwrap(), &[0.0, 0.5, 1.0, 3.0]);
    // The text form prints the kernel with its body and reads it back.
    let printed = text::print(&g, text::Weights::Inline);
    assert!(printed.contains("fused(%x)"), "{printed}");
    let back = text::parse(&printed, None).unwrap();
    assert_eq!(text::print(&back, text::Weights::Inline), printed);
}

#[test]
fn the_verifier_names_the_pass_that_broke_the_graph() {
    let mut g = relu_add();
    let mut p = Pipeline::empty(Level::O2);
    p.push(Break);
    let e = p.run(&mut g, &Options { verify: true, ..Options::default() }).unwrap_err();
    assert!(e.to_string().contains("pass break: left an invalid graph"), "{e}");
}

#[test]
fn stop_after_names_a_pass_of_the_pipeline() {
    let mut g = relu_add();
    let p = Pipeline::standard(Level::O2);
    let e = p.run(&mut g, &Options { stop_after: Some("no-such-pass".into()), ..Options::default() }).unwrap_err();
    assert!(e.to_string().contains("no pass `no-such-pass`"), "{e}");
}

#[test]
fn levels_parse_as_the_command_line_writes_them() {
    assert_eq!("-O0".parse::<Level>(), Ok(Level::O0));
    assert_eq!("1".parse::<Level>(), Ok(Level::O1));
    assert_eq!("O2".parse::<Level>(), Ok(Level::O2));
    assert!("3".parse::<Level>().is_err());
}
