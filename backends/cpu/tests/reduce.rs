//! The native ReduceSum and ReduceMean against REFERENCE (`ir::eval`): a run of middle
//! axes (Keras' global average pooling over tokens), the last axes, all axes, keepdims,
//! negative axes, NaN and infinities; and the reductions it leaves to `ir::eval` (axes
//! with a gap between them, an empty axes list that means no reduction).
//!
//! Tolerance: rtol 1e-5, atol 1e-6 (both sum in f64). NaN must be NaN at the same place.

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::Cpu;
use kiln_ir::{DType, Graph, Op, ReduceKind, Tensor, TensorType};

mod common;
use common::Rng;

/// Runs `reduce(x, axes)` on CPU and REFERENCE, compares, and returns the step's kind.
fn check(kind: ReduceKind, x: &Tensor, axes: &[i64], keepdims: bool, noop: bool) -> String {
    let mut g = Graph::new("reduce");
    let xi = g.add_input("x", TensorType::known(DType::F32, x.shape()));
    let mut ins = vec![xi];
    if !axes.is_empty() || noop {
        ins.push(g.add_const(
            "axes",
            Tensor::new(vec![axes.len()], axes.to_vec()).unwrap(),
        ));
    }
    let op = Op::Reduce {
        kind,
        keepdims,
        noop_with_empty_axes: noop,
    };
    let y = g.add1(op, "r", &ins).unwrap();
    g.add_output("y", y);
    kiln_ir::verify(&g).unwrap();
    let inputs = std::slice::from_ref(x);
    let want = kiln_ir::eval::run_graph(&g, inputs).unwrap();
    let exe = Cpu::new()
        .compile(&Program::new(g.clone()), &CompileOptions::default())
        .unwrap();
    let got = exe.run(inputs, None).unwrap();
    assert_eq!(got[0].shape(), want[0].shape(), "{kind} over {axes:?}");
    let (a, b) = (
        got[0].as_slice::<f32>().unwrap(),
        want[0].as_slice::<f32>().unwrap(),
    );
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let same = if y.is_nan() {
            x.is_nan()
        } else {
            x == y || (x - y).abs() <= 1e-6 + 1e-5 * y.abs()
        };
        assert!(
            same,
            "{kind} over {axes:?}: element {i}: {x} but expected {y}"
        );
    }
    let kinds = kiln_cpu::program::compile(&g).unwrap().kinds();
    assert_eq!(kinds.len(), 1);
    kinds[0].clone()
}

#[test]
fn sum_and_mean_over_adjacent_axes_run_natively() {
    let mut rng = Rng(17);
    let x = rng.tensor(&[2, 128, 37]);
    let cases: &[(&[i64], bool)] = &[
        (&[1], false),
        (&[-2], true),
        (&[2], false),
        (&[1, 2], true),
        (&[0, 1], false),
        (&[], false),
    ];
    for kind in [ReduceKind::Mean, ReduceKind::Sum] {
        for &(axes, keep) in cases {
            assert_eq!(check(kind, &x, axes, keep, false), "reduce (native)");
        }
    }
}

#[test]
fn nan_and_infinities_propagate() {
    let mut v = Rng(2)
        .tensor(&[3, 4, 5])
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    v[7] = f32::NAN;
    v[21] = f32::INFINITY;
    v[22] = f32::NEG_INFINITY;
    v[45] = f32::INFINITY;
    let x = Tensor::new(vec![3, 4, 5], v).unwrap();
    for axes in [&[1i64][..], &[2], &[0]] {
        check(ReduceKind::Mean, &x, axes, false, false);
    }
}

#[test]
fn gapped_axes_and_no_op_reductions_replay_eval() {
    let x = Rng(4).tensor(&[3, 4, 5]);
    // Axes 0 and 2 are not adjacent: the step keeps the kind but the kernel declines at
    // run time and `ir::eval` computes it (the values are checked all the same).
    check(ReduceKind::Sum, &x, &[0, 2], false, false);
    check(ReduceKind::Mean, &x, &[], true, true);
}
