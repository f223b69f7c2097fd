//! Generated elementwise kernels against the reference (`ir::eval::run_graph`): every op on
//! random data with NaN, ±inf, ±0, huge, tiny and denormal values mixed in; numpy
//! broadcasting; lengths that are not multiples of 4 (the scalar tail); multi-output DAGs;
//! int and bool kernels; the split over threads. The `math_*` tests sweep the polynomial
//! functions densely and assert the accuracy documented in `src/codegen/math.rs`.

use kiln_cpu::codegen::{ElementwiseKernel, KernelCache};
use kiln_ir::eval::run_graph;
use kiln_ir::{
    BinaryOp, DType, Dim, GeluApproximation, Graph, Op, Shape, Tensor, TensorType, UnaryOp, Value,
};

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

const EDGES: [f32; 14] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    100.0,
    -100.0,
    1e30,
    -1e30,
    1e-30,
    1e-40,
    -1e-40,
];

/// Random f32 data in [-4, 4) with an edge value at every seventh element.
fn data(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            if i % 7 == 3 {
                EDGES[(rng.next() % EDGES.len() as u64) as usize]
            } else {
                rng.uniform(-4.0, 4.0)
            }
        })
        .collect();
    Tensor::new(shape.to_vec(), v).unwrap()
}

/// Random data without edge values, in [lo, hi).
fn plain(rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.uniform(lo, hi)).collect::<Vec<f32>>(),
    )
    .unwrap()
}

fn input(g: &mut Graph, name: &str, t: &Tensor) -> Value {
    g.add_input(name, TensorType::known(t.dtype(), t.shape()))
}

/// Compiles `g` for the inputs' shapes, runs it and the reference, and compares: ints and
/// bools exactly, floats within `rtol`·|expected| + `atol` (NaN must match NaN, inf must
/// match inf). Returns the kernel for further checks.
fn check(g: &Graph, inputs: &[Tensor], rtol: f64, atol: f64) -> ElementwiseKernel {
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let kernel = ElementwiseKernel::compile(g, &shapes).unwrap_or_else(|e| panic!("{e}"));
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let got = kernel.run(&refs).unwrap();
    let want = run_graph(g, inputs).unwrap();
    assert_eq!(got.len(), want.len());
    for (o, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.dtype(), b.dtype(), "output {o} dtype");
        assert_eq!(a.shape(), b.shape(), "output {o} shape");
        if b.dtype() != DType::F32 {
            assert_eq!(a.to_i64_vec(), b.to_i64_vec(), "output {o} of {}", g.name);
            continue;
        }
        let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
        let xs: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec()).collect();
        for i in 0..av.len() {
            let (x, y) = (av[i], bv[i]);
            let ok = if y.is_nan() {
                x.is_nan()
            } else if y.is_infinite() {
                x == y
            } else {
                (x - y).abs() <= atol + rtol * y.abs()
            };
            let at: Vec<f64> = xs
                .iter()
                .map(|v| v.get(i).copied().unwrap_or(v[0]))
                .collect();
            assert!(
                ok,
                "{}: output {o}[{i}] = {x:e}, reference {y:e} (inputs near {at:?})",
                g.name
            );
        }
    }
    kernel
}

/// One unary op on one input.
fn unary_graph(op: Op, x: &Tensor) -> Graph {
    let mut g = Graph::new(op.name());
    let xi = input(&mut g, "x", x);
    let y = g.add1(op, "y", &[xi]).unwrap();
    g.add_output("y", y);
    g
}

fn binary_graph(op: BinaryOp, x: &Tensor, y: &Tensor) -> Graph {
    let mut g = Graph::new(op.word());
    let xi = input(&mut g, "x", x);
    let yi = input(&mut g, "y", y);
    let z = g.add1(Op::Binary(op), "z", &[xi, yi]).unwrap();
    g.add_output("z", z);
    g
}

