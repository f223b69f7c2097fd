//! Compiles a model ahead of time from a crate's `build.rs` (kiln's library, not the CLI):
//! writes `NAME.o` into `OUT_DIR`, archives it as `libNAME.a` with `ar`, tells Cargo to link
//! it, and generates `OUT_DIR/NAME.rs`, a safe wrapper the crate includes:
//!
//! ```ignore
//! // build.rs
//! kiln_build::Build::new("model.onnx", "small_cnn").compile().unwrap();
//! // main.rs
//! include!(concat!(env!("OUT_DIR"), "/small_cnn.rs"));
//! let probs: Vec<f32> = small_cnn::run(&image)?;
//! ```
//!
//! The wrapper checks every input's length, owns the scratch (one per [`Session`], or one
//! per call of the free `run`), and returns outputs as `Vec`s. Weights are embedded.

use kiln_cpu::aot::{self, AotOptions, Cpu, Target, Weights};
use kiln_cpu::lower::program::Port;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub struct Build {
    model: PathBuf,
    name: String,
    input_shapes: Vec<(String, Vec<usize>)>,
    cpu: Cpu,
}

impl Build {
    pub fn new(model: impl AsRef<Path>, name: &str) -> Build {
        Build {
            model: model.as_ref().to_path_buf(),
            name: name.to_string(),
            input_shapes: Vec::new(),
            cpu: Cpu::Native,
        }
    }

    /// Fixes a symbolic input dim, as `--input-shape NAME=D1,D2` does.
    pub fn input_shape(mut self, input: &str, dims: &[usize]) -> Build {
        self.input_shapes.push((input.to_string(), dims.to_vec()));
        self
    }

    /// Code for any x86-64 CPU instead of this machine's (no AVX2 microkernels).
    pub fn baseline_cpu(mut self) -> Build {
        self.cpu = Cpu::Baseline;
        self
    }

