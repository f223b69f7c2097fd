//! Values of the reduce group's ops, checked against onnx.reference / numpy (expected arrays
//! were computed with onnx 1.23.2's ReferenceEvaluator unless a comment says otherwise).

use kiln_ir::eval::eval_op;
use kiln_ir::infer::infer;
use kiln_ir::{DType, Dim, LossReduction, Op, ReduceKind, Shape, Tensor, TensorType};

fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
}

fn i64s(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
}

/// (arange(24) / 7 - 1.3).reshape(2, 3, 4) in f32, the shared test input.
fn x234() -> Tensor {
    f32s(&[2, 3, 4], &(0..24).map(|i| i as f32 / 7.0 - 1.3).collect::<Vec<_>>())
}

fn run(op: Op, inputs: Vec<Option<Tensor>>, n: usize) -> Vec<Tensor> {
    eval_op(&op, &inputs, n).unwrap()
}

fn run1(op: Op, inputs: Vec<Tensor>) -> Tensor {
    run(op, inputs.into_iter().map(Some).collect(), 1).remove(0)
}

#[track_caller]
fn close(t: &Tensor, shape: &[usize], want: &[f64]) {
    assert_eq!(t.shape(), shape, "shape");
    let got = t.to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-6 + 1e-5 * w.abs();
        assert!(ok, "element {i}: got {g}, want {w}\n got {got:?}");
    }
}

fn reduce(kind: ReduceKind, keepdims: bool) -> Op {
    Op::Reduce { kind, keepdims, noop_with_empty_axes: false }
}

#[test]
fn reduce_float_kinds_negative_axes_no_keepdims() {
    use ReduceKind::*;
    let cases: [(ReduceKind, [f64; 3]); 9] = [
        (Sum, [-1.828571081161499, 2.7428576946258545, 7.314286231994629]),
        (Mean, [-0.22857138514518738, 0.3428572118282318, 0.9142857789993286]),
        (Max, [0.8428571224212646, 1.414285659790039, 1.9857144355773926]),
        (Min, [-1.2999999523162842, -0.728571355342865, -0.1571427583694458]),
        (Prod, [0.18106767535209656, 0.11341014504432678, 0.0007588949520140886]),
        (L1, [6.857142448425293, 6.857142448425293, 7.657143592834473]),
        (L2, [2.549429416656494, 2.6499133110046387, 3.573371171951294]),
        (LogSumExp, [2.193176746368408, 2.7646055221557617, 3.336034059524536]),
        (SumSquare, [6.499590873718262, 7.022040367126465, 12.768980979919434]),
    ];
    for (kind, want) in cases {
        let y = run1(reduce(kind, false), vec![x234(), i64s(&[2], &[-1, 0])]);
        assert_eq!(y.dtype(), DType::F32);
        close(&y, &[3], &want);
    }
}

#[test]
fn reduce_log_sum_keepdims() {
    let x = x234();
    let abs = f32s(&[2, 3, 4], &x.as_slice::<f32>().unwrap().iter().map(|v| v.abs()).collect::<Vec<_>>());
    let y = run1(reduce(ReduceKind::LogSum, true), vec![abs, i64s(&[1], &[1])]);
    close(
        &y,
        &[2, 1, 4],
        &[
            0.7819426655769348,
            0.5636889934539795,
            0.46103498339653015,
            0.3666251599788666,
            1.084223747253418,
            1.2195649147033691,
            1.3387534618377686,
            1.4452369213104248,
        ],
    );
}

#[test]
fn reduce_empty_axes_all_or_noop() {
    // No axes: everything, to a scalar without keepdims.
    let y = run(reduce(ReduceKind::Sum, false), vec![Some(x234()), None], 1).remove(0);
    close(&y, &[], &[8.228572845458984]);
    let y = run1(reduce(ReduceKind::Max, true), vec![x234(), i64s(&[0], &[])]);
    close(&y, &[1, 1, 1], &[1.9857144355773926]);
    // noop_with_empty_axes: identity reduction, but SumSquare still squares.
    let op = Op::Reduce { kind: ReduceKind::SumSquare, keepdims: false, noop_with_empty_axes: true };
    let y = run1(op, vec![x234(), i64s(&[0], &[])]);
    let want: Vec<f64> = x234().to_f64_vec().iter().map(|v| v * v).collect();
    close(&y, &[2, 3, 4], &want);
}