/// Tolerance for the polynomial functions: the sweeps below pin their accuracy; here the
/// point is the edge values and the vector/scalar paths.
const RTOL: f64 = 2e-6;

#[test]
fn every_float_unary_op_matches_the_reference() {
    use UnaryOp::*;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // 7×13 = 91 elements: 22 vectors and a tail of 3.
    let x = data(&mut rng, &[7, 13]);
    for u in [
        Identity, Abs, Neg, Exp, Log, Sqrt, Reciprocal, Floor, Ceil, Round, Sign, Relu, Sigmoid,
        Tanh, Erf, Softplus, Softsign, Mish, HardSwish,
    ] {
        let k = check(
            &unary_graph(Op::Unary(u), &x),
            std::slice::from_ref(&x),
            RTOL,
            1e-30,
        );
        assert!(k.is_vectorised(), "{u:?} runs on f32x4");
    }
    // IsNaN gives bool, so its kernel is scalar.
    check(
        &unary_graph(Op::Unary(IsNaN), &x),
        std::slice::from_ref(&x),
        0.0,
        0.0,
    );
}

#[test]
fn activations_with_attributes_match_the_reference() {
    let mut rng = Rng(77);
    let x = data(&mut rng, &[5, 19]);
    let ops = [
        Op::LeakyRelu { alpha: 0.1 },
        Op::Elu { alpha: 0.7 },
        Op::Selu {
            alpha: 1.673_263_2,
            gamma: 1.050_701,
        },
        Op::Celu { alpha: 1.5 },
        Op::ThresholdedRelu { alpha: 0.5 },
        Op::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Op::Shrink {
            bias: 0.25,
            lambd: 0.5,
        },
        Op::Gelu {
            approximate: GeluApproximation::None,
        },
        Op::Gelu {
            approximate: GeluApproximation::Tanh,
        },
        Op::Swish { alpha: 1.0 },
        Op::Swish { alpha: 1.702 },
    ];
    for op in ops {
        // Differences of two nearby values (1 - 2/(e+1) in tanh) give absolute error
        // around the result's ulp where the result crosses 0.
        check(&unary_graph(op, &x), std::slice::from_ref(&x), RTOL, 1e-7);
    }
    check(
        &unary_graph(
            Op::IsInf {
                detect_positive: true,
                detect_negative: false,
            },
            &x,
        ),
        std::slice::from_ref(&x),
        0.0,
        0.0,
    );
}

#[test]
fn binary_ops_broadcast_as_numpy() {
    use BinaryOp::*;
    let mut rng = Rng(5);
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[3, 5], &[]),
        (&[], &[6, 7]),
        (&[1, 8, 5, 5], &[8, 1, 1]),
    ];
    for (sa, sb) in shapes {
        let (a, b) = (data(&mut rng, sa), data(&mut rng, sb));
        for op in [Add, Sub, Mul, Div, Min, Max, PRelu] {
            check(&binary_graph(op, &a, &b), &[a.clone(), b.clone()], 0.0, 0.0);
        }
        for op in [Equal, Less, LessOrEqual, Greater, GreaterOrEqual] {
            check(&binary_graph(op, &a, &b), &[a.clone(), b.clone()], 0.0, 0.0);
        }
    }
}

