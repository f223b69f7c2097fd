//! One compiled model serves many threads at once: 8 threads × 1,000 requests with
//! different inputs return exactly (bit for bit) what the same requests return one after
//! another, on every device; and 10,000 requests do not grow the process's memory.

use kiln_ir::{BinaryOp, DType, Graph, Op, Shape, Tensor, TensorType, UnaryOp};
use std::sync::Mutex;

const THREADS: usize = 8;
const PER_THREAD: usize = 1_000;

/// The tests of this file measure the process's RSS, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn weights(rows: usize, cols: usize, seed: usize) -> Tensor {
    let v = (0..rows * cols).map(|i| ((i * 7 + seed * 13) % 23) as f32 / 23.0 - 0.5).collect();
    Tensor::new(vec![rows, cols], v).unwrap()
}

/// A small MLP: matmul, bias, relu, matmul, bias, tanh: a GEMM kernel and fused
/// elementwise kernels on CPU, quick on REFERENCE.
fn mlp() -> kiln_runtime::Model {
    let mut g = Graph::new("mlp");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[4, 32])));
    let w1 = g.add_const("w1", weights(32, 32, 1));
    let b1 = g.add_const("b1", weights(1, 32, 2));
    let w2 = g.add_const("w2", weights(32, 8, 3));
    let b2 = g.add_const("b2", weights(1, 8, 4));
    let h = g.add1(Op::MatMul, "mm1", &[x, w1]).unwrap();
    let h = g.add1(Op::Binary(BinaryOp::Add), "bias1", &[h, b1]).unwrap();
    let h = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[h]).unwrap();
    let h = g.add1(Op::MatMul, "mm2", &[h, w2]).unwrap();
    let h = g.add1(Op::Binary(BinaryOp::Add), "bias2", &[h, b2]).unwrap();
    let y = g.add1(Op::Unary(UnaryOp::Tanh), "tanh", &[h]).unwrap();
    g.add_output("y", y);
    kiln_runtime::Model { graph: g, path: "mlp (built in the test)".into(), format: kiln_runtime::Format::Kir }
}

/// Request `k`'s input: different for every k.
fn input(k: usize) -> Tensor {
    let v = (0..4 * 32).map(|i| (((i + 3 * k) % 17) as f32 - 8.0) / 8.0 + k as f32 * 1e-4).collect();
    Tensor::new(vec![4, 32], v).unwrap()
}

#[test]
fn eight_threads_of_1000_requests_equal_sequential_runs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = mlp();
    for device in ["REFERENCE", "CPU"] {
        let compiled = kiln_runtime::compile(&model, device).unwrap();
        let mut request = compiled.request();
        let sequential: Vec<Tensor> =
            (0..THREADS * PER_THREAD).map(|k| request.infer_ordered(&[input(k)]).unwrap().remove(0).1).collect();
        let parallel: Vec<Vec<Tensor>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let compiled = compiled.clone();
                    s.spawn(move || {
                        let mut request = compiled.request();
                        // interleave the threads' requests over the whole range of inputs
                        (0..PER_THREAD).map(|i| request.infer_ordered(&[input(i * THREADS + t)]).unwrap().remove(0).1).collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, outs) in parallel.iter().enumerate() {
            for (i, out) in outs.iter().enumerate() {
                assert_eq!(out, &sequential[i * THREADS + t], "{device}: request {} (thread {t})", i * THREADS + t);
            }
        }
        // the inputs differ, so must the outputs, or the comparison above proves nothing
        assert_ne!(sequential[0], sequential[1], "{device}");
    }
}

/// Resident set size in bytes (the second field of /proc/self/statm, in pages).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn ten_thousand_requests_keep_memory_steady() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = mlp();
    for device in ["REFERENCE", "CPU"] {
        let compiled = kiln_runtime::compile(&model, device).unwrap();
        let run = |n: usize| {
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let compiled = compiled.clone();
                    s.spawn(move || {
                        for i in 0..n / THREADS {
                            let mut request = compiled.request();
                            request.infer_ordered(&[input(i * THREADS + t)]).unwrap();
                        }
                    });
                }
            })
        };
        run(1_000); // warm-up: thread stacks, allocator arenas, lazily built kernels
        let before = rss();
        run(10_000);
        let after = rss();
        eprintln!("{device}: RSS {} KiB after the warm-up, {} KiB after 10,000 requests", before / 1024, after / 1024);
        // A leak of even 1 KiB per request would grow the RSS by ~10 MB; allocator arenas
        // may move by a few pages.
        assert!(after <= before + (4 << 20), "{device}: RSS grew from {before} to {after} bytes over 10,000 requests");
    }
}
