//! Fused matmul kernels and attention's softmax against REFERENCE (`ir::eval`): a fused
//! body of one MatMul or Gemm followed by reshapes, bias and residual adds, relu/clip and
//! GELU (in the spellings exporters write) runs as one GEMM step, the GELU applied per chunk
//! of rows; softmax rows on eight lanes.
//!
//! Tolerance: rtol 1e-4, atol 1e-5 (the zoo's). NaN must be NaN at the same place.

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::Cpu;
use kiln_ir::{BinaryOp, DType, GeluApproximation, Graph, Op, Tensor, TensorType, UnaryOp, Value};

mod common;
use common::Rng;

fn check(g: &Graph, inputs: &[Tensor]) {
    kiln_ir::verify(g).unwrap();
    let want = kiln_ir::eval::run_graph(g, inputs).unwrap();
    for cpu in [
        Cpu::new(),
        Cpu::with_kernel(kiln_cpu::gemm::Kernel::Portable),
    ] {
        let exe = cpu
            .compile(&Program::new(g.clone()), &CompileOptions::default())
            .unwrap();
        let got = exe.run(inputs, None).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.shape(), b.shape());
            let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let same = if y.is_nan() {
                    x.is_nan()
                } else {
                    (x - y).abs() <= 1e-5 + 1e-4 * y.abs()
                };
                assert!(same, "element {i}: {x} but expected {y}");
            }
        }
    }
}

fn scalar(g: &mut Graph, name: &str, v: f32) -> Value {
    g.add_const(name, Tensor::new(vec![], vec![v]).unwrap())
}

fn bin(g: &mut Graph, op: BinaryOp, name: &str, a: Value, b: Value) -> Value {
    g.add1(Op::Binary(op), name, &[a, b]).unwrap()
}

fn reshape(g: &mut Graph, name: &str, x: Value, shape: &[i64]) -> Value {
    let s = g.add_const(
        format!("{name}/shape"),
        Tensor::new(vec![shape.len()], shape.to_vec()).unwrap(),
    );
    g.add1(Op::Reshape { allowzero: false }, name, &[x, s])
        .unwrap()
}

/// TensorFlow's GELU: `0.5·x · (1 - erf(-x · 0.70710677))`.
fn gelu_tf(g: &mut Graph, x: Value) -> Value {
    let half = scalar(g, "half", 0.5);
    let hx = bin(g, BinaryOp::Mul, "hx", half, x);
    let nx = g.add1(Op::Unary(UnaryOp::Neg), "neg", &[x]).unwrap();
    let c = scalar(g, "c", std::f32::consts::FRAC_1_SQRT_2);
    let z = bin(g, BinaryOp::Mul, "z", nx, c);
    let e = g.add1(Op::Unary(UnaryOp::Erf), "erf", &[z]).unwrap();
    let one = scalar(g, "one", 1.0);
    let erfc = bin(g, BinaryOp::Sub, "erfc", one, e);
    bin(g, BinaryOp::Mul, "gelu", hx, erfc)
}

/// PyTorch's: `x · (1 + erf(x / 1.4142135)) · 0.5`.
fn gelu_torch(g: &mut Graph, x: Value) -> Value {
    let c = scalar(g, "sqrt2", std::f32::consts::SQRT_2);
    let z = bin(g, BinaryOp::Div, "z", x, c);
    let e = g.add1(Op::Unary(UnaryOp::Erf), "erf", &[z]).unwrap();
    let one = scalar(g, "one", 1.0);
    let ope = bin(g, BinaryOp::Add, "ope", e, one);
    let p = bin(g, BinaryOp::Mul, "p", x, ope);
    let half = scalar(g, "half", 0.5);
    bin(g, BinaryOp::Mul, "gelu", p, half)
}

fn gelu_op(g: &mut Graph, x: Value) -> Value {
    let op = Op::Gelu {
        approximate: GeluApproximation::None,
    };
    g.add1(op, "gelu", &[x]).unwrap()
}