#[test]
fn reduce_ints_exact() {
    use ReduceKind::*;
    let x = Tensor::new(vec![2, 3], vec![3i32, -7, 2, 5, 1, -4]).unwrap();
    let cases: [(ReduceKind, [i32; 2]); 8] = [
        (Sum, [-2, 2]),
        (Mean, [0, 0]),
        (Max, [3, 5]),
        (Min, [-7, -4]),
        (Prod, [-42, -20]),
        (L1, [12, 10]),
        (L2, [7, 6]),
        (SumSquare, [62, 42]),
    ];
    for (kind, want) in cases {
        let y = run1(reduce(kind, true), vec![x.clone(), i64s(&[1], &[1])]);
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(y.as_slice::<i32>().unwrap(), &want, "{kind}");
    }
    // u64 above i64::MAX keeps its order and wraps its sum like numpy.
    let u = Tensor::new(vec![3], vec![u64::MAX, 1, u64::MAX - 5]).unwrap();
    let y = run(reduce(Max, false), vec![Some(u.clone()), None], 1).remove(0);
    assert_eq!(y.as_slice::<u64>().unwrap(), &[u64::MAX]);
    let y = run(reduce(Sum, false), vec![Some(u), None], 1).remove(0);
    assert_eq!(y.as_slice::<u64>().unwrap(), &[u64::MAX - 5]);
    // Bool max/min are any/all.
    let b = Tensor::new(vec![2, 2], vec![true, false, false, false]).unwrap();
    let y = run1(reduce(Max, false), vec![b.clone(), i64s(&[1], &[1])]);
    assert_eq!(y.as_slice::<bool>().unwrap(), &[true, false]);
    let y = run1(reduce(Min, false), vec![b.clone(), i64s(&[1], &[0])]);
    assert_eq!(y.as_slice::<bool>().unwrap(), &[false, false]);
    assert!(eval_op(&reduce(Sum, false), &[Some(b), None], 1).is_err());
}

#[test]
fn reduce_empty_sets() {
    use ReduceKind::*;
    let e = Tensor::zeros(DType::F32, vec![2, 0, 3]).unwrap();
    let inf = f64::INFINITY;
    let cases = [(Sum, 0.0), (Max, -inf), (Min, inf), (Prod, 1.0), (LogSumExp, -inf), (LogSum, -inf), (L2, 0.0)];
    for (kind, v) in cases {
        let y = run1(reduce(kind, true), vec![e.clone(), i64s(&[1], &[1])]);
        close(&y, &[2, 1, 3], &[v; 6]);
    }
    let y = run1(reduce(Mean, false), vec![e.clone(), i64s(&[1], &[1])]);
    assert!(y.to_f64_vec().iter().all(|v| v.is_nan()));
    let ei = Tensor::zeros(DType::I32, vec![0, 2]).unwrap();
    let y = run1(reduce(Max, false), vec![ei.clone(), i64s(&[1], &[0])]);
    assert_eq!(y.as_slice::<i32>().unwrap(), &[i32::MIN, i32::MIN]);
    let y = run1(reduce(Min, false), vec![ei, i64s(&[1], &[0])]);
    assert_eq!(y.as_slice::<i32>().unwrap(), &[i32::MAX, i32::MAX]);
    // Reducing a non-empty axis of an empty tensor gives an empty result.
    let y = run1(reduce(Sum, false), vec![e, i64s(&[1], &[2])]);
    assert_eq!(y.shape(), &[2, 0]);
}

#[test]
fn reduce_rejects_bad_axes() {
    let op = reduce(ReduceKind::Sum, true);
    assert!(eval_op(&op, &[Some(x234()), Some(i64s(&[1], &[3]))], 1).is_err());
    assert!(eval_op(&op, &[Some(x234()), Some(i64s(&[2], &[1, -2]))], 1).is_err());
}

