//! The `kiln` command line: info, run, convert, dump.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use kiln::ir::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod compile;

#[derive(Parser)]
#[command(name = "kiln", version, about = "kiln: compile and run TensorFlow, Keras and ONNX models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inputs and outputs with types and shapes, op histogram, parameter count and bytes.
    Info {
        model: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        /// Also compile for this device and list each kernel with the device that runs it
        /// and how (e.g. `--device HETERO:CPU,REFERENCE`).
        #[arg(long, short = 'd')]
        device: Option<String>,
        /// Optimization level for --device: 0, 1 or 2.
        #[arg(short = 'O', default_value = "2")]
        level: kiln_passes::Level,
    },
    /// Runs a model on .npy inputs; writes one .npy per output and prints a summary of each.
    Run {
        model: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        /// NAME=FILE.npy, or just FILE.npy for a model with one input. Repeatable.
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
        /// The device (CPU, REFERENCE, OPENCL[:N], HETERO:A,B…); CPU by default, as in
        /// benchmark_app.
        #[arg(long, short = 'd', default_value = "CPU")]
        device: String,
        /// Where to write NAME.npy for each output.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// NAME=FILE.npy (or FILE.npy for the first output): compare with a reference
        /// (rtol 1e-4, atol 1e-5) and fail if it differs. Repeatable.
        #[arg(long = "expect")]
        expects: Vec<String>,
    },
    /// Writes kiln's saved IR: OUT.kir (text) and OUT.kir.bin (weights).
    Convert {
        model: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Store weights as f16 (half the size; computation stays f32).
        #[arg(long)]
        fp16: bool,
        /// With --fp16: NAME=FILE.npy (or FILE.npy for a one-input model) to report how far
        /// each output moves from the f32 model on these inputs. Repeatable.
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
    },
    /// Measures a model on a device: compile and first-run time, latency, throughput, and
    /// with -pc the per-kernel profile (OpenVINO's benchmark_app, for kiln).
    Bench {
        model: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        /// The device (CPU, REFERENCE, OPENCL[:N], HETERO:A,B…); CPU by default, as in
        /// benchmark_app.
        #[arg(long, short = 'd', default_value = "CPU")]
        device: String,
        /// NAME=FILE.npy inputs; missing ones are random (symbolic dims set to 1). Repeatable.
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
        /// Optimization level: 0, 1 or 2.
        #[arg(short = 'O', default_value = "2")]
        level: kiln_passes::Level,
        /// Number of runs (default 100, or as many as fit in --time).
        #[arg(long)]
        niter: Option<usize>,
        /// Seconds to run for (default 10 when --niter is not given).
        #[arg(long)]
        time: Option<f64>,
        /// Worker threads for the device; 0 means one per core.
        #[arg(long, default_value = "0")]
        threads: usize,
        /// Requests in flight at once.
        #[arg(long, default_value = "1")]
        nireq: usize,
        /// Print the per-kernel profile sorted by time (each kernel's median over 20
        /// profiled runs after the benchmark).
        #[arg(long = "pc")]
        per_kernel: bool,
    },
    /// Compiles a model ahead of time: `--aot -o DIR/NAME` writes NAME.o and NAME.h (a C API).
    Compile {
        model: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        args: compile::CompileArgs,
    },
    /// Prints the IR text (large constants elided), as the bridge made it or after the passes.
    Dump {
        model: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        /// Optimization level whose pipeline runs before printing: 0 (none, the default), 1, 2.
        #[arg(short = 'O', default_value = "0")]
        level: kiln_passes::Level,
        /// Print the IR right after this pass of the level's pipeline (default level: 2).
        #[arg(long)]
        after: Option<String>,
        /// List the pipeline's passes with their statistics instead of printing the IR.
        #[arg(long)]
        passes: bool,
    },
}

/// How every subcommand loads its model.
#[derive(Args)]
struct LoadArgs {
    /// NAME=D1,D2,…: fixes an input's unknown or symbolic dims (e.g. x=1,224,224,3). Repeatable.
    #[arg(long = "input-shape")]
    input_shapes: Vec<String>,
    /// The SavedModel signature to read (default serving_default, then serve).
    #[arg(long)]
    signature: Option<String>,
}

