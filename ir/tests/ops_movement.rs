//! Movement ops: values checked against numpy / onnx.reference (expected arrays computed
//! with /tmp/ov/bin/python and pasted in), shape inference including symbolic dims, and
//! errors on bad indices and unbounded sizes.

use kiln_ir::eval::eval_op;
use kiln_ir::infer::infer;
use kiln_ir::*;

fn t<T: Storable>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::new(shape.to_vec(), v).unwrap()
}
fn i64s(v: &[i64]) -> Tensor {
    t(&[v.len()], v.to_vec())
}
fn arange(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    t(shape, (0..n).map(|i| i as f32).collect::<Vec<f32>>())
}
fn run(op: Op, ins: Vec<Option<Tensor>>, n: usize) -> Vec<Tensor> {
    eval_op(&op, &ins, n).unwrap()
}
fn run1(op: Op, ins: Vec<Tensor>) -> Tensor {
    run(op, ins.into_iter().map(Some).collect(), 1).remove(0)
}
fn err(op: Op, ins: Vec<Option<Tensor>>, n: usize) -> String {
    eval_op(&op, &ins, n).unwrap_err().message
}
fn check<T: Storable>(x: &Tensor, shape: &[usize], v: &[T]) {
    assert_eq!(x.shape(), shape);
    assert_eq!(x.as_slice::<T>().unwrap(), v);
}
fn check_f32(x: &Tensor, shape: &[usize], v: &[f32]) {
    assert_eq!(x.shape(), shape);
    let got = x.as_slice::<f32>().unwrap();
    assert_eq!(got.len(), v.len());
    for (a, b) in got.iter().zip(v) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{got:?} vs {v:?}");
    }
}
fn sym(s: &str) -> Dim {
    Dim::Sym(s.into())
}
fn k(n: usize) -> Dim {
    Dim::Known(n)
}
fn ty(dtype: DType, dims: Vec<Dim>) -> TensorType {
    TensorType::new(dtype, dims)
}
fn infer1(op: Op, types: &[Option<&TensorType>], consts: &[Option<&Tensor>]) -> TensorType {
    infer(&op, types, consts, 1).unwrap().remove(0)
}
fn const_ty(x: &Tensor) -> TensorType {
    TensorType::known(x.dtype(), x.shape())
}

// ── Reshape family ──────────────────────────────────────────────────────────────────────

#[test]
fn reshape_zero_and_minus_one() {
    let x = arange(&[2, 3, 4]);
    let y = run1(
        Op::Reshape { allowzero: false },
        vec![x.clone(), i64s(&[0, -1])],
    );
    assert_eq!(y.shape(), [2, 12]);
    assert_eq!(y.as_slice::<f32>().unwrap(), x.as_slice::<f32>().unwrap());
    let y = run1(
        Op::Reshape { allowzero: false },
        vec![x.clone(), i64s(&[-1, 0, 2])],
    );
    assert_eq!(y.shape(), [4, 3, 2]);
    // allowzero: 0 is a real zero-size dim.
    let e = t(&[0, 3], Vec::<f32>::new());
    let y = run1(Op::Reshape { allowzero: true }, vec![e, i64s(&[3, 0])]);
    assert_eq!(y.shape(), [3, 0]);
    assert!(err(
        Op::Reshape { allowzero: false },
        vec![Some(x.clone()), Some(i64s(&[5, -1]))],
        1
    )
    .contains("divide"));
    assert!(err(
        Op::Reshape { allowzero: false },
        vec![Some(x.clone()), Some(i64s(&[-1, -1]))],
        1
    )
    .contains("more than one"));
    assert!(err(
        Op::Reshape { allowzero: false },
        vec![Some(x), Some(i64s(&[-2, 12]))],
        1
    )
    .contains("invalid"));
}

#[test]
fn reshape_infer_keeps_symbols() {
    let x = ty(DType::F32, vec![sym("N"), k(3), k(4), k(4)]);
    let s = i64s(&[0, -1]);
    let st = const_ty(&s);
    let out = infer1(
        Op::Reshape { allowzero: false },
        &[Some(&x), Some(&st)],
        &[None, Some(&s)],
    );
    assert_eq!(out, ty(DType::F32, vec![sym("N"), k(48)]));
    // [N,3,4,4] → [-1, 16]: the -1 is N·3, unknown.
    let s = i64s(&[-1, 16]);
    let out = infer1(
        Op::Reshape { allowzero: false },
        &[Some(&x), Some(&st)],
        &[None, Some(&s)],
    );
    assert_eq!(out, ty(DType::F32, vec![Dim::Unknown, k(16)]));
    // [N,48] → [-1, 3, 16]: -1 is N.
    let x2 = ty(DType::F32, vec![sym("N"), k(48)]);
    let s = i64s(&[-1, 3, 16]);
    let out = infer1(
        Op::Reshape { allowzero: false },
        &[Some(&x2), Some(&const_ty(&s))],
        &[None, Some(&s)],
    );
    assert_eq!(out, ty(DType::F32, vec![sym("N"), k(3), k(16)]));
    // A run-time shape of known length 3 gives rank 3.
    let st = TensorType::known(DType::I64, &[3]);
    let out = infer1(
        Op::Reshape { allowzero: false },
        &[Some(&x), Some(&st)],
        &[None, None],
    );
    assert_eq!(out.shape, Shape::of_rank(3));
}