#[test]
fn reduce_infer_shapes() {
    let x = TensorType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Known(4)]);
    let axes_ty = TensorType::known(DType::I64, &[1]);
    let axes = i64s(&[1], &[-1]);
    let t = infer(&reduce(ReduceKind::Mean, true), &[Some(&x), Some(&axes_ty)], &[None, Some(&axes)], 1).unwrap();
    assert_eq!(t[0], TensorType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Known(1)]));
    let t = infer(&reduce(ReduceKind::Mean, false), &[Some(&x), Some(&axes_ty)], &[None, Some(&axes)], 1).unwrap();
    assert_eq!(t[0], TensorType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(3)]));
    // No axes: all, or none with noop.
    let t = infer(&reduce(ReduceKind::Sum, false), &[Some(&x), None], &[None, None], 1).unwrap();
    assert_eq!(t[0], TensorType::known(DType::F32, &[]));
    let noop = Op::Reduce { kind: ReduceKind::Sum, keepdims: false, noop_with_empty_axes: true };
    let t = infer(&noop, &[Some(&x), None], &[None, None], 1).unwrap();
    assert_eq!(t[0], x);
    // Run-time axes: rank kept with keepdims; from the axes length without.
    let t = infer(&reduce(ReduceKind::Sum, true), &[Some(&x), Some(&axes_ty)], &[None, None], 1).unwrap();
    assert_eq!(t[0].shape, Shape::of_rank(3));
    let t = infer(&reduce(ReduceKind::Sum, false), &[Some(&x), Some(&axes_ty)], &[None, None], 1).unwrap();
    assert_eq!(t[0].shape, Shape::of_rank(2));
    let unknown_len = TensorType::new(DType::I64, vec![Dim::Unknown]);
    let t = infer(&reduce(ReduceKind::Sum, false), &[Some(&x), Some(&unknown_len)], &[None, None], 1).unwrap();
    assert_eq!(t[0].shape, Shape::unknown_rank());
}

#[test]
fn arg_reduce_ties_and_keepdims() {
    let a = f32s(&[2, 4], &[1.0, 5.0, 5.0, 2.0, 7.0, 7.0, 0.0, 7.0]);
    let arg = |max, axis, keepdims, last| Op::ArgReduce { max, axis, keepdims, select_last_index: last };
    let y = run1(arg(true, 1, true, false), vec![a.clone()]);
    assert_eq!((y.shape(), y.as_slice::<i64>().unwrap()), (&[2usize, 1][..], &[1i64, 0][..]));
    let y = run1(arg(true, 1, true, true), vec![a.clone()]);
    assert_eq!(y.as_slice::<i64>().unwrap(), &[2, 3]);
    let y = run1(arg(false, 0, false, false), vec![a.clone()]);
    assert_eq!((y.shape(), y.as_slice::<i64>().unwrap()), (&[4usize][..], &[0i64, 0, 1, 0][..]));
    let y = run1(arg(false, -1, false, true), vec![a.clone()]);
    assert_eq!(y.as_slice::<i64>().unwrap(), &[0, 2]);
    let t = infer(&arg(true, -1, false, false), &[Some(&TensorType::known(DType::F32, &[2, 4]))], &[None], 1).unwrap();
    assert_eq!(t[0], TensorType::known(DType::I64, &[2]));
}