/// `fused(x, extra…)` whose body `build` makes from the body's inputs.
fn fused(in_types: &[TensorType], build: impl FnOnce(&mut Graph, &[Value]) -> Value) -> Graph {
    let mut body = Graph::new("body");
    let xs: Vec<Value> = in_types
        .iter()
        .enumerate()
        .map(|(i, t)| body.add_input(format!("x{i}"), t.clone()))
        .collect();
    let y = build(&mut body, &xs);
    body.add_output("y", y);
    kiln_ir::verify(&body).unwrap();
    let mut g = Graph::new("g");
    let ins: Vec<Value> = in_types
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_input(format!("in{i}"), t.clone()))
        .collect();
    let y = g
        .add1(
            Op::Fused {
                body: Box::new(body),
            },
            "fused",
            &ins,
        )
        .unwrap();
    g.add_output("y", y);
    g
}

fn f32_type(shape: &[usize]) -> TensorType {
    TensorType::known(DType::F32, shape)
}

/// A dense layer and GELU as the transformer's feed-forward block writes it: matmul, a
/// reshape to 3-D, the GELU in each spelling, a reshape back. Sizes above and below the
/// threshold where the product splits over threads, rows not a multiple of 6, columns not
/// a multiple of 16; inputs scaled to reach erf's large branch and both signs.
#[test]
fn dense_gelu_bodies_match_reference() {
    let mut rng = Rng(7);
    type Spell = fn(&mut Graph, Value) -> Value;
    for (spell, name) in [
        (gelu_tf as Spell, "tf"),
        (gelu_torch, "torch"),
        (gelu_op, "op"),
    ] {
        for &(m, k, n) in &[(128usize, 256usize, 1024usize), (13, 40, 37), (1, 64, 8)] {
            let w = rng.tensor(&[k, n]);
            let x = rng.tensor(&[m, k]);
            let xs: Vec<f32> = x
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v * 3.0)
                .collect();
            let x = Tensor::new(vec![m, k], xs).unwrap();
            let g = fused(&[f32_type(&[m, k])], |b, ins| {
                let wv = b.add_const("w", w.clone());
                let y = b.add1(Op::MatMul, "mm", &[ins[0], wv]).unwrap();
                let y = reshape(b, "r0", y, &[1, m as i64, n as i64]);
                let y = spell(b, y);
                reshape(b, "r1", y, &[m as i64, n as i64])
            });
            eprintln!("{name} {m}x{k}x{n}");
            check(&g, &[x]);
        }
    }
}

/// A GELU layer's product runs split by columns (each slice of B packed on its own):
/// a bias and a residual add before the GELU, slices whose last is narrower than a panel
/// (200 columns), and sizes on both sides of the threshold where the slices go to the
/// pool's threads.
#[test]
fn dense_bias_residual_gelu_by_column_slices_match_reference() {
    let mut rng = Rng(5);
    for &(m, k, n) in &[(128usize, 64usize, 200usize), (7, 24, 200), (3, 5, 9)] {
        let w = rng.tensor(&[k, n]);
        let bias = rng.tensor(&[n]);
        let g = fused(&[f32_type(&[m, k]), f32_type(&[1, m, n])], |b, ins| {
            let wv = b.add_const("w", w.clone());
            let bv = b.add_const("bias", bias.clone());
            let y = b.add1(Op::MatMul, "mm", &[ins[0], wv]).unwrap();
            let y = reshape(b, "r0", y, &[1, m as i64, n as i64]);
            let y = bin(b, BinaryOp::Add, "bias_add", y, bv);
            let y = bin(b, BinaryOp::Add, "residual", ins[1], y);
            gelu_torch(b, y)
        });
        eprintln!("{m}x{k}x{n}");
        check(&g, &[rng.tensor(&[m, k]), rng.tensor(&[1, m, n])]);
    }
}

/// NaN and infinities through the GELU (and a NaN row through the product).
#[test]
fn gelu_keeps_nan_and_saturates() {
    let k = 4;
    let n = 24;
    let w: Vec<f32> = (0..k * n)
        .map(|i| if i % n == i / n { 1.0 } else { 0.0 })
        .collect();
    let w = Tensor::new(vec![k, n], w).unwrap();
    let x = Tensor::new(
        vec![2, k],
        vec![
            f32::NAN,
            1.0,
            -1.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            30.0,
            -30.0,
        ],
    )
    .unwrap();
    let g = fused(&[f32_type(&[2, k])], |b, ins| {
        let wv = b.add_const("w", w.clone());
        let y = b.add1(Op::MatMul, "mm", &[ins[0], wv]).unwrap();
        gelu_tf(b, y)
    });
    check(&g, &[x]);
}

