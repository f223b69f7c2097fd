//! The whole-program lowering (`kiln_cpu::lower`) in a JITModule against the reference
//! (`ir::eval::run_graph`): each lowering on several shapes and attributes, through the
//! same entry function the AOT artifact exports; then the program-level cases (fused
//! bodies inlined, outputs that are inputs or constants, every refusal listed at once).

use kiln_cpu::lower::jit::JitProgram;
use kiln_ir::eval::run_graph;
use kiln_ir::{
    AutoPad, BinaryOp, DType, Graph, Op, PadMode, PoolKind, ReduceKind, Tensor, TensorType,
    UnaryOp, Value,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0)
            .collect();
        Tensor::new(shape.to_vec(), v).unwrap()
    }
}

fn input(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> Value {
    g.add_input(name, TensorType::known(dtype, shape))
}

fn ints(v: &[i64]) -> Tensor {
    Tensor::new(vec![v.len()], v.to_vec()).unwrap()
}

/// Runs `g` lowered and on the reference; every output must match (rtol 1e-4, atol 1e-5).
fn check(g: &Graph, inputs: &[Tensor]) {
    let want = run_graph(g, inputs).unwrap();
    let jit = JitProgram::compile(g, true).unwrap_or_else(|e| panic!("lowering {}: {e}", g.name));
    let got = jit.run(inputs).unwrap();
    assert_eq!(got.len(), want.len());
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.shape(), b.shape(), "{} output {k}", g.name);
        assert_eq!(a.dtype(), b.dtype(), "{} output {k}", g.name);
        for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
            let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-5 + 1e-4 * y.abs();
            assert!(ok, "{} output {k} element {i}: {x} vs {y}", g.name);
        }
    }
}

fn one_op(
    name: &str,
    op: Op,
    x_shape: &[usize],
    consts: Vec<Option<Tensor>>,
    n_out: usize,
) -> Graph {
    let mut g = Graph::new(name);
    let x = input(&mut g, "x", DType::F32, x_shape);
    let mut ins = vec![Some(x)];
    for (i, c) in consts.into_iter().enumerate() {
        ins.push(c.map(|c| g.add_const(format!("c{i}"), c)));
    }
    let n = g.add(op, "op", &ins, n_out).unwrap();
    for o in 0..n_out {
        g.add_output(format!("y{o}"), Value::new(n, o));
    }
    g
}

#[test]
fn shape_ops_and_transposes_copy_exactly() {
    let mut rng = Rng(7);
    for (shape, perm) in [
        (vec![2, 3, 4], vec![2, 0, 1]),
        (vec![1, 5, 7, 3], vec![0, 3, 1, 2]),
        (vec![6, 17], vec![1, 0]),
        (vec![2, 1, 3, 1, 5], vec![4, 3, 2, 1, 0]),
    ] {
        let g = one_op(
            "transpose",
            Op::Transpose { perm: Some(perm) },
            &shape,
            vec![],
            1,
        );
        check(&g, &[rng.tensor(&shape)]);
    }
    let g = one_op(
        "reshape",
        Op::Reshape { allowzero: false },
        &[2, 3, 4],
        vec![Some(ints(&[4, -1]))],
        1,
    );
    check(&g, &[rng.tensor(&[2, 3, 4])]);
    let g = one_op("flatten", Op::Flatten { axis: 2 }, &[2, 3, 4, 5], vec![], 1);
    check(&g, &[rng.tensor(&[2, 3, 4, 5])]);
    let g = one_op(
        "unsqueeze",
        Op::Unsqueeze,
        &[3, 4],
        vec![Some(ints(&[0, 2]))],
        1,
    );
    check(&g, &[rng.tensor(&[3, 4])]);
    let g = one_op("identity", Op::Unary(UnaryOp::Identity), &[9], vec![], 1);
    check(&g, &[rng.tensor(&[9])]);
    let g = one_op(
        "expand",
        Op::Expand,
        &[3, 1],
        vec![Some(ints(&[2, 3, 5]))],
        1,
    );
    check(&g, &[rng.tensor(&[3, 1])]);
}