#[test]
fn softmax_family() {
    let y = run1(Op::Softmax { axis: 1 }, vec![x234()]);
    let col = [0.16930469870567322, 0.2998039424419403, 0.5308912992477417];
    let want: Vec<f64> = (0..24).map(|i| col[(i / 4) % 3]).collect();
    close(&y, &[2, 3, 4], &want);
    let y = run1(Op::LogSoftmax { axis: -1 }, vec![x234()]);
    let row = [-1.6132984161376953, -1.4704413414001465, -1.327584147453308, -1.1847269535064697];
    let want: Vec<f64> = (0..24).map(|i| row[i % 4]).collect();
    close(&y, &[2, 3, 4], &want);
    // Large magnitudes stay finite.
    let big = f32s(&[2, 3], &[1000.0, 1001.0, 1002.0, -1000.0, -1001.0, -1002.0]);
    let y = run1(Op::Softmax { axis: 1 }, vec![big]);
    let (a, b, c) = (0.09003057330846786, 0.2447284609079361, 0.6652409434318542);
    close(&y, &[2, 3], &[a, b, c, c, b, a]);
    let y = run1(Op::Hardmax { axis: 1 }, vec![f32s(&[2, 4], &[1.0, 5.0, 5.0, 2.0, 7.0, 7.0, 0.0, 7.0])]);
    close(&y, &[2, 4], &[0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn cumulative_ops() {
    let c = Tensor::new(vec![2, 3], vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let axis1 = Tensor::scalar(1i32);
    let y = run1(Op::CumSum { exclusive: false, reverse: false }, vec![c.clone(), axis1.clone()]);
    close(&y, &[2, 3], &[1.0, 3.0, 6.0, 4.0, 9.0, 15.0]);
    let y = run1(Op::CumSum { exclusive: true, reverse: true }, vec![c.clone(), Tensor::scalar(0i64)]);
    close(&y, &[2, 3], &[4.0, 5.0, 6.0, 0.0, 0.0, 0.0]);
    let v = Tensor::new(vec![4], vec![1i32, 2, 3, 4]).unwrap();
    let y = run1(Op::CumSum { exclusive: false, reverse: true }, vec![v.clone(), Tensor::scalar(0i32)]);
    assert_eq!(y.as_slice::<i32>().unwrap(), &[10, 9, 7, 4]);
    // The spec's CumProd examples.
    let y = run1(Op::CumProd { exclusive: true, reverse: false }, vec![v.clone(), Tensor::scalar(-1i64)]);
    assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 1, 2, 6]);
    let y = run1(Op::CumProd { exclusive: true, reverse: true }, vec![v, Tensor::scalar(0i64)]);
    assert_eq!(y.as_slice::<i32>().unwrap(), &[24, 12, 4, 1]);
}

#[test]
fn topk_ties_lower_index_first() {
    let t = f32s(&[2, 5], &[3.0, 1.0, 3.0, 2.0, 3.0, 0.0, 5.0, 5.0, -1.0, 2.0]);
    let topk = |axis, largest| Op::TopK { axis, largest, sorted: true };
    let out = run(topk(1, true), vec![Some(t.clone()), Some(i64s(&[1], &[3]))], 2);
    close(&out[0], &[2, 3], &[3.0, 3.0, 3.0, 5.0, 5.0, 2.0]);
    assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 2, 4, 1, 2, 4]);
    let out = run(topk(-1, false), vec![Some(t.clone()), Some(i64s(&[1], &[3]))], 2);
    close(&out[0], &[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.0, 2.0]);
    assert_eq!(out[1].as_slice::<i64>().unwrap(), &[1, 3, 0, 3, 0, 4]);
    let out = run(topk(0, true), vec![Some(t.clone()), Some(i64s(&[1], &[1]))], 2);
    close(&out[0], &[1, 5], &[3.0, 5.0, 5.0, 2.0, 3.0]);
    assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 1, 1, 0, 0]);
    assert!(eval_op(&topk(1, true), &[Some(t.clone()), Some(i64s(&[1], &[6]))], 2).is_err());
    let x = TensorType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(5)]);
    let k = i64s(&[1], &[2]);
    let ty = infer(&topk(-1, true), &[Some(&x), Some(&TensorType::known(DType::I64, &[1]))], &[None, Some(&k)], 2).unwrap();
    assert_eq!(ty[1], TensorType::new(DType::I64, vec![Dim::Sym("N".into()), Dim::Known(2)]));
}

#[test]
fn lp_normalization() {
    let a = f32s(&[2, 4], &[1.0, 5.0, 5.0, 2.0, 7.0, 7.0, 0.0, 7.0]);
    let y = run1(Op::LpNormalization { axis: 1, p: 2 }, vec![a]);
    let (u, v) = (0.1348399817943573, 0.5773502588272095);
    close(&y, &[2, 4], &[u, 5.0 * u, 5.0 * u, 2.0 * u, v, v, 0.0, v]);
    // p = 1 divides by the sum of absolute values (the spec's L1 norm); a zero norm gives 0.
    let b = f32s(&[2, 2], &[1.0, 0.0, -3.0, 0.0]);
    let y = run1(Op::LpNormalization { axis: 0, p: 1 }, vec![b]);
    close(&y, &[2, 2], &[0.25, 0.0, -0.75, 0.0]);
}