#[test]
fn pow_special_cases_and_the_general_case() {
    let mut rng = Rng(11);
    let x = data(&mut rng, &[9, 11]);
    for k in [2.0f32, 3.0, -1.0, -2.0, 0.0, 0.5, 1.5, -0.75] {
        let mut g = Graph::new("pow_const");
        let xi = input(&mut g, "x", &x);
        let e = g.add_const("e", Tensor::scalar(k));
        let y = g.add1(Op::Binary(BinaryOp::Pow), "y", &[xi, e]).unwrap();
        g.add_output("y", y);
        // x^0.5 is sqrt, which differs from powf only at -0 and -inf; the data has both.
        if k == 0.5 {
            let pos = plain(&mut rng, &[9, 11], 0.0, 10.0);
            check(&g, &[pos], 1e-6, 0.0);
            continue;
        }
        let k_ = check(&g, std::slice::from_ref(&x), 1e-5, 1e-30);
        assert!(k_.is_vectorised());
    }
    // An i64 exponent (as exported models write x^2) keeps the kernel vectorised.
    let mut g = Graph::new("pow_i64");
    let xi = input(&mut g, "x", &x);
    let e = g.add_const("e", Tensor::scalar(3i64));
    let y = g.add1(Op::Binary(BinaryOp::Pow), "y", &[xi, e]).unwrap();
    g.add_output("y", y);
    assert!(check(&g, std::slice::from_ref(&x), 1e-6, 1e-30).is_vectorised());
    // Run-time exponents, with negative bases, zeros, ones and integers among them.
    let base = Tensor::new(
        vec![12],
        vec![
            2.0f32,
            -2.0,
            -2.0,
            0.0,
            0.0,
            1.0,
            -1.0,
            3.5,
            -8.0,
            0.25,
            f32::NAN,
            1.0,
        ],
    )
    .unwrap();
    let expo = Tensor::new(
        vec![12],
        vec![
            0.5f32,
            3.0,
            2.5,
            -1.0,
            0.0,
            f32::NAN,
            f32::INFINITY,
            -1.25,
            1.0 / 3.0,
            12.0,
            0.0,
            7.0,
        ],
    )
    .unwrap();
    check(
        &binary_graph(BinaryOp::Pow, &base, &expo),
        &[base.clone(), expo.clone()],
        1e-5,
        0.0,
    );
    let (a, b) = (
        plain(&mut rng, &[40], 0.01, 20.0),
        plain(&mut rng, &[40], -6.0, 6.0),
    );
    check(&binary_graph(BinaryOp::Pow, &a, &b), &[a, b], 1e-5, 0.0);
}

#[test]
fn clip_where_and_casts() {
    let mut rng = Rng(3);
    let x = data(&mut rng, &[4, 9]);
    let mut g = Graph::new("clip");
    let xi = input(&mut g, "x", &x);
    let lo = g.add_const("lo", Tensor::scalar(-1.5f32));
    let hi = g.add_const("hi", Tensor::scalar(2.0f32));
    let y = g
        .add(Op::Clip, "y", &[Some(xi), Some(lo), Some(hi)], 1)
        .unwrap();
    g.add_output("y", y.into());
    assert!(check(&g, std::slice::from_ref(&x), 0.0, 0.0).is_vectorised());
    // relu6 as a clip with only a max on the second run: absent min.
    let mut g = Graph::new("clip_max");
    let xi = input(&mut g, "x", &x);
    let hi = g.add_const("hi", Tensor::scalar(6.0f32));
    let y = g
        .add(Op::Clip, "y", &[Some(xi), None, Some(hi)], 1)
        .unwrap();
    g.add_output("y", y.into());
    check(&g, std::slice::from_ref(&x), 0.0, 0.0);

    // where(x > 0, x, 0.1·y) stays vectorised: the bool is a lane mask.
    let yv = data(&mut rng, &[9]);
    let mut g = Graph::new("where_mask");
    let xi = input(&mut g, "x", &x);
    let yi = input(&mut g, "y", &yv);
    let zero = g.add_const("zero", Tensor::scalar(0.0f32));
    let tenth = g.add_const("tenth", Tensor::scalar(0.1f32));
    let c = g
        .add1(Op::Binary(BinaryOp::Greater), "c", &[xi, zero])
        .unwrap();
    let s = g
        .add1(Op::Binary(BinaryOp::Mul), "s", &[yi, tenth])
        .unwrap();
    let w = g.add1(Op::Where, "w", &[c, xi, s]).unwrap();
    g.add_output("w", w);
    assert!(check(&g, &[x.clone(), yv.clone()], 0.0, 0.0).is_vectorised());

    // where with a bool input: a scalar kernel.
    let cond = Tensor::new(vec![4, 1], vec![true, false, false, true]).unwrap();
    let mut g = Graph::new("where_input");
    let ci = input(&mut g, "c", &cond);
    let xi = input(&mut g, "x", &x);
    let yi = input(&mut g, "y", &yv);
    let w = g.add1(Op::Where, "w", &[ci, xi, yi]).unwrap();
    g.add_output("w", w);
    check(&g, &[cond, x.clone(), yv], 0.0, 0.0);

    // Every cast among f32, i32, i64 and bool, on values that saturate and wrap.
    let wide = Tensor::new(
        vec![11],
        vec![
            1.5f32,
            -1.5,
            3e9,
            -3e9,
            1e20,
            f32::NAN,
            f32::INFINITY,
            -0.0,
            2.0e9,
            7.0,
            -7.9,
        ],
    )
    .unwrap();
    let types = [DType::F32, DType::I32, DType::I64, DType::Bool];
    for from in types {
        let src = wide.cast(from);
        for to in types {
            let g = unary_graph(Op::Cast { to }, &src);
            check(&g, std::slice::from_ref(&src), 0.0, 0.0);
        }
    }
    let big = Tensor::new(
        vec![4],
        vec![i64::MAX, i64::MIN, (1 << 53) + 1, -(1 << 40) - 3],
    )
    .unwrap();
    for to in types {
        check(
            &unary_graph(Op::Cast { to }, &big),
            std::slice::from_ref(&big),
            0.0,
            0.0,
        );
    }
}