#[test]
fn slices_with_steps_and_negative_bounds() {
    let mut rng = Rng(11);
    let cases: Vec<(
        Vec<usize>,
        Vec<i64>,
        Vec<i64>,
        Option<Vec<i64>>,
        Option<Vec<i64>>,
    )> = vec![
        (vec![10, 8], vec![1, 2], vec![9, -1], None, None),
        (
            vec![10, 8],
            vec![-1],
            vec![-100],
            Some(vec![0]),
            Some(vec![-2]),
        ),
        (
            vec![4, 6, 9],
            vec![0, 1],
            vec![100, 8],
            Some(vec![1, 2]),
            Some(vec![2, 3]),
        ),
        (vec![2, 3, 4], vec![1], vec![2], Some(vec![-1]), None),
    ];
    for (shape, starts, ends, axes, steps) in cases {
        let consts = vec![
            Some(ints(&starts)),
            Some(ints(&ends)),
            axes.map(|a| ints(&a)),
            steps.map(|s| ints(&s)),
        ];
        let g = one_op("slice", Op::Slice, &shape, consts, 1);
        check(&g, &[rng.tensor(&shape)]);
    }
}

#[test]
fn concat_split_gather_and_pad() {
    let mut rng = Rng(3);
    for axis in [0i64, 1, -1] {
        let mut g = Graph::new("concat");
        let a = input(&mut g, "a", DType::F32, &[2, 3, 4]);
        let b = input(&mut g, "b", DType::F32, &[2, 3, 4]);
        let c = g.add_const("c", rng.tensor(&[2, 3, 4]));
        let y = g.add1(Op::Concat { axis }, "cat", &[a, b, c]).unwrap();
        g.add_output("y", y);
        check(&g, &[rng.tensor(&[2, 3, 4]), rng.tensor(&[2, 3, 4])]);
    }
    let g = one_op(
        "split",
        Op::Split { axis: 1 },
        &[3, 10],
        vec![Some(ints(&[3, 7]))],
        2,
    );
    check(&g, &[rng.tensor(&[3, 10])]);
    // An embedding lookup: a constant table, indices from the caller (i32 and i64).
    for dtype in [DType::I32, DType::I64] {
        let mut g = Graph::new("gather");
        let ids = input(&mut g, "ids", dtype, &[2, 5]);
        let table = g.add_const("table", rng.tensor(&[7, 6]));
        let y = g.add1(Op::Gather { axis: 0 }, "g", &[table, ids]).unwrap();
        g.add_output("y", y);
        let idx = Tensor::from_i64(dtype, vec![2, 5], &[0, 6, 3, -1, 2, 2, 5, -7, 1, 4]).unwrap();
        check(&g, &[idx]);
    }
    let g = one_op(
        "gather_axis1",
        Op::Gather { axis: 1 },
        &[3, 5, 2],
        vec![Some(ints(&[4, 0, 4]))],
        1,
    );
    check(&g, &[rng.tensor(&[3, 5, 2])]);
    for (pads, value) in [
        (vec![0i64, 1, 2, 0, 2, 1], None),
        (vec![1, 0, 0, 1, 3, 4], Some(1.5f32)),
    ] {
        let consts = vec![Some(ints(&pads)), value.map(Tensor::scalar)];
        let g = one_op(
            "pad",
            Op::Pad {
                mode: PadMode::Constant,
            },
            &[2, 3, 5],
            consts,
            1,
        );
        check(&g, &[rng.tensor(&[2, 3, 5])]);
    }
}

fn pool(
    kind: PoolKind,
    k: &[i64],
    s: &[i64],
    pads: &[i64],
    include: bool,
    auto_pad: AutoPad,
) -> Op {
    Op::Pool {
        kind,
        auto_pad,
        ceil_mode: false,
        count_include_pad: include,
        dilations: vec![],
        kernel_shape: k.to_vec(),
        pads: pads.to_vec(),
        strides: s.to_vec(),
        storage_order: 0,
        p: 2,
    }
}