/// The residual block after attention and the second dense layer: matmul → reshape →
/// add of a body input of the reshaped shape, with a bias add before it and a relu after.
#[test]
fn dense_reshape_bias_residual_bodies_match_reference() {
    let mut rng = Rng(11);
    let (m, k, n) = (128, 96, 80);
    let w = rng.tensor(&[k, n]);
    let bias = rng.tensor(&[n]);
    let g = fused(&[f32_type(&[m, k]), f32_type(&[1, m, n])], |b, ins| {
        let wv = b.add_const("w", w.clone());
        let bv = b.add_const("bias", bias.clone());
        let y = b.add1(Op::MatMul, "mm", &[ins[0], wv]).unwrap();
        let y = reshape(b, "r0", y, &[1, m as i64, n as i64]);
        let y = bin(b, BinaryOp::Add, "bias_add", y, bv);
        let y = bin(b, BinaryOp::Add, "residual", ins[1], y);
        b.add1(Op::Unary(UnaryOp::Relu), "relu", &[y]).unwrap()
    });
    check(&g, &[rng.tensor(&[m, k]), rng.tensor(&[1, m, n])]);
}

/// Batched matmuls with B computed at run time (attention's scores and context), with a
/// reshape after; a scale after the product (folded into B) and a GELU; and a body the
/// kernel does not take (a subtraction), which runs as its plan.
#[test]
fn batched_runtime_b_bodies_match_reference() {
    let mut rng = Rng(13);
    let ab = [f32_type(&[4, 30, 16]), f32_type(&[4, 16, 30])];
    let g = fused(&ab, |b, ins| {
        let y = b.add1(Op::MatMul, "mm", &[ins[0], ins[1]]).unwrap();
        reshape(b, "r", y, &[1, 4, 30, 30])
    });
    check(&g, &[rng.tensor(&[4, 30, 16]), rng.tensor(&[4, 16, 30])]);
    let g = fused(&ab, |b, ins| {
        let y = b.add1(Op::MatMul, "mm", &[ins[0], ins[1]]).unwrap();
        let s = scalar(b, "scale", 0.3);
        let y = bin(b, BinaryOp::Mul, "scale_mul", y, s);
        gelu_op(b, y)
    });
    check(&g, &[rng.tensor(&[4, 30, 16]), rng.tensor(&[4, 16, 30])]);
    let g = fused(&ab, |b, ins| {
        let y = b.add1(Op::MatMul, "mm", &[ins[0], ins[1]]).unwrap();
        let s = scalar(b, "c", 0.3);
        bin(b, BinaryOp::Sub, "sub", y, s)
    });
    check(&g, &[rng.tensor(&[4, 30, 16]), rng.tensor(&[4, 16, 30])]);
}

/// Batches large enough to split over the pool go whole to each thread (attention's heads,
/// 4 × 128×64×128): with the scale, a residual add, a GELU, an odd batch count, and a B
/// broadcast over the batch (packed once, run batch by batch).
#[test]
fn batched_products_split_by_item_match_reference() {
    let mut rng = Rng(23);
    for &(count, m, k, n) in &[(4usize, 128usize, 64usize, 128usize), (3, 70, 40, 50)] {
        let ab = [f32_type(&[count, m, k]), f32_type(&[count, k, n])];
        let shape = [1, count as i64, m as i64, n as i64];
        let g = fused(&ab, |b, ins| {
            let y = b.add1(Op::MatMul, "mm", &[ins[0], ins[1]]).unwrap();
            let y = reshape(b, "r", y, &shape);
            let s = scalar(b, "scale", 0.125);
            bin(b, BinaryOp::Mul, "scale_mul", y, s)
        });
        check(
            &g,
            &[rng.tensor(&[count, m, k]), rng.tensor(&[count, k, n])],
        );
        let abr = [ab[0].clone(), ab[1].clone(), f32_type(&[count, m, n])];
        let g = fused(&abr, |b, ins| {
            let y = b.add1(Op::MatMul, "mm", &[ins[0], ins[1]]).unwrap();
            let y = bin(b, BinaryOp::Add, "residual", y, ins[2]);
            gelu_tf(b, y)
        });
        let x = [
            rng.tensor(&[count, m, k]),
            rng.tensor(&[count, k, n]),
            rng.tensor(&[count, m, n]),
        ];
        check(&g, &x);
        let shared = [ab[0].clone(), f32_type(&[k, n])];
        let g = fused(&shared, |b, ins| {
            b.add1(Op::MatMul, "mm", &[ins[0], ins[1]]).unwrap()
        });
        check(&g, &[rng.tensor(&[count, m, k]), rng.tensor(&[k, n])]);
    }
}

