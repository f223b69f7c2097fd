//! Split's native kernel against REFERENCE (`ir::eval`): outputs bit for bit equal, NaN
//! included, whether one thread copies everything or the threads' ranges start and end
//! inside an output's blocks.

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::Cpu;
use kiln_ir::{DType, Graph, Op, Tensor, TensorType};

mod common;
use common::Rng;

fn split_graph(shape: &[usize], axis: i64, sizes: Option<&[i64]>, n: usize) -> Graph {
    let mut g = Graph::new("split");
    let x = g.add_input("x", TensorType::known(DType::F32, shape));
    let mut ins = vec![Some(x)];
    if let Some(s) = sizes {
        ins.push(Some(g.add_const(
            "sizes",
            Tensor::new(vec![s.len()], s.to_vec()).unwrap(),
        )));
    }
    let node = g.add(Op::Split { axis }, "split", &ins, n).unwrap();
    for k in 0..n {
        g.add_output(format!("y{k}"), kiln_ir::Value::new(node, k));
    }
    g
}

#[test]
fn split_copies_blocks_along_any_axis_bit_for_bit() {
    let mut rng = Rng(21);
    let cases: &[(&[usize], i64, Option<&[i64]>, usize)] = &[
        // inception's merged 1×1 convs at batch 1: one contiguous copy per output, large
        // enough to be cut between the threads.
        (&[1, 448, 17, 17], 1, Some(&[192, 128, 128]), 3),
        (&[1, 6, 5, 5], 1, Some(&[1, 0, 5]), 3),
        (&[3, 10, 7], -2, None, 2),
        (&[2, 300, 500], -1, Some(&[1, 299, 200]), 3),
        (&[5, 4], 0, Some(&[5]), 1),
    ];
    for &(shape, axis, sizes, n) in cases {
        let g = split_graph(shape, axis, sizes, n);
        let mut x = rng.tensor(shape).as_slice::<f32>().unwrap().to_vec();
        let last = x.len() - 1;
        (x[0], x[last]) = (f32::NAN, -0.0);
        let x = Tensor::new(shape.to_vec(), x).unwrap();
        let want = kiln_ir::eval::run_graph(&g, std::slice::from_ref(&x)).unwrap();
        let exe = Cpu::new()
            .compile(&Program::new(g.clone()), &CompileOptions::default())
            .unwrap();
        let got = exe.run(std::slice::from_ref(&x), None).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.shape(), b.shape(), "{shape:?} axis {axis}");
            let bits = |t: &Tensor| {
                t.as_slice::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(a), bits(b), "{shape:?} axis {axis}");
        }
        assert_eq!(
            kiln_cpu::program::compile(&g).unwrap().kinds(),
            ["split (native)"]
        );
    }
}

#[test]
fn a_split_of_integers_replays_the_reference() {
    // The kernel takes f32 only; the step falls back to `ir::eval`.
    let mut g = Graph::new("split");
    let x = g.add_input("x", TensorType::known(DType::I64, &[2, 3]));
    let node = g
        .add(Op::Split { axis: 1 }, "split", &[Some(x)], 3)
        .unwrap();
    for k in 0..3 {
        g.add_output(format!("y{k}"), kiln_ir::Value::new(node, k));
    }
    let x = Tensor::new(vec![2, 3], vec![1i64, 2, 3, 4, 5, 6]).unwrap();
    let want = kiln_ir::eval::run_graph(&g, std::slice::from_ref(&x)).unwrap();
    let exe = Cpu::new()
        .compile(&Program::new(g), &CompileOptions::default())
        .unwrap();
    assert_eq!(exe.run(&[x], None).unwrap(), want);
}