#[test]
fn pooling_windows_pads_and_globals() {
    let mut rng = Rng(5);
    let cases = [
        (
            PoolKind::Max,
            vec![3, 3],
            vec![2, 2],
            vec![1, 1, 1, 1],
            false,
            AutoPad::NotSet,
            vec![1, 4, 11, 11],
        ),
        (
            PoolKind::Max,
            vec![2, 2],
            vec![2, 2],
            vec![],
            false,
            AutoPad::NotSet,
            vec![2, 3, 8, 8],
        ),
        (
            PoolKind::Average,
            vec![3, 3],
            vec![1, 1],
            vec![1, 1, 1, 1],
            false,
            AutoPad::NotSet,
            vec![1, 2, 6, 7],
        ),
        (
            PoolKind::Average,
            vec![3, 3],
            vec![2, 1],
            vec![1, 0, 1, 2],
            true,
            AutoPad::NotSet,
            vec![1, 2, 7, 6],
        ),
        (
            PoolKind::Average,
            vec![2, 3],
            vec![2, 2],
            vec![],
            false,
            AutoPad::SameUpper,
            vec![1, 3, 7, 9],
        ),
        (
            PoolKind::Max,
            vec![3],
            vec![2],
            vec![1, 1],
            false,
            AutoPad::NotSet,
            vec![2, 3, 10],
        ),
    ];
    for (kind, k, s, pads, include, auto_pad, shape) in cases {
        let g = one_op(
            "pool",
            pool(kind, &k, &s, &pads, include, auto_pad),
            &shape,
            vec![],
            1,
        );
        check(&g, &[rng.tensor(&shape)]);
    }
    for kind in [PoolKind::Average, PoolKind::Max] {
        let g = one_op(
            "global",
            Op::GlobalPool { kind, p: 2 },
            &[2, 5, 7, 3],
            vec![],
            1,
        );
        check(&g, &[rng.tensor(&[2, 5, 7, 3])]);
    }
}

#[test]
fn reductions_over_constant_axes() {
    let mut rng = Rng(9);
    let kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::SumSquare,
        ReduceKind::L2,
        ReduceKind::L1,
    ];
    let axes: [&[i64]; 5] = [&[-1], &[1], &[0, 2], &[1, 2], &[]];
    for (i, kind) in kinds.iter().enumerate() {
        for (j, ax) in axes.iter().enumerate() {
            let keepdims = (i + j) % 2 == 0;
            let c = if ax.is_empty() { None } else { Some(ints(ax)) };
            let g = one_op(
                "reduce",
                Op::Reduce {
                    kind: *kind,
                    keepdims,
                    noop_with_empty_axes: false,
                },
                &[3, 5, 9],
                vec![c],
                1,
            );
            check(&g, &[rng.tensor(&[3, 5, 9])]);
        }
    }
}

#[test]
fn softmax_layer_norm_and_batch_norm() {
    let mut rng = Rng(13);
    for (shape, axis) in [
        (vec![2, 10], -1i64),
        (vec![3, 4, 5], 1),
        (vec![1, 1000], 1),
        (vec![2, 3, 7], 0),
    ] {
        for log in [false, true] {
            let op = if log {
                Op::LogSoftmax { axis }
            } else {
                Op::Softmax { axis }
            };
            let g = one_op("softmax", op, &shape, vec![], 1);
            check(&g, &[rng.tensor(&shape)]);
        }
    }
    for (shape, axis) in [(vec![2, 3, 16], -1i64), (vec![4, 7], 1), (vec![2, 3, 5], 1)] {
        let n: usize = shape[(axis.rem_euclid(shape.len() as i64)) as usize..]
            .iter()
            .product();
        let scale = rng
            .tensor(&shape[shape.len() - 1..])
            .reshape(shape[shape.len() - 1..].to_vec())
            .unwrap();
        let scale = if scale.len() == n {
            scale
        } else {
            rng.tensor(&shape[(axis as usize)..])
        };
        let bias = rng.tensor(scale.shape());
        let g = one_op(
            "layer_norm",
            Op::LayerNorm {
                axis,
                epsilon: 1e-5,
                stash_type: DType::F32,
            },
            &shape,
            vec![Some(scale), Some(bias)],
            1,
        );
        check(&g, &[rng.tensor(&shape)]);
    }
    let c = 6;
    let var = Tensor::new(
        vec![c],
        (0..c).map(|i| 0.5 + i as f32).collect::<Vec<f32>>(),
    )
    .unwrap();
    let consts = vec![
        Some(rng.tensor(&[c])),
        Some(rng.tensor(&[c])),
        Some(rng.tensor(&[c])),
        Some(var),
    ];
    let g = one_op(
        "batch_norm",
        Op::BatchNorm { epsilon: 1e-3 },
        &[2, c, 5, 3],
        consts,
        1,
    );
    check(&g, &[rng.tensor(&[2, c, 5, 3])]);
}

#[test]
fn elementwise_chains_casts_and_fused_bodies() {
    let mut rng = Rng(17);
    let mut g = Graph::new("chain");
    let x = input(&mut g, "x", DType::F32, &[3, 1, 10]);
    let y = input(&mut g, "y", DType::F32, &[4, 10]);
    let s = g.add1(Op::Binary(BinaryOp::Add), "add", &[x, y]).unwrap();
    let t = g.add1(Op::Unary(UnaryOp::Tanh), "tanh", &[s]).unwrap();
    let k = g.add_const("k", rng.tensor(&[10]));
    let m = g.add1(Op::Binary(BinaryOp::Mul), "mul", &[t, k]).unwrap();
    let i = g.add1(Op::Cast { to: DType::I32 }, "cast", &[m]).unwrap();
    g.add_output("m", m);
    g.add_output("i", i);
    check(&g, &[rng.tensor(&[3, 1, 10]), rng.tensor(&[4, 10])]);
}

