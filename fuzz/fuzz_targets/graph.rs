//! Structure-aware differential target: the fuzz input drives the construction of a small
//! f32 graph (a few inputs; elementwise, matmul, gemm, conv, pool, reshape, concat,
//! transpose, softmax, reduce and norm nodes with plausible attributes, built through the IR
//! API so that type inference rejects what is ill-formed). When `ir::verify` accepts the
//! graph, it is compiled on REFERENCE at -O0 (the oracle: the IR's own semantics, no passes)
//! and on CPU at the level the input picks, and both run on the same deterministic inputs.
//! Both must succeed or both fail, and their outputs must agree within rtol 1e-4 / atol 1e-5
//! (NaN equals NaN); anything else panics, which libFuzzer reports as a crash.
#![no_main]
use arbitrary::{Result, Unstructured};
use kiln_ir::op::{AutoPad, BinaryOp, PoolKind, ReduceKind, UnaryOp};
use kiln_ir::{DType, Graph, Op, Tensor, TensorType, Value};
use kiln_runtime::{CompileOptions, Format, Level, Model};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;
const MAX_INPUTS: usize = 3;
const MAX_NODES: usize = 10;
/// Keeps every tensor small, so one input runs in milliseconds.
const MAX_ELEMENTS: usize = 4096;

/// The graph being built: the values so far, each with its concrete shape.
struct Builder {
    g: Graph,
    pool: Vec<(Value, Vec<usize>)>,
    consts: usize,
}

impl Builder {
    fn konst(&mut self, shape: Vec<usize>, seed: u64) -> Value {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| value_at(seed, i)).collect();
        self.consts += 1;
        let name = format!("c{}", self.consts);
        self.g.add_const(name, Tensor::new(shape, data).expect("shape and data agree"))
    }

    fn ints(&mut self, vals: &[i64]) -> Value {
        self.consts += 1;
        let name = format!("c{}", self.consts);
        self.g.add_const(name, Tensor::new(vec![vals.len()], vals.to_vec()).expect("1-D"))
    }

    /// Adds `op` on `inputs`; keeps the result if type inference accepts it and it is a
    /// small f32 tensor of known shape.
    fn push(&mut self, op: Op, inputs: &[Option<Value>]) {
        let name = format!("n{}", self.g.nodes.node_count());
        let Ok(node) = self.g.add(op, name, inputs, 1) else { return };
        let v: Value = node.into();
        let ty = self.g.value_type(v).clone();
        if ty.dtype != DType::F32 {
            return;
        }
        if let Some(shape) = ty.shape.concrete() {
            if shape.iter().product::<usize>() <= MAX_ELEMENTS {
                self.pool.push((v, shape));
            }
        }
    }
}

/// A deterministic value in [-2, 2], a few of them exactly 0 or 1.
fn value_at(seed: u64, i: usize) -> f32 {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    match x % 16 {
        0 => 0.0,
        1 => 1.0,
        _ => ((x >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32,
    }
}

fn dims(u: &mut Unstructured, rank: usize) -> Result<Vec<usize>> {
    (0..rank).map(|_| u.int_in_range(1..=5usize)).collect()
}

fn pick<'a>(u: &mut Unstructured, pool: &'a [(Value, Vec<usize>)]) -> Result<&'a (Value, Vec<usize>)> {
    u.choose(pool)
}