#[test]
fn flatten_squeeze_unsqueeze() {
    let x = arange(&[2, 3, 4, 5]);
    assert_eq!(
        run1(Op::Flatten { axis: -1 }, vec![x.clone()]).shape(),
        [24, 5]
    );
    assert_eq!(
        run1(Op::Flatten { axis: 0 }, vec![x.clone()]).shape(),
        [1, 120]
    );
    let x = arange(&[1, 3, 1, 2]);
    assert_eq!(
        run1(Op::Squeeze, vec![x.clone(), i64s(&[-2])]).shape(),
        [1, 3, 2]
    );
    assert_eq!(
        run(Op::Squeeze, vec![Some(x.clone()), None], 1)[0].shape(),
        [3, 2]
    );
    assert!(err(Op::Squeeze, vec![Some(x), Some(i64s(&[1]))], 1).contains("cannot squeeze"));
    let x = arange(&[3, 2]);
    assert_eq!(
        run1(Op::Unsqueeze, vec![x.clone(), i64s(&[-1, 0])]).shape(),
        [1, 3, 2, 1]
    );
    assert!(err(Op::Unsqueeze, vec![Some(x), Some(i64s(&[0, 0]))], 1).contains("repeated"));

    let xt = ty(DType::F32, vec![sym("N"), k(3), k(4)]);
    assert_eq!(
        infer1(Op::Flatten { axis: 1 }, &[Some(&xt)], &[]),
        ty(DType::F32, vec![sym("N"), k(12)])
    );
    let a = i64s(&[1]);
    assert_eq!(
        infer1(
            Op::Unsqueeze,
            &[Some(&xt), Some(&const_ty(&a))],
            &[None, Some(&a)]
        ),
        ty(DType::F32, vec![sym("N"), k(1), k(3), k(4)])
    );
}

#[test]
fn shape_and_size() {
    let x = arange(&[2, 3, 4, 5]);
    check(
        &run1(
            Op::Shape {
                start: -3,
                end: Some(-1),
            },
            vec![x.clone()],
        ),
        &[2],
        &[3i64, 4],
    );
    check(
        &run1(
            Op::Shape {
                start: 0,
                end: None,
            },
            vec![x.clone()],
        ),
        &[4],
        &[2i64, 3, 4, 5],
    );
    check(
        &run1(
            Op::Shape {
                start: 10,
                end: None,
            },
            vec![x.clone()],
        ),
        &[0],
        &[] as &[i64],
    );
    check(&run1(Op::Size, vec![x]), &[], &[120i64]);
    let xt = ty(DType::F32, vec![sym("N"), k(3)]);
    assert_eq!(
        infer1(
            Op::Shape {
                start: 0,
                end: None
            },
            &[Some(&xt)],
            &[]
        ),
        TensorType::known(DType::I64, &[2])
    );
    assert_eq!(
        infer1(Op::Size, &[Some(&xt)], &[]),
        TensorType::known(DType::I64, &[])
    );
}

// ── Transpose family ────────────────────────────────────────────────────────────────────

#[test]
fn transpose_perm_and_default() {
    let x = arange(&[2, 3]);
    check_f32(
        &run1(Op::Transpose { perm: None }, vec![x.clone()]),
        &[3, 2],
        &[0., 3., 1., 4., 2., 5.],
    );
    let x = arange(&[2, 3, 4]);
    let y = run1(
        Op::Transpose {
            perm: Some(vec![1, 2, 0]),
        },
        vec![x.clone()],
    );
    assert_eq!(y.shape(), [3, 4, 2]);
    // y[i,j,l] = x[l,i,j]
    let xv = x.as_slice::<f32>().unwrap();
    let yv = y.as_slice::<f32>().unwrap();
    for i in 0..3 {
        for j in 0..4 {
            for l in 0..2 {
                assert_eq!(yv[(i * 4 + j) * 2 + l], xv[(l * 3 + i) * 4 + j]);
            }
        }
    }
    assert!(eval_op(
        &Op::Transpose {
            perm: Some(vec![0, 0, 1])
        },
        &[Some(x)],
        1
    )
    .is_err());
    let xt = ty(DType::F16, vec![sym("N"), k(3), sym("S")]);
    assert_eq!(
        infer1(
            Op::Transpose {
                perm: Some(vec![2, 0, 1])
            },
            &[Some(&xt)],
            &[]
        ),
        ty(DType::F16, vec![sym("S"), sym("N"), k(3)])
    );
}

#[test]
fn depth_to_space_and_back() {
    let x = arange(&[1, 8, 1, 3]);
    let dcr = run1(
        Op::DepthToSpace {
            blocksize: 2,
            mode: DepthToSpaceMode::Dcr,
        },
        vec![x.clone()],
    );
    check_f32(
        &dcr,
        &[1, 2, 2, 6],
        &[
            0., 6., 1., 7., 2., 8., 12., 18., 13., 19., 14., 20., 3., 9., 4., 10., 5., 11., 15.,
            21., 16., 22., 17., 23.,
        ],
    );
    let crd = run1(
        Op::DepthToSpace {
            blocksize: 2,
            mode: DepthToSpaceMode::Crd,
        },
        vec![x.clone()],
    );
    check_f32(
        &crd,
        &[1, 2, 2, 6],
        &[
            0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11., 12., 15., 13., 16., 14., 17., 18.,
            21., 19., 22., 20., 23.,
        ],
    );
    let s = run1(
        Op::SpaceToDepth {
            blocksize: 2,
            mode: DepthToSpaceMode::Dcr,
        },
        vec![arange(&[1, 2, 4, 4])],
    );
    check_f32(
        &s,
        &[1, 8, 2, 2],
        &[
            0., 2., 8., 10., 16., 18., 24., 26., 1., 3., 9., 11., 17., 19., 25., 27., 4., 6., 12.,
            14., 20., 22., 28., 30., 5., 7., 13., 15., 21., 23., 29., 31.,
        ],
    );
    // SpaceToDepth inverts DCR DepthToSpace.
    let back = run1(
        Op::SpaceToDepth {
            blocksize: 2,
            mode: DepthToSpaceMode::Dcr,
        },
        vec![dcr],
    );
    assert_eq!(back, x);
    let back = run1(
        Op::SpaceToDepth {
            blocksize: 2,
            mode: DepthToSpaceMode::Crd,
        },
        vec![crd],
    );
    assert_eq!(back, x);
}