/// A graph after the -O2 pipeline: fused kernels appear (elementwise ones lowered whole,
/// others inlined), and the result still matches the unoptimized reference.
#[test]
fn optimized_graphs_with_fused_kernels_run() {
    let mut rng = Rng(19);
    let mut g = Graph::new("block");
    let x = input(&mut g, "x", DType::F32, &[1, 4, 8, 8]);
    let p = g
        .add1(
            pool(PoolKind::Max, &[2, 2], &[2, 2], &[], false, AutoPad::NotSet),
            "pool",
            &[x],
        )
        .unwrap();
    let r = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[p]).unwrap();
    let shape = g.add_const("shape", ints(&[1, 64]));
    let f = g
        .add1(Op::Reshape { allowzero: false }, "flat", &[r, shape])
        .unwrap();
    let e = g.add1(Op::Unary(UnaryOp::Exp), "exp", &[f]).unwrap();
    let s = g.add1(Op::Softmax { axis: -1 }, "softmax", &[e]).unwrap();
    g.add_output("y", s);
    let original = g.clone();
    kiln_passes::optimize(&mut g, &kiln_passes::Options::default()).unwrap();
    let inputs = [rng.tensor(&[1, 4, 8, 8])];
    let want = run_graph(&original, &inputs).unwrap();
    let got = JitProgram::compile(&g, true).unwrap().run(&inputs).unwrap();
    for (a, b) in got[0].to_f64_vec().iter().zip(want[0].to_f64_vec()) {
        assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{a} vs {b}");
    }
}

#[test]
fn outputs_that_are_inputs_or_constants_are_copied() {
    let mut rng = Rng(23);
    let mut g = Graph::new("passthrough");
    let x = input(&mut g, "x", DType::F32, &[5]);
    let c = g.add_const("c", rng.tensor(&[3]));
    let n = g.add1(Op::Unary(UnaryOp::Neg), "neg", &[x]).unwrap();
    g.add_output("x_again", x);
    g.add_output("c", c);
    g.add_output("neg", n);
    g.add_output("neg_again", n);
    check(&g, &[rng.tensor(&[5])]);
}

#[test]
fn every_unsupported_node_is_named_at_once() {
    let mut g = Graph::new("refused");
    let x = input(&mut g, "x", DType::F32, &[1, 4, 4]);
    let a = g.add1(Op::Unary(UnaryOp::Relu), "fine", &[x]).unwrap();
    let axis = g.add_const("axis", Tensor::scalar(2i64));
    let b = g
        .add1(
            Op::CumSum {
                exclusive: false,
                reverse: false,
            },
            "running_sum",
            &[a, axis],
        )
        .unwrap();
    let c = g
        .add1(
            Op::Pool {
                kind: PoolKind::Lp,
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
                count_include_pad: false,
                dilations: vec![],
                kernel_shape: vec![2],
                pads: vec![],
                strides: vec![],
                storage_order: 0,
                p: 2,
            },
            "lp_pool",
            &[b],
        )
        .unwrap();
    g.add_output("y", c);
    let err = JitProgram::compile(&g, false)
        .err()
        .expect("the lowering refuses")
        .to_string();
    assert!(err.contains("2 nodes"), "{err}");
    assert!(err.contains("node running_sum (cumsum)"), "{err}");
    assert!(err.contains("node lp_pool (pool): Lp pooling"), "{err}");
    assert!(!err.contains("fine"), "{err}");
}

#[test]
fn symbolic_shapes_are_refused_with_the_input_named() {
    let mut g = Graph::new("sym");
    let x = g.add_input(
        "tokens",
        TensorType::new(
            DType::F32,
            kiln_ir::Shape(Some(vec![
                kiln_ir::Dim::Sym("N".into()),
                kiln_ir::Dim::Known(4),
            ])),
        ),
    );
    let y = g.add1(Op::Unary(UnaryOp::Relu), "r", &[x]).unwrap();
    g.add_output("y", y);
    let err = JitProgram::compile(&g, false)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("`tokens`") && err.contains("--input-shape"),
        "{err}"
    );
}