#[test]
fn integer_and_bool_kernels() {
    use BinaryOp::*;
    let a32 = Tensor::new(
        vec![3, 5],
        (0..15)
            .map(|i| (i * 7919 % 23) - 11)
            .chain([])
            .collect::<Vec<i32>>(),
    )
    .unwrap();
    let b32 = Tensor::new(vec![5], vec![3i32, -2, i32::MAX, i32::MIN, 0]).unwrap();
    for dt in [DType::I32, DType::I64] {
        let (a, b) = (a32.cast(dt), b32.cast(dt));
        for op in [
            Add,
            Sub,
            Mul,
            Min,
            Max,
            PRelu,
            BitwiseAnd,
            BitwiseOr,
            BitwiseXor,
            Equal,
            Less,
            GreaterOrEqual,
        ] {
            check(&binary_graph(op, &a, &b), &[a.clone(), b.clone()], 0.0, 0.0);
        }
        for u in [
            UnaryOp::Abs,
            UnaryOp::Neg,
            UnaryOp::Relu,
            UnaryOp::Sign,
            UnaryOp::BitwiseNot,
            UnaryOp::Floor,
        ] {
            check(
                &unary_graph(Op::Unary(u), &b),
                std::slice::from_ref(&b),
                0.0,
                0.0,
            );
        }
        let mut g = Graph::new("int_pow");
        let ai = input(&mut g, "a", &a);
        let e = g.add_const("e", Tensor::scalar(3i64));
        let y = g.add1(Op::Binary(Pow), "y", &[ai, e]).unwrap();
        g.add_output("y", y);
        check(&g, std::slice::from_ref(&a), 0.0, 0.0);
    }
    let p = Tensor::new(vec![2, 3], vec![true, false, true, false, false, true]).unwrap();
    let q = Tensor::new(vec![3], vec![true, true, false]).unwrap();
    for op in [And, Or, Xor, Equal] {
        check(&binary_graph(op, &p, &q), &[p.clone(), q.clone()], 0.0, 0.0);
    }
    check(
        &unary_graph(Op::Unary(UnaryOp::Not), &p),
        std::slice::from_ref(&p),
        0.0,
        0.0,
    );
}

