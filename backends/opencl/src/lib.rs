//! The OpenCL device: OpenCL C generated per kernel (each node, or each fused kernel's whole
//! body), built once per distinct source, run over per-value buffers on any OpenCL 1.2+
//! device (PoCL on CI).
//!
//! Device strings: `OPENCL` (the first GPU, else the first device) and `OPENCL:N` (the N-th
//! device over all platforms). `KILN_OPENCL_REFUSE=conv,matmul,pool` makes the device refuse
//! those kernel kinds (see [`OpenCl::refusing`]), so that HETERO sends them elsewhere.

mod device;
pub mod gen;
mod flow;
mod plan;
mod shaped;
mod specialize;

use kiln_backends::{Backend, BackendError, CompileOptions, Executable, Kernel, Program, Result};
use kiln_ir::{Op, Tensor};
use std::sync::Arc;

pub use device::NO_PLATFORM;
pub use plan::DEVICE;

/// The OpenCL device.
pub struct OpenCl {
    name: String,
    index: Option<usize>,
    refuse: Vec<String>,
}

impl Default for OpenCl {
    fn default() -> OpenCl {
        OpenCl::new()
    }
}

/// The kernel kinds a refuse list names: `conv` covers every convolution, `pool` every
/// pooling, `matmul` matmul, gemm and einsum, `reduce` reductions and softmax-like ops,
/// `elementwise` elementwise ops, `movement` data movement, `recurrent` rnn/gru/lstm,
/// `flow` If/Loop/Scan; any other word is an op name.
fn kind_words(op: &Op) -> Vec<&'static str> {
    let mut w = vec![op.name()];
    w.push(match op {
        Op::Conv { .. } | Op::ConvTranspose { .. } | Op::DeformConv { .. } => "conv",
        Op::Pool { .. } | Op::GlobalPool { .. } | Op::MaxUnpool { .. } => "pool",
        Op::MatMul | Op::Gemm { .. } | Op::Einsum { .. } => "matmul",
        Op::ConvInteger { .. } | Op::QLinearConv { .. } => "conv",
        Op::MatMulInteger | Op::QLinearMatMul => "matmul",
        Op::Rnn { .. } => "recurrent",
        Op::If { .. } | Op::Loop { .. } | Op::Scan { .. } => "flow",
        op if gen::elementwise_op(op) => "elementwise",
        op if gen::movement_op(op) => "movement",
        _ => "reduce",
    });
    w
}

impl OpenCl {
    /// `OPENCL`, refusing the kinds listed in `$KILN_OPENCL_REFUSE`.
    pub fn new() -> OpenCl {
        let refuse = std::env::var("KILN_OPENCL_REFUSE").unwrap_or_default();
        OpenCl { name: DEVICE.into(), index: None, refuse: parse_list(&refuse) }
    }

    /// The device a device string names: `OPENCL` or `OPENCL:N`; `None` for other strings.
    pub fn from_device_string(s: &str) -> Option<OpenCl> {
        let upper = s.to_ascii_uppercase();
        if upper == DEVICE {
            return Some(OpenCl::new());
        }
        let n: usize = upper.strip_prefix("OPENCL:")?.parse().ok()?;
        Some(OpenCl { name: format!("{DEVICE}:{n}"), index: Some(n), ..OpenCl::new() })
    }

    /// This device refusing the kernel kinds in `list` (comma separated: `conv,matmul,pool`).
    pub fn refusing(mut self, list: &str) -> OpenCl {
        self.refuse = parse_list(list);
        self
    }

    fn refuses(&self, op: &Op) -> bool {
        let words = match op {
            Op::Fused { body } => {
                let view = kiln_passes::fusion::KernelView::of(body);
                match view.ok().and_then(|v| v.anchor.map(|a| kind_words(&body.node(a).op))) {
                    Some(w) => w,
                    None => vec!["elementwise", "fused"],
                }
            }
            op => kind_words(op),
        };
        words.iter().any(|w| self.refuse.iter().any(|r| r == w))
    }

    /// Why this device cannot run `op` (a refused kind, an op it does not generate).
    fn unsupported(&self, op: &Op) -> Option<String> {
        if self.refuses(op) {
            return Some(format!("`{}` kernels are refused (KILN_OPENCL_REFUSE)", op.name()));
        }
        match op {
            Op::Input | Op::Const { .. } => None,
            Op::Fused { body } => body.nodes.node_weights().find_map(|n| self.unsupported_inner(&n.op)),
            // A body runs as a plan of its own on this device: every node in it must run here.
            Op::If { .. } | Op::Loop { .. } | Op::Scan { .. } => op
                .subgraphs()
                .into_iter()
                .find_map(|g| g.nodes.node_weights().find_map(|n| self.unsupported(&n.op)))
                .map(|why| format!("its body: {why}")),
            op => self.unsupported_inner(op),
        }
    }

    fn unsupported_inner(&self, op: &Op) -> Option<String> {
        match op {
            Op::Input | Op::Const { .. } => None,
            op if gen::generates(op) => None,
            op => Some(format!("the OpenCL device does not generate `{}`", op.name())),
        }
    }
}

fn parse_list(s: &str) -> Vec<String> {
    s.split(',').map(|w| w.trim().to_ascii_lowercase()).filter(|w| !w.is_empty()).collect()
}

impl Backend for OpenCl {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, kernel: &Kernel) -> bool {
        self.unsupported(&kernel.node.op).is_none()
    }

    fn compile(&self, program: &Program, _options: &CompileOptions) -> Result<Executable> {
        let graph = &program.graph;
        let order = graph.topo_order().map_err(|e| BackendError::from_ir(DEVICE, e))?;
        for &n in &order {
            let node = graph.node(n);
            if let Some(why) = self.unsupported(&node.op) {
                return Err(plan::err(&node.name, why));
            }
        }
        let device = device::open(self.index).map_err(|m| BackendError::new(&self.name, m))?;
        let shaped = Arc::new(shaped::Shaped::new(graph.clone(), device));
        // With every input shape known, compile now: errors belong to compile().
        let known: Option<Vec<Vec<usize>>> = graph.inputs.iter().map(|&n| graph.node(n).outputs[0].shape.concrete()).collect();
        if let Some(shapes) = known {
            shaped.plan(shapes, &shaped::Values::None)?;
        }
        Ok(Executable::new(move |inputs: &[Tensor], profile| {
            let shapes = inputs.iter().map(|t| t.shape().to_vec()).collect();
            let plan = shaped.plan(shapes, &shaped::Values::Host(inputs))?;
            plan.ok_or_else(|| BackendError::new(DEVICE, "no plan for these inputs"))?.run(inputs, profile)
        }))
    }
}
