//! The user-facing API: load a model from any format, compile it for a device, run requests.
//!
//! ```no_run
//! let model = kiln_runtime::load("model.onnx")?;
//! let compiled = kiln_runtime::compile(&model, "REFERENCE")?;
//! let mut request = compiled.request();
//! let x = kiln_runtime::npy::read("input.npy".as_ref()).unwrap();
//! let outputs = request.infer(&[("input", &x)])?;
//! # Ok::<(), kiln_runtime::Error>(())
//! ```

mod load;
mod memory;
pub mod npy;
mod requests;

pub use load::{load_with, parse_input_shape, LoadOptions};
pub use memory::load_bytes;
pub use requests::{AsyncQueue, Outputs, Pending};

use kiln_backends::Executable;
use kiln_ir::{Graph, Tensor, TensorType};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use kiln_backends::{Backend, BackendError, CompileOptions, Kernel, KernelTiming, PlannedKernel, Program, Registry};
/// What a device implements ([`Backend`]) and hands back (`Executable`), for devices
/// written outside this workspace.
pub use kiln_backends as backends;
pub use kiln_passes::Level;
pub use kiln_ir as ir;

/// Everything that can go wrong, each naming the file or device and the node.
#[derive(Debug)]
pub enum Error {
    /// The model file could not be read or understood.
    Load(String),
    /// The graph is not well formed (names the file and the node).
    Invalid { file: String, error: kiln_ir::IrError },
    /// No device of that name, or the device failed to compile or run.
    Device(BackendError),
    /// The caller's inputs do not fit the model.
    Input(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(m) | Error::Input(m) => f.write_str(m),
            Error::Invalid { file, error } => write!(f, "{file}: {error}"),
            Error::Device(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Error {
        Error::Device(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The file formats kiln reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Onnx,
    /// kiln's own saved IR (`model.kir` + `model.kir.bin`).
    Kir,
    /// A frozen TensorFlow GraphDef (`.pb`).
    TfFrozen,
    /// A TensorFlow SavedModel directory (holding `saved_model.pb`).
    TfSavedModel,
    /// A Keras 3 `.keras` archive.
    Keras,
    /// A legacy Keras `.h5` model.
    KerasH5,
}

impl Format {
    /// The format of `path`, from its extension or, failing that, its first bytes.
    pub fn detect(path: &Path) -> Result<Format> {
        if path.is_dir() && path.join("saved_model.pb").is_file() {
            return Ok(Format::TfSavedModel);
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "onnx" => return Ok(Format::Onnx),
            "kir" => return Ok(Format::Kir),
            "pb" if path.file_name().is_some_and(|f| f == "saved_model.pb") => return Ok(Format::TfSavedModel),
            "pb" => return Ok(Format::TfFrozen),
            "keras" => return Ok(Format::Keras),
            "h5" | "hdf5" => return Ok(Format::KerasH5),
            _ => {}
        }
        let mut head = [0u8; 5];
        use std::io::Read;
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| Error::Load(format!("{}: {e}", path.display())))?;
        if &head[..n] == b"graph" {
            return Ok(Format::Kir);
        }
        Err(Error::Load(format!(
            "{}: cannot tell the model format from the name; expected .onnx, .kir, .pb, .keras, .h5 or a SavedModel directory",
            path.display()
        )))
    }
}

/// A loaded model: its IR graph and where it came from.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    pub path: PathBuf,
    pub format: Format,
}

impl Model {
    pub fn inputs(&self) -> Vec<(String, TensorType)> {
        self.graph.inputs.iter().map(|&n| (self.graph.node(n).name.clone(), self.graph.node(n).outputs[0].clone())).collect()
    }
    pub fn outputs(&self) -> Vec<(String, TensorType)> {
        self.graph.outputs.iter().map(|(name, v)| (name.clone(), self.graph.value_type(*v).clone())).collect()
    }
}

/// Loads a model, detecting its format, and verifies its graph. [`load_with`] takes a
/// SavedModel signature and input shapes.
pub fn load(path: impl AsRef<Path>) -> Result<Model> {
    load_with(path, &LoadOptions::default())
}

fn load_format(path: &Path, format: Format, signature: Option<&str>) -> Result<Model> {
    let graph = match format {
        Format::Onnx => kiln_bridges::onnx::load(path).map_err(|e| Error::Load(e.to_string()))?,
        Format::Kir => kiln_ir::kir::load(path).map_err(|e| Error::Load(e.to_string()))?,
        Format::TfFrozen => kiln_bridges::tensorflow::load_frozen(path).map_err(|e| Error::Load(e.to_string()))?,
        Format::TfSavedModel => {
            let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
            kiln_bridges::tensorflow::load_saved_model(dir, signature).map_err(|e| Error::Load(e.to_string()))?
        }
        Format::Keras | Format::KerasH5 => kiln_bridges::keras::load(path).map_err(|e| Error::Load(e.to_string()))?,
    };
    kiln_ir::verify(&graph).map_err(|error| Error::Invalid { file: path.display().to_string(), error })?;
    Ok(Model { graph, path: path.to_path_buf(), format })
}

/// Every device compiled into this build.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtin();
    r.register(Arc::new(kiln_cpu::Cpu::new()));
    r.register(Arc::new(kiln_opencl::OpenCl::new()));
    r.register_family("OPENCL", |n| {
        kiln_opencl::OpenCl::from_device_string(&format!("OPENCL:{n}"))
            .map(|d| Arc::new(d) as Arc<dyn Backend>)
            .ok_or_else(|| BackendError::new(&format!("OPENCL:{n}"), "expected OPENCL:N with N a device number"))
    });
    r
}

/// Compiles a model for a device: `"REFERENCE"`, `"CPU"`, or `"HETERO:A,B[,C]"` (each
/// kernel on the first listed device that supports it).
pub fn compile(model: &Model, device: &str) -> Result<CompiledModel> {
    compile_with(model, device, &CompileOptions::default())
}

pub fn compile_with(model: &Model, device: &str, options: &CompileOptions) -> Result<CompiledModel> {
    compile_in(&registry(), model, device, options)
}

/// Compiles for a device of `registry`: [`registry`] plus devices of your own.
pub fn compile_in(registry: &Registry, model: &Model, device: &str, options: &CompileOptions) -> Result<CompiledModel> {
    let backend = registry.resolve(device)?;
    let mut graph = model.graph.clone();
    let report = kiln_passes::optimize(&mut graph, &kiln_passes::Options::level(options.level))
        .map_err(|error| Error::Invalid { file: model.path.display().to_string(), error })?;
    let program = Program::new(graph);
    let executable = backend.compile(&program, options)?;
    Ok(CompiledModel {
        inner: Arc::new(Inner {
            executable,
            inputs: model.inputs(),
            outputs: model.outputs(),
            device: backend.name().to_string(),
            report,
            program,
        }),
    })
}

struct Inner {
    executable: Executable,
    report: kiln_passes::Report,
    program: Program,
    inputs: Vec<(String, TensorType)>,
    outputs: Vec<(String, TensorType)>,
    device: String,
}

/// A model compiled for one device. Cheap to clone; serves any number of requests.
#[derive(Clone)]
pub struct CompiledModel {
    inner: Arc<Inner>,
}

impl CompiledModel {
    pub fn request(&self) -> InferRequest {
        InferRequest { model: self.clone(), profiling: false, profile: Vec::new() }
    }
    pub fn inputs(&self) -> &[(String, TensorType)] {
        &self.inner.inputs
    }
    pub fn outputs(&self) -> &[(String, TensorType)] {
        &self.inner.outputs
    }
    pub fn device(&self) -> &str {
        &self.inner.device
    }
    /// What the passes did before the device compiled.
    pub fn report(&self) -> &kiln_passes::Report {
        &self.inner.report
    }
    /// The optimized graph and memory plan the device compiled.
    pub fn program(&self) -> &Program {
        &self.inner.program
    }
    /// The kernels a run executes, in order, with the device that runs each.
    pub fn kernels(&self) -> Vec<PlannedKernel> {
        match self.inner.executable.plan() {
            Some(plan) => plan.to_vec(),
            None => PlannedKernel::per_node(&self.inner.program.graph, &self.inner.device),
        }
    }
}

/// One request: inputs in, outputs out, and the profile of its last run.
pub struct InferRequest {
    model: CompiledModel,
    profiling: bool,
    profile: Vec<KernelTiming>,
}

impl InferRequest {
    /// Runs with named inputs; every model input must be given exactly once.
    pub fn infer(&mut self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let expected = &self.model.inner.inputs;
        for (name, _) in inputs {
            if !expected.iter().any(|(n, _)| n == name) {
                return Err(Error::Input(format!(
                    "the model has no input `{name}`; its inputs are {}",
                    expected.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let mut ordered = Vec::with_capacity(expected.len());
        for (name, _) in expected {
            let mut given = inputs.iter().filter(|(n, _)| n == name);
            let t = given.next().ok_or_else(|| Error::Input(format!("input `{name}` was not given")))?;
            if given.next().is_some() {
                return Err(Error::Input(format!("input `{name}` was given twice")));
            }
            ordered.push(t.1.clone());
        }
        self.infer_ordered(&ordered)
    }

    /// Runs with inputs in the model's input order.
    pub fn infer_ordered(&mut self, inputs: &[Tensor]) -> Result<Vec<(String, Tensor)>> {
        let inner = &self.model.inner;
        if inputs.len() != inner.inputs.len() {
            return Err(Error::Input(format!("the model takes {} inputs, {} were given", inner.inputs.len(), inputs.len())));
        }
        for (t, (name, ty)) in inputs.iter().zip(&inner.inputs) {
            check_input(name, ty, t)?;
        }
        self.profile.clear();
        let profile = if self.profiling { Some(&mut self.profile) } else { None };
        let outs = inner.executable.run(inputs, profile)?;
        Ok(inner.outputs.iter().map(|(n, _)| n.clone()).zip(outs).collect())
    }

    /// Turns per-kernel timing on or off for the following runs.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
    }

    /// Per-kernel timings of the last run (empty unless profiling is on).
    pub fn profile(&self) -> &[KernelTiming] {
        &self.profile
    }
}

fn check_input(name: &str, ty: &TensorType, t: &Tensor) -> Result<()> {
    if ty.dtype != t.dtype() {
        return Err(Error::Input(format!("input `{name}` must be {}, was given {}", ty.dtype, t.dtype())));
    }
    if let Some(dims) = ty.shape.dims() {
        let fits = dims.len() == t.rank() && dims.iter().zip(t.shape()).all(|(d, &s)| d.known().map_or(true, |k| k == s));
        if !fits {
            return Err(Error::Input(format!("input `{name}` must have shape {}, was given {:?}", ty.shape, t.shape())));
        }
    }
    Ok(())
}