fn scale3() -> Tensor {
    f32s(&[3], &[0.5, 1.5, -1.0])
}
fn bias3() -> Tensor {
    f32s(&[3], &[0.1, 0.2, 0.3])
}

#[test]
fn batch_and_instance_norm() {
    let mean = f32s(&[3], &[0.0, 0.5, -0.5]);
    let var = f32s(&[3], &[1.0, 2.0, 0.5]);
    let y = run1(Op::BatchNorm { epsilon: 1e-3 }, vec![x234(), scale3(), bias3(), mean, var]);
    #[rustfmt::skip]
    close(&y, &[2, 3, 4], &[
        -0.5496752262115479, -0.4782823622226715, -0.4068894684314728, -0.33549657464027405,
        -1.1027711629867554, -0.9512861371040344, -0.7998011112213135, -0.6483160853385925,
        -0.18438923358917236, -0.3862178921699524, -0.5880467891693115, -0.7898754477500916,
        0.30703940987586975, 0.3784322440624237, 0.4498251676559448, 0.5212180018424988,
        0.7150492072105408, 0.8665341734886169, 1.018019199371338, 1.169504165649414,
        -2.606334686279297, -2.8081634044647217, -3.0099921226501465, -3.2118213176727295,
    ]);
    let y = run1(Op::InstanceNorm { epsilon: 1e-3 }, vec![x234(), scale3(), bias3()]);
    #[rustfmt::skip]
    let row = [
        -0.5580466389656067, -0.11934877187013626, 0.3193487823009491, 0.7580466866493225,
        -1.7741402387619019, -0.45804697275161743, 0.8580463528633118, 2.1741397380828857,
        1.6160931587219238, 0.7386980056762695, -0.13869798183441162, -1.0160932540893555,
    ];
    let want: Vec<f64> = row.iter().chain(row.iter()).copied().collect();
    close(&y, &[2, 3, 4], &want);
}

#[test]
fn layer_norm_with_extra_outputs() {
    let s4 = f32s(&[4], &[0.5, -1.0, 2.0, 1.0]);
    let b4 = f32s(&[4], &[0.0, 1.0, 0.0, -1.0]);
    let op = Op::LayerNorm { axis: -1, epsilon: 1e-5, stash_type: DType::F32 };
    let out = run(op, vec![Some(x234()), Some(s4), Some(b4)], 3);
    let row = [-0.6706889867782593, 1.4471256732940674, 0.8942514657974243, 0.34137797355651855];
    let want: Vec<f64> = (0..24).map(|i| row[i % 4]).collect();
    close(&out[0], &[2, 3, 4], &want);
    #[rustfmt::skip]
    close(&out[1], &[2, 3, 1], &[
        -1.0857142210006714, -0.5142856240272522, 0.05714291334152222,
        0.6285714507102966, 1.2000000476837158, 1.7714287042617798,
    ]);
    close(&out[2], &[2, 3, 1], &[6.259764; 6]);
    assert_eq!(out[1].dtype(), DType::F32);

    // Normalizing over the last two axes, with a [3, 4] scale and no bias.
    let s34: Vec<f32> = (0..12).map(|i| 0.5 + 1.5 * i as f32 / 11.0).collect();
    let op = Op::LayerNorm { axis: 1, epsilon: 1e-5, stash_type: DType::F32 };
    let out = run(op.clone(), vec![Some(x234()), Some(f32s(&[3, 4], &s34)), None], 3);
    #[rustfmt::skip]
    let half = [
        -0.7966111302375793, -0.8295289278030396, -0.7834440469741821, -0.6583563685417175,
        -0.45426586270332336, -0.17117269337177277, 0.19092324376106262, 0.6320219039916992,
        1.1521235704421997, 1.7512274980545044, 2.429334878921509, 3.186444044113159,
    ];
    let want: Vec<f64> = half.iter().chain(half.iter()).copied().collect();
    close(&out[0], &[2, 3, 4], &want);
    close(&out[1], &[2, 1, 1], &[-0.5142856240272522, 1.2000001668930054]);
    close(&out[2], &[2, 1, 1], &[2.0277373790740967, 2.0277373790740967]);

    // Statistics outputs take the stash type and keep symbolic leading dims.
    let x = TensorType::new(DType::F16, vec![Dim::Sym("B".into()), Dim::Known(3), Dim::Known(4)]);
    let s = TensorType::known(DType::F16, &[3, 4]);
    let ty = infer(&op, &[Some(&x), Some(&s), None], &[], 3).unwrap();
    assert_eq!(ty[0], x);
    assert_eq!(ty[2], TensorType::new(DType::F32, vec![Dim::Sym("B".into()), Dim::Known(1), Dim::Known(1)]));
}