// ── Concat / Split ──────────────────────────────────────────────────────────────────────

#[test]
fn concat_negative_axis() {
    let a = t(&[2, 1], vec![1i32, 2]);
    let b = t(&[2, 2], vec![3i32, 4, 5, 6]);
    check(
        &run1(Op::Concat { axis: -1 }, vec![a.clone(), b.clone()]),
        &[2, 3],
        &[1i32, 3, 4, 2, 5, 6],
    );
    let e = t(&[2, 0], Vec::<i32>::new());
    check(
        &run1(Op::Concat { axis: 1 }, vec![e, a.clone()]),
        &[2, 1],
        &[1i32, 2],
    );
    assert!(
        err(Op::Concat { axis: 0 }, vec![Some(a.clone()), Some(b)], 1).contains("does not match")
    );
    let at = ty(DType::F32, vec![sym("N"), k(2)]);
    let bt = ty(DType::F32, vec![sym("N"), k(5)]);
    assert_eq!(
        infer1(Op::Concat { axis: 1 }, &[Some(&at), Some(&bt)], &[]),
        ty(DType::F32, vec![sym("N"), k(7)])
    );
    assert_eq!(
        infer1(Op::Concat { axis: 0 }, &[Some(&at), Some(&at)], &[]),
        ty(DType::F32, vec![Dim::Unknown, k(2)])
    );
}

#[test]
fn split_uneven_and_explicit() {
    let x = arange(&[7]);
    let outs = run(Op::Split { axis: 0 }, vec![Some(x.clone()), None], 4);
    check_f32(&outs[0], &[2], &[0., 1.]);
    check_f32(&outs[1], &[2], &[2., 3.]);
    check_f32(&outs[2], &[2], &[4., 5.]);
    check_f32(&outs[3], &[1], &[6.]);
    let x = arange(&[2, 6]);
    let outs = run(
        Op::Split { axis: -1 },
        vec![Some(x.clone()), Some(i64s(&[2, 4]))],
        2,
    );
    check_f32(&outs[0], &[2, 2], &[0., 1., 6., 7.]);
    check_f32(&outs[1], &[2, 4], &[2., 3., 4., 5., 8., 9., 10., 11.]);
    let outs = run(
        Op::Split { axis: 1 },
        vec![Some(x.clone()), Some(i64s(&[0, 6]))],
        2,
    );
    assert_eq!(outs[0].shape(), [2, 0]);
    assert!(err(
        Op::Split { axis: 1 },
        vec![Some(x.clone()), Some(i64s(&[2, 3]))],
        2
    )
    .contains("add up"));
    assert!(err(
        Op::Split { axis: 1 },
        vec![Some(x), Some(i64s(&[-1, 7]))],
        2
    )
    .contains("negative"));
    let xt = ty(DType::F32, vec![sym("N"), k(7)]);
    let types = infer(&Op::Split { axis: 1 }, &[Some(&xt), None], &[None, None], 3).unwrap();
    assert_eq!(types[2], ty(DType::F32, vec![sym("N"), k(1)]));
    assert_eq!(types[0], ty(DType::F32, vec![sym("N"), k(3)]));
}

// ── Slice ───────────────────────────────────────────────────────────────────────────────

#[test]
fn slice_negative_steps_and_clamping() {
    let x = t(&[4, 5], (0..20).collect::<Vec<i64>>());
    // numpy x[3:-100:-1, 10:-10:-2]
    let y = run1(
        Op::Slice,
        vec![
            x.clone(),
            i64s(&[3, 10]),
            i64s(&[-100, -10]),
            i64s(&[0, 1]),
            i64s(&[-1, -2]),
        ],
    );
    check(&y, &[4, 3], &[19i64, 17, 15, 14, 12, 10, 9, 7, 5, 4, 2, 0]);
    // numpy x[-3:100, ::-2] with axes given negatively and the end as INT64_MIN.
    let y = run1(
        Op::Slice,
        vec![
            x.clone(),
            i64s(&[-3, -1]),
            i64s(&[100, i64::MIN]),
            i64s(&[0, -1]),
            i64s(&[1, -2]),
        ],
    );
    check(&y, &[3, 3], &[9i64, 7, 5, 14, 12, 10, 19, 17, 15]);
    // numpy arange(10)[8:1:-3]
    let y = run1(
        Op::Slice,
        vec![
            t(&[10], (0..10).collect::<Vec<i64>>()),
            i64s(&[8]),
            i64s(&[1]),
            i64s(&[0]),
            i64s(&[-3]),
        ],
    );
    check(&y, &[3], &[8i64, 5, 2]);
    // Default axes and steps; empty result from a start past the end.
    let y = run(
        Op::Slice,
        vec![
            Some(x.clone()),
            Some(i64s(&[1, 7])),
            Some(i64s(&[3, 9])),
            None,
            None,
        ],
        1,
    );
    assert_eq!(y[0].shape(), [2, 0]);
    assert!(err(
        Op::Slice,
        vec![
            Some(x),
            Some(i64s(&[0])),
            Some(i64s(&[1])),
            None,
            Some(i64s(&[0]))
        ],
        1
    )
    .contains("0"));
}

