//! GEMM throughput beside the machine's FMA peak, both measured in the same run.
//!
//! `cargo bench -p kiln-cpu --bench gemm` prints the peak (independent 256-bit FMAs on
//! every core, run through the same thread pool), then criterion's timings, then a table of
//! GFLOP/s and % of peak per shape. The CPU issue asks for 70% of peak at 512³ and 1024³.
//! `cargo bench -p kiln-cpu --bench gemm -- none` skips criterion and prints only the table.
//! `cargo bench -p kiln-cpu --bench gemm -- pointwise` prints only 1×1 convolutions' GEMMs
//! with B (the input) read in place against B packed per block, runs interleaved (the
//! driver reads B in place only for m ≤ 32 output channels: other shapes pack both ways).
//!
//! The machine is shared, so each rate is given three ways, each against the peak measured
//! the same way: the best run, the median run, and work per CPU-second this process got.

use criterion::{black_box, Criterion};
use kiln_cpu::gemm::threads::Pool;
use kiln_cpu::gemm::{
    gemm, gemm_source_packed, Epilogue, Options, PackedA, PackedB, PanelSource, RowMajor,
};
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

/// Loop turns of [`fma_loop`] per timed run: about a millisecond, short enough that some
/// runs fit between a busy neighbour's time slices.
const PEAK_ITERS: u64 = 200_000;

/// Times `f` (which does `flops` of work) for about `budget`: best and median GFLOP/s by
/// wall clock, and GFLOP/s per CPU-second of this process (time spent descheduled by other
/// processes on a shared machine is not counted; `threads` turns it into a per-run rate).
struct Rate {
    best: f64,
    median: f64,
    per_cpu: f64,
}

fn measure(flops: f64, threads: usize, budget: Duration, mut f: impl FnMut()) -> Rate {
    f();
    let mut times = Vec::new();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    while times.len() < 10 || (start.elapsed() < budget && times.len() < 100_000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu = cpu_seconds() - cpu0;
    times.sort_by(f64::total_cmp);
    Rate {
        best: flops / times[0] / 1e9,
        median: flops / times[times.len() / 2] / 1e9,
        per_cpu: flops * times.len() as f64 * threads as f64 / cpu / 1e9,
    }
}

/// User + system CPU time of this process, from /proc (in ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// FMA peak over the pool's threads, measured through the pool like the GEMM runs.
fn fma_peak(budget: Duration) -> Option<Rate> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let pool = Pool::global();
        let flops = (pool.threads() as u64 * PEAK_ITERS * 12 * 16) as f64;
        // SAFETY: AVX2 and FMA were detected above.
        return Some(measure(flops, pool.threads(), budget, || {
            pool.run(&|_| unsafe { fma_loop(PEAK_ITERS) })
        }));
    }
    None
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
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
        let a = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
            .collect();
        let b = PackedB::new(k, n, &b, n).unwrap();
        Problem {
            m,
            n,
            k,
            a,
            b,
            c: vec![0.0; m * n],
        }
    }

    fn run(&mut self) {
        let none = Epilogue::none();
        gemm(
            self.m,
            &self.a,
            self.k,
            &self.b,
            &mut self.c,
            self.n,
            false,
            &none,
        )
        .unwrap();
        black_box(&self.c);
    }

    fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }
}

/// 1×1 convolutions of mobilenet_v2 and resnet50 as (output channels, input channels,
/// positions, what).
const POINTWISE: &[(usize, usize, usize, &str)] = &[
    (16, 32, 12544, "mnv2 32→16 112²"),
    (96, 16, 12544, "mnv2 16→96 112²"),
    (24, 96, 3136, "mnv2 96→24 56²"),
    (144, 24, 3136, "mnv2 24→144 56²"),
    (32, 144, 784, "mnv2 144→32 28²"),
    (64, 64, 3136, "r50 64→64 56²"),
    (256, 64, 3136, "r50 64→256 56²"),
    (64, 256, 3136, "r50 256→64 56²"),
    (512, 128, 784, "r50 128→512 28²"),
    (128, 512, 784, "r50 512→128 28²"),
    (1024, 256, 196, "r50 256→1024 14²"),
];

