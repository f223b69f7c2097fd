//! Generated elementwise kernels against plain Rust loops, on 1M f32 elements.
//!
//! `cargo bench -p kiln-cpu --bench elementwise` runs criterion (which reports GiB/s of
//! bytes read and written) and then prints a table of each kernel's best and median rate.
//! `-- none` skips criterion. The kernels write into a preallocated output (`run_into`),
//! as the executor's arena will; above 64K elements they split over the pool's 2 threads,
//! so the table also gives the single-call rate of the plain loop on one thread.
//!
//! Then the device's other non-GEMM kernels on one-op graphs with the shapes of the
//! mobile models (depthwise convolutions with their relu6, softmax), compiled for one
//! thread: best and median wall time per run (on a busy machine the best is the figure
//! that shows what the code does).

use criterion::{black_box, Criterion, Throughput};
use kiln_cpu::codegen::ElementwiseKernel;
use kiln_ir::{BinaryOp, DType, Graph, Op, TensorType, UnaryOp};
use std::time::{Duration, Instant};

const N: usize = 1 << 20;

fn add_kernel() -> ElementwiseKernel {
    let mut g = Graph::new("add");
    let a = g.add_input("a", TensorType::known(DType::F32, &[N]));
    let b = g.add_input("b", TensorType::known(DType::F32, &[N]));
    let c = g.add1(Op::Binary(BinaryOp::Add), "c", &[a, b]).unwrap();
    g.add_output("c", c);
    ElementwiseKernel::compile(&g, &[vec![N], vec![N]]).unwrap()
}

fn unary_kernel(u: UnaryOp) -> ElementwiseKernel {
    let mut g = Graph::new(u.word());
    let a = g.add_input("a", TensorType::known(DType::F32, &[N]));
    let c = g.add1(Op::Unary(u), "c", &[a]).unwrap();
    g.add_output("c", c);
    ElementwiseKernel::compile(&g, &[vec![N]]).unwrap()
}

fn bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no invalid bit patterns and u8 no alignment needs.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) }
}

fn bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 4) }
}

/// Best and median seconds of `f` over about half a second.
fn time(mut f: impl FnMut()) -> (f64, f64) {
    let mut runs = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) || runs.len() < 10 {
        let t = Instant::now();
        f();
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    (runs[0], runs[runs.len() / 2])
}

fn main() {
    let a: Vec<f32> = (0..N).map(|i| (i % 1000) as f32 * 0.01 - 5.0).collect();
    let b: Vec<f32> = (0..N).map(|i| (i % 777) as f32 * 0.02).collect();
    let mut out = vec![0.0f32; N];
    let add = add_kernel();
    let exp = unary_kernel(UnaryOp::Exp);
    let tanh = unary_kernel(UnaryOp::Tanh);

    let skip_criterion = std::env::args().any(|a| a == "none");
    if !skip_criterion {
        let mut c = Criterion::default().configure_from_args();
        let mut group = c.benchmark_group("elementwise_1M");
        group.throughput(Throughput::Bytes((3 * N * 4) as u64));
        group.bench_function("add kiln", |bch| {
            bch.iter(|| {
                add.run_into(&[bytes(&a), bytes(&b)], &mut [bytes_mut(&mut out)])
                    .unwrap()
            })
        });
        group.bench_function("add rust", |bch| {
            bch.iter(|| {
                for ((o, x), y) in out.iter_mut().zip(&a).zip(&b) {
                    *o = x + y;
                }
                black_box(&out);
            })
        });
        group.throughput(Throughput::Bytes((2 * N * 4) as u64));
        group.bench_function("exp kiln", |bch| {
            bch.iter(|| {
                exp.run_into(&[bytes(&a)], &mut [bytes_mut(&mut out)])
                    .unwrap()
            })
        });
        group.bench_function("exp rust", |bch| {
            bch.iter(|| {
                for (o, x) in out.iter_mut().zip(&a) {
                    *o = x.exp();
                }
                black_box(&out);
            })
        });
        group.finish();
        c.final_summary();
    }

    println!("\n1M f32 elements, GB/s of bytes read + written (best / median):");
    let report = |name: &str, moved: usize, (best, median): (f64, f64)| {
        let gbs = |s: f64| moved as f64 / s / 1e9;
        println!(
            "{name:<28} {:>7.1} / {:>7.1} GB/s  ({:.0} µs best)",
            gbs(best),
            gbs(median),
            best * 1e6
        );
    };
    report(
        "add, kiln (2 threads)",
        12 * N,
        time(|| {
            add.run_into(&[bytes(&a), bytes(&b)], &mut [bytes_mut(&mut out)])
                .unwrap()
        }),
    );
    report(
        "add, rust loop (1 thread)",
        12 * N,
        time(|| {
            for ((o, x), y) in out.iter_mut().zip(&a).zip(&b) {
                *o = x + y;
            }
            black_box(&out);
        }),
    );
    report(
        "exp, kiln (2 threads)",
        8 * N,
        time(|| {
            exp.run_into(&[bytes(&a)], &mut [bytes_mut(&mut out)])
                .unwrap()
        }),
    );
    report(
        "exp, rust f32::exp (1 thread)",
        8 * N,
        time(|| {
            for (o, x) in out.iter_mut().zip(&a) {
                *o = x.exp();
            }
            black_box(&out);
        }),
    );
    report(
        "tanh, kiln (2 threads)",
        8 * N,
        time(|| {
            tanh.run_into(&[bytes(&a)], &mut [bytes_mut(&mut out)])
                .unwrap()
        }),
    );
    report(
        "tanh, rust f32::tanh (1 thread)",
        8 * N,
        time(|| {
            for (o, x) in out.iter_mut().zip(&a) {
                *o = x.tanh();
            }
            black_box(&out);
        }),
    );
    device_kernels();
}