fn load_model(path: &Path, args: &LoadArgs) -> Result<kiln::Model> {
    let input_shapes = args.input_shapes.iter().map(|s| kiln::parse_input_shape(s)).collect::<kiln::Result<Vec<_>>>()?;
    let options = kiln::LoadOptions { signature: args.signature.clone(), input_shapes };
    Ok(kiln::load_with(path, &options)?)
}

fn main() -> ExitCode {
    // benchmark_app spells the per-kernel profile flag `-pc`; take that spelling too.
    let cli = Cli::parse_from(std::env::args().map(|a| if a == "-pc" { "--pc".to_string() } else { a }));
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Info { model, load, device, level } => info(&model, &load, device.as_deref(), level),
        Command::Run { model, load, inputs, device, output_dir, expects } => run_model(&model, &load, &inputs, &device, output_dir.as_deref(), &expects),
        Command::Convert { model, load, output, fp16, inputs } => convert(&model, &load, &output, fp16, &inputs),
        Command::Compile { model, load, args } => compile::compile(&model, load_model(&model, &load)?, &args),
        Command::Dump { model, load, level, after, passes } => dump(&model, &load, level, after, passes),
        Command::Bench { model, load, device, inputs, level, niter, time, threads, nireq, per_kernel } => {
            let m = load_model(&model, &load)?;
            let given = read_inputs(&m, &inputs)?;
            let mut ordered = Vec::new();
            for (i, (name, ty)) in m.inputs().iter().enumerate() {
                match given.iter().find(|(n, _)| n == name) {
                    Some((_, t)) => ordered.push(t.clone()),
                    None => ordered.push(bench::random_input(name, ty, i as u64)?),
                }
            }
            let settings = bench::Settings { device, level, niter, time, threads, nireq, per_kernel };
            bench::bench(&m, ordered, &settings)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn dump(path: &Path, load: &LoadArgs, level: kiln_passes::Level, after: Option<String>, list_passes: bool) -> Result<ExitCode> {
    use kiln_passes::Level;
    let mut m = load_model(path, load)?;
    // Asking for a pass or the pass list means the full pipeline unless a level is given.
    let level = if level == Level::O0 && (after.is_some() || list_passes) { Level::O2 } else { level };
    let options = kiln_passes::Options { level, stop_after: after, ..kiln_passes::Options::default() };
    let report = kiln_passes::optimize(&mut m.graph, &options).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if list_passes {
        print!("{report}");
        println!("kernels: {}", kiln_passes::op_count(&m.graph));
        // Symbolic dims (a Keras batch N) are planned at 1, as `kiln bench` runs them.
        let at_one: Vec<Vec<usize>> = m
            .inputs()
            .iter()
            .map(|(_, t)| t.shape.dims().unwrap_or(&[]).iter().map(|d| d.known().unwrap_or(1)).collect())
            .collect();
        let symbolic = m.inputs().iter().any(|(_, t)| t.shape.dims().map_or(true, |d| d.iter().any(|d| d.known().is_none())));
        match kiln_passes::plan::plan_for_inputs(&m.graph, &at_one) {
            Ok(plan) => println!(
                "memory plan{}: arena {} for {} of intermediates ({:.1}%){}",
                if symbolic { " (symbolic dims at 1)" } else { "" },
                human_bytes(plan.arena_bytes),
                human_bytes(plan.total_bytes),
                100.0 * plan.arena_bytes as f64 / plan.total_bytes.max(1) as f64,
                if plan.dynamic.is_empty() { String::new() } else { format!(", {} values sized at run time", plan.dynamic.len()) }
            ),
            Err(e) => println!("memory plan: none ({e})"),
        }
    } else {
        print!("{}", kiln::ir::text::print(&m.graph, kiln::ir::text::Weights::Elided));
    }
    Ok(ExitCode::SUCCESS)
}

fn info(path: &Path, load: &LoadArgs, device: Option<&str>, level: kiln_passes::Level) -> Result<ExitCode> {
    let m = load_model(path, load)?;
    println!("model: {} ({:?})", path.display(), m.format);
    println!("inputs:");
    for (name, ty) in m.inputs() {
        println!("  {name}: {ty}");
    }
    println!("outputs:");
    for (name, ty) in m.outputs() {
        println!("  {name}: {ty}");
    }
    let (count, bytes) = m.graph.parameter_stats();
    println!("parameters: {count} ({})", human_bytes(bytes));
    let hist = m.graph.op_histogram();
    let total: usize = hist.iter().map(|(_, c)| c).sum();
    println!("ops: {total} nodes");
    let mut hist = hist;
    hist.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (op, c) in hist {
        println!("  {op:<24} {c}");
    }
    if let Some(device) = device {
        print_kernels(&m, device, level)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Each kernel of the compiled model in run order, with its device and kind, then the
/// count per device.
fn print_kernels(m: &kiln::Model, device: &str, level: kiln_passes::Level) -> Result<()> {
    let options = kiln::CompileOptions { level, ..Default::default() };
    let compiled = kiln::compile_with(m, device, &options)?;
    let kernels = compiled.kernels();
    println!("kernels on {} ({level}): {}", compiled.device(), kernels.len());
    let width = kernels.iter().map(|k| k.device.len()).max().unwrap_or(0).max(6);
    let kind_width = kernels.iter().map(|k| k.kind.chars().count()).max().unwrap_or(0).max(4);
    println!("  {:>4}  {:<width$}  {:<kind_width$}  nodes", "#", "device", "kind");
    let mut per_device: Vec<(String, usize)> = Vec::new();
    for (i, k) in kernels.iter().enumerate() {
        let nodes = if k.nodes.len() > 3 { format!("{}, … ({} nodes)", k.nodes[..3].join(", "), k.nodes.len()) } else { k.nodes.join(", ") };
        println!("  {i:>4}  {:<width$}  {:<kind_width$}  {nodes}", k.device, k.kind);
        match per_device.iter_mut().find(|(d, _)| *d == k.device) {
            Some((_, c)) => *c += 1,
            None => per_device.push((k.device.clone(), 1)),
        }
    }
    let summary: Vec<String> = per_device.iter().map(|(d, c)| format!("{d} {c}")).collect();
    println!("kernels per device: {}", summary.join(", "));
    // Under HETERO each change of device in run order is another subgraph, with tensors
    // handed across between them.
    let subgraphs = kernels.windows(2).filter(|w| w[0].device != w[1].device).count() + usize::from(!kernels.is_empty());
    println!("subgraphs: {subgraphs}");
    Ok(())
}

fn human_bytes(b: usize) -> String {
    const U: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < 3 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", U[i]) }
}

/// Splits `NAME=FILE` (or a bare `FILE`, returning no name).
fn split_named(s: &str) -> (Option<&str>, &str) {
    match s.split_once('=') {
        Some((n, f)) if !n.is_empty() => (Some(n), f),
        _ => (None, s),
    }
}

fn run_model(path: &Path, load: &LoadArgs, inputs: &[String], device: &str, output_dir: Option<&Path>, expects: &[String]) -> Result<ExitCode> {
    let m = load_model(path, load)?;
    let named = read_inputs(&m, inputs)?;
    let compiled = kiln::compile(&m, device)?;
    let mut request = compiled.request();
    let args: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let start = std::time::Instant::now();
    let outputs = request.infer(&args)?;
    let elapsed = start.elapsed();
    println!("ran {} on {} in {:.1} ms", path.display(), compiled.device(), elapsed.as_secs_f64() * 1e3);
    if let Some(dir) = output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, t) in &outputs {
        println!("  {name}: {}", summary(t));
        if let Some(dir) = output_dir {
            let file = dir.join(format!("{}.npy", sanitize(name)));
            kiln::npy::write(&file, t).map_err(|e| anyhow!(e))?;
            println!("    written to {}", file.display());
        }
    }
    let mut all_match = true;
    for spec in expects {
        let (name, file) = split_named(spec);
        let (name, got) = match name {
            Some(n) => outputs.iter().find(|(o, _)| o == n).ok_or_else(|| anyhow!("the model has no output `{n}`"))?,
            None => outputs.first().ok_or_else(|| anyhow!("the model has no outputs"))?,
        };
        let want = kiln::npy::read(Path::new(file)).map_err(|e| anyhow!(e))?;
        match compare(got, &want, 1e-4, 1e-5) {
            Ok(max_abs) => println!("  {name} matches {file} (max abs diff {max_abs:.3e}, rtol 1e-4, atol 1e-5)"),
            Err(why) => {
                println!("  {name} DIFFERS from {file}: {why}");
                all_match = false;
            }
        }
    }
    Ok(if all_match { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// `NAME=FILE.npy` (or a bare `FILE.npy` for a one-input model) to named tensors.
fn read_inputs(m: &kiln::Model, inputs: &[String]) -> Result<Vec<(String, Tensor)>> {
    let model_inputs = m.inputs();
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for spec in inputs {
        let (name, file) = split_named(spec);
        let name = match name {
            Some(n) => n.to_string(),
            None if model_inputs.len() == 1 => model_inputs[0].0.clone(),
            None => bail!("the model has {} inputs; name each one: --input NAME=FILE.npy", model_inputs.len()),
        };
        let t = kiln::npy::read(Path::new(file)).map_err(|e| anyhow!(e))?;
        named.push((name, t));
    }
    Ok(named)
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Max absolute difference when every element satisfies |a-b| <= atol + rtol*|b|.
fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> std::result::Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} vs {:?}", got.shape(), want.shape()));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut max_abs = 0.0f64;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let d = (a - b).abs();
        if a.is_nan() != b.is_nan() || (!a.is_nan() && d > atol + rtol * b.abs()) {
            return Err(format!("element {i}: {a} vs {b}"));
        }
        if d.is_finite() {
            max_abs = max_abs.max(d);
        }
    }
    Ok(max_abs)
}

fn summary(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    let mut s = format!("{}{:?}", t.dtype(), t.shape());
    if !v.is_empty() {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        s += &format!(" min {min:.6} max {max:.6} mean {mean:.6}");
        let head: Vec<String> = v.iter().take(6).map(|x| if t.dtype() == DType::Bool || t.dtype().is_int() { format!("{x}") } else { format!("{x:.6}") }).collect();
        s += &format!(" [{}{}]", head.join(", "), if v.len() > 6 { ", …" } else { "" });
    }
    s
}

fn convert(path: &Path, load: &LoadArgs, out: &Path, fp16: bool, inputs: &[String]) -> Result<ExitCode> {
    let mut m = load_model(path, load)?;
    if !inputs.is_empty() && !fp16 {
        bail!("--input is for measuring --fp16's accuracy change; add --fp16");
    }
    if fp16 {
        let original = m.graph.clone();
        let stats = kiln_passes::fp16::compress_weights(&mut m.graph);
        println!("fp16: {stats}");
        if !inputs.is_empty() {
            let named = read_inputs(&m, inputs)?;
            let mut ordered = Vec::new();
            for (name, _) in m.inputs() {
                let t = named.iter().find(|(n, _)| *n == name).ok_or_else(|| anyhow!("input `{name}` was not given"))?;
                ordered.push(t.1.clone());
            }
            let drifts = kiln_passes::fp16::accuracy(&original, &m.graph, &ordered).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            println!("fp16 accuracy change against f32 on the given inputs:");
            for d in drifts {
                println!("  {d}");
            }
        }
    }
    kiln::ir::kir::save(&m.graph, out).map_err(|e| anyhow!("{e}"))?;
    let bin = PathBuf::from(format!("{}.bin", out.display()));
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} and {} ({})", out.display(), bin.display(), human_bytes(size as usize));
    Ok(ExitCode::SUCCESS)
}