#[test]
fn slice_infer() {
    let xt = ty(DType::F32, vec![sym("N"), k(10), k(8)]);
    let (s, e, a) = (i64s(&[0, 2]), i64s(&[i64::MAX, -1]), i64s(&[0, 1]));
    let types = [
        Some(&xt),
        Some(&const_ty(&s)),
        Some(&const_ty(&e)),
        Some(&const_ty(&a)),
        None,
    ];
    let out = infer(
        &Op::Slice,
        &types,
        &[None, Some(&s), Some(&e), Some(&a), None],
        1,
    )
    .unwrap();
    assert_eq!(out[0], ty(DType::F32, vec![sym("N"), k(7), k(8)]));
    // Run-time starts but constant axes: unsliced dims stay.
    let a = i64s(&[1]);
    let st = TensorType::known(DType::I64, &[1]);
    let types = [Some(&xt), Some(&st), Some(&st), Some(&const_ty(&a)), None];
    let out = infer(&Op::Slice, &types, &[None, None, None, Some(&a), None], 1).unwrap();
    assert_eq!(out[0], ty(DType::F32, vec![sym("N"), Dim::Unknown, k(8)]));
}

// ── Gather / Scatter ────────────────────────────────────────────────────────────────────

#[test]
fn gather_negative_and_out_of_range() {
    let x = arange(&[3, 4]);
    let ind = t(&[2, 2], vec![0i64, -1, 1, 2]);
    let y = run1(Op::Gather { axis: 1 }, vec![x.clone(), ind]);
    check_f32(
        &y,
        &[3, 2, 2],
        &[0., 3., 1., 2., 4., 7., 5., 6., 8., 11., 9., 10.],
    );
    let y = run1(Op::Gather { axis: 0 }, vec![x.clone(), t(&[], vec![-1i32])]);
    check_f32(&y, &[4], &[8., 9., 10., 11.]);
    let m = err(
        Op::Gather { axis: 0 },
        vec![Some(x.clone()), Some(i64s(&[3]))],
        1,
    );
    assert!(m.contains("index 3 is out of range"), "{m}");
    assert!(err(
        Op::Gather { axis: 1 },
        vec![Some(x.clone()), Some(i64s(&[-5]))],
        1
    )
    .contains("-5"));
    let xt = ty(DType::F32, vec![sym("N"), k(4)]);
    let it = ty(DType::I64, vec![sym("S")]);
    assert_eq!(
        infer1(Op::Gather { axis: 1 }, &[Some(&xt), Some(&it)], &[]),
        ty(DType::F32, vec![sym("N"), sym("S")])
    );
}

#[test]
fn gather_elements_and_nd() {
    let x = t(&[2, 2], vec![1.0f32, 2., 3., 4.]);
    let y = run1(
        Op::GatherElements { axis: 1 },
        vec![x.clone(), t(&[2, 2], vec![0i64, 0, -1, 0])],
    );
    check_f32(&y, &[2, 2], &[1., 1., 4., 3.]);
    assert!(err(
        Op::GatherElements { axis: 0 },
        vec![Some(x), Some(t(&[1, 1], vec![2i64]))],
        1
    )
    .contains("out of range"));
    let d = t(&[2, 2, 2], (0..8).collect::<Vec<i32>>());
    let y = run1(
        Op::GatherNd { batch_dims: 0 },
        vec![d.clone(), t(&[2, 2], vec![0i64, 1, 1, 0])],
    );
    check(&y, &[2, 2], &[2i32, 3, 4, 5]);
    let y = run1(
        Op::GatherNd { batch_dims: 1 },
        vec![d.clone(), t(&[2, 1], vec![1i64, 0])],
    );
    check(&y, &[2, 2], &[2i32, 3, 4, 5]);
    let y = run1(
        Op::GatherNd { batch_dims: 0 },
        vec![d.clone(), t(&[1, 3], vec![1i64, -1, 0])],
    );
    check(&y, &[1], &[6i32]);
    assert!(err(
        Op::GatherNd { batch_dims: 0 },
        vec![Some(d), Some(t(&[1, 1], vec![2i64]))],
        1
    )
    .contains("out of range"));
}

#[test]
fn scatter_elements_reductions() {
    let d = t(&[1, 5], vec![1.0f32, 2., 3., 4., 5.]);
    let ind = t(&[1, 4], vec![1i64, 3, -4, 3]);
    let upd = t(&[1, 4], vec![1.1f32, 2.1, 3.5, -2.0]);
    let go = |r| {
        run1(
            Op::ScatterElements {
                axis: 1,
                reduction: r,
            },
            vec![d.clone(), ind.clone(), upd.clone()],
        )
    };
    check_f32(
        &go(ScatterReduction::Add),
        &[1, 5],
        &[1.0, 6.6, 3.0, 4.1, 5.0],
    );
    check_f32(
        &go(ScatterReduction::Mul),
        &[1, 5],
        &[1.0, 7.7, 3.0, -16.8, 5.0],
    );
    check_f32(
        &go(ScatterReduction::Max),
        &[1, 5],
        &[1.0, 3.5, 3.0, 4.0, 5.0],
    );
    check_f32(
        &go(ScatterReduction::Min),
        &[1, 5],
        &[1.0, 1.1, 3.0, -2.0, 5.0],
    );
    // numpy: zeros((3,3)) with updates at rows [[1,0,2],[0,2,1]], axis 0.
    let y = run1(
        Op::ScatterElements {
            axis: 0,
            reduction: ScatterReduction::None,
        },
        vec![
            t(&[3, 3], vec![0.0f32; 9]),
            t(&[2, 3], vec![1i64, 0, 2, 0, 2, 1]),
            t(&[2, 3], vec![1.0f32, 1.1, 1.2, 2.0, 2.1, 2.2]),
        ],
    );
    check_f32(&y, &[3, 3], &[2.0, 1.1, 0.0, 1.0, 0.0, 2.2, 0.0, 2.1, 1.2]);
    let m = err(
        Op::ScatterElements {
            axis: 1,
            reduction: ScatterReduction::None,
        },
        vec![
            Some(d),
            Some(t(&[1, 1], vec![5i64])),
            Some(t(&[1, 1], vec![0.0f32])),
        ],
        1,
    );
    assert!(m.contains("index 5 is out of range"), "{m}");
}