#[test]
fn a_folded_batch_norm_relu_chain() {
    // relu(x·s + b) over NCHW with per-channel constants [C,1,1]: what a folded batch norm
    // followed by relu leaves for the fused kernel. 7×7 rows: 12 vectors and a tail of 1.
    let mut rng = Rng(21);
    let x = data(&mut rng, &[2, 6, 7, 7]);
    let s = plain(&mut rng, &[6, 1, 1], 0.5, 2.0);
    let b = plain(&mut rng, &[6, 1, 1], -1.0, 1.0);
    let mut g = Graph::new("bn_relu");
    let xi = input(&mut g, "x", &x);
    let sc = g.add_const("s", s);
    let bc = g.add_const("b", b);
    let m = g.add1(Op::Binary(BinaryOp::Mul), "m", &[xi, sc]).unwrap();
    let a = g.add1(Op::Binary(BinaryOp::Add), "a", &[m, bc]).unwrap();
    let r = g.add1(Op::Unary(UnaryOp::Relu), "r", &[a]).unwrap();
    g.add_output("r", r);
    assert!(check(&g, &[x], 0.0, 0.0).is_vectorised());
}

#[test]
fn multi_output_dags_share_their_common_part() {
    // t = tanh(x + y); outputs t, t·sigmoid(x) and (t > 0) as bool (a scalar kernel).
    let mut rng = Rng(8);
    let x = data(&mut rng, &[3, 10]);
    let y = data(&mut rng, &[10]);
    let mut g = Graph::new("multi");
    let xi = input(&mut g, "x", &x);
    let yi = input(&mut g, "y", &y);
    let s = g.add1(Op::Binary(BinaryOp::Add), "s", &[xi, yi]).unwrap();
    let t = g.add1(Op::Unary(UnaryOp::Tanh), "t", &[s]).unwrap();
    let sg = g.add1(Op::Unary(UnaryOp::Sigmoid), "sg", &[xi]).unwrap();
    let p = g.add1(Op::Binary(BinaryOp::Mul), "p", &[t, sg]).unwrap();
    g.add_output("t", t);
    g.add_output("p", p);
    assert!(check(&g, &[x.clone(), y.clone()], RTOL, 1e-7).is_vectorised());
    let zero = g.add_const("zero", Tensor::scalar(0.0f32));
    let pos = g
        .add1(Op::Binary(BinaryOp::Greater), "pos", &[t, zero])
        .unwrap();
    g.add_output("pos", pos);
    assert!(!check(&g, &[x, y], RTOL, 1e-7).is_vectorised());
}

#[test]
fn large_tensors_split_over_threads_alone_and_run_into_agree() {
    // 300×257 elements (over the parallel threshold; odd rows so chunks end mid-row).
    let mut rng = Rng(99);
    let x = data(&mut rng, &[300, 257]);
    let y = data(&mut rng, &[257]);
    let mut g = Graph::new("big");
    let xi = input(&mut g, "x", &x);
    let yi = input(&mut g, "y", &y);
    let e = g.add1(Op::Unary(UnaryOp::Exp), "e", &[xi]).unwrap();
    let s = g.add1(Op::Binary(BinaryOp::Add), "s", &[e, yi]).unwrap();
    g.add_output("s", s);
    // exp(4) = 54.6 has an ulp of 3.8e-6, which the add keeps while the sum may be small:
    // the zoo's absolute tolerance.
    let k = check(&g, &[x.clone(), y.clone()], RTOL, 1e-5);
    let want = k.run(&[&x, &y]).unwrap();
    let (xb, yb) = (x.to_le_bytes(), y.to_le_bytes());
    let mut out = vec![0u8; 300 * 257 * 4];
    k.run_into(&[&xb, &yb], &mut [&mut out]).unwrap();
    assert_eq!(out, want[0].to_le_bytes());
    // On the calling thread alone (a model compiled for one thread) the same elements.
    let alone = k.run_on(None, &[&x, &y]).unwrap();
    assert_eq!(alone[0].to_le_bytes(), want[0].to_le_bytes());
    assert!(k.run_into(&[&xb], &mut [&mut out]).is_err());
    assert!(k.run(&[&y, &x]).is_err());
}

