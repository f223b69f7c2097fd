//! Values of the elementwise group checked against numpy (expected arrays computed with
//! numpy 2 / Python's math.erf and pasted here).

use kiln_ir::half::{bf16, f16};
use kiln_ir::shape::{Dim, Shape};
use kiln_ir::{
    eval::eval_op, infer::infer, BinaryOp, DType, GeluApproximation, Op, Storable, Tensor,
    TensorType, UnaryOp,
};

fn t<T: Storable>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::new(shape.to_vec(), v).unwrap()
}

fn run(op: Op, ins: Vec<Tensor>) -> Tensor {
    let ins: Vec<Option<Tensor>> = ins.into_iter().map(Some).collect();
    eval_op(&op, &ins, 1).unwrap().remove(0)
}

fn run_err(op: Op, ins: Vec<Tensor>) -> String {
    let ins: Vec<Option<Tensor>> = ins.into_iter().map(Some).collect();
    eval_op(&op, &ins, 1).unwrap_err().message
}

fn bin(b: BinaryOp, x: Tensor, y: Tensor) -> Tensor {
    run(Op::Binary(b), vec![x, y])
}

fn un(u: UnaryOp, x: Tensor) -> Tensor {
    run(Op::Unary(u), vec![x])
}

fn close(got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= atol + rtol * w.abs() || g == w;
        assert!(ok, "got {got:?}\nwant {want:?}");
    }
}

/// Bit-exact comparison for floats (tells -0 from 0; NaN equals NaN).
fn same_bits(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits(),
            "got {got:?}\nwant {want:?}"
        );
    }
}

// ── integer arithmetic ──────────────────────────────────────────────────────────────────

#[test]
fn int_add_sub_mul_wrap() {
    let r = bin(
        BinaryOp::Add,
        t(&[3], vec![127i8, -128, 5]),
        t(&[3], vec![1i8, -1, 5]),
    );
    assert_eq!(r.as_slice::<i8>().unwrap(), &[-128, 127, 10]);
    let r = bin(BinaryOp::Sub, t(&[2], vec![0u8, 3]), t(&[2], vec![1u8, 1]));
    assert_eq!(r.as_slice::<u8>().unwrap(), &[255, 2]);
    let r = bin(
        BinaryOp::Mul,
        t(&[2], vec![65536i32, -3]),
        t(&[2], vec![65536i32, 7]),
    );
    assert_eq!(r.as_slice::<i32>().unwrap(), &[0, -21]);
    let r = bin(BinaryOp::Mul, t(&[1], vec![u64::MAX]), t(&[1], vec![2u64]));
    assert_eq!(r.as_slice::<u64>().unwrap(), &[u64::MAX - 1]);
}

#[test]
fn int_div_truncates_and_refuses_zero() {
    let r = bin(
        BinaryOp::Div,
        t(&[5], vec![-7i32, 7, -7, 7, 0]),
        t(&[5], vec![2i32, -2, -2, 2, 3]),
    );
    assert_eq!(r.as_slice::<i32>().unwrap(), &[-3, -3, 3, 3, 0]);
    // MIN / -1 wraps rather than trapping.
    let r = bin(BinaryOp::Div, t(&[1], vec![-128i8]), t(&[1], vec![-1i8]));
    assert_eq!(r.as_slice::<i8>().unwrap(), &[-128]);
    let e = run_err(
        Op::Binary(BinaryOp::Div),
        vec![t(&[2], vec![1i64, 2]), t(&[2], vec![1i64, 0])],
    );
    assert!(e.contains("zero"), "{e}");
    let e = run_err(
        Op::Binary(BinaryOp::Mod),
        vec![t(&[1], vec![1u8]), t(&[1], vec![0u8])],
    );
    assert!(e.contains("zero"), "{e}");
}

