//! resnet50's convolution shapes through the generated GEMM kernels (`lower/gemm`, what the
//! ahead-of-time artifact runs) against the JIT's step path (`kiln_cpu::Cpu` on a one-node
//! graph): milliseconds per call, one thread and two (the kernel's units split in two
//! halves on two threads; the JIT on its pool of two).
//!
//! `cargo bench -p kiln-cpu --bench lower_gemm` (optionally `-- NAME_FILTER`). Each figure is
//! the median of 15 timed runs after 2 warm-up runs, best in brackets; the machine is shared,
//! so compare the two columns of one run, not numbers between runs.

#[path = "../tests/lower_gemm_util/mod.rs"]
mod lower_gemm_util;

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::Cpu;
use kiln_ir::{AutoPad, Graph, Op, Tensor};
use lower_gemm_util::{compile, node, rand, Kernels};
use std::time::Instant;

/// (what, x shape, w shape, stride, pad)
const SHAPES: &[(&str, [usize; 4], [usize; 4], i64, i64)] = &[
    ("7x7/2 3→64 on 224", [1, 3, 224, 224], [64, 3, 7, 7], 2, 3),
    ("1x1 64→64 on 56", [1, 64, 56, 56], [64, 64, 1, 1], 1, 0),
    ("3x3 64→64 on 56", [1, 64, 56, 56], [64, 64, 3, 3], 1, 1),
    ("1x1 64→256 on 56", [1, 64, 56, 56], [256, 64, 1, 1], 1, 0),
    ("1x1 256→64 on 56", [1, 256, 56, 56], [64, 256, 1, 1], 1, 0),
    (
        "1x1/2 256→512 on 56",
        [1, 256, 56, 56],
        [512, 256, 1, 1],
        2,
        0,
    ),
    (
        "3x3/2 128→128 on 56",
        [1, 128, 56, 56],
        [128, 128, 3, 3],
        2,
        1,
    ),
    (
        "3x3 128→128 on 28",
        [1, 128, 28, 28],
        [128, 128, 3, 3],
        1,
        1,
    ),
    (
        "1x1 128→512 on 28",
        [1, 128, 28, 28],
        [512, 128, 1, 1],
        1,
        0,
    ),
    (
        "3x3 256→256 on 14",
        [1, 256, 14, 14],
        [256, 256, 3, 3],
        1,
        1,
    ),
    (
        "1x1 1024→256 on 14",
        [1, 1024, 14, 14],
        [256, 1024, 1, 1],
        1,
        0,
    ),
    ("3x3 512→512 on 7", [1, 512, 7, 7], [512, 512, 3, 3], 1, 1),
    (
        "1x1 2048→512 on 7",
        [1, 2048, 7, 7],
        [512, 2048, 1, 1],
        1,
        0,
    ),
    ("1x1 512→2048 on 7", [1, 512, 7, 7], [2048, 512, 1, 1], 1, 0),
];

const RUNS: usize = 15;

/// (median, best) of `RUNS` timed calls in ms.
fn time(mut f: impl FnMut()) -> (f64, f64) {
    f();
    f();
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[RUNS / 2], t[0])
}

fn conv_op(s: i64, p: i64) -> Op {
    Op::Conv {
        auto_pad: AutoPad::NotSet,
        dilations: vec![],
        group: 1,
        kernel_shape: vec![],
        pads: vec![p; 4],
        strides: vec![s; 2],
    }
}

fn jit(x: &Tensor, w: &Tensor, b: &Tensor, op: &Op, threads: usize) -> (f64, f64) {
    let mut g = Graph::new("conv");
    let xv = g.add_input(
        "x",
        kiln_ir::TensorType::known(kiln_ir::DType::F32, x.shape()),
    );
    let wv = g.add_const("w", w.clone());
    let bv = g.add_const("b", b.clone());
    let y = g.add1(op.clone(), "conv", &[xv, wv, bv]).unwrap();
    g.add_output("y", y);
    let options = CompileOptions {
        threads,
        ..CompileOptions::default()
    };
    let exe = Cpu::new().compile(&Program::new(g), &options).unwrap();
    let inputs = [x.clone()];
    time(|| {
        exe.run(&inputs, None).unwrap();
    })
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!("| shape | AOT 1 thread | JIT 1 thread | ratio | AOT 2 threads | JIT 2 threads | ratio | kernel |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut aot1, mut jit1, mut aot2, mut jit2) = (0.0, 0.0, 0.0, 0.0);
    for &(what, xs, ws, s, p) in SHAPES {
        if filter.as_ref().is_some_and(|f| !what.contains(f.as_str())) {
            continue;
        }
        let (x, w, b) = (rand(&xs, 1), rand(&ws, 2), rand(&[ws[0]], 3));
        let op = conv_op(s, p);
        let n = node(op.clone(), &[&x, &w, &b], &[false, true, true]);
        let inputs = [Some(x.clone()), Some(w.clone()), Some(b.clone())];
        let c = compile(&n, &inputs, &[false, true, true], Kernels::Native).expect("lowered");
        let len: usize = c.out_shape.iter().product();
        let mut out = vec![0.0f32; len];
        let args = c.args(&inputs, &mut out);
        let a1 = time(|| c.run_all(&args));
        let a2 = time(|| c.run_two_threads(&args));
        let j1 = jit(&x, &w, &b, &op, 1);
        let j2 = jit(&x, &w, &b, &op, 2);
        aot1 += a1.0;
        jit1 += j1.0;
        aot2 += a2.0;
        jit2 += j2.0;
        println!(
            "| {what} | {:.3} ({:.3}) | {:.3} ({:.3}) | {:.2} | {:.3} ({:.3}) | {:.3} ({:.3}) | {:.2} | {} units |",
            a1.0, a1.1, j1.0, j1.1, a1.0 / j1.0, a2.0, a2.1, j2.0, j2.1, a2.0 / j2.0, c.kernel.units
        );
    }
    println!(
        "| sum of medians | {aot1:.3} | {jit1:.3} | {:.2} | {aot2:.3} | {jit2:.3} | {:.2} | |",
        aot1 / jit1,
        aot2 / jit2
    );
}