#[test]
fn rms_and_group_norm() {
    let s4 = f32s(&[4], &[0.5, -1.0, 2.0, 1.0]);
    let y = run1(Op::RmsNorm { axis: -1, epsilon: 1e-5, stash_type: DType::F32 }, vec![x234(), s4]);
    #[rustfmt::skip]
    close(&y, &[2, 3, 4], &[
        -0.592306911945343, 1.054436445236206, -1.8485182523727417, -0.7940817475318909,
        -0.6764499545097351, 1.0876253843307495, -1.6447017192840576, -0.5570763945579529,
        -0.463102787733078, 0.08420038223266602, 1.5156110525131226, 1.5998107194900513,
        0.3193918764591217, -0.8590538501739502, 2.1586482524871826, 1.2995942831039429,
        0.40712258219718933, -0.9322516322135925, 2.1005163192749023, 1.168264627456665,
        0.4377397298812866, -0.9557986259460449, 2.072235584259033, 1.1164370775222778,
    ]);
    // x = arange(24) ** 1.3 / 10, shape [2, 4, 3], two groups of two channels.
    let x: Vec<f32> = (0..24).map(|i| (i as f32).powf(1.3) / 10.0).collect();
    let op = Op::GroupNorm { epsilon: 1e-5, num_groups: 2, stash_type: DType::F32 };
    let y = run1(op, vec![f32s(&[2, 4, 3], &x), f32s(&[4], &[1.0, 2.0, 0.5, -1.0]), f32s(&[4], &[0.0, 0.1, 0.2, 0.3])]);
    #[rustfmt::skip]
    close(&y, &[2, 4, 3], &[
        -1.288786768913269, -0.9340684413909912, -0.4153677523136139, 0.4816058278083801,
        1.8236467838287354, 3.2711923122406006, -0.5137798190116882, -0.24312953650951385,
        0.039407506585121155, 0.03446987271308899, -0.5721673965454102, -1.1973068714141846,
        -1.4430819749832153, -0.8826743364334106, -0.30917277932167053, 0.6535196304321289,
        1.8490731716156006, 3.067267417907715, -0.5246427059173584, -0.240659698843956,
        0.04784473776817322, 0.018578141927719116, -0.575585126876831, -1.1779084205627441,
    ]);
}

/// ((arange(20) * 0.37) % 1.9 - 0.6).reshape(2, 5, 2, 1), computed in f32 as numpy does.
fn x5() -> Tensor {
    let v: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37) % 1.9 - 0.6).collect();
    f32s(&[2, 5, 2, 1], &v)
}