#[test]
fn mod_sign_rules() {
    let a = t(&[6], vec![-4i32, 7, 5, 4, -7, 8]);
    let b = t(&[6], vec![2i32, -3, 8, -2, 3, 5]);
    // numpy.mod (divisor's sign) and numpy.fmod (dividend's sign).
    assert_eq!(
        bin(BinaryOp::Mod, a.clone(), b.clone())
            .as_slice::<i32>()
            .unwrap(),
        &[0, -2, 5, 0, 2, 3]
    );
    assert_eq!(
        bin(BinaryOp::FMod, a, b).as_slice::<i32>().unwrap(),
        &[0, 1, 5, 0, -1, 3]
    );

    let a = t(&[6], vec![-4.3f64, 7.2, 5.0, 4.3, -7.2, 8.0]);
    let b = t(&[6], vec![2.1f64, -3.4, 8.0, -2.1, 3.4, 5.0]);
    close(
        &bin(BinaryOp::Mod, a.clone(), b.clone()).to_f64_vec(),
        &[
            2.0000000000000004,
            -2.9999999999999996,
            5.0,
            -2.0000000000000004,
            2.9999999999999996,
            3.0,
        ],
        1e-15,
        0.0,
    );
    close(
        &bin(BinaryOp::FMod, a, b).to_f64_vec(),
        &[
            -0.09999999999999964,
            0.40000000000000036,
            5.0,
            0.09999999999999964,
            -0.40000000000000036,
            3.0,
        ],
        1e-15,
        0.0,
    );
}

#[test]
fn float_mod_edge_cases_match_numpy() {
    let inf = f32::INFINITY;
    let nan = f32::NAN;
    let a = t(
        &[14],
        vec![
            0.0f32, -0.0, 0.0, -0.0, -3.0, 3.0, -1.0, 1.0, inf, -inf, 1.0, 1.0, nan, 1.0,
        ],
    );
    let b = t(
        &[14],
        vec![
            -2.0f32, 2.0, 2.0, -2.0, inf, inf, -inf, -inf, 2.0, 2.0, 0.0, -0.0, 2.0, nan,
        ],
    );
    let inf = f64::INFINITY;
    let nan = f64::NAN;
    same_bits(
        &bin(BinaryOp::Mod, a, b).to_f64_vec(),
        &[
            -0.0, 0.0, 0.0, -0.0, inf, 3.0, -1.0, -inf, nan, nan, nan, nan, nan, nan,
        ],
    );
}

#[test]
fn pow_int_and_mixed() {
    // Wrapping integer power: 3^21 overflows i32 as numpy does.
    let r = bin(
        BinaryOp::Pow,
        t(&[3], vec![2i32, 3, -3]),
        t(&[3], vec![10i32, 21, 3]),
    );
    assert_eq!(r.as_slice::<i32>().unwrap(), &[1024, 1870418611, -27]);
    // Int base, float exponent: the result keeps the base's dtype (truncated).
    let r = bin(
        BinaryOp::Pow,
        t(&[2], vec![2i32, 3]),
        t(&[2], vec![0.5f32, 2.5]),
    );
    assert_eq!(r.dtype(), DType::I32);
    assert_eq!(r.as_slice::<i32>().unwrap(), &[1, 15]);
    // Float base, int exponent.
    let r = bin(
        BinaryOp::Pow,
        t(&[3], vec![2.0f32, -1.5, 4.0]),
        t(&[3], vec![3i64, 2, -1]),
    );
    assert_eq!(r.as_slice::<f32>().unwrap(), &[8.0, 2.25, 0.25]);
}

#[test]
fn bit_shifts_including_out_of_range_amounts() {
    let x = t(&[3], vec![-8i8, 4, -1]);
    // Shifts by >= the width, or by a negative amount, shift everything out.
    let r = bin(
        BinaryOp::BitShiftLeft,
        x.clone(),
        t(&[3], vec![8i8, 9, 127]),
    );
    assert_eq!(r.as_slice::<i8>().unwrap(), &[0, 0, 0]);
    let r = bin(
        BinaryOp::BitShiftLeft,
        x.clone(),
        t(&[3], vec![-1i8, -8, -16]),
    );
    assert_eq!(r.as_slice::<i8>().unwrap(), &[0, 0, 0]);
    // Right shifts of signed values are arithmetic.
    let r = bin(
        BinaryOp::BitShiftRight,
        x.clone(),
        t(&[3], vec![8i8, 9, 127]),
    );
    assert_eq!(r.as_slice::<i8>().unwrap(), &[-1, 0, -1]);
    let r = bin(
        BinaryOp::BitShiftRight,
        t(&[3], vec![-8i8, -1, -128]),
        t(&[3], vec![1i8, 1, 1]),
    );
    assert_eq!(r.as_slice::<i8>().unwrap(), &[-4, -1, -64]);
    let r = bin(
        BinaryOp::BitShiftLeft,
        t(&[3], vec![1073741824i32, 1, -1073741824]),
        t(&[3], vec![1i32, 31, 1]),
    );
    assert_eq!(
        r.as_slice::<i32>().unwrap(),
        &[i32::MIN, i32::MIN, i32::MIN]
    );
    let r = bin(
        BinaryOp::BitShiftRight,
        t(&[3], vec![16u8, 4, 1]),
        t(&[1], vec![2u8]),
    );
    assert_eq!(r.as_slice::<u8>().unwrap(), &[4, 1, 0]);
}

