//! GEMM throughput beside the machine's FMA peak, both measured in the same run.
//!
//! `cargo bench -p kiln-cpu --bench gemm` prints the peak (independent 256-bit FMAs on
//! every core), then criterion's timings, then a table of GFLOP/s and % of peak per shape
//! (median of repeated runs). The CPU issue asks for 70% of peak at 512³ and 1024³.

use criterion::{black_box, Criterion};
use kiln_cpu::gemm::threads::Pool;
use kiln_cpu::gemm::{gemm, Epilogue, PackedB};
use std::time::{Duration, Instant};

/// (m, n, k, what)
const SHAPES: &[(usize, usize, usize, &str)] = &[
    (512, 512, 512, "512³"),
    (1024, 1024, 1024, "1024³"),
    (1, 1000, 2048, "dense 1×1000×2048"),
    (3136, 64, 576, "resnet conv 3136×64×576"),
    (49, 2048, 512, "resnet late 49×2048×512"),
];

/// 12 independent FMA chains (enough to cover 4-cycle latency on 2 pipes), 64 iterations
/// of 12 per loop turn: `iters` × 12 × 16 flops.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop(iters: u64) {
    std::arch::asm!(
        "vxorps ymm0, ymm0, ymm0",
        "vmovaps ymm1, ymm0", "vmovaps ymm2, ymm0", "vmovaps ymm3, ymm0",
        "vmovaps ymm4, ymm0", "vmovaps ymm5, ymm0", "vmovaps ymm6, ymm0",
        "vmovaps ymm7, ymm0", "vmovaps ymm8, ymm0", "vmovaps ymm9, ymm0",
        "vmovaps ymm10, ymm0", "vmovaps ymm11, ymm0",
        "vmovaps ymm12, ymm0", "vmovaps ymm13, ymm0",
        "2:",
        "vfmadd231ps ymm0, ymm12, ymm13", "vfmadd231ps ymm1, ymm12, ymm13",
        "vfmadd231ps ymm2, ymm12, ymm13", "vfmadd231ps ymm3, ymm12, ymm13",
        "vfmadd231ps ymm4, ymm12, ymm13", "vfmadd231ps ymm5, ymm12, ymm13",
        "vfmadd231ps ymm6, ymm12, ymm13", "vfmadd231ps ymm7, ymm12, ymm13",
        "vfmadd231ps ymm8, ymm12, ymm13", "vfmadd231ps ymm9, ymm12, ymm13",
        "vfmadd231ps ymm10, ymm12, ymm13", "vfmadd231ps ymm11, ymm12, ymm13",
        "dec {n}",
        "jnz 2b",
        "vzeroupper",
        n = inout(reg) iters => _,
        out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
        out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
        out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _,
        options(nostack),
    );
}

/// FMA peak in GFLOP/s over `threads` threads: the best of several short runs.
fn fma_peak(threads: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let iters: u64 = 20_000_000;
        let mut best: f64 = 0.0;
        for _ in 0..5 {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    // SAFETY: AVX2 and FMA were detected above.
                    s.spawn(|| unsafe { fma_loop(iters) });
                }
            });
            let flops = (threads as u64 * iters * 12 * 16) as f64;
            best = best.max(flops / start.elapsed().as_secs_f64() / 1e9);
        }
        return best;
    }
    f64::NAN
}

struct Problem {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    b: PackedB,
    c: Vec<f32>,
}

impl Problem {
    fn new(m: usize, n: usize, k: usize) -> Problem {
        let a = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
        let b = PackedB::new(k, n, &b, n).unwrap();
        Problem { m, n, k, a, b, c: vec![0.0; m * n] }
    }

    fn run(&mut self) {
        let none = Epilogue::none();
        gemm(self.m, &self.a, self.k, &self.b, &mut self.c, self.n, false, &none).unwrap();
        black_box(&self.c);
    }

    fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }

    /// Median seconds per call over about half a second.
    fn median_seconds(&mut self) -> f64 {
        self.run();
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < 10 || (start.elapsed() < Duration::from_millis(500) && times.len() < 2000) {
            let t = Instant::now();
            self.run();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    }
}

fn main() {
    let threads = Pool::global().threads();
    let peak = fma_peak(threads);
    println!("FMA peak (256-bit, {threads} threads): {peak:.1} GFLOP/s");

    let mut criterion = Criterion::default().configure_from_args();
    let mut problems: Vec<_> = SHAPES.iter().map(|&(m, n, k, _)| Problem::new(m, n, k)).collect();
    for (p, &(_, _, _, name)) in problems.iter_mut().zip(SHAPES) {
        criterion.bench_function(&format!("gemm {name}"), |bench| bench.iter(|| p.run()));
    }
    criterion.final_summary();

    // Peak again after the GEMMs, so a neighbour's load shows up as a gap between the two.
    let peak_after = fma_peak(threads);
    println!("\nFMA peak before/after: {peak:.1} / {peak_after:.1} GFLOP/s");
    println!("{:<28} {:>10} {:>10} {:>8}", "shape", "ms", "GFLOP/s", "% peak");
    for (p, &(_, _, _, name)) in problems.iter_mut().zip(SHAPES) {
        let s = p.median_seconds();
        let gflops = p.flops() / s / 1e9;
        println!("{name:<28} {:>10.3} {gflops:>10.1} {:>7.1}%", s * 1e3, 100.0 * gflops / peak);
    }
}