#[test]
fn scalars_empty_tensors_and_the_cache() {
    fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<ElementwiseKernel>();
    shared_across_threads::<KernelCache>();
    let x = Tensor::scalar(0.5f32);
    check(
        &unary_graph(Op::Unary(UnaryOp::Exp), &x),
        std::slice::from_ref(&x),
        RTOL,
        0.0,
    );
    // One body with a symbolic batch dim, compiled per concrete shape.
    let empty = Tensor::new(vec![0, 3], Vec::<f32>::new()).unwrap();
    let mut g = Graph::new("batch");
    let ty = TensorType::new(
        DType::F32,
        Shape(Some(vec![Dim::Sym("N".into()), Dim::Known(3)])),
    );
    let xi = g.add_input("x", ty);
    let y = g.add1(Op::Unary(UnaryOp::Exp), "y", &[xi]).unwrap();
    g.add_output("y", y);
    let cache = KernelCache::new(g);
    let k = cache.get(&[vec![0, 3]]).unwrap();
    assert_eq!(k.run(&[&empty]).unwrap()[0].shape(), &[0, 3]);
    let k2 = cache.get(&[vec![4, 3]]).unwrap();
    assert_eq!(k2.output_shape(), &[4, 3]);
}

#[test]
fn what_is_not_covered_is_refused() {
    let x = Tensor::new(vec![4], vec![1i32, 2, 3, 4]).unwrap();
    // Integer division can divide by zero: the reference reports it, so it stays there.
    let g = binary_graph(BinaryOp::Div, &x, &x);
    let e = ElementwiseKernel::compile(&g, &[vec![4], vec![4]]).unwrap_err();
    assert!(e.reason.contains("div"), "{e}");
    let f = Tensor::new(vec![1, 4], vec![1.0f32; 4]).unwrap();
    let g = unary_graph(Op::Softmax { axis: 1 }, &f);
    let e = ElementwiseKernel::compile(&g, &[vec![1, 4]]).unwrap_err();
    assert!(e.reason.contains("softmax"), "{e}");
    let h = f.cast(DType::F64);
    let g = unary_graph(Op::Unary(UnaryOp::Exp), &h);
    assert!(ElementwiseKernel::compile(&g, &[vec![1, 4]]).is_err());
    let g = unary_graph(Op::Unary(UnaryOp::Sin), &f);
    assert!(ElementwiseKernel::compile(&g, &[vec![1, 4]]).is_err());
}

// ── Accuracy sweeps ─────────────────────────────────────────────────────────────────────

/// Runs a one-op kernel over `xs` and returns the max relative error against `f` (in f64)
/// over the points where the exact result is a normal f32, and the point where it occurs.
fn sweep(op: Op, xs: &[f32], f: impl Fn(f64) -> f64) -> (f64, f32) {
    let x = Tensor::new(vec![xs.len()], xs.to_vec()).unwrap();
    let name = op.name();
    let k = ElementwiseKernel::compile(&unary_graph(op, &x), &[vec![xs.len()]]).unwrap();
    let got = k.run(&[&x]).unwrap()[0].to_f64_vec();
    let mut worst = (0.0, 0.0);
    for (&x, &y) in xs.iter().zip(&got) {
        let want = f(x as f64);
        if want == 0.0 || want.abs() < f32::MIN_POSITIVE as f64 || want.abs() > f32::MAX as f64 {
            continue;
        }
        let err = ((y - want) / want).abs();
        if err > worst.0 || err.is_nan() {
            worst = (err, x);
        }
    }
    eprintln!(
        "{name}: max relative error {:.3e} at {:e}",
        worst.0, worst.1
    );
    worst
}

/// `n` points evenly over [lo, hi].
fn linspace(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect()
}