/// The activation after a depthwise convolution in the mobile models.
#[derive(Clone, Copy)]
enum Act {
    /// mobilenet_v2
    Relu6,
    /// efficientnet: `v · sigmoid(v)`
    Swish,
    /// mobilenet_v3 (tf2onnx): `v · (clip(v + 3, 0, 6) · ⅙)`
    HardSwish,
}

/// A depthwise convolution as the mobile models have it: `c` channels of `h`×`h`, `k`×`k`,
/// stride `s`, TF-style "same" pads, bias and an activation.
fn depthwise(c: usize, h: usize, k: usize, s: i64, act: Act) -> (Graph, Vec<kiln_ir::Tensor>) {
    use kiln_ir::{AutoPad, Tensor};
    let fill = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed) % 1000) as f32 * 0.002 - 1.0)
            .collect()
    };
    let mut g = Graph::new("dw");
    let x = g.add_input("x", TensorType::known(DType::F32, &[1, c, h, h]));
    let w = g.add_const(
        "w",
        Tensor::new(vec![c, 1, k, k], fill(c * k * k, 1)).unwrap(),
    );
    let b = g.add_const("b", Tensor::new(vec![c], fill(c, 2)).unwrap());
    let total = ((h.div_ceil(s as usize) - 1) * s as usize + k) as i64 - h as i64;
    let (p0, p1) = (total.max(0) / 2, total.max(0) - total.max(0) / 2);
    let op = Op::Conv {
        auto_pad: AutoPad::NotSet,
        dilations: vec![],
        group: c as i64,
        kernel_shape: vec![],
        pads: vec![p0, p0, p1, p1],
        strides: vec![s, s],
    };
    let v = kiln_ir::Value::new(
        g.add(op, "conv", &[Some(x), Some(w), Some(b)], 1).unwrap(),
        0,
    );
    let lo = g.add_const("lo", Tensor::scalar(0.0f32));
    let hi = g.add_const("hi", Tensor::scalar(6.0f32));
    let y = match act {
        Act::Relu6 => g.add1(Op::Clip, "relu6", &[v, lo, hi]).unwrap(),
        Act::Swish => {
            let sg = g
                .add1(Op::Unary(UnaryOp::Sigmoid), "sigmoid", &[v])
                .unwrap();
            g.add1(Op::Binary(BinaryOp::Mul), "swish", &[v, sg])
                .unwrap()
        }
        Act::HardSwish => {
            let three = g.add_const("three", Tensor::scalar(3.0f32));
            let sixth = g.add_const("sixth", Tensor::scalar(1.0f32 / 6.0));
            let a = g
                .add1(Op::Binary(BinaryOp::Add), "add", &[v, three])
                .unwrap();
            let c = g.add1(Op::Clip, "relu6", &[a, lo, hi]).unwrap();
            let t = g
                .add1(Op::Binary(BinaryOp::Mul), "scale", &[c, sixth])
                .unwrap();
            g.add1(Op::Binary(BinaryOp::Mul), "hard_swish", &[v, t])
                .unwrap()
        }
    };
    g.add_output("y", y);
    (
        g,
        vec![Tensor::new(vec![1, c, h, h], fill(c * h * h, 3)).unwrap()],
    )
}

