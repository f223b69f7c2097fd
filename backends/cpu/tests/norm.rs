//! The native LayerNorm against REFERENCE (`ir::eval`, moments in f64): the transformer's
//! rows (256 wide, eight partial sums per row with no remainder), rows with a remainder,
//! no bias, rows far from zero mean (where a one-pass variance would cancel), and NaN.
//!
//! Tolerance: rtol 1e-4, atol 1e-5 (the zoo's). NaN must be NaN at the same place.

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::Cpu;
use kiln_ir::{DType, Graph, Op, Tensor, TensorType};

mod common;
use common::Rng;

fn check(g: &Graph, x: &Tensor) {
    kiln_ir::verify(g).unwrap();
    let inputs = std::slice::from_ref(x);
    let want = kiln_ir::eval::run_graph(g, inputs).unwrap();
    let exe = Cpu::new()
        .compile(&Program::new(g.clone()), &CompileOptions::default())
        .unwrap();
    let got = exe.run(inputs, None).unwrap();
    let (a, b) = (
        got[0].as_slice::<f32>().unwrap(),
        want[0].as_slice::<f32>().unwrap(),
    );
    assert_eq!(got[0].shape(), want[0].shape());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let same = if y.is_nan() {
            x.is_nan()
        } else {
            (x - y).abs() <= 1e-5 + 1e-4 * y.abs()
        };
        assert!(same, "element {i}: {x} but expected {y}");
    }
    assert_eq!(
        kiln_cpu::program::compile(g).unwrap().kinds(),
        ["layer_norm (native)"]
    );
}

fn layer_norm(shape: &[usize], bias: bool, rng: &mut Rng) -> Graph {
    let cols = *shape.last().unwrap();
    let mut g = Graph::new("ln");
    let x = g.add_input("x", TensorType::known(DType::F32, shape));
    let mut ins = vec![x, g.add_const("scale", rng.tensor(&[cols]))];
    if bias {
        ins.push(g.add_const("bias", rng.tensor(&[cols])));
    }
    let op = Op::LayerNorm {
        axis: -1,
        epsilon: 1e-3,
        stash_type: DType::F32,
    };
    let y = g.add1(op, "ln", &ins).unwrap();
    g.add_output("y", y);
    g
}

#[test]
fn layer_norm_rows_with_and_without_bias() {
    let mut rng = Rng(3);
    for shape in [&[1usize, 128, 256][..], &[4, 13], &[3, 7], &[2, 1]] {
        for bias in [true, false] {
            let g = layer_norm(shape, bias, &mut rng);
            check(&g, &rng.tensor(shape));
        }
    }
}

#[test]
fn layer_norm_rows_far_from_zero_mean_and_nan() {
    let mut rng = Rng(9);
    let shape = [5usize, 40];
    let mut v: Vec<f32> = rng
        .tensor(&shape)
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|x| 1000.0 + x)
        .collect();
    v[45] = f32::NAN;
    let x = Tensor::new(shape.to_vec(), v).unwrap();
    check(&layer_norm(&shape, true, &mut rng), &x);
}
