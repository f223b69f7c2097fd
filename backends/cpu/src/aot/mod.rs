//! The ahead-of-time artifact (`kiln compile --aot`): a graph lowered by [`crate::lower`]
//! into a cranelift-object module, written as `NAME.o` (every kernel, the AVX2 GEMM
//! microkernels when the target has them, the entry `NAME_run`, the weights as read-only
//! data), `NAME.h` (the C API, [`header`]) and, with [`Weights::File`], `NAME.bin`.
//!
//! The object calls nothing but libc and libm; the header's inline helpers use libc
//! (malloc, open/mmap) to allocate scratch and map the weights.

mod header;

use crate::gemm::module::{define_microkernels, Isa};
use crate::lower::program::{lower_program, Program};
use crate::lower::LowerCtx;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_module::Linkage;
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_ir::Graph;
use std::fmt;
use std::path::{Path, PathBuf};

/// The machine the object is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    X86_64Linux,
    Aarch64Linux,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, AotError> {
        match s {
            "x86_64-linux" => Ok(Target::X86_64Linux),
            "aarch64-linux" => Ok(Target::Aarch64Linux),
            _ => Err(AotError(format!(
                "unknown target `{s}`; the targets are x86_64-linux and aarch64-linux"
            ))),
        }
    }

    fn triple(self) -> &'static str {
        match self {
            Target::X86_64Linux => "x86_64-unknown-linux-gnu",
            Target::Aarch64Linux => "aarch64-unknown-linux-gnu",
        }
    }
}

/// Which instruction-set extensions the code may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpu {
    /// This machine's (x86-64 host only): AVX2+FMA microkernels when it has them.
    Native,
    /// The target's baseline: runs on any CPU of the architecture; portable GEMM.
    Baseline,
}

/// Where the weights go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// Read-only data in `NAME.o`.
    Embed,
    /// `NAME.bin` beside it, mapped by `NAME_create(path)`.
    File,
}

#[derive(Clone, Debug)]
pub struct AotOptions {
    /// The artifact's name: file names and the prefix of every C symbol.
    pub name: String,
    pub target: Target,
    pub cpu: Cpu,
    pub weights: Weights,
    /// Where the model came from, for the header's comment.
    pub source: String,
}

impl AotOptions {
    pub fn new(name: &str) -> AotOptions {
        AotOptions {
            name: name.to_string(),
            target: Target::X86_64Linux,
            cpu: Cpu::Native,
            weights: Weights::Embed,
            source: String::new(),
        }
    }
}

/// What `compile` made, in memory.
pub struct Artifact {
    pub name: String,
    pub object: Vec<u8>,
    pub header: String,
    /// `NAME.bin` (its 64-byte header and the weights) with [`Weights::File`].
    pub weights: Option<Vec<u8>>,
    pub program: Program,
    /// Whether the AVX2+FMA microkernels are in the object.
    pub avx2: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AotError(pub String);

impl fmt::Display for AotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AotError {}

/// Compiles `graph` (after the passes; every shape concrete) into an artifact.
pub fn compile(graph: &Graph, options: &AotOptions) -> Result<Artifact, AotError> {
    let name = &options.name;
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(AotError(format!(
            "`{name}` cannot name C symbols: use letters, digits and _ (not first a digit)"
        )));
    }
    let (isa, avx2) = isa(options)?;
    let builder = ObjectBuilder::new(
        isa,
        name.as_bytes().to_vec(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| AotError(format!("object module: {e}")))?;
    let mut module = ObjectModule::new(builder);
    let microkernels = if avx2 {
        Some(
            define_microkernels(
                &mut module,
                &format!("{name}_sgemm"),
                Linkage::Local,
                Isa::X86_64Avx2Fma,
            )
            .map_err(|e| AotError(format!("placing the microkernels: {e}")))?,
        )
    } else {
        None
    };
    let mut ctx = LowerCtx::new(&mut module, name, microkernels);
    if options.weights == Weights::File {
        ctx.external = Some(Vec::new());
    }
    let program = lower_program(&mut ctx, graph).map_err(|e| AotError(e.to_string()))?;
    let object = module
        .finish()
        .emit()
        .map_err(|e| AotError(format!("writing the object: {e}")))?;
    let weights = program.weights.as_ref().map(|w| weights_file(w));
    let header = header::header(
        name,
        options,
        &program,
        weights.as_deref().map(weights_hash),
    );
    Ok(Artifact {
        name: name.clone(),
        object,
        header,
        weights,
        program,
        avx2,
    })
}

/// Writes `DIR/NAME.o`, `DIR/NAME.h` and, with external weights, `DIR/NAME.bin`; returns
/// the paths written.
pub fn write(artifact: &Artifact, dir: &Path) -> Result<Vec<PathBuf>, AotError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| AotError(format!("creating {}: {e}", dir.display())))?;
    let mut files = vec![
        (
            dir.join(format!("{}.o", artifact.name)),
            artifact.object.as_slice(),
        ),
        (
            dir.join(format!("{}.h", artifact.name)),
            artifact.header.as_bytes(),
        ),
    ];
    if let Some(w) = &artifact.weights {
        files.push((dir.join(format!("{}.bin", artifact.name)), w.as_slice()));
    }
    let mut written = Vec::new();
    for (path, bytes) in files {
        std::fs::write(&path, bytes)
            .map_err(|e| AotError(format!("writing {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

fn isa(options: &AotOptions) -> Result<(OwnedTargetIsa, bool), AotError> {
    let mut flags = settings::builder();
    for (k, v) in [("opt_level", "speed"), ("is_pic", "true")] {
        flags
            .set(k, v)
            .map_err(|e| AotError(format!("setting {k}: {e}")))?;
    }
    let flags = settings::Flags::new(flags);
    let native = options.cpu == Cpu::Native && options.target == Target::X86_64Linux;
    if native {
        if !cfg!(target_arch = "x86_64") {
            return Err(AotError(
                "--cpu native needs an x86-64 host; use --cpu baseline".into(),
            ));
        }
        let isa = cranelift_native::builder()
            .map_err(|e| AotError(format!("host ISA: {e}")))?
            .finish(flags)
            .map_err(|e| AotError(format!("host ISA: {e}")))?;
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        return Ok((isa, avx2));
    }
    let isa = cranelift_codegen::isa::lookup_by_name(options.target.triple())
        .map_err(|e| AotError(format!("target {}: {e}", options.target.triple())))?
        .finish(flags)
        .map_err(|e| AotError(format!("target {}: {e}", options.target.triple())))?;
    Ok((isa, false))
}

/// Magic of `NAME.bin`, then the format version.
pub const WEIGHTS_MAGIC: &[u8; 8] = b"KILNWTS\0";
pub const WEIGHTS_HEADER: usize = 64;

/// `NAME.bin`: magic, version 1, payload size, FNV-1a 64 of the payload, zeros to 64 bytes,
/// then the payload (whose offsets the entry was compiled with).
fn weights_file(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WEIGHTS_HEADER + payload.len());
    out.extend_from_slice(WEIGHTS_MAGIC);
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(payload).to_le_bytes());
    out.resize(WEIGHTS_HEADER, 0);
    out.extend_from_slice(payload);
    out
}

fn weights_hash(file: &[u8]) -> u64 {
    fnv1a(&file[WEIGHTS_HEADER..])
}

/// FNV-1a, 64-bit: short to write again in C, where the header checks it.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