/// `x · sigmoid(x)` alone: the pass efficientnet runs after each GEMM convolution.
fn swish(shape: &[usize]) -> (Graph, Vec<kiln_ir::Tensor>) {
    let n: usize = shape.iter().product();
    let mut g = Graph::new("swish");
    let x = g.add_input("x", TensorType::known(DType::F32, shape));
    let s = g
        .add1(Op::Unary(UnaryOp::Sigmoid), "sigmoid", &[x])
        .unwrap();
    let y = g.add1(Op::Binary(BinaryOp::Mul), "swish", &[x, s]).unwrap();
    g.add_output("y", y);
    let v = (0..n).map(|i| (i % 97) as f32 * 0.1 - 4.0).collect();
    (g, vec![kiln_ir::Tensor::new(shape.to_vec(), v).unwrap()])
}

fn softmax(shape: &[usize]) -> (Graph, Vec<kiln_ir::Tensor>) {
    let n: usize = shape.iter().product();
    let mut g = Graph::new("softmax");
    let x = g.add_input("x", TensorType::known(DType::F32, shape));
    let y = g.add1(Op::Softmax { axis: -1 }, "softmax", &[x]).unwrap();
    g.add_output("y", y);
    let v = (0..n).map(|i| (i % 97) as f32 * 0.1 - 4.0).collect();
    (g, vec![kiln_ir::Tensor::new(shape.to_vec(), v).unwrap()])
}

fn device_kernels() {
    use kiln_backends::{Backend, CompileOptions, Program};
    println!("\nDevice kernels on one thread: µs per run, best / median");
    let cases: Vec<(String, (Graph, Vec<kiln_ir::Tensor>))> = vec![
        (
            "depthwise 3×3/2 96×112² +relu6".into(),
            depthwise(96, 112, 3, 2, Act::Relu6),
        ),
        (
            "depthwise 3×3/1 144×56² +relu6".into(),
            depthwise(144, 56, 3, 1, Act::Relu6),
        ),
        (
            "depthwise 3×3/1 384×14² +relu6".into(),
            depthwise(384, 14, 3, 1, Act::Relu6),
        ),
        (
            "depthwise 5×5/2 144×56² +relu6".into(),
            depthwise(144, 56, 5, 2, Act::Relu6),
        ),
        (
            "depthwise 5×5/1 480×14² +relu6".into(),
            depthwise(480, 14, 5, 1, Act::Relu6),
        ),
        (
            "depthwise 3×3/2 96×112² +swish".into(),
            depthwise(96, 112, 3, 2, Act::Swish),
        ),
        (
            "depthwise 3×3/1 144×56² +swish".into(),
            depthwise(144, 56, 3, 1, Act::Swish),
        ),
        (
            "depthwise 5×5/1 672×14² +swish".into(),
            depthwise(672, 14, 5, 1, Act::Swish),
        ),
        (
            "depthwise 5×5/1 240×14² +hard swish".into(),
            depthwise(240, 14, 5, 1, Act::HardSwish),
        ),
        (
            "swish 96×112² (after a GEMM conv)".into(),
            swish(&[1, 96, 112, 112]),
        ),
        (
            "softmax 8×128×128, last axis".into(),
            softmax(&[8, 128, 128]),
        ),
    ];
    let options = CompileOptions {
        threads: 1,
        ..Default::default()
    };
    for (name, (g, inputs)) in cases {
        let exe = kiln_cpu::Cpu::new()
            .compile(&Program::new(g), &options)
            .unwrap();
        let (best, median) = time(|| {
            black_box(exe.run(&inputs, None).unwrap());
        });
        println!("{name:<38} {:>8.0} / {:>8.0}", best * 1e6, median * 1e6);
    }
}
