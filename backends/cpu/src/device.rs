//! The `Backend` implementation: compile a program into a plan, run the plan per request.

use crate::gemm::threads::Pool;
use crate::gemm::Kernel;
use crate::program::{self, Plan};
use kiln_backends::{
    Backend, BackendError, CompileOptions, Executable, Kernel as IrKernel, PlannedKernel, Program,
    Result,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) const DEVICE: &str = "CPU";

/// The CPU device: every op runs (see [`crate::fallback_ops`] for those that run through
/// `ir::eval`); convolution and matmul run on the packed AVX2 GEMM.
pub struct Cpu {
    kernel: Kernel,
}

impl Cpu {
    /// The device with the fastest GEMM microkernel this CPU has.
    pub fn new() -> Cpu {
        Cpu {
            kernel: Kernel::detect(),
        }
    }

    /// The device with a chosen microkernel (tests run the portable one too).
    pub fn with_kernel(kernel: Kernel) -> Cpu {
        Cpu { kernel }
    }
}

impl Default for Cpu {
    fn default() -> Cpu {
        Cpu::new()
    }
}

/// What a run needs besides the plan: the GEMM kernel and the threads to split over.
#[derive(Clone, Copy)]
pub(crate) struct Ctx {
    pub kernel: Kernel,
    pub pool: Option<&'static Pool>,
}

impl Ctx {
    pub fn gemm(&self) -> crate::gemm::Options<'static> {
        crate::gemm::Options {
            kernel: self.kernel,
            pool: self.pool,
            pack_a: false,
        }
    }
}

/// The pool for `threads` (0 = one per core). Pools live for the whole process (their
/// threads never exit), so each size is made once and shared by every compiled model:
/// models running at once share the cores instead of each bringing its own threads.
fn pool_for(threads: usize) -> Option<&'static Pool> {
    let global = Pool::global();
    if threads == 0 || threads >= global.threads() {
        return Some(global);
    }
    if threads == 1 {
        return None;
    }
    static POOLS: OnceLock<Mutex<HashMap<usize, &'static Pool>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Some(
        *pools
            .entry(threads)
            .or_insert_with(|| Box::leak(Box::new(Pool::new(threads)))),
    )
}

impl Backend for Cpu {
    fn name(&self) -> &str {
        DEVICE
    }

    fn supports(&self, _kernel: &IrKernel) -> bool {
        true
    }

    fn compile(&self, program: &Program, options: &CompileOptions) -> Result<Executable> {
        let plan: Arc<Plan> = Arc::new(program::compile(&program.graph)?);
        let ctx = Ctx {
            kernel: self.kernel,
            pool: pool_for(options.threads),
        };
        // Steps name how each kernel runs ("softmax (eval)" marks an ir::eval fallback).
        let kernels = plan
            .steps
            .iter()
            .map(|s| PlannedKernel {
                nodes: s.nodes.clone(),
                kind: s.kind.clone(),
                device: DEVICE.into(),
            })
            .collect();
        Ok(Executable::new(move |inputs, profile| {
            plan.run(&ctx, inputs, profile)
                .map_err(|e| BackendError::from_ir(DEVICE, e))
        })
        .with_plan(kernels))
    }
}