fn step(u: &mut Unstructured, b: &mut Builder) -> Result<()> {
    let (x, shape) = pick(u, &b.pool)?.clone();
    let rank = shape.len();
    let seed: u64 = u.arbitrary()?;
    match u.int_in_range(0..=13u8)? {
        0 => {
            let float_ops: Vec<UnaryOp> = UnaryOp::ALL
                .iter()
                .copied()
                .filter(|o| !matches!(o, UnaryOp::Not | UnaryOp::BitwiseNot | UnaryOp::IsNaN))
                .collect();
            let op = *u.choose(&float_ops)?;
            b.push(Op::Unary(op), &[Some(x)]);
        }
        1 => {
            let op = *u.choose(&[
                BinaryOp::Add,
                BinaryOp::Sub,
                BinaryOp::Mul,
                BinaryOp::Div,
                BinaryOp::Pow,
                BinaryOp::Min,
                BinaryOp::Max,
                BinaryOp::FMod,
                BinaryOp::PRelu,
            ])?;
            let y = if u.arbitrary()? {
                pick(u, &b.pool)?.0
            } else {
                // A broadcastable constant: a suffix of x's shape with some dims set to 1.
                let keep = u.int_in_range(0..=rank)?;
                let mut s = shape[rank - keep..].to_vec();
                for d in s.iter_mut() {
                    if u.ratio(1, 3)? {
                        *d = 1;
                    }
                }
                b.konst(s, seed)
            };
            let (l, r) = if u.arbitrary()? { (x, y) } else { (y, x) };
            b.push(Op::Binary(op), &[Some(l), Some(r)]);
        }
        2 => {
            let y = if u.arbitrary()? {
                pick(u, &b.pool)?.0
            } else {
                let k = *shape.last().unwrap_or(&1);
                let n = u.int_in_range(1..=6usize)?;
                let s = if u.ratio(1, 4)? { vec![k] } else { vec![k, n] };
                b.konst(s, seed)
            };
            b.push(Op::MatMul, &[Some(x), Some(y)]);
        }
        3 if rank == 2 => {
            let (trans_a, trans_b) = (u.arbitrary()?, u.arbitrary()?);
            let k = if trans_a { shape[0] } else { shape[1] };
            let m = if trans_a { shape[1] } else { shape[0] };
            let n = u.int_in_range(1..=6usize)?;
            let w = b.konst(if trans_b { vec![n, k] } else { vec![k, n] }, seed);
            let c = match u.int_in_range(0..=2u8)? {
                0 => None,
                1 => Some(b.konst(vec![n], seed ^ 1)),
                _ => Some(b.konst(vec![m, n], seed ^ 1)),
            };
            let alpha = *u.choose(&[1.0f32, 0.5, -2.0])?;
            let beta = *u.choose(&[1.0f32, 0.0, 3.0])?;
            b.push(Op::Gemm { alpha, beta, trans_a, trans_b }, &[Some(x), Some(w), c]);
        }
        4 if (3..=4).contains(&rank) => {
            let spatial = rank - 2;
            let c = shape[1];
            let divisors: Vec<usize> = (1..=c).filter(|g| c % g == 0).collect();
            let group = *u.choose(&divisors)?;
            let m = group * u.int_in_range(1..=3usize)?;
            let kernel: Vec<usize> = (0..spatial).map(|_| u.int_in_range(1..=3usize)).collect::<Result<_>>()?;
            let mut w_shape = vec![m, c / group];
            w_shape.extend(&kernel);
            let w = b.konst(w_shape, seed);
            let bias = if u.arbitrary()? { Some(b.konst(vec![m], seed ^ 1)) } else { None };
            let strides: Vec<i64> = (0..spatial).map(|_| u.int_in_range(1..=2i64)).collect::<Result<_>>()?;
            let dilations: Vec<i64> = (0..spatial).map(|_| u.int_in_range(1..=2i64)).collect::<Result<_>>()?;
            let auto_pad = *u.choose(&[AutoPad::NotSet, AutoPad::NotSet, AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid])?;
            let pads = if auto_pad == AutoPad::NotSet {
                let mut p = Vec::new();
                for _ in 0..2 {
                    for k in &kernel {
                        p.push(u.int_in_range(0..=(*k as i64 - 1))?);
                    }
                }
                p
            } else {
                vec![]
            };
            let op = Op::Conv {
                auto_pad,
                dilations,
                group: group as i64,
                kernel_shape: kernel.iter().map(|&k| k as i64).collect(),
                pads,
                strides,
            };
            b.push(op, &[Some(x), Some(w), bias]);
        }
        5 if (3..=4).contains(&rank) => {
            let spatial = rank - 2;
            let kernel: Vec<i64> = (0..spatial)
                .map(|i| u.int_in_range(1..=(shape[2 + i].min(3) as i64)))
                .collect::<Result<_>>()?;
            let strides: Vec<i64> = (0..spatial).map(|_| u.int_in_range(1..=2i64)).collect::<Result<_>>()?;
            let mut pads = Vec::new();
            for _ in 0..2 {
                for k in &kernel {
                    pads.push(u.int_in_range(0..=(k - 1))?);
                }
            }
            let op = Op::Pool {
                kind: *u.choose(&[PoolKind::Max, PoolKind::Average])?,
                auto_pad: AutoPad::NotSet,
                ceil_mode: u.arbitrary()?,
                count_include_pad: u.arbitrary()?,
                dilations: vec![],
                kernel_shape: kernel,
                pads,
                strides,
                storage_order: 0,
                p: 2,
            };
            b.push(op, &[Some(x)]);
        }
        6 if rank >= 3 => {
            let kind = *u.choose(&[PoolKind::Max, PoolKind::Average])?;
            b.push(Op::GlobalPool { kind, p: 2 }, &[Some(x)]);
        }
        7 => {
            let n: usize = shape.iter().product();
            let target: Vec<i64> = match u.int_in_range(0..=3u8)? {
                0 => vec![n as i64],
                1 => vec![-1],
                2 if rank > 0 => vec![shape[0] as i64, -1],
                _ => {
                    // A random factorization of n, one factor at a time.
                    let mut rest = n;
                    let mut t = Vec::new();
                    while rest > 1 && t.len() < 4 {
                        let fs: Vec<usize> = (2..=rest).filter(|f| rest % f == 0).collect();
                        let f = *u.choose(&fs)?;
                        t.push(f as i64);
                        rest /= f;
                    }
                    if t.is_empty() {
                        t.push(1);
                    }
                    t
                }
            };
            let s = b.ints(&target);
            b.push(Op::Reshape { allowzero: false }, &[Some(x), Some(s)]);
        }
        8 if rank > 0 => {
            let axis = u.int_in_range(0..=rank - 1)?;
            let mut parts = vec![Some(x)];
            for (v, s) in b.pool.clone() {
                let fits = s.len() == rank && (0..rank).all(|i| i == axis || s[i] == shape[i]);
                if fits && parts.len() < 3 && u.arbitrary()? {
                    parts.push(Some(v));
                }
            }
            if parts.len() == 1 {
                parts.push(Some(x));
            }
            let axis = if u.arbitrary()? { axis as i64 } else { axis as i64 - rank as i64 };
            b.push(Op::Concat { axis }, &parts);
        }
        9 => {
            let mut perm: Vec<i64> = (0..rank as i64).collect();
            for i in (1..rank).rev() {
                let j = u.int_in_range(0..=i)?;
                perm.swap(i, j);
            }
            b.push(Op::Transpose { perm: Some(perm) }, &[Some(x)]);
        }
        10 if rank > 0 => {
            let axis = u.int_in_range(-(rank as i64)..=rank as i64 - 1)?;
            let op = if u.arbitrary()? { Op::Softmax { axis } } else { Op::LogSoftmax { axis } };
            b.push(op, &[Some(x)]);
        }
        11 => {
            let kind = *u.choose(&[ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min, ReduceKind::SumSquare])?;
            let axes: Vec<i64> = (0..rank as i64).filter(|_| u.arbitrary().unwrap_or(false)).collect();
            let axes = if axes.is_empty() { vec![rank as i64 - 1] } else { axes };
            let a = b.ints(&axes);
            b.push(Op::Reduce { kind, keepdims: u.arbitrary()?, noop_with_empty_axes: false }, &[Some(x), Some(a)]);
        }
        12 if rank >= 2 => {
            let c = shape[1];
            let scale = b.konst(vec![c], seed);
            let bias = b.konst(vec![c], seed ^ 1);
            let mean = b.konst(vec![c], seed ^ 2);
            // A variance must be positive: square a constant and add one.
            let var = {
                let data: Vec<f32> = (0..c).map(|i| 1.0 + value_at(seed ^ 3, i).powi(2)).collect();
                b.consts += 1;
                let name = format!("c{}", b.consts);
                b.g.add_const(name, Tensor::new(vec![c], data).expect("1-D"))
            };
            b.push(Op::BatchNorm { epsilon: 1e-5 }, &[Some(x), Some(scale), Some(bias), Some(mean), Some(var)]);
        }
        13 => {
            let lo = b.konst(vec![], seed);
            let hi = b.konst(vec![], seed ^ 1);
            b.push(Op::Clip, &[Some(x), Some(lo), Some(hi)]);
        }
        _ => {}
    }
    Ok(())
}