/// The input rows packed per block, as the driver did before reading them in place.
struct Packed<'a>(RowMajor<'a>);

impl PanelSource for Packed<'_> {
    fn pack(&self, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [f32]) {
        self.0.pack(k0, kc, j0, cols, out)
    }
}

/// Best and median ms of the two ways, interleaved call by call for about `budget`.
fn pointwise(budget: Duration) {
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10}",
        "1×1 conv (m, k, p)", "packed", "in place", "med pack", "med place"
    );
    for &(m, k, n, name) in POINTWISE {
        let w: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let x: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
            .collect();
        let a = PackedA::new(m, k, &w, k).unwrap();
        let mut c = vec![0.0f32; m * n];
        let options = Options::default();
        let none = Epilogue::none();
        let mut times = [Vec::new(), Vec::new()];
        let start = Instant::now();
        while times[0].len() < 10 || (start.elapsed() < budget && times[0].len() < 10_000) {
            for (way, t) in times.iter_mut().enumerate() {
                let rows = RowMajor::new(&x, k, n, n).unwrap();
                let packed = Packed(RowMajor::new(&x, k, n, n).unwrap());
                let b: &dyn PanelSource = if way == 0 { &packed } else { &rows };
                let t0 = Instant::now();
                gemm_source_packed(&options, &a, n, b, &mut c, n, false, &none).unwrap();
                t.push(t0.elapsed().as_secs_f64() * 1e3);
                black_box(&c);
            }
        }
        for t in &mut times {
            t.sort_by(f64::total_cmp);
        }
        let med = |t: &[f64]| t[t.len() / 2];
        println!(
            "{name:<22} {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
            times[0][0],
            times[1][0],
            med(&times[0]),
            med(&times[1])
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "pointwise") {
        pointwise(Duration::from_secs(2));
        return;
    }
    let threads = Pool::global().threads();
    let second = Duration::from_secs(1);
    let Some(peak) = fma_peak(second) else {
        println!("no AVX2/FMA on this machine: no peak to compare with");
        return;
    };
    println!("load (/proc/loadavg): {}", uptime());
    println!(
        "FMA peak (256-bit, {threads} threads): best {:.1}, median {:.1}, per CPU-second {:.1} GFLOP/s",
        peak.best, peak.median, peak.per_cpu
    );

    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(second)
        .measurement_time(2 * second)
        .configure_from_args();
    let mut problems: Vec<_> = SHAPES
        .iter()
        .map(|&(m, n, k, _)| Problem::new(m, n, k))
        .collect();
    for (p, &(_, _, _, name)) in problems.iter_mut().zip(SHAPES) {
        criterion.bench_function(&format!("gemm {name}"), |bench| bench.iter(|| p.run()));
    }
    criterion.final_summary();

    // The summary: each rate beside the same kind of peak rate, the peak re-measured just
    // before each shape (a shared machine's load changes by the second). "best" is the
    // fastest run (least disturbed by neighbours); "cpu" counts only the time this process
    // ran (it also counts the pool's polling, so it understates sub-millisecond shapes).
    println!(
        "\n{:<26} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>8}  load",
        "shape", "best ms", "GFLOP/s", "peak", "%peak", "median", "%peak", "cpu %pk"
    );
    for (p, &(_, _, _, name)) in problems.iter_mut().zip(SHAPES) {
        let peak = fma_peak(second / 2).expect("detected above");
        let r = measure(p.flops(), threads, 2 * second, || p.run());
        println!(
            "{name:<26} {:>9.3} {:>9.1} {:>9.1} {:>6.1}% {:>9.1} {:>6.1}% {:>7.1}%  {}",
            p.flops() / r.best / 1e6,
            r.best,
            peak.best,
            100.0 * r.best / peak.best,
            r.median,
            100.0 * r.median / peak.median,
            100.0 * r.per_cpu / peak.per_cpu,
            uptime().split_whitespace().next().unwrap_or("?"),
        );
    }
    let after = fma_peak(second).expect("detected above");
    println!(
        "FMA peak again: best {:.1}, median {:.1}, per CPU-second {:.1} GFLOP/s; load {}",
        after.best,
        after.median,
        after.per_cpu,
        uptime()
    );
}