#[test]
fn lrn_across_channels() {
    // Expected from numpy with the spec's window (onnx.reference's LRN loops over the
    // batch instead of the channels, so it is not the oracle here).
    let y = run1(Op::Lrn { alpha: 0.01, beta: 0.75, bias: 1.0, size: 3 }, vec![x5()]);
    #[rustfmt::skip]
    close(&y, &[2, 5, 2, 1], &[
        -0.5994312763214111, -0.22982020676136017, 0.13959744572639465, 0.507621705532074,
        0.8780856132507324, 1.244309425354004, -0.279257208108902, 0.08949509263038635,
        0.45966681838035583, 0.8285565972328186, 1.1956933736801147, -0.3297714591026306,
        0.03979630023241043, 0.4083680808544159, 0.7785325050354004, 1.1457329988479614,
        -0.3791637420654297, -0.009953852742910385, 0.35975348949432373, 0.7290290594100952,
    ]);
    let y = run1(Op::Lrn { alpha: 0.02, beta: 0.5, bias: 2.0, size: 4 }, vec![x5()]);
    #[rustfmt::skip]
    close(&y, &[2, 5, 2, 1], &[
        -0.42365339398384094, -0.16225463151931763, 0.0988427922129631, 0.35977834463119507,
        0.6214125156402588, 0.8811127543449402, -0.19772697985172272, 0.06346073001623154,
        0.3251512944698334, 0.5863879323005676, 0.8463621139526367, -0.23287995159626007,
        0.02820706181228161, 0.28933581709861755, 0.5509350895881653, 0.811123788356781,
        -0.26840460300445557, -0.007054717279970646, 0.25447121262550354, 0.5158445835113525,
    ]);
}

#[test]
fn mean_variance_normalization() {
    let y = run1(Op::MeanVarianceNormalization { axes: vec![0, 2, 3] }, vec![x5()]);
    #[rustfmt::skip]
    close(&y, &[2, 5, 2, 1], &[
        -0.8711176514625549, -0.3427348732948303, -0.7044546604156494, 1.2262725830078125,
        -0.7044533491134644, 1.2262691259384155, -0.7044546008110046, 1.2262728214263916,
        -0.7044541835784912, 1.226271629333496, 1.699393391609192, -0.4855407178401947,
        -1.2262723445892334, 0.7044543027877808, -1.2262685298919678, 0.7044533491134644,
        -1.2262722253799438, 0.7044540047645569, -1.2262729406356812, 0.7044554352760315,
    ]);
    let y = run1(Op::MeanVarianceNormalization { axes: vec![1] }, vec![x5()]);
    #[rustfmt::skip]
    close(&y, &[2, 5, 2, 1], &[
        -1.3744863271713257, -1.3744866847991943, 0.038180138915777206, 0.0381801463663578,
        1.450846552848816, 1.4508469104766846, -0.7636034488677979, -0.7636033892631531,
        0.649062991142273, 0.6490629315376282, 1.4490469694137573, -1.3744860887527466,
        -0.6520712375640869, 0.038179852068424225, 0.6882978081703186, 1.450846791267395,
        -1.4128209352493286, -0.763603687286377, -0.07245271652936935, 0.6490631699562073,
    ]);
}

/// ((arange(12) * 0.7) % 2 - 1.5).reshape(2, 3, 2)
fn scores() -> Tensor {
    let v: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7) % 2.0 - 1.5).collect();
    f32s(&[2, 3, 2], &v)
}

#[test]
fn nll_loss_weights_and_ignore_index() {
    let tgt = i64s(&[2, 2], &[2, 1, -1, 0]);
    let w = f32s(&[3], &[0.2, 0.5, 0.3]);
    let nll = |reduction, ignore_index| Op::NegativeLogLikelihoodLoss { reduction, ignore_index };
    let ins = || vec![Some(scores()), Some(tgt.clone()), Some(w.clone())];
    let y = run(nll(LossReduction::None, Some(-1)), ins(), 1).remove(0);
    close(&y, &[2, 2], &[0.21000002324581146, 0.7000000476837158, 0.0, 0.11999998241662979]);
    let y = run(nll(LossReduction::Sum, Some(-1)), ins(), 1).remove(0);
    close(&y, &[], &[1.03000009059906]);
    let y = run(nll(LossReduction::Mean, Some(-1)), ins(), 1).remove(0);
    close(&y, &[], &[1.03000009059906]);
    // Without weights, mean divides by the number of elements not ignored.
    let y = run(nll(LossReduction::Mean, Some(0)), vec![Some(scores()), Some(i64s(&[2, 2], &[2, 1, 0, 0])), None], 1).remove(0);
    close(&y, &[], &[1.0500000715255737]);
    // Plain [N, C] input.
    let nc = f32s(&[2, 3], &[-1.5, -0.1, -0.7, -1.3, 0.1, -0.5]);
    let y = run(nll(LossReduction::Mean, None), vec![Some(nc), Some(i64s(&[2], &[2, 1])), None], 1).remove(0);
    close(&y, &[], &[0.30000007152557373]);
    // A target out of range that is not ignored is an error, not a panic.
    assert!(eval_op(&nll(LossReduction::Sum, None), &[Some(scores()), Some(i64s(&[2, 2], &[2, 1, -1, 0])), None], 1).is_err());
}

