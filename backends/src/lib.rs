//! The `Backend` trait, the device registry, and the REFERENCE device.
//!
//! A device implements one trait, [`Backend`]: it says which kernels it can run and compiles
//! a [`Program`] into an [`Executable`]. Everything else — loading, passes, requests,
//! profiling, the command line — comes from the runtime and works for every device.

mod hetero;
mod reference;

use kiln_ir::{Graph, Node, Op, Tensor};
use kiln_passes::{Level, MemoryPlan};
use std::fmt;
use std::sync::Arc;

pub use hetero::Hetero;
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

/// A unit of work a device may take or refuse: one top-level node of the optimized graph.
/// After fusion most are `Op::Fused` nodes (an anchor op and the elementwise ops around it,
/// in its body); a device deciding on one should look into the body.
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

/// One kernel of a compiled program, as `kiln info --device` lists it: which device runs
/// it and how (for the CPU, whether it runs generated code, the GEMM or the `ir::eval`
/// fallback).
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedKernel {
    /// The source model's names of the nodes the kernel covers.
    pub nodes: Vec<String>,
    pub kind: String,
    pub device: String,
}

impl PlannedKernel {
    /// One kernel per top-level node of `graph` (inputs and constants are not kernels),
    /// named as profiles name them (a fused kernel by its body): the plan of a device that
    /// does not describe its own.
    pub fn per_node(graph: &Graph, device: &str) -> Vec<PlannedKernel> {
        let Ok(order) = graph.topo_order() else { return Vec::new() };
        order
            .into_iter()
            .map(|n| graph.node(n))
            .filter(|n| !matches!(n.op, Op::Input | Op::Const { .. }))
            .map(|n| PlannedKernel { nodes: vec![n.name.clone()], kind: kind_of(&n.op), device: device.to_string() })
            .collect()
    }
}

/// An op's kind for plans and profiles; a fused kernel's is its body's name ("conv+relu").
pub(crate) fn kind_of(op: &Op) -> String {
    match op {
        Op::Fused { body } if !body.name.is_empty() => body.name.clone(),
        _ => op.name().to_string(),
    }
}

/// What a run computes: inputs (in the graph's input order) to outputs in order, appending
/// each kernel's time to the profile when one is given.
pub type RunFn = dyn Fn(&[Tensor], Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> + Send + Sync;

/// A compiled program, ready to run any number of times from any number of threads. A
/// plain value wrapping the device's run function, so a device implements one trait only.
#[derive(Clone)]
pub struct Executable {
    run: Arc<RunFn>,
    plan: Option<Arc<[PlannedKernel]>>,
}

impl Executable {
    pub fn new(run: impl Fn(&[Tensor], Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Executable {
        Executable { run: Arc::new(run), plan: None }
    }

    /// Attaches the device's own account of its kernels; without one, tools show one
    /// kernel per top-level node ([`PlannedKernel::per_node`]).
    pub fn with_plan(mut self, plan: Vec<PlannedKernel>) -> Executable {
        self.plan = Some(plan.into());
        self
    }

    /// The kernels the device said it will run, when it said.
    pub fn plan(&self) -> Option<&[PlannedKernel]> {
        self.plan.as_deref()
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

/// Makes the device for the part of a device string after `PREFIX:` (`"1"` in `OPENCL:1`).
pub type Family = dyn Fn(&str) -> Result<Arc<dyn Backend>> + Send + Sync;

/// Devices by name. The runtime builds one with every device compiled in.
#[derive(Default, Clone)]
pub struct Registry {
    devices: Vec<Arc<dyn Backend>>,
    families: Vec<(String, Arc<Family>)>,
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

    /// Makes `PREFIX:ARG` device strings resolve to `make(ARG)` (`OPENCL:1`). A device
    /// registered under the full string (`OPENCL:1` itself) still takes precedence.
    pub fn register_family(&mut self, prefix: &str, make: impl Fn(&str) -> Result<Arc<dyn Backend>> + Send + Sync + 'static) {
        self.families.retain(|(p, _)| !p.eq_ignore_ascii_case(prefix));
        self.families.push((prefix.to_string(), Arc::new(make)));
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.devices.iter().map(|d| d.name().to_string()).collect();
        names.extend(self.families.iter().map(|(p, _)| format!("{p}:N")));
        names.push("HETERO:A,B".to_string());
        names
    }

    /// The device a device string names (case-insensitive): a registered name (`CPU`), a
    /// family member (`OPENCL:1`), or `HETERO:A,B[,C]` over any of those.
    pub fn resolve(&self, spec: &str) -> Result<Arc<dyn Backend>> {
        let spec = spec.trim();
        let Some((_, list)) = spec.split_once(':').filter(|(p, _)| p.trim().eq_ignore_ascii_case(hetero::PREFIX)) else {
            if spec.eq_ignore_ascii_case(hetero::PREFIX) {
                return Err(BackendError::new(hetero::PREFIX, hetero::NEEDS_DEVICES));
            }
            return self.resolve_one(spec);
        };
        let names = hetero::parse_list(list).map_err(|m| BackendError::new(hetero::PREFIX, m))?;
        let devices = names.into_iter().map(|name| self.resolve_one(name)).collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Hetero::new(devices)?))
    }

    fn resolve_one(&self, name: &str) -> Result<Arc<dyn Backend>> {
        if let Some(d) = self.get(name) {
            return Ok(d);
        }
        if let Some((prefix, arg)) = name.split_once(':') {
            if let Some((_, make)) = self.families.iter().find(|(p, _)| p.eq_ignore_ascii_case(prefix.trim())) {
                return make(arg.trim());
            }
        }
        Err(BackendError::new(name, format!("no such device; this build has {}", self.names().join(", "))))
    }
}