#[test]
fn scatter_nd_reductions() {
    let data = t(&[4, 4], (1..=16).map(|v| v as f32).collect::<Vec<f32>>());
    let ind = t(&[3, 1], vec![0i64, 2, 0]);
    let upd = t(
        &[3, 4],
        vec![5.0f32, 5., 5., 5., 1., 1., 1., 1., 9., 0., 9., 0.],
    );
    let go = |r| {
        run1(
            Op::ScatterNd { reduction: r },
            vec![data.clone(), ind.clone(), upd.clone()],
        )
    };
    let tail = [5., 6., 7., 8.];
    let rows = |a: [f32; 4], c: [f32; 4]| -> Vec<f32> {
        [&a[..], &tail, &c, &[13., 14., 15., 16.]].concat()
    };
    check_f32(
        &go(ScatterReduction::Add),
        &[4, 4],
        &rows([15., 7., 17., 9.], [10., 11., 12., 13.]),
    );
    check_f32(
        &go(ScatterReduction::Mul),
        &[4, 4],
        &rows([45., 0., 135., 0.], [9., 10., 11., 12.]),
    );
    check_f32(
        &go(ScatterReduction::Max),
        &[4, 4],
        &rows([9., 5., 9., 5.], [9., 10., 11., 12.]),
    );
    check_f32(
        &go(ScatterReduction::Min),
        &[4, 4],
        &rows([1., 0., 3., 0.], [1., 1., 1., 1.]),
    );
    let y = run1(
        Op::ScatterNd {
            reduction: ScatterReduction::None,
        },
        vec![
            data.clone(),
            t(&[2, 1], vec![0i64, 2]),
            t(&[2, 4], vec![5.0f32, 5., 5., 5., 1., 1., 1., 1.]),
        ],
    );
    check_f32(&y, &[4, 4], &rows([5., 5., 5., 5.], [1., 1., 1., 1.]));
    let m = err(
        Op::ScatterNd {
            reduction: ScatterReduction::None,
        },
        vec![
            Some(data),
            Some(t(&[1, 1], vec![4i64])),
            Some(t(&[1, 4], vec![0.0f32; 4])),
        ],
        1,
    );
    assert!(m.contains("out of range"), "{m}");
}

// ── Pad / Tile / Expand ─────────────────────────────────────────────────────────────────

#[test]
fn pad_modes() {
    let a = t(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]);
    let pads = i64s(&[1, 2, 2, 3]);
    let go = |m| {
        run(
            Op::Pad { mode: m },
            vec![Some(a.clone()), Some(pads.clone()), None, None],
            1,
        )
        .remove(0)
    };
    check(
        &go(PadMode::Reflect),
        &[5, 8],
        &[
            6i32, 5, 4, 5, 6, 5, 4, 5, 3, 2, 1, 2, 3, 2, 1, 2, 6, 5, 4, 5, 6, 5, 4, 5, 3, 2, 1, 2,
            3, 2, 1, 2, 6, 5, 4, 5, 6, 5, 4, 5,
        ],
    );
    check(
        &go(PadMode::Edge),
        &[5, 8],
        &[
            1i32, 1, 1, 2, 3, 3, 3, 3, 1, 1, 1, 2, 3, 3, 3, 3, 4, 4, 4, 5, 6, 6, 6, 6, 4, 4, 4, 5,
            6, 6, 6, 6, 4, 4, 4, 5, 6, 6, 6, 6,
        ],
    );
    check(
        &go(PadMode::Wrap),
        &[5, 8],
        &[
            5i32, 6, 4, 5, 6, 4, 5, 6, 2, 3, 1, 2, 3, 1, 2, 3, 5, 6, 4, 5, 6, 4, 5, 6, 2, 3, 1, 2,
            3, 1, 2, 3, 5, 6, 4, 5, 6, 4, 5, 6,
        ],
    );
    // Constant with a value, and per-axis pads via negative axes.
    let y = run1(
        Op::Pad {
            mode: PadMode::Constant,
        },
        vec![a.clone(), i64s(&[0, 1, 1, 0]), t(&[], vec![9i32])],
    );
    check(&y, &[3, 4], &[9i32, 1, 2, 3, 9, 4, 5, 6, 9, 9, 9, 9]);
    let y = run1(
        Op::Pad {
            mode: PadMode::Constant,
        },
        vec![a.clone(), i64s(&[1, 0]), t(&[], vec![0i32]), i64s(&[-1])],
    );
    check(&y, &[2, 4], &[0i32, 1, 2, 3, 0, 4, 5, 6]);
    // Negative pads crop: pads [0,1,0,-2] → numpy pad(a, ((0,0),(1,0)))[:, :-2]
    let y = run(
        Op::Pad {
            mode: PadMode::Constant,
        },
        vec![Some(a.clone()), Some(i64s(&[0, 1, 0, -2])), None, None],
        1,
    );
    check(&y[0], &[2, 2], &[0i32, 1, 0, 4]);
    assert!(err(
        Op::Pad {
            mode: PadMode::Constant
        },
        vec![Some(a), Some(i64s(&[0, 0, 0, -4])), None, None],
        1
    )
    .contains("negative"));
    let xt = ty(DType::F32, vec![sym("N"), k(3)]);
    let p = i64s(&[0, 1, 0, 1]);
    assert_eq!(
        infer1(
            Op::Pad {
                mode: PadMode::Edge
            },
            &[Some(&xt), Some(&const_ty(&p))],
            &[None, Some(&p)]
        ),
        ty(DType::F32, vec![sym("N"), k(5)])
    );
}