/// The graph and the seed of its input values.
fn build(u: &mut Unstructured) -> Result<(Graph, u64)> {
    let mut b = Builder { g: Graph::new("fuzz"), pool: Vec::new(), consts: 0 };
    let n_inputs = u.int_in_range(1..=MAX_INPUTS)?;
    for i in 0..n_inputs {
        let rank = u.int_in_range(1..=4usize)?;
        let shape = dims(u, rank)?;
        let v = b.g.add_input(format!("x{i}"), TensorType::known(DType::F32, &shape));
        b.pool.push((v, shape));
    }
    let n_nodes = u.int_in_range(1..=MAX_NODES)?;
    for _ in 0..n_nodes {
        step(u, &mut b)?;
    }
    // The last value is an output; so is each earlier value the input picks.
    let n = b.pool.len();
    for (i, (v, _)) in b.pool[n_inputs..].iter().enumerate() {
        if i + n_inputs + 1 == n || u.ratio(1, 4)? {
            b.g.add_output(format!("y{i}"), *v);
        }
    }
    Ok((b.g, u.arbitrary()?))
}

fn run(model: &Model, device: &str, level: Level, inputs: &[Tensor]) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let compiled =
        kiln_runtime::compile_with(model, device, &CompileOptions { threads: 1, level }).map_err(|e| e.to_string())?;
    compiled.request().infer_ordered(inputs).map_err(|e| e.to_string())
}

