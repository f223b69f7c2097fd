//! The `Backend` trait, the device registry, and the REFERENCE device.
//!
//! A device implements one trait, [`Backend`]: it says which kernels it can run and compiles
//! a [`Program`] into an [`Executable`]. Everything else — loading, passes, requests,
//! profiling, the command line — comes from the runtime and works for every device.

mod reference;

use kiln_ir::{Graph, Node, Tensor};
use kiln_passes::{Level, MemoryPlan};
use std::fmt;
use std::sync::Arc;

pub use reference::Reference;

/// Why a compile or a run failed. Names the node when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendError {
    pub device: String,
    pub node: Option<String>,
    pub message: String,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "{}: node {}: {}", self.device, n, self.message),
            None => write!(f, "{}: {}", self.device, self.message),
        }
    }
}

impl std::error::Error for BackendError {}

impl BackendError {
    pub fn new(device: &str, message: impl Into<String>) -> BackendError {
        BackendError { device: device.to_string(), node: None, message: message.into() }
    }
    pub fn from_ir(device: &str, e: kiln_ir::IrError) -> BackendError {
        BackendError { device: device.to_string(), node: e.node, message: e.message }
    }
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// A unit of work a device may take or refuse. Until the fusion pass lands, a kernel is
/// one IR node; afterwards it is a fused kernel (an anchor op and its expression DAG).
pub struct Kernel<'a> {
    pub node: &'a Node,
}

/// What the passes hand to a backend: the optimized graph, whose `Op::Fused` nodes are the
/// fused kernels, and the memory plan of its intermediates when their sizes are known.
#[derive(Clone, Debug)]
pub struct Program {
    pub graph: Graph,
    pub plan: Option<MemoryPlan>,
}

impl Program {
    /// A program of `graph` as it is, planned when its shapes allow.
    pub fn new(graph: Graph) -> Program {
        let plan = kiln_passes::plan::plan(&graph);
        Program { graph, plan }
    }
}

#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Worker threads a device may use; 0 means one per core.
    pub threads: usize,
    /// How much the passes optimize before the device compiles.
    pub level: Level,
}

/// One kernel's share of a run, as a profile reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTiming {
    /// The source model's names of the nodes the kernel covers.
    pub nodes: Vec<String>,
    /// The kernel's kind (its anchor op's name).
    pub kind: String,
    pub device: String,
    pub nanos: u64,
}

/// What a run computes: inputs (in the graph's input order) to outputs in order, appending
/// each kernel's time to the profile when one is given.
pub type RunFn = dyn Fn(&[Tensor], Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> + Send + Sync;

/// A compiled program, ready to run any number of times from any number of threads. A
/// plain value wrapping the device's run function, so a device implements one trait only.
#[derive(Clone)]
pub struct Executable {
    run: Arc<RunFn>,
}

impl Executable {
    pub fn new(run: impl Fn(&[Tensor], Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Executable {
        Executable { run: Arc::new(run) }
    }

    pub fn run(&self, inputs: &[Tensor], profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> {
        (self.run)(inputs, profile)
    }
}

/// A device. Implement this one trait to add one.
pub trait Backend: Send + Sync {
    /// The device name used in device strings (`"CPU"`, `"REFERENCE"`).
    fn name(&self) -> &str;
    /// Whether this device can run `kernel`; the rest falls back to another device (HETERO).
    fn supports(&self, kernel: &Kernel) -> bool;
    fn compile(&self, program: &Program, options: &CompileOptions) -> Result<Executable>;
}

/// Devices by name. The runtime builds one with every device compiled in.
#[derive(Default, Clone)]
pub struct Registry {
    devices: Vec<Arc<dyn Backend>>,
}

impl Registry {
    /// A registry with the devices this crate provides (REFERENCE).
    pub fn with_builtin() -> Registry {
        let mut r = Registry::default();
        r.register(Arc::new(Reference));
        r
    }

    /// Adds a device; a later registration under the same name replaces the earlier one.
    pub fn register(&mut self, device: Arc<dyn Backend>) {
        self.devices.retain(|d| !d.name().eq_ignore_ascii_case(device.name()));
        self.devices.push(device);
    }

    /// The device called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Backend>> {
        self.devices.iter().find(|d| d.name().eq_ignore_ascii_case(name)).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.name().to_string()).collect()
    }
}