#[test]
fn bitwise_and_logic() {
    let r = bin(
        BinaryOp::BitwiseAnd,
        t(&[2], vec![0b1100u8, 0xff]),
        t(&[2], vec![0b1010u8, 0x0f]),
    );
    assert_eq!(r.as_slice::<u8>().unwrap(), &[0b1000, 0x0f]);
    let r = bin(
        BinaryOp::BitwiseXor,
        t(&[2], vec![-1i16, 5]),
        t(&[2], vec![1i16, 3]),
    );
    assert_eq!(r.as_slice::<i16>().unwrap(), &[-2, 6]);
    let r = un(UnaryOp::BitwiseNot, t(&[2], vec![0i32, -6]));
    assert_eq!(r.as_slice::<i32>().unwrap(), &[-1, 5]);
    let r = bin(
        BinaryOp::Xor,
        t(&[2, 1], vec![true, false]),
        t(&[2], vec![true, false]),
    );
    assert_eq!(r.shape(), &[2, 2]);
    assert_eq!(r.as_slice::<bool>().unwrap(), &[false, true, true, false]);
    let r = un(UnaryOp::Not, t(&[2], vec![true, false]));
    assert_eq!(r.as_slice::<bool>().unwrap(), &[false, true]);
}

#[test]
fn int_unary_wraps() {
    let x = t(&[4], vec![-128i8, -3, 0, 5]);
    assert_eq!(
        un(UnaryOp::Abs, x.clone()).as_slice::<i8>().unwrap(),
        &[-128, 3, 0, 5]
    );
    assert_eq!(
        un(UnaryOp::Neg, x.clone()).as_slice::<i8>().unwrap(),
        &[-128, 3, 0, -5]
    );
    assert_eq!(
        un(UnaryOp::Sign, x.clone()).as_slice::<i8>().unwrap(),
        &[-1, -1, 0, 1]
    );
    assert_eq!(
        un(UnaryOp::Relu, x).as_slice::<i8>().unwrap(),
        &[0, 0, 0, 5]
    );
}

// ── broadcasting, comparisons, NaN ──────────────────────────────────────────────────────