    pub fn compile(self) -> Result<(), String> {
        let out = PathBuf::from(
            std::env::var("OUT_DIR").map_err(|_| "OUT_DIR is not set: call this from build.rs")?,
        );
        println!("cargo:rerun-if-changed={}", self.model.display());
        let options = kiln_runtime::LoadOptions {
            input_shapes: self.input_shapes.clone(),
            ..Default::default()
        };
        let mut model =
            kiln_runtime::load_with(&self.model, &options).map_err(|e| e.to_string())?;
        kiln_passes::optimize(&mut model.graph, &kiln_passes::Options::default())
            .map_err(|e| format!("{}: {e}", self.model.display()))?;
        let target = if cfg!(target_arch = "aarch64") {
            Target::Aarch64Linux
        } else {
            Target::X86_64Linux
        };
        let cpu = if target == Target::X86_64Linux {
            self.cpu
        } else {
            Cpu::Baseline
        };
        let opts = AotOptions {
            name: self.name.clone(),
            target,
            cpu,
            weights: Weights::Embed,
            source: self.model.display().to_string(),
        };
        let artifact = aot::compile(&model.graph, &opts)
            .map_err(|e| format!("{}: {e}", self.model.display()))?;
        aot::write(&artifact, &out).map_err(|e| e.to_string())?;
        let obj = out.join(format!("{}.o", self.name));
        let lib = out.join(format!("lib{}.a", self.name));
        let _ = std::fs::remove_file(&lib);
        let ar = std::process::Command::new("ar")
            .arg("crs")
            .arg(&lib)
            .arg(&obj)
            .status()
            .map_err(|e| format!("running ar: {e}"))?;
        if !ar.success() {
            return Err(format!("ar failed to archive {}", obj.display()));
        }
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static={}", self.name);
        let p = &artifact.program;
        std::fs::write(
            out.join(format!("{}.rs", self.name)),
            wrapper(&self.name, &p.inputs, &p.outputs, p.scratch_bytes),
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn rust_type(port: &Port) -> Result<&'static str, String> {
    Ok(match port.dtype.name() {
        "f32" => "f32",
        "f64" => "f64",
        "i32" => "i32",
        "i64" => "i64",
        "u8" => "u8",
        "i8" => "i8",
        d => return Err(format!("{}: no Rust wrapper for {d} tensors", port.name)),
    })
}

fn wrapper(name: &str, inputs: &[Port], outputs: &[Port], scratch: usize) -> String {
    wrapper_checked(name, inputs, outputs, scratch)
        .unwrap_or_else(|e| format!("compile_error!({e:?});"))
}

fn wrapper_checked(
    name: &str,
    inputs: &[Port],
    outputs: &[Port],
    scratch: usize,
) -> Result<String, String> {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "/// `{name}`, compiled ahead of time by kiln-build (generated: do not edit)."
    );
    let _ = writeln!(w, "#[allow(dead_code, clippy::all)]\npub mod {name} {{");
    let _ = writeln!(w, "    extern \"C\" {{\n        fn {name}_run(inputs: *const *const u8, outputs: *const *mut u8, scratch: *mut u8, weights: *const u8, runner: *const u8) -> i32;\n    }}");
    let _ = writeln!(w, "    pub const SCRATCH_BYTES: usize = {scratch};");
    for (what, ports) in [("INPUT", inputs), ("OUTPUT", outputs)] {
        let shapes: Vec<String> = ports.iter().map(|p| format!("&{:?}", p.shape)).collect();
        let names: Vec<String> = ports.iter().map(|p| format!("{:?}", p.name)).collect();
        let _ = writeln!(
            w,
            "    pub const {what}_NAMES: [&str; {}] = [{}];",
            ports.len(),
            names.join(", ")
        );
        let _ = writeln!(
            w,
            "    pub const {what}_SHAPES: [&[usize]; {}] = [{}];",
            ports.len(),
            shapes.join(", ")
        );
    }
    let _ = writeln!(w, "    #[derive(Debug, Clone, PartialEq, Eq)]\n    pub enum Error {{ InputLength {{ input: &'static str, expected: usize, got: usize }}, Run(i32) }}");
    let _ = writeln!(w, "    impl std::fmt::Display for Error {{\n        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{\n            match self {{\n                Error::InputLength {{ input, expected, got }} => write!(f, \"input {{input}} needs {{expected}} elements, got {{got}}\"),\n                Error::Run(c) => write!(f, \"{name}_run returned {{c}}\"),\n            }}\n        }}\n    }}\n    impl std::error::Error for Error {{}}");
    let _ = writeln!(w, "    /// Owns one run's scratch: reuse it for many runs; one run at a time per session.\n    pub struct Session {{ scratch: Vec<u64> }}");
    let params: Vec<String> = inputs
        .iter()
        .enumerate()
        .map(|(k, p)| Ok(format!("x{k}: &[{}]", rust_type(p)?)))
        .collect::<Result<_, String>>()?;
    let out_types: Vec<String> = outputs
        .iter()
        .map(|p| Ok(format!("Vec<{}>", rust_type(p)?)))
        .collect::<Result<_, String>>()?;
    let ret = if out_types.len() == 1 {
        out_types[0].clone()
    } else {
        format!("({})", out_types.join(", "))
    };
    let _ = writeln!(w, "    impl Session {{");
    let _ = writeln!(w, "        pub fn new() -> Session {{ Session {{ scratch: vec![0u64; SCRATCH_BYTES / 8 + 8] }} }}");
    let _ = writeln!(w, "        /// Runs the model; inputs in the order of INPUT_NAMES, each of its shape's element count.");
    let _ = writeln!(
        w,
        "        pub fn run(&mut self, {}) -> Result<{ret}, Error> {{",
        params.join(", ")
    );
    for (k, p) in inputs.iter().enumerate() {
        let n: usize = p.shape.iter().product();
        let _ = writeln!(w, "            if x{k}.len() != {n} {{ return Err(Error::InputLength {{ input: {:?}, expected: {n}, got: x{k}.len() }}); }}", p.name);
    }
    for (k, p) in outputs.iter().enumerate() {
        let n: usize = p.shape.iter().product();
        let _ = writeln!(
            w,
            "            let mut y{k}: Vec<{}> = vec![Default::default(); {n}];",
            rust_type(p)?
        );
    }
    let ins: Vec<String> = (0..inputs.len())
        .map(|k| format!("x{k}.as_ptr() as *const u8"))
        .collect();
    let outs: Vec<String> = (0..outputs.len())
        .map(|k| format!("y{k}.as_mut_ptr() as *mut u8"))
        .collect();
    let _ = writeln!(
        w,
        "            let ins: [*const u8; {}] = [{}];",
        inputs.len(),
        ins.join(", ")
    );
    let _ = writeln!(
        w,
        "            let outs: [*mut u8; {}] = [{}];",
        outputs.len(),
        outs.join(", ")
    );
    let _ = writeln!(w, "            let base = self.scratch.as_mut_ptr() as usize;\n            let aligned = (base + 63) / 64 * 64;");
    let _ = writeln!(w, "            // SAFETY: every buffer has its port's length (checked or allocated above); the scratch\n            // holds SCRATCH_BYTES past the 64-aligned address; embedded weights; no runner.");
    let _ = writeln!(w, "            let code = unsafe {{ {name}_run(ins.as_ptr(), outs.as_ptr(), aligned as *mut u8, std::ptr::null(), std::ptr::null()) }};");
    let _ = writeln!(
        w,
        "            if code != 0 {{ return Err(Error::Run(code)); }}"
    );
    let ys: Vec<String> = (0..outputs.len()).map(|k| format!("y{k}")).collect();
    let _ = writeln!(
        w,
        "            Ok({})",
        if ys.len() == 1 {
            ys[0].clone()
        } else {
            format!("({})", ys.join(", "))
        }
    );
    let _ = writeln!(w, "        }}\n    }}");
    let _ = writeln!(
        w,
        "    impl Default for Session {{ fn default() -> Self {{ Self::new() }} }}"
    );
    let args: Vec<String> = (0..inputs.len()).map(|k| format!("x{k}")).collect();
    let _ = writeln!(w, "    /// One run with a fresh scratch.\n    pub fn run({}) -> Result<{ret}, Error> {{ Session::new().run({}) }}", params.join(", "), args.join(", "));
    let _ = writeln!(w, "}}");
    Ok(s)
}
