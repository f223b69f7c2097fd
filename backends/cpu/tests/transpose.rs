//! Transposes that move the input's contiguous dim to the output's second-to-last (a
//! head's keys for the scores) run as 8×8 tiles: every element must land where
//! `ir::eval` puts it, with rows that are not a multiple of 8 long, several blocks of 8
//! rows, an outer batch dim, and through the fused head split (transpose → reshape →
//! transpose) as well as a lone Transpose. Values are copied, so they must be equal.

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::Cpu;
use kiln_ir::{DType, Graph, Op, Tensor, TensorType, Value};

mod common;
use common::Rng;

fn check(g: &Graph, x: &Tensor) -> Vec<String> {
    kiln_ir::verify(g).unwrap();
    let inputs = std::slice::from_ref(x);
    let want = kiln_ir::eval::run_graph(g, inputs).unwrap();
    let exe = Cpu::new()
        .compile(&Program::new(g.clone()), &CompileOptions::default())
        .unwrap();
    let got = exe.run(inputs, None).unwrap();
    assert_eq!(got[0].shape(), want[0].shape());
    let (a, b) = (
        got[0].as_slice::<f32>().unwrap(),
        want[0].as_slice::<f32>().unwrap(),
    );
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "element {i}: {x} but expected {y}"
        );
    }
    kiln_cpu::program::compile(g).unwrap().kinds()
}

fn transpose(g: &mut Graph, name: &str, x: Value, perm: &[i64]) -> Value {
    let op = Op::Transpose {
        perm: Some(perm.to_vec()),
    };
    g.add1(op, name, &[x]).unwrap()
}

#[test]
fn lone_transposes_to_the_second_to_last_dim() {
    let mut rng = Rng(31);
    for shape in [[5usize, 24, 16], [3, 13, 8], [2, 9, 32], [1, 128, 64]] {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::known(DType::F32, &shape));
        let y = transpose(&mut g, "t", x, &[0, 2, 1]);
        g.add_output("y", y);
        let mut v = rng.tensor(&shape).as_slice::<f32>().unwrap().to_vec();
        v[3] = f32::NAN;
        let t = Tensor::new(shape.to_vec(), v).unwrap();
        assert_eq!(check(&g, &t), ["transpose (native)"]);
    }
}

#[test]
fn head_split_of_the_keys() {
    let (t, h, d) = (128usize, 4usize, 64usize);
    let mut body = Graph::new("body");
    let x = body.add_input("x0", TensorType::known(DType::F32, &[1, 1, t, h, d]));
    let y = transpose(&mut body, "layout", x, &[0, 3, 1, 2, 4]);
    let s = body.add_const(
        "shape",
        Tensor::new(vec![3], vec![h as i64, -1, d as i64]).unwrap(),
    );
    let y = body
        .add1(Op::Reshape { allowzero: false }, "heads", &[y, s])
        .unwrap();
    let y = transpose(&mut body, "keys", y, &[0, 2, 1]);
    body.add_output("y", y);
    let mut g = Graph::new("g");
    let xi = g.add_input("x", TensorType::known(DType::F32, &[1, 1, t, h, d]));
    let op = Op::Fused {
        body: Box::new(body),
    };
    let y = g.add1(op, "split", &[xi]).unwrap();
    g.add_output("y", y);
    check(&g, &Rng(8).tensor(&[1, 1, t, h, d]));
}