/// Attention as the TensorFlow export fuses it: the scores from heads split off by a
/// transpose and reshape of the query projection, scaled by 1/√d; the context heads merged
/// back by a transpose and reshape into the output projection (a constant B, scaled too in
/// a variant) with the residual add.
#[test]
fn attention_bodies_with_moved_a_match_reference() {
    let mut rng = Rng(19);
    let (t, h, d) = (30usize, 4usize, 16usize);
    let g = fused(
        &[f32_type(&[1, t, h, 1, d]), f32_type(&[h, d, t])],
        |b, ins| {
            let perm = Some(vec![0, 2, 1, 3, 4]);
            let x = b.add1(Op::Transpose { perm }, "split", &[ins[0]]).unwrap();
            let x = reshape(b, "heads", x, &[h as i64, -1, d as i64]);
            let y = b.add1(Op::MatMul, "scores", &[x, ins[1]]).unwrap();
            let y = reshape(b, "r", y, &[1, h as i64, t as i64, t as i64]);
            let s = scalar(b, "scale", 0.25);
            bin(b, BinaryOp::Mul, "scaled", y, s)
        },
    );
    check(&g, &[rng.tensor(&[1, t, h, 1, d]), rng.tensor(&[h, d, t])]);
    let w = rng.tensor(&[h * d, 48]);
    for scaled in [false, true] {
        let g = fused(
            &[f32_type(&[1, h, t, d]), f32_type(&[1, t, 48])],
            |b, ins| {
                let perm = Some(vec![0, 2, 1, 3]);
                let x = b.add1(Op::Transpose { perm }, "merge", &[ins[0]]).unwrap();
                let x = reshape(b, "r", x, &[-1, t as i64, (h * d) as i64]);
                let wv = b.add_const("w", w.clone());
                let mut y = b.add1(Op::MatMul, "out", &[x, wv]).unwrap();
                if scaled {
                    let s = scalar(b, "scale", 0.7);
                    y = bin(b, BinaryOp::Mul, "scaled", s, y);
                }
                bin(b, BinaryOp::Add, "residual", ins[1], y)
            },
        );
        check(&g, &[rng.tensor(&[1, h, t, d]), rng.tensor(&[1, t, 48])]);
    }
}

/// Softmax over rows long enough for the sixteen- and eight-lane paths (attention's 128;
/// 16 + 3, 32 + 8 and 8 for the tails), values spread so that exp underflows to 0; NaN in the vector part and in the
/// tail poisons its row; a row holding +inf, a row of -inf.
#[test]
fn softmax_rows_on_vector_lanes_match_reference() {
    let mut rng = Rng(17);
    for &(rows, n) in &[(512usize, 128usize), (7, 19), (5, 40), (3, 8)] {
        let mut v: Vec<f32> = rng.tensor(&[rows, n]).as_slice::<f32>().unwrap().to_vec();
        v.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x *= if i % 5 == 0 { 80.0 } else { 8.0 });
        v[3] = f32::NAN;
        v[n + n - 1] = f32::NAN;
        v[2 * n + 1] = f32::INFINITY;
        if rows > 3 {
            v[3 * n..4 * n].fill(f32::NEG_INFINITY);
        }
        let x = Tensor::new(vec![1, rows, n], v).unwrap();
        let mut g = Graph::new("softmax");
        let xi = g.add_input("x", f32_type(&[1, rows, n]));
        let y = g.add1(Op::Softmax { axis: -1 }, "softmax", &[xi]).unwrap();
        g.add_output("y", y);
        check(&g, &[x]);
    }
}