#[test]
fn broadcasting() {
    let a = t(&[2, 3, 1], vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let b = t(&[1, 4], vec![10.0f32, 20.0, 30.0, 40.0]);
    let r = bin(BinaryOp::Add, a, b);
    assert_eq!(r.shape(), &[2, 3, 4]);
    let want: Vec<f32> = (0..6)
        .flat_map(|i| [10.0, 20.0, 30.0, 40.0].map(|v| v + i as f32))
        .collect();
    assert_eq!(r.as_slice::<f32>().unwrap(), &want[..]);
    // Scalar on the left, and an empty broadcast.
    let r = bin(BinaryOp::Sub, t(&[], vec![1i64]), t(&[3], vec![1i64, 2, 3]));
    assert_eq!(r.as_slice::<i64>().unwrap(), &[0, -1, -2]);
    let r = bin(
        BinaryOp::Mul,
        t(&[0, 3], Vec::<f32>::new()),
        t(&[1, 3], vec![1.0f32, 2.0, 3.0]),
    );
    assert_eq!(r.shape(), &[0, 3]);
    let e = run_err(
        Op::Binary(BinaryOp::Add),
        vec![t(&[2], vec![1.0f32, 2.0]), t(&[3], vec![1.0f32, 2.0, 3.0])],
    );
    assert!(e.contains("broadcast"), "{e}");
}

#[test]
fn comparisons_give_bool() {
    let r = bin(
        BinaryOp::Less,
        t(&[3], vec![1u64, u64::MAX, 3]),
        t(&[1], vec![2u64]),
    );
    assert_eq!(r.dtype(), DType::Bool);
    assert_eq!(r.as_slice::<bool>().unwrap(), &[true, false, false]);
    let r = bin(
        BinaryOp::Equal,
        t(&[3], vec![f32::NAN, 0.0, -0.0]),
        t(&[3], vec![f32::NAN, -0.0, 1.0]),
    );
    assert_eq!(r.as_slice::<bool>().unwrap(), &[false, true, false]);
    let r = bin(
        BinaryOp::GreaterOrEqual,
        t(&[2], vec![-1i8, 3]),
        t(&[2], vec![-1i8, 4]),
    );
    assert_eq!(r.as_slice::<bool>().unwrap(), &[true, false]);
}

#[test]
fn min_max_propagate_nan() {
    let a = t(&[3], vec![f32::NAN, 1.0, 5.0]);
    let b = t(&[3], vec![1.0f32, f32::NAN, 2.0]);
    let r = bin(BinaryOp::Max, a.clone(), b.clone()).to_f64_vec();
    assert!(r[0].is_nan() && r[1].is_nan() && r[2] == 5.0);
    let r = bin(BinaryOp::Min, a, b).to_f64_vec();
    assert!(r[0].is_nan() && r[1].is_nan() && r[2] == 2.0);
    let r = bin(
        BinaryOp::Max,
        t(&[2], vec![u32::MAX, 1]),
        t(&[2], vec![0u32, 2]),
    );
    assert_eq!(r.as_slice::<u32>().unwrap(), &[u32::MAX, 2]);
    // Variadic Max (ONNX's Max takes any number of inputs).
    let r = run(
        Op::Binary(BinaryOp::Max),
        vec![
            t(&[2], vec![1i32, 9]),
            t(&[2], vec![5i32, 2]),
            t(&[1], vec![3i32]),
        ],
    );
    assert_eq!(r.as_slice::<i32>().unwrap(), &[5, 9]);
    let r = un(UnaryOp::Relu, t(&[3], vec![f32::NAN, -1.0, 2.0])).to_f64_vec();
    assert!(r[0].is_nan() && r[1] == 0.0 && r[2] == 2.0);
}

#[test]
fn prelu_broadcasts_slope() {
    let x = t(&[2, 2], vec![-1.0f32, 2.0, -3.0, 4.0]);
    let r = bin(BinaryOp::PRelu, x, t(&[2], vec![0.1f32, 0.5]));
    close(&r.to_f64_vec(), &[-0.1, 2.0, -0.3, 4.0], 1e-6, 0.0);
    let r = bin(BinaryOp::PRelu, t(&[2], vec![-4i32, 4]), t(&[], vec![3i32]));
    assert_eq!(r.as_slice::<i32>().unwrap(), &[-12, 4]);
}

// ── float unary functions ───────────────────────────────────────────────────────────────

#[test]
fn round_half_to_even_and_sign() {
    let r = un(
        UnaryOp::Round,
        t(&[7], vec![0.5f32, 1.5, 2.5, -0.5, -2.5, 2.4, -2.6]),
    );
    same_bits(&r.to_f64_vec(), &[0.0, 2.0, 2.0, -0.0, -2.0, 2.0, -3.0]);
    let r = un(UnaryOp::Sign, t(&[4], vec![-2.0f64, 0.0, 3.0, f64::NAN])).to_f64_vec();
    assert_eq!(&r[..3], &[-1.0, 0.0, 1.0]);
    assert!(r[3].is_nan());
}

#[test]
fn erf_accuracy() {
    // Python's math.erf.
    let xs = [1e-8, 1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, -3.0, 4.5, 5.9];
    let want = [
        1.1283791670955126e-08,
        0.0011283787909692365,
        0.1124629160182849,
        0.5204998778130465,
        0.8427007929497149,
        0.9953222650189527,
        0.9999779095030014,
        -0.9999779095030014,
        0.9999999998033839,
        0.9999999999999999,
    ];
    let r = un(UnaryOp::Erf, t(&[10], xs.to_vec())).to_f64_vec();
    close(&r, &want, 1e-14, 1e-300);
    let r = un(UnaryOp::Erf, t(&[3], vec![0.0f32, 1e-7, -1e-7])).to_f64_vec();
    close(&r, &[0.0, 1.1283791e-7, -1.1283791e-7], 1e-7, 0.0);
}

#[test]
fn smooth_activations_match_numpy() {
    let x = vec![-3.0f64, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
    let xt = t(&[7], x.clone());
    close(
        &un(UnaryOp::Mish, xt.clone()).to_f64_vec(),
        &[
            -0.1456474612756246,
            -0.30340146137410895,
            -0.22074377465173,
            0.0,
            0.3752452113048951,
            0.8650983882673103,
            2.986535004967957,
        ],
        1e-13,
        0.0,
    );
    close(
        &un(UnaryOp::HardSwish, xt.clone()).to_f64_vec(),
        &[
            -0.0,
            -0.33333333333333337,
            -0.20833333333333334,
            0.0,
            0.2916666666666667,
            0.6666666666666666,
            3.0,
        ],
        1e-15,
        0.0,
    );
    close(
        &un(UnaryOp::Softplus, xt.clone()).to_f64_vec(),
        &[
            0.04858735157374206,
            0.31326168751822286,
            0.4740769841801067,
            std::f64::consts::LN_2,
            0.9740769841801067,
            1.3132616875182228,
            3.048587351573742,
        ],
        1e-14,
        0.0,
    );
    // Stable at the extremes.
    let r = un(UnaryOp::Softplus, t(&[2], vec![1000.0f32, -1000.0])).to_f64_vec();
    assert_eq!(r, vec![1000.0, 0.0]);
    let r = un(UnaryOp::Sigmoid, t(&[2], vec![-1000.0f64, 1000.0])).to_f64_vec();
    assert_eq!(r, vec![0.0, 1.0]);
    close(
        &run(
            Op::Gelu {
                approximate: GeluApproximation::None,
            },
            vec![xt.clone()],
        )
        .to_f64_vec(),
        &[
            -0.00404969409489031,
            -0.15865525393145707,
            -0.15426876936299344,
            0.0,
            0.34573123063700656,
            0.8413447460685429,
            2.99595030590511,
        ],
        1e-13,
        0.0,
    );
    close(
        &run(
            Op::Gelu {
                approximate: GeluApproximation::Tanh,
            },
            vec![xt.clone()],
        )
        .to_f64_vec(),
        &[
            -0.0036373920817729943,
            -0.1588080093917233,
            -0.15428599017485606,
            0.0,
            0.34571400982514394,
            0.8411919906082768,
            2.996362607918227,
        ],
        1e-13,
        0.0,
    );
    close(
        &run(Op::Celu { alpha: 2.0 }, vec![xt]).to_f64_vec(),
        &[
            -1.5537396797031404,
            -0.7869386805747332,
            -0.44239843385719024,
            0.0,
            0.5,
            1.0,
            3.0,
        ],
        1e-14,
        0.0,
    );
}

#[test]
fn piecewise_activations() {
    let x = t(&[4], vec![-2.0f32, -0.5, 0.5, 2.0]);
    close(
        &run(Op::LeakyRelu { alpha: 0.1 }, vec![x.clone()]).to_f64_vec(),
        &[-0.2, -0.05, 0.5, 2.0],
        1e-6,
        0.0,
    );
    close(
        &run(Op::ThresholdedRelu { alpha: 1.0 }, vec![x.clone()]).to_f64_vec(),
        &[0.0, 0.0, 0.0, 2.0],
        0.0,
        0.0,
    );
    close(
        &run(
            Op::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            vec![x.clone()],
        )
        .to_f64_vec(),
        &[0.1, 0.4, 0.6, 0.9],
        1e-6,
        0.0,
    );
    close(
        &run(
            Op::Shrink {
                bias: 0.5,
                lambd: 1.0,
            },
            vec![x.clone()],
        )
        .to_f64_vec(),
        &[-1.5, 0.0, 0.0, 1.5],
        0.0,
        0.0,
    );
    let r = run(
        Op::Shrink {
            bias: 1.5,
            lambd: 1.5,
        },
        vec![t(&[3], vec![-3i32, 1, 5])],
    );
    assert_eq!(r.as_slice::<i32>().unwrap(), &[-1, 0, 3]);
    close(
        &run(Op::Elu { alpha: 1.0 }, vec![x.clone()]).to_f64_vec(),
        &[-0.8646647167633873, -0.3934693402873666, 0.5, 2.0],
        1e-6,
        0.0,
    );
    close(
        &run(Op::Swish { alpha: 1.0 }, vec![x]).to_f64_vec(),
        &[
            -0.2384058440442351,
            -0.1887703343990727,
            0.3112296656009273,
            1.7615941559557646,
        ],
        1e-6,
        0.0,
    );
    let e = run_err(Op::LeakyRelu { alpha: 0.1 }, vec![t(&[1], vec![1i32])]);
    assert!(e.contains("i32"), "{e}");
}

// ── Clip, Where, IsInf, IsNaN ───────────────────────────────────────────────────────────

#[test]
fn clip_bounds() {
    let x = t(&[5], vec![-5i8, -1, 0, 3, 100]);
    let ins = vec![Some(x.clone()), Some(t(&[], vec![0i8])), None];
    let r = eval_op(&Op::Clip, &ins, 1).unwrap().remove(0);
    assert_eq!(r.as_slice::<i8>().unwrap(), &[0, 0, 0, 3, 100]);
    let ins = vec![Some(x.clone()), None, Some(t(&[1], vec![2i8]))];
    let r = eval_op(&Op::Clip, &ins, 1).unwrap().remove(0);
    assert_eq!(r.as_slice::<i8>().unwrap(), &[-5, -1, 0, 2, 2]);
    let r = eval_op(&Op::Clip, &[Some(x.clone())], 1).unwrap().remove(0);
    assert_eq!(r, x);
    // min > max: everything becomes max, as numpy.clip.
    let r = run(
        Op::Clip,
        vec![
            t(&[3], vec![-1.0f32, 0.5, 9.0]),
            t(&[], vec![2.0f32]),
            t(&[], vec![1.0f32]),
        ],
    );
    assert_eq!(r.as_slice::<f32>().unwrap(), &[1.0, 1.0, 1.0]);
}

#[test]
fn where_broadcasts_all_three() {
    let c = t(&[2, 1], vec![true, false]);
    let x = t(&[1, 3], vec![1i64, 2, 3]);
    let y = t(&[], vec![-1i64]);
    let r = run(Op::Where, vec![c, x, y]);
    assert_eq!(r.shape(), &[2, 3]);
    assert_eq!(r.as_slice::<i64>().unwrap(), &[1, 2, 3, -1, -1, -1]);
    let e = run_err(
        Op::Where,
        vec![t(&[1], vec![1u8]), t(&[1], vec![1i64]), t(&[1], vec![1i64])],
    );
    assert!(e.contains("u8"), "{e}");
}

#[test]
fn isinf_isnan() {
    let x = t(
        &[4],
        vec![
            f16::INFINITY,
            f16::NEG_INFINITY,
            f16::NAN,
            f16::from_f32(1.0),
        ],
    );
    let r = run(
        Op::IsInf {
            detect_positive: true,
            detect_negative: false,
        },
        vec![x.clone()],
    );
    assert_eq!(r.as_slice::<bool>().unwrap(), &[true, false, false, false]);
    let r = run(
        Op::IsInf {
            detect_positive: true,
            detect_negative: true,
        },
        vec![x.clone()],
    );
    assert_eq!(r.as_slice::<bool>().unwrap(), &[true, true, false, false]);
    let r = un(UnaryOp::IsNaN, x);
    assert_eq!(r.as_slice::<bool>().unwrap(), &[false, false, true, false]);
}

// ── Cast and BitCast ────────────────────────────────────────────────────────────────────

#[test]
fn cast_float_to_int_truncates_and_wraps() {
    // numpy astype on x86: truncation, then two's-complement wrap.
    let r = run(
        Op::Cast { to: DType::I8 },
        vec![t(&[4], vec![300.0f32, -1.0, -129.7, 2.9])],
    );
    assert_eq!(r.as_slice::<i8>().unwrap(), &[44, -1, 127, 2]);
    let r = run(
        Op::Cast { to: DType::U8 },
        vec![t(&[2], vec![-1.0f32, 256.5])],
    );
    assert_eq!(r.as_slice::<u8>().unwrap(), &[255, 0]);
    let r = run(
        Op::Cast { to: DType::Bool },
        vec![t(&[3], vec![0.0f32, -0.0, f32::NAN])],
    );
    assert_eq!(r.as_slice::<bool>().unwrap(), &[false, false, true]);
    let r = run(
        Op::Cast { to: DType::F32 },
        vec![t(&[2], vec![u64::MAX, 3])],
    );
    assert_eq!(r.as_slice::<f32>().unwrap(), &[1.8446744e19, 3.0]);
}

#[test]
fn cast_to_half_types_rounds_to_nearest_even() {
    // Ties go to even; bf16 is rounded, not truncated.
    let x = t(
        &[4],
        vec![
            1.0f32 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            0.47892547,
            1.0 + 1.0 / 256.0 + 1.0 / 65536.0,
        ],
    );
    let r = run(Op::Cast { to: DType::BF16 }, vec![x]);
    let got: Vec<f64> = r
        .as_slice::<bf16>()
        .unwrap()
        .iter()
        .map(|v| v.to_f64())
        .collect();
    assert_eq!(got, vec![1.0, 1.015625, 0.478515625, 1.0078125]);
    // From f64, the bits below f32's precision still break the tie (numpy's f16 agrees).
    let x = t(
        &[2],
        vec![
            1.0f64 + 2f64.powi(-8) + 2f64.powi(-40),
            1.0 + 2f64.powi(-11) + 2f64.powi(-40),
        ],
    );
    let b = run(Op::Cast { to: DType::BF16 }, vec![x.clone()]);
    assert_eq!(b.as_slice::<bf16>().unwrap()[0].to_f64(), 1.0078125);
    let h = run(Op::Cast { to: DType::F16 }, vec![x]);
    assert_eq!(h.as_slice::<f16>().unwrap()[1].to_f64(), 1.0009765625);
    let h = run(
        Op::Cast { to: DType::F16 },
        vec![t(&[3], vec![65519.0f64, 65520.0, 1e-8])],
    );
    let got: Vec<f64> = h
        .as_slice::<f16>()
        .unwrap()
        .iter()
        .map(|v| v.to_f64())
        .collect();
    assert_eq!(got, vec![65504.0, f64::INFINITY, 0.0]);
}

#[test]
fn bitcast_reinterprets() {
    let r = run(
        Op::BitCast { to: DType::I32 },
        vec![t(&[2], vec![1.0f32, -2.5])],
    );
    assert_eq!(r.as_slice::<i32>().unwrap(), &[1065353216, -1071644672]);
    let r = run(
        Op::BitCast { to: DType::U8 },
        vec![t(&[2], vec![true, false])],
    );
    assert_eq!(r.as_slice::<u8>().unwrap(), &[1, 0]);
    let e = run_err(Op::BitCast { to: DType::I64 }, vec![t(&[1], vec![1.0f32])]);
    assert!(e.contains("f32") && e.contains("i64"), "{e}");
}

// ── Dropout, Det ────────────────────────────────────────────────────────────────────────

#[test]
fn dropout_inference() {
    let x = t(&[2, 2], vec![1.0f32, 2.0, 3.0, 4.0]);
    let out = eval_op(
        &Op::Dropout { seed: None },
        &[Some(x.clone()), Some(t(&[], vec![0.3f32]))],
        2,
    )
    .unwrap();
    assert_eq!(out[0], x);
    assert_eq!(out[1].as_slice::<bool>().unwrap(), &[true; 4]);
    let e = eval_op(
        &Op::Dropout { seed: None },
        &[
            Some(x.clone()),
            Some(t(&[], vec![0.3f32])),
            Some(t(&[], vec![true])),
        ],
        1,
    )
    .unwrap_err();
    assert!(
        e.message.contains("training-mode dropout is random"),
        "{}",
        e.message
    );
    // Training mode with ratio 0 keeps everything.
    let out = eval_op(
        &Op::Dropout { seed: None },
        &[
            Some(x.clone()),
            Some(t(&[], vec![0.0f32])),
            Some(t(&[], vec![true])),
        ],
        1,
    )
    .unwrap();
    assert_eq!(out[0], x);
}

#[test]
fn det_batched() {
    let x = t(&[2, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0, 2.0, 0.0, 0.0, 3.0]);
    let r = run(Op::Det, vec![x]);
    assert_eq!(r.shape(), &[2]);
    close(&r.to_f64_vec(), &[-2.0, 6.0], 1e-6, 0.0);
    // Needs a row swap for its first pivot.
    let r = run(
        Op::Det,
        vec![t(
            &[3, 3],
            vec![0.0f64, 2.0, 1.0, 1.0, 1.0, 1.0, 3.0, 0.0, 5.0],
        )],
    );
    assert_eq!(r.shape(), &[] as &[usize]);
    close(&r.to_f64_vec(), &[-7.0], 1e-14, 0.0);
}

// ── shape and type inference ────────────────────────────────────────────────────────────

fn sym(dims: Vec<Dim>) -> Shape {
    Shape(Some(dims))
}

#[test]
fn infer_keeps_symbols_and_sets_dtypes() {
    let a = TensorType::new(
        DType::F32,
        sym(vec![Dim::Sym("N".into()), Dim::Known(1), Dim::Known(4)]),
    );
    let b = TensorType::new(DType::F32, sym(vec![Dim::Known(3), Dim::Known(1)]));
    let out = infer(
        &Op::Binary(BinaryOp::Add),
        &[Some(&a), Some(&b)],
        &[None, None],
        1,
    )
    .unwrap();
    assert_eq!(
        out[0],
        TensorType::new(
            DType::F32,
            sym(vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Known(4)])
        )
    );
    let out = infer(
        &Op::Binary(BinaryOp::Less),
        &[Some(&a), Some(&b)],
        &[None, None],
        1,
    )
    .unwrap();
    assert_eq!(out[0].dtype, DType::Bool);
    let out = infer(&Op::Unary(UnaryOp::IsNaN), &[Some(&a)], &[None], 1).unwrap();
    assert_eq!(out[0], TensorType::new(DType::Bool, a.shape.clone()));
    let out = infer(&Op::Cast { to: DType::I64 }, &[Some(&a)], &[None], 1).unwrap();
    assert_eq!(out[0], TensorType::new(DType::I64, a.shape.clone()));
    let c = TensorType::new(DType::Bool, sym(vec![Dim::Unknown]));
    let out = infer(&Op::Where, &[Some(&c), Some(&b), Some(&b)], &[None; 3], 1).unwrap();
    assert_eq!(
        out[0],
        TensorType::new(DType::F32, sym(vec![Dim::Known(3), Dim::Unknown]))
    );
    let m = TensorType::new(
        DType::F64,
        sym(vec![Dim::Sym("B".into()), Dim::Known(3), Dim::Known(3)]),
    );
    let out = infer(&Op::Det, &[Some(&m)], &[None], 1).unwrap();
    assert_eq!(
        out[0],
        TensorType::new(DType::F64, sym(vec![Dim::Sym("B".into())]))
    );
    let out = infer(&Op::Dropout { seed: None }, &[Some(&a)], &[None], 2).unwrap();
    assert_eq!(out[1].dtype, DType::Bool);
    // Pow keeps the base's dtype.
    let i = TensorType::known(DType::I32, &[3]);
    let out = infer(
        &Op::Binary(BinaryOp::Pow),
        &[Some(&i), Some(&b)],
        &[None, None],
        1,
    )
    .unwrap();
    assert_eq!(out[0].dtype, DType::I32);
}

#[test]
fn infer_type_errors_name_dtypes() {
    let f = TensorType::known(DType::F32, &[2]);
    let i = TensorType::known(DType::I64, &[2]);
    let e = infer(
        &Op::Binary(BinaryOp::And),
        &[Some(&f), Some(&f)],
        &[None, None],
        1,
    )
    .unwrap_err();
    assert!(e.message.contains("f32"), "{}", e.message);
    let e = infer(
        &Op::Binary(BinaryOp::Add),
        &[Some(&f), Some(&i)],
        &[None, None],
        1,
    )
    .unwrap_err();
    assert!(
        e.message.contains("f32") && e.message.contains("i64"),
        "{}",
        e.message
    );
    let e = infer(&Op::Unary(UnaryOp::Exp), &[Some(&i)], &[None], 1).unwrap_err();
    assert!(e.message.contains("i64"), "{}", e.message);
    let e = infer(
        &Op::Binary(BinaryOp::BitShiftLeft),
        &[Some(&f), Some(&f)],
        &[None, None],
        1,
    )
    .unwrap_err();
    assert!(e.message.contains("f32"), "{}", e.message);
    let e = infer(
        &Op::Binary(BinaryOp::Add),
        &[Some(&f), Some(&TensorType::known(DType::F32, &[3]))],
        &[None, None],
        1,
    )
    .unwrap_err();
    assert!(e.message.contains("broadcast"), "{}", e.message);
}

#[test]
fn half_precision_arithmetic_rounds_once() {
    let a = t(&[2], vec![bf16::from_f32(1.0), bf16::from_f32(3.0)]);
    let b = t(&[2], vec![bf16::from_f32(1.0 / 256.0), bf16::from_f32(3.0)]);
    // 1 + 2^-8 is a tie in bf16 and goes to even (1.0).
    let r = bin(BinaryOp::Add, a.clone(), b.clone());
    let got: Vec<f64> = r
        .as_slice::<bf16>()
        .unwrap()
        .iter()
        .map(|v| v.to_f64())
        .collect();
    assert_eq!(got, vec![1.0, 6.0]);
    let r = bin(BinaryOp::Div, a, b);
    assert_eq!(r.as_slice::<bf16>().unwrap()[1].to_f64(), 1.0);
}
