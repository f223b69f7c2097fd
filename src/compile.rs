//! `kiln compile MODEL --aot -o DIR/NAME`: the ahead-of-time artifact (NAME.o, NAME.h and,
//! with `--weights file`, NAME.bin) from `kiln_cpu::aot`.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use kiln_cpu::aot::{self, AotOptions, Cpu, Target, Weights};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct CompileArgs {
    /// Write an ahead-of-time artifact: an object file and a C header (the only kind of
    /// output `compile` has so far).
    #[arg(long)]
    aot: bool,
    /// DIR/NAME: writes DIR/NAME.o, DIR/NAME.h (and DIR/NAME.bin); NAME prefixes every C symbol.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// x86_64-linux or aarch64-linux.
    #[arg(long, default_value = "x86_64-linux")]
    target: String,
    /// native (this machine's extensions: AVX2+FMA GEMM when present) or baseline (any CPU
    /// of the target). Only x86_64-linux has native.
    #[arg(long, default_value = "native")]
    cpu: String,
    /// embed (weights inside NAME.o) or file (NAME.bin, mapped by NAME_create).
    #[arg(long, default_value = "embed")]
    weights: String,
    /// Optimization level: 0, 1 or 2.
    #[arg(short = 'O', default_value = "2")]
    level: kiln_passes::Level,
}

pub fn compile(path: &Path, mut model: kiln::Model, args: &CompileArgs) -> Result<ExitCode> {
    if !args.aot {
        bail!("`kiln compile` writes ahead-of-time artifacts only: add --aot");
    }
    let target = Target::parse(&args.target)?;
    let cpu = match args.cpu.as_str() {
        "native" if target == Target::X86_64Linux => Cpu::Native,
        "native" | "baseline" => Cpu::Baseline,
        c => bail!("unknown --cpu `{c}`; use native or baseline"),
    };
    let weights = match args.weights.as_str() {
        "embed" => Weights::Embed,
        "file" => Weights::File,
        w => bail!("unknown --weights `{w}`; use embed or file"),
    };
    let name = args.output.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("-o {}: give DIR/NAME", args.output.display()))?;
    let dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    for (input, ty) in model.inputs() {
        if ty.shape.concrete().is_none() {
            bail!("input `{input}` has shape {}: the artifact needs every dim; fix it with --input-shape {input}=D1,D2,…", ty.shape);
        }
    }
    let start = Instant::now();
    let options = kiln_passes::Options { level: args.level, ..kiln_passes::Options::default() };
    kiln_passes::optimize(&mut model.graph, &options).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let options = AotOptions { name: name.to_string(), target, cpu, weights, source: path.display().to_string() };
    let artifact = aot::compile(&model.graph, &options).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let written = aot::write(&artifact, &dir)?;
    let p = &artifact.program;
    println!(
        "compiled {} in {:.2} s: {} kernels, scratch {} bytes{}",
        path.display(),
        start.elapsed().as_secs_f64(),
        p.kernels.len(),
        p.scratch_bytes,
        if artifact.avx2 { ", AVX2+FMA microkernels" } else { "" }
    );
    for f in written {
        let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        println!("  wrote {} ({size} bytes)", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