/// The error function in f64 by its everywhere-convergent series (as `ir`'s reference).
fn erf64(x: f64) -> f64 {
    if x.abs() >= 6.0 {
        return x.signum();
    }
    let x2 = x * x;
    let (mut term, mut sum, mut n) = (x, x, 0.0f64);
    loop {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if term.abs() <= sum.abs() * 1e-17 {
            break;
        }
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
}

fn assert_within(op: Op, xs: &[f32], f: impl Fn(f64) -> f64, bound: f64) {
    let name = op.name();
    let (err, at) = sweep(op, xs, f);
    assert!(
        err <= bound,
        "{name}: relative error {err:e} at {at:e} exceeds {bound:e}"
    );
}

const N: usize = 200_003;

#[test]
fn math_exp() {
    assert_within(
        Op::Unary(UnaryOp::Exp),
        &linspace(-87.0, 88.0, N),
        f64::exp,
        1.2e-7,
    );
    // Near 0 the reduction is exact; the result's rounding dominates.
    assert_within(
        Op::Unary(UnaryOp::Exp),
        &linspace(-1.0, 1.0, N),
        f64::exp,
        1.2e-7,
    );
}

#[test]
fn math_log() {
    let xs: Vec<f32> = linspace(-69.0, 69.0, N).iter().map(|e| e.exp()).collect();
    assert_within(Op::Unary(UnaryOp::Log), &xs, f64::ln, 1.2e-7);
    assert_within(
        Op::Unary(UnaryOp::Log),
        &linspace(0.5, 2.0, N),
        f64::ln,
        1.2e-7,
    );
    let denormals: Vec<f32> = (1..2000).map(|i| f32::from_bits(i * 4000)).collect();
    assert_within(Op::Unary(UnaryOp::Log), &denormals, f64::ln, 1.2e-7);
}

#[test]
fn math_tanh_sigmoid_erf() {
    assert_within(
        Op::Unary(UnaryOp::Tanh),
        &linspace(-10.0, 10.0, N),
        f64::tanh,
        2e-7,
    );
    assert_within(
        Op::Unary(UnaryOp::Tanh),
        &linspace(-0.01, 0.01, N),
        f64::tanh,
        2e-7,
    );
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    assert_within(
        Op::Unary(UnaryOp::Sigmoid),
        &linspace(-80.0, 30.0, N),
        sigmoid,
        2.5e-7,
    );
    assert_within(
        Op::Unary(UnaryOp::Erf),
        &linspace(-5.0, 5.0, N),
        erf64,
        1.2e-7,
    );
    assert_within(
        Op::Unary(UnaryOp::Erf),
        &linspace(-0.01, 0.01, N),
        erf64,
        1.2e-7,
    );
}

#[test]
fn math_expm1_softplus_gelu() {
    // Elu with alpha 1 is expm1 below 0.
    assert_within(
        Op::Elu { alpha: 1.0 },
        &linspace(-10.0, 0.0, N),
        f64::exp_m1,
        1.2e-7,
    );
    assert_within(
        Op::Elu { alpha: 1.0 },
        &linspace(-1e-3, 0.0, N),
        f64::exp_m1,
        1.2e-7,
    );
    let softplus = |x: f64| {
        if x > 0.0 {
            x + (-x).exp().ln_1p()
        } else {
            x.exp().ln_1p()
        }
    };
    assert_within(
        Op::Unary(UnaryOp::Softplus),
        &linspace(-80.0, 80.0, N),
        softplus,
        3e-7,
    );
    let gelu = |x: f64| 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
    let op = Op::Gelu {
        approximate: GeluApproximation::None,
    };
    assert_within(op.clone(), &linspace(-1.0, 12.0, N), gelu, 3e-7);
    assert_within(op.clone(), &linspace(-3.0, 12.0, N), gelu, 1e-5);
    // Further out, 1 + erf(x/√2) = erfc comes from Juffa's exp(P(t)), fitted for erf's
    // absolute accuracy: gelu's relative error grows (6.5e-5 at -5) while its absolute
    // error stays far below any tolerance. (Below -5 the f64 reference itself loses digits
    // to 1 + erf cancelling, so the sweep stops there.)
    let xs = linspace(-5.0, -3.0, N);
    let t = Tensor::new(vec![N], xs.clone()).unwrap();
    let k = ElementwiseKernel::compile(&unary_graph(op, &t), &[vec![N]]).unwrap();
    let got = k.run(&[&t]).unwrap()[0].to_f64_vec();
    let worst = xs
        .iter()
        .zip(&got)
        .map(|(&x, &y)| (y - gelu(x as f64)).abs())
        .fold(0.0, f64::max);
    eprintln!("gelu on [-5, -3]: max absolute error {worst:.3e}");
    assert!(worst <= 5e-8, "gelu's absolute error {worst:e} on [-5, -3]");
}

// ── Ahead of time ───────────────────────────────────────────────────────────────────────

const AOT_MAIN_C: &str = r#"
#include <stdint.h>
#include <stdio.h>

void kiln_test_elementwise(void **args, uint64_t start, uint64_t end);

int main(void) {
    float x[37], y[37];
    for (int i = 0; i < 37; i++) x[i] = (i - 18) * 0.25f;
    void *args[2] = { x, y };
    kiln_test_elementwise(args, 0, 37);
    for (int i = 0; i < 37; i++) printf("%.9g\n", y[i]);
    return 0;
}
"#;

/// The same lowering into an ObjectModule for a baseline x86-64 (no FMA, no SSE4.1): the
/// object needs no symbol at all, and a C program linked with it computes what the
/// reference does.
#[test]
fn the_lowering_emits_a_self_contained_object() {
    use cranelift_codegen::settings::{self, Configurable};
    use kiln_cpu::codegen::{define_kernel, Plan};
    use std::process::Command;

    let xs: Vec<f32> = (0..37).map(|i| (i - 18) as f32 * 0.25).collect();
    let x = Tensor::new(vec![37], xs).unwrap();
    let mut g = Graph::new("aot");
    let xi = input(&mut g, "x", &x);
    let t = g.add1(Op::Unary(UnaryOp::Tanh), "t", &[xi]).unwrap();
    let s = g
        .add1(
            Op::Gelu {
                approximate: GeluApproximation::None,
            },
            "s",
            &[xi],
        )
        .unwrap();
    let y = g.add1(Op::Binary(BinaryOp::Add), "y", &[t, s]).unwrap();
    g.add_output("y", y);
    let plan = Plan::new(&g, &[vec![37]]).unwrap();

    let mut flags = settings::builder();
    flags.set("is_pic", "true").unwrap();
    flags.set("opt_level", "speed").unwrap();
    let isa = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
        .unwrap()
        .finish(settings::Flags::new(flags))
        .unwrap();
    let builder = cranelift_object::ObjectBuilder::new(
        isa,
        "kiln_test",
        cranelift_module::default_libcall_names(),
    )
    .unwrap();
    let mut module = cranelift_object::ObjectModule::new(builder);
    define_kernel(
        &mut module,
        "kiln_test_elementwise",
        cranelift_module::Linkage::Export,
        &plan,
    )
    .unwrap();
    let object = module.finish().emit().unwrap();

    let dir = std::env::temp_dir().join(format!("kiln-cpu-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("kernel.o");
    std::fs::write(&obj, object).unwrap();
    let nm = Command::new("nm")
        .arg("-u")
        .arg(&obj)
        .output()
        .expect("running nm");
    assert!(nm.status.success());
    assert_eq!(
        String::from_utf8_lossy(&nm.stdout),
        "",
        "undefined symbols in the object"
    );

    std::fs::write(dir.join("main.c"), AOT_MAIN_C).unwrap();
    let exe = dir.join("main");
    let cc = Command::new("cc")
        .arg(dir.join("main.c"))
        .arg(&obj)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("running cc");
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let got: Vec<f64> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let want = run_graph(&g, &[x]).unwrap()[0].to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs() + 1e-7,
            "object code gives {a}, reference {b}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
