//! `kiln bench`: OpenVINO's benchmark_app for kiln. Compiles a model for a device, runs it
//! on given or random inputs, and reports compile and first-inference time, latency
//! statistics, throughput and (with `-pc`) the per-kernel profile.

use anyhow::{anyhow, bail, Result};
use kiln::ir::{DType, Dim, Tensor, TensorType};
use std::time::{Duration, Instant};

pub struct Settings {
    pub device: String,
    pub level: kiln::Level,
    pub niter: Option<usize>,
    pub time: Option<f64>,
    pub threads: usize,
    pub nireq: usize,
    pub per_kernel: bool,
}

/// Stand-in inputs for a benchmark: floats uniform in [-1, 1), integers in [0, 10) (valid
/// indices for any embedding of 10 rows or more), bools alternating. Symbolic dims are 1.
pub fn random_input(name: &str, ty: &TensorType, seed: u64) -> Result<Tensor> {
    let dims = ty.shape.dims().ok_or_else(|| anyhow!("input `{name}` has an unknown rank; give an input file"))?;
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Dim::Known(k) => Ok(*k),
            Dim::Sym(_) | Dim::Unknown => Ok(1),
        })
        .collect::<Result<_>>()?;
    let n = kiln::ir::tensor::checked_numel(&shape).map_err(|e| anyhow!("input `{name}`: {e}"))?;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let vals: Vec<f64> = (0..n)
        .map(|i| match ty.dtype {
            DType::Bool => (i % 2) as f64,
            d if d.is_int() => (next() * 10.0).floor(),
            _ => next() * 2.0 - 1.0,
        })
        .collect();
    Tensor::from_f64(ty.dtype, shape, &vals).map_err(|e| anyhow!("input `{name}`: {e}"))
}

struct Stats {
    count: usize,
    median: Duration,
    mean: Duration,
    min: Duration,
    max: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let count = v.len();
    let total: Duration = v.iter().sum();
    Stats { count, median: v[count / 2], mean: total / count as u32, min: v[0], max: v[count - 1] }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Profiled runs after the benchmark, whose per-kernel medians `--pc` prints.
const PROFILE_RUNS: usize = 20;

pub fn bench(model: &kiln::Model, inputs: Vec<Tensor>, s: &Settings) -> Result<()> {
    if s.nireq == 0 {
        bail!("--nireq must be at least 1");
    }
    let options = kiln::CompileOptions { threads: s.threads, level: s.level };
    let start = Instant::now();
    let compiled = kiln::compile_with(model, &s.device, &options)?;
    let compile_time = start.elapsed();
    println!("model:        {}", model.path.display());
    println!("device:       {} ({}, {} threads requested, 0 = one per core)", compiled.device(), s.level, s.threads);
    println!("kernels:      {}", kiln_passes::op_count(&compiled.program().graph));
    let mut placement: Vec<(String, usize)> = Vec::new();
    for k in compiled.kernels() {
        match placement.iter_mut().find(|(d, _)| *d == k.device) {
            Some((_, n)) => *n += 1,
            None => placement.push((k.device, 1)),
        }
    }
    // Only a HETERO device spreads kernels; one device's count is the line above.
    if placement.len() > 1 {
        let per: Vec<String> = placement.iter().map(|(d, n)| format!("{d} {n}")).collect();
        println!("placement:    {}", per.join(", "));
    }
    println!("compile:      {:.1} ms", ms(compile_time));

    let mut request = compiled.request();
    let t = Instant::now();
    request.infer_ordered(&inputs)?;
    println!("first run:    {:.2} ms", ms(t.elapsed()));

    let budget = s.time.map(Duration::from_secs_f64);
    let niter = s.niter.unwrap_or(if budget.is_some() { usize::MAX } else { 100 });
    let budget = budget.unwrap_or(if s.niter.is_some() { Duration::MAX } else { Duration::from_secs(10) });
    let wall = Instant::now();
    // Each in-flight request runs on its own thread, as OpenVINO's async requests do.
    let per_request: Vec<Vec<Duration>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.nireq)
            .map(|r| {
                let compiled = compiled.clone();
                let inputs = &inputs;
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let mut request = compiled.request();
                    let mut times = Vec::new();
                    let mut i = r;
                    while i < niter && wall.elapsed() < budget {
                        let t = Instant::now();
                        request.infer_ordered(inputs)?;
                        times.push(t.elapsed());
                        i += s.nireq;
                    }
                    Ok(times)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow!("a benchmark thread panicked"))?).collect::<Result<_>>()
    })?;
    let elapsed = wall.elapsed();
    let all: Vec<Duration> = per_request.into_iter().flatten().collect();
    if all.is_empty() {
        bail!("no iteration finished within the time budget");
    }
    let st = stats(all);
    println!("iterations:   {} in {:.2} s with {} request(s) in flight", st.count, elapsed.as_secs_f64(), s.nireq);
    println!("latency:      median {:.2} ms, average {:.2} ms, min {:.2} ms, max {:.2} ms", ms(st.median), ms(st.mean), ms(st.min), ms(st.max));
    println!("throughput:   {:.2} inferences/s", st.count as f64 / elapsed.as_secs_f64());

    if s.per_kernel {
        // Each kernel's median over several profiled runs: one run's times swing by up to
        // 5× on a shared machine (a cold cache, a late thread), and a single profile made
        // small kernels look several times slower than they run in the benchmark.
        request.set_profiling(true);
        request.infer_ordered(&inputs)?; // warm-up with profiling on, not counted
        let mut rows = request.profile().to_vec();
        let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(PROFILE_RUNS); rows.len()];
        let mut runs = 0;
        for _ in 0..PROFILE_RUNS {
            request.infer_ordered(&inputs)?;
            let profile = request.profile();
            // A plan whose steps vary from run to run (shapes known only at run time)
            // cannot be lined up: its last run is shown.
            if profile.len() != rows.len() {
                rows = profile.to_vec();
                runs = 1;
                times.clear();
                break;
            }
            for (t, r) in times.iter_mut().zip(profile) {
                t.push(r.nanos);
            }
            runs += 1;
        }
        for (r, t) in rows.iter_mut().zip(times.iter_mut()) {
            t.sort_unstable();
            r.nanos = t[t.len() / 2];
        }
        rows.sort_by(|a, b| b.nanos.cmp(&a.nanos));
        let total: u64 = rows.iter().map(|r| r.nanos).sum();
        println!("per-kernel profile, each kernel's median over {runs} runs ({:.2} ms in kernels):", total as f64 / 1e6);
        let device_width = rows.iter().map(|r| r.device.len()).max().unwrap_or(0).max(10);
        let kind_width = rows.iter().map(|r| r.kind.chars().count()).max().unwrap_or(0).max(20);
        println!("  {:>9} {:>6}  {:<device_width$} {:<kind_width$} nodes", "ms", "%", "device", "kind");
        for r in rows {
            let nodes = if r.nodes.len() > 3 { format!("{}, … ({} nodes)", r.nodes[..3].join(", "), r.nodes.len()) } else { r.nodes.join(", ") };
            println!(
                "  {:>9.3} {:>5.1}%  {:<device_width$} {:<kind_width$} {}",
                r.nanos as f64 / 1e6,
                100.0 * r.nanos as f64 / total.max(1) as f64,
                r.device,
                r.kind,
                nodes
            );
        }
    }
    Ok(())
}