#[test]
fn tile_and_expand() {
    let x = t(&[2, 2], vec![1i8, 2, 3, 4]);
    check(
        &run1(Op::Tile, vec![x.clone(), i64s(&[2, 3])]),
        &[4, 6],
        &[
            1i8, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4, 1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4,
        ],
    );
    assert!(err(Op::Tile, vec![Some(x), Some(i64s(&[1, -1]))], 1).contains("negative"));
    let x = t(&[3, 1], vec![1.0f32, 2., 3.]);
    check_f32(
        &run1(Op::Expand, vec![x.clone(), i64s(&[2, 1, 2])]),
        &[2, 3, 2],
        &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.],
    );
    // Bidirectional: a shape smaller than the input keeps the input's dims.
    check_f32(
        &run1(Op::Expand, vec![x.clone(), i64s(&[1])]),
        &[3, 1],
        &[1., 2., 3.],
    );
    assert!(err(Op::Expand, vec![Some(x.clone()), Some(i64s(&[-2, 1]))], 1).contains("negative"));
    assert!(err(
        Op::Expand,
        vec![Some(x.clone()), Some(i64s(&[1 << 40, 1 << 40]))],
        1
    )
    .contains("limit"));
    let xt = ty(DType::F32, vec![sym("N"), k(1)]);
    let s = i64s(&[1, 4]);
    assert_eq!(
        infer1(
            Op::Expand,
            &[Some(&xt), Some(&const_ty(&s))],
            &[None, Some(&s)]
        ),
        ty(DType::F32, vec![sym("N"), k(4)])
    );
}

// ── Generators ──────────────────────────────────────────────────────────────────────────

#[test]
fn constant_of_shape_and_limits() {
    let op = Op::ConstantOfShape {
        value: t(&[1], vec![7i32]),
    };
    check(&run1(op.clone(), vec![i64s(&[2, 2])]), &[2, 2], &[7i32; 4]);
    check(&run1(op.clone(), vec![i64s(&[])]), &[], &[7i32]);
    assert!(err(op.clone(), vec![Some(i64s(&[-1]))], 1).contains("negative"));
    assert!(err(op.clone(), vec![Some(i64s(&[1 << 20, 1 << 20]))], 1).contains("limit"));
    let s = i64s(&[3, 4]);
    assert_eq!(
        infer1(op, &[Some(&const_ty(&s))], &[Some(&s)]),
        TensorType::known(DType::I32, &[3, 4])
    );
}

#[test]
fn range_ints_and_floats() {
    let sc = |v: i32| t(&[], vec![v]);
    check(
        &run1(Op::Range, vec![sc(10), sc(1), sc(-3)]),
        &[3],
        &[10i32, 7, 4],
    );
    check(
        &run1(Op::Range, vec![sc(1), sc(10), sc(-3)]),
        &[0],
        &[] as &[i32],
    );
    let f = |v: f32| t(&[], vec![v]);
    check_f32(
        &run1(Op::Range, vec![f(1.0), f(2.0), f(0.3)]),
        &[4],
        &[1.0, 1.3, 1.6, 1.9],
    );
    assert!(err(Op::Range, vec![Some(f(0.0)), Some(f(1.0)), Some(f(0.0))], 1).contains("0"));
    let l = |v: i64| t(&[], vec![v]);
    assert!(err(
        Op::Range,
        vec![Some(l(0)), Some(l(i64::MAX)), Some(l(1))],
        1
    )
    .contains("limit"));
    let (a, b, c) = (l(0), l(10), l(3));
    let tt = const_ty(&a);
    assert_eq!(
        infer1(
            Op::Range,
            &[Some(&tt), Some(&tt), Some(&tt)],
            &[Some(&a), Some(&b), Some(&c)]
        ),
        TensorType::known(DType::I64, &[4])
    );
}

#[test]
fn one_hot_negative_and_out_of_range() {
    let ind = t(&[2, 2], vec![1i64, -1, 5, 0]);
    let y = run1(
        Op::OneHot { axis: 1 },
        vec![ind.clone(), t(&[], vec![3i64]), t(&[2], vec![0i32, 7])],
    );
    check(&y, &[2, 3, 2], &[0i32, 0, 7, 0, 0, 7, 0, 7, 0, 0, 0, 0]);
    let y = run1(
        Op::OneHot { axis: -1 },
        vec![
            t(&[2], vec![0.0f32, 2.0]),
            t(&[], vec![3.0f32]),
            t(&[2], vec![0.0f32, 1.0]),
        ],
    );
    check_f32(&y, &[2, 3], &[1., 0., 0., 0., 0., 1.]);
}