#[test]
fn softmax_cross_entropy_loss() {
    let tgt = i64s(&[2, 2], &[2, 1, -1, 0]);
    let w = f32s(&[3], &[0.2, 0.5, 0.3]);
    let sce = |reduction| Op::SoftmaxCrossEntropyLoss { reduction, ignore_index: Some(-1) };
    let out = run(sce(LossReduction::None), vec![Some(scores()), Some(tgt.clone()), Some(w.clone())], 2);
    close(&out[0], &[2, 2], &[0.3555698096752167, 0.9641144871711731, 0.0, 0.26564571261405945]);
    #[rustfmt::skip]
    close(&out[1], &[2, 3, 2], &[
        -1.9852325916290283, -1.3282289505004883, -0.5852325558662415, -1.9282289743423462,
        -1.1852326393127441, -0.5282288789749146, -1.9852327108383179, -1.3282285928726196,
        -0.585232675075531, -1.9282289743423462, -1.1852325201034546, -0.5282288789749146,
    ]);
    let out = run(sce(LossReduction::Mean), vec![Some(scores()), Some(tgt), Some(w)], 1);
    close(&out[0], &[], &[1.5853300094604492]);
    let op = Op::SoftmaxCrossEntropyLoss { reduction: LossReduction::Sum, ignore_index: None };
    let out = run(op, vec![Some(scores()), Some(i64s(&[2, 2], &[2, 1, 1, 0])), None], 1);
    close(&out[0], &[], &[5.026922702789307]);
}

#[test]
fn nan_is_an_extreme_like_numpy() {
    let x = f32s(&[4], &[1.0, f32::NAN, 3.0, f32::NAN]);
    let arg = |max| Op::ArgReduce { max, axis: 0, keepdims: false, select_last_index: false };
    assert_eq!(run1(arg(true), vec![x.clone()]).as_slice::<i64>().unwrap(), &[1]);
    assert_eq!(run1(arg(false), vec![x.clone()]).as_slice::<i64>().unwrap(), &[1]);
    let out = run(Op::TopK { axis: 0, largest: true, sorted: true }, vec![Some(x.clone()), Some(i64s(&[1], &[2]))], 2);
    assert_eq!(out[1].as_slice::<i64>().unwrap(), &[1, 3]);
    let out = run(Op::TopK { axis: 0, largest: false, sorted: true }, vec![Some(x.clone()), Some(i64s(&[1], &[3]))], 2);
    assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 2, 1]);
    let y = run(reduce(ReduceKind::Max, true), vec![Some(x), None], 1).remove(0);
    assert!(y.to_f64_vec()[0].is_nan());
}

#[test]
fn reduce_infer_dynamic_axes_keeps_unit_dims() {
    let x = TensorType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(1), Dim::Known(4)]);
    let axes_ty = TensorType::new(DType::I64, vec![Dim::Unknown]);
    let t = infer(&reduce(ReduceKind::Sum, true), &[Some(&x), Some(&axes_ty)], &[None, None], 1).unwrap();
    assert_eq!(t[0].shape, Shape(Some(vec![Dim::Unknown, Dim::Known(1), Dim::Unknown])));
    // Unknown rank, all axes, no keepdims: still a scalar.
    let x = TensorType::unknown_shape(DType::I32);
    let t = infer(&reduce(ReduceKind::Sum, false), &[Some(&x), None], &[None, None], 1).unwrap();
    assert_eq!(t[0], TensorType::known(DType::I32, &[]));
}