fn close(r: f64, c: f64) -> bool {
    (r.is_nan() && c.is_nan()) || r == c || (r - c).abs() <= ATOL + RTOL * r.abs()
}

/// Runs a conv, a matmul and elementwise ops on CPU once before fuzzing, so that the
/// process-wide kernels the CPU device places on first use (the GEMM microkernels' JIT module,
/// kept for the life of the process on purpose) are not reported as a leak of the first input
/// that needs them.
fn warm_up() {
    let mut b = Builder { g: Graph::new("warm_up"), pool: Vec::new(), consts: 0 };
    let x = b.g.add_input("x", TensorType::known(DType::F32, &[1, 2, 4, 4]));
    let w = b.konst(vec![2, 2, 1, 1], 1);
    let conv = Op::Conv { auto_pad: AutoPad::NotSet, dilations: vec![], group: 1, kernel_shape: vec![1, 1], pads: vec![], strides: vec![] };
    let y = b.g.add1(conv, "conv", &[x, w]).expect("conv");
    let y = b.g.add1(Op::Unary(UnaryOp::Relu), "relu", &[y]).expect("relu");
    let s = b.ints(&[2, 16]);
    let y = b.g.add1(Op::Reshape { allowzero: false }, "reshape", &[y, s]).expect("reshape");
    let m = b.konst(vec![16, 4], 2);
    let y = b.g.add1(Op::MatMul, "matmul", &[y, m]).expect("matmul");
    b.g.add_output("y", y);
    let model = Model { graph: b.g, path: PathBuf::from("warm_up.kir"), format: Format::Kir };
    let x = Tensor::new(vec![1, 2, 4, 4], (0..32).map(|i| value_at(0, i)).collect::<Vec<f32>>()).expect("x");
    for level in [Level::O0, Level::O2] {
        run(&model, "CPU", level, &[x.clone()]).expect("the warm-up graph runs on CPU");
    }
}

fuzz_target!(init: warm_up(), |data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((graph, seed)) = build(&mut u) else { return };
    let level = match data.first().map(|b| b % 3) {
        Some(0) => Level::O0,
        Some(1) => Level::O1,
        _ => Level::O2,
    };
    if graph.outputs.is_empty() || kiln_ir::verify(&graph).is_err() {
        return;
    }
    let inputs: Vec<Tensor> = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let shape = graph.node(n).outputs[0].shape.concrete().expect("inputs have known shapes");
            let len: usize = shape.iter().product();
            let vals: Vec<f32> = (0..len).map(|j| value_at(seed ^ (i as u64 + 1), j)).collect();
            Tensor::new(shape, vals).expect("shape and data agree")
        })
        .collect();
    let text = kiln_ir::text::print(&graph, kiln_ir::text::Weights::Elided);
    let model = Model { graph, path: PathBuf::from("fuzz.kir"), format: Format::Kir };
    let reference = run(&model, "REFERENCE", Level::O0, &inputs);
    let cpu = run(&model, "CPU", level, &inputs);
    let (reference, cpu) = match (reference, cpu) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(_), Err(_)) => return,
        (r, c) => panic!("REFERENCE and CPU ({level:?}) disagree on success:\nREFERENCE: {:?}\nCPU: {:?}\n{text}", r.err(), c.err()),
    };
    assert_eq!(reference.len(), cpu.len(), "output counts differ\n{text}");
    for ((name, r), (_, c)) in reference.iter().zip(&cpu) {
        assert_eq!(r.shape(), c.shape(), "output {name}: shapes differ (CPU {level:?})\n{text}");
        assert_eq!(r.dtype(), c.dtype(), "output {name}: dtypes differ (CPU {level:?})\n{text}");
        let (rv, cv) = (r.to_f64_vec(), c.to_f64_vec());
        if let Some(i) = (0..rv.len()).find(|&i| !close(rv[i], cv[i])) {
            panic!("output {name}[{i}]: REFERENCE {} vs CPU ({level:?}) {}\n{text}", rv[i], cv[i]);
        }
    }
});
