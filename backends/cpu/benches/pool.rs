//! What one `Pool::run` costs beyond its work: a model runs one kernel after another and
//! most of them post one or more jobs to the pool, so this is paid per kernel.
//!
//! `cargo bench -p kiln-cpu --bench pool` times an empty job (the hand-off alone) and a
//! job of about 8 µs per thread (the hand-off when the workers are still spinning from
//! the previous one, as between a model's kernels).

use criterion::{black_box, Criterion};
use kiln_cpu::gemm::threads::Pool;
use std::time::Duration;

fn work(units: usize) -> f32 {
    let mut x = 1.0f32;
    for i in 0..units {
        x = black_box(x * 1.000001 + i as f32);
    }
    x
}

fn main() {
    let pool = Pool::global();
    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(3));
    println!("pool of {} threads", pool.threads());
    c.bench_function("pool run, empty job", |b| b.iter(|| pool.run(&|i| {
        black_box(i);
    })));
    c.bench_function("pool run, 8 µs per thread", |b| b.iter(|| pool.run(&|_| {
        black_box(work(2000));
    })));
    c.bench_function("one thread, the same 8 µs", |b| b.iter(|| black_box(work(2000))));
    c.final_summary();
}