#[test]
fn eye_like() {
    let y = run1(
        Op::EyeLike {
            dtype: Some(DType::I32),
            k: 1,
        },
        vec![t(&[3, 4], vec![0.0f32; 12])],
    );
    check(&y, &[3, 4], &[0i32, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    let y = run1(
        Op::EyeLike { dtype: None, k: -1 },
        vec![t(&[3, 2], vec![0.0f32; 6])],
    );
    check_f32(&y, &[3, 2], &[0., 0., 1., 0., 0., 1.]);
    let y = run1(
        Op::EyeLike {
            dtype: None,
            k: i64::MAX,
        },
        vec![t(&[2, 2], vec![5u8; 4])],
    );
    check(&y, &[2, 2], &[0u8; 4]);
}

// ── Data-chosen outputs ─────────────────────────────────────────────────────────────────

#[test]
fn non_zero_and_compress() {
    check(
        &run1(Op::NonZero, vec![t(&[2, 2], vec![1.0f32, 0., 1., 1.])]),
        &[2, 3],
        &[0i64, 1, 1, 0, 0, 1],
    );
    let x = arange(&[3, 2]);
    check_f32(
        &run1(
            Op::Compress { axis: Some(0) },
            vec![x.clone(), t(&[3], vec![false, true, true])],
        ),
        &[2, 2],
        &[2., 3., 4., 5.],
    );
    check_f32(
        &run1(
            Op::Compress { axis: None },
            vec![x.clone(), t(&[5], vec![false, true, false, false, true])],
        ),
        &[2],
        &[1., 4.],
    );
    assert!(err(
        Op::Compress { axis: Some(1) },
        vec![Some(x), Some(t(&[3], vec![false, false, true]))],
        1
    )
    .contains("beyond"));
    let xt = ty(DType::F32, vec![sym("N"), k(3)]);
    assert_eq!(
        infer1(Op::NonZero, &[Some(&xt)], &[]),
        ty(DType::I64, vec![k(2), Dim::Unknown])
    );
}

#[test]
fn unique_sorted_and_unsorted() {
    let x = t(&[6], vec![2.0f32, 1., 1., 3., 4., 3.]);
    let o = run(
        Op::Unique {
            axis: None,
            sorted: true,
        },
        vec![Some(x.clone())],
        4,
    );
    check_f32(&o[0], &[4], &[1., 2., 3., 4.]);
    check(&o[1], &[4], &[1i64, 0, 3, 4]);
    check(&o[2], &[6], &[1i64, 0, 0, 2, 3, 2]);
    check(&o[3], &[4], &[2i64, 1, 2, 1]);
    let o = run(
        Op::Unique {
            axis: None,
            sorted: false,
        },
        vec![Some(x)],
        4,
    );
    check_f32(&o[0], &[4], &[2., 1., 3., 4.]);
    check(&o[1], &[4], &[0i64, 1, 3, 4]);
    check(&o[2], &[6], &[0i64, 1, 1, 2, 3, 2]);
    check(&o[3], &[4], &[1i64, 2, 2, 1]);
    // numpy.unique(axis=0) and axis=-1 (lexicographic slices).
    let x = t(&[3, 3], vec![1i32, 0, 0, 1, 0, 0, 2, 3, 4]);
    let o = run(
        Op::Unique {
            axis: Some(0),
            sorted: true,
        },
        vec![Some(x)],
        4,
    );
    check(&o[0], &[2, 3], &[1i32, 0, 0, 2, 3, 4]);
    check(&o[1], &[2], &[0i64, 2]);
    check(&o[2], &[3], &[0i64, 0, 1]);
    check(&o[3], &[2], &[2i64, 1]);
    let x = t(&[3, 4], vec![1i32, 0, 0, 1, 2, 0, 0, 2, 0, 1, 1, 0]);
    let o = run(
        Op::Unique {
            axis: Some(-1),
            sorted: true,
        },
        vec![Some(x)],
        4,
    );
    check(&o[0], &[3, 2], &[0i32, 1, 0, 2, 1, 0]);
    check(&o[1], &[2], &[1i64, 0]);
    check(&o[2], &[4], &[1i64, 0, 0, 1]);
    check(&o[3], &[2], &[2i64, 2]);
    let xt = ty(DType::F32, vec![k(2), k(3)]);
    let types = infer(
        &Op::Unique {
            axis: None,
            sorted: true,
        },
        &[Some(&xt)],
        &[None],
        3,
    )
    .unwrap();
    assert_eq!(types[0], ty(DType::F32, vec![Dim::Unknown]));
    assert_eq!(types[2], TensorType::known(DType::I64, &[6]));
}

#[test]
fn reverse_sequence_and_trilu() {
    let x = arange(&[4, 4]);
    let y = run1(
        Op::ReverseSequence {
            batch_axis: 1,
            time_axis: 0,
        },
        vec![x.clone(), i64s(&[4, 3, 2, 1])],
    );
    check_f32(
        &y,
        &[4, 4],
        &[
            12., 9., 6., 3., 8., 5., 2., 7., 4., 1., 10., 11., 0., 13., 14., 15.,
        ],
    );
    let y = run1(
        Op::ReverseSequence {
            batch_axis: 0,
            time_axis: 1,
        },
        vec![x.clone(), i64s(&[1, 2, 3, 4])],
    );
    check_f32(
        &y,
        &[4, 4],
        &[
            0., 1., 2., 3., 5., 4., 6., 7., 10., 9., 8., 11., 15., 14., 13., 12.,
        ],
    );
    assert!(err(
        Op::ReverseSequence {
            batch_axis: 0,
            time_axis: 1
        },
        vec![Some(x), Some(i64s(&[1, 2, 3, 5]))],
        1
    )
    .contains("outside"));
    let x = arange(&[3, 4]);
    let y = run1(
        Op::Trilu { upper: true },
        vec![x.clone(), t(&[], vec![-1i64])],
    );
    check_f32(
        &y,
        &[3, 4],
        &[0., 1., 2., 3., 4., 5., 6., 7., 0., 9., 10., 11.],
    );
    let y = run1(
        Op::Trilu { upper: false },
        vec![x.clone(), t(&[], vec![1i64])],
    );
    check_f32(
        &y,
        &[3, 4],
        &[0., 1., 0., 0., 4., 5., 6., 0., 8., 9., 10., 11.],
    );
    let y = run(Op::Trilu { upper: false }, vec![Some(x), None], 1);
    check_f32(
        &y[0],
        &[3, 4],
        &[0., 0., 0., 0., 4., 5., 0., 0., 8., 9., 10., 0.],
    );
}

#[test]
fn every_dtype_moves() {
    for &d in &DType::ALL {
        let x = Tensor::from_i64(d, vec![2, 3], &[1, 0, 1, 1, 0, 1]).unwrap();
        let y = run1(Op::Transpose { perm: None }, vec![x.clone()]);
        assert_eq!(y.dtype(), d);
        assert_eq!(y.to_i64_vec(), vec![1, 1, 0, 0, 1, 1]);
        let y = run1(Op::Gather { axis: 1 }, vec![x.clone(), i64s(&[2, 0])]);
        assert_eq!(y.to_i64_vec(), vec![1, 1, 1, 1]);
        let y = run1(Op::Concat { axis: 0 }, vec![x.clone(), x.clone()]);
        assert_eq!(y.shape(), [4, 3]);
        let y = run(
            Op::Pad {
                mode: PadMode::Reflect,
            },
            vec![Some(x.clone()), Some(i64s(&[0, 1, 0, 1])), None, None],
            1,
        );
        assert_eq!(y[0].to_i64_vec(), vec![0, 1, 0, 1, 0, 0, 1, 0, 1, 0]);
    }
}

#[test]
fn extreme_values_do_not_overflow() {
    // Pads that cancel to a 1-element output: begin is i64::MIN.
    let x = t(&[2], vec![1i64, 2]);
    let y = run(
        Op::Pad {
            mode: PadMode::Constant,
        },
        vec![
            Some(x.clone()),
            Some(i64s(&[i64::MIN, i64::MAX])),
            None,
            None,
        ],
        1,
    );
    check(&y[0], &[1], &[0i64]);
    // A step of i64::MAX selects one element.
    let x = t(&[3], vec![4i64, 5, 6]);
    let y = run(
        Op::Slice,
        vec![
            Some(x),
            Some(i64s(&[1])),
            Some(i64s(&[-1])),
            None,
            Some(i64s(&[i64::MAX])),
        ],
        1,
    );
    check(&y[0], &[1], &[5i64]);
}

/// A tiny deterministic xorshift, so the robustness test needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Mostly small values, sometimes extremes that overflow careless arithmetic.
    fn int(&mut self) -> i64 {
        match self.below(10) {
            0 => i64::MAX,
            1 => i64::MIN,
            2 => -(self.below(5) as i64),
            3 => 1 << 40,
            _ => self.below(5) as i64,
        }
    }
    fn tensor(&mut self) -> Tensor {
        let rank = if self.below(2) == 0 {
            1
        } else {
            self.below(5) as usize
        };
        let shape: Vec<usize> = (0..rank).map(|_| self.below(4) as usize).collect();
        let n: usize = shape.iter().product();
        let dt = if self.below(2) == 0 {
            DType::I64
        } else {
            DType::ALL[self.below(13) as usize]
        };
        let vals: Vec<i64> = (0..n).map(|_| self.int()).collect();
        Tensor::from_i64(dt, shape, &vals).unwrap()
    }
}

/// Model files are untrusted: random inputs (wrong types, ranks, counts, extreme values)
/// must give errors, never panics, in both eval and infer.
#[test]
fn random_inputs_never_panic() {
    let ops = vec![
        Op::Reshape { allowzero: false },
        Op::Reshape { allowzero: true },
        Op::Transpose { perm: None },
        Op::Transpose {
            perm: Some(vec![1, 0, -1]),
        },
        Op::Flatten { axis: -1 },
        Op::Squeeze,
        Op::Unsqueeze,
        Op::Concat { axis: -1 },
        Op::Split { axis: 0 },
        Op::Slice,
        Op::Gather { axis: 0 },
        Op::GatherElements { axis: -1 },
        Op::GatherNd { batch_dims: 1 },
        Op::ScatterElements {
            axis: 0,
            reduction: ScatterReduction::Mul,
        },
        Op::ScatterNd {
            reduction: ScatterReduction::Add,
        },
        Op::Pad {
            mode: PadMode::Reflect,
        },
        Op::Pad {
            mode: PadMode::Wrap,
        },
        Op::Pad {
            mode: PadMode::Constant,
        },
        Op::Tile,
        Op::Expand,
        Op::Shape {
            start: i64::MIN,
            end: Some(i64::MAX),
        },
        Op::ConstantOfShape {
            value: t(&[1], vec![1.0f32]),
        },
        Op::Range,
        Op::OneHot { axis: -1 },
        Op::NonZero,
        Op::Compress { axis: Some(0) },
        Op::Unique {
            axis: Some(0),
            sorted: false,
        },
        Op::Unique {
            axis: None,
            sorted: true,
        },
        Op::ReverseSequence {
            batch_axis: 1,
            time_axis: 0,
        },
        Op::DepthToSpace {
            blocksize: 1 << 33,
            mode: DepthToSpaceMode::Crd,
        },
        Op::SpaceToDepth {
            blocksize: i64::MAX,
            mode: DepthToSpaceMode::Dcr,
        },
        Op::Trilu { upper: true },
        Op::EyeLike {
            dtype: None,
            k: i64::MIN,
        },
    ];
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        for op in &ops {
            let n_in = r.below(6) as usize;
            let ins: Vec<Option<Tensor>> = (0..n_in)
                .map(|_| {
                    if r.below(6) == 0 {
                        None
                    } else {
                        Some(r.tensor())
                    }
                })
                .collect();
            let n_out = 1 + r.below(4) as usize;
            let _ = eval_op(op, &ins, n_out);
            let types: Vec<Option<TensorType>> =
                ins.iter().map(|x| x.as_ref().map(const_ty)).collect();
            let tr: Vec<Option<&TensorType>> = types.iter().map(|x| x.as_ref()).collect();
            let consts: Vec<Option<&Tensor>> = ins.iter().map(|x| x.as_ref()).collect();
            let _ = infer(op, &tr, &consts, n_out);
            // The same with a symbolic leading dim and no constants.
            let sym_types: Vec<Option<TensorType>> = types
                .iter()
                .map(|x| {
                    x.as_ref().map(|x| {
                        let mut x = x.clone();
                        if let Some(d) = x.shape.0.as_mut().filter(|d| !d.is_empty()) {
                            d[0] = sym("N");
                        }
                        x
                    })
                })
                .collect();
            let tr: Vec<Option<&TensorType>> = sym_types.iter().map(|x| x.as_ref()).collect();
            let _ = infer(op, &tr, &vec![None; tr.len()], n_out);
        }
    }
}
