//! REFERENCE: `kiln_ir::eval`, op by op. Slow and obviously correct: the oracle that every
//! other device is tested against.

use crate::{Backend, CompileOptions, Executable, Kernel, KernelTiming, Program, Result, Run, BackendError};
use kiln_ir::{Graph, Tensor};
use std::sync::Arc;
use std::time::Instant;

pub struct Reference;

impl Backend for Reference {
    fn name(&self) -> &str {
        "REFERENCE"
    }

    fn supports(&self, _kernel: &Kernel) -> bool {
        true
    }

    fn compile(&self, program: &Program, _options: &CompileOptions) -> Result<Executable> {
        Ok(Arc::new(ReferenceRun { graph: program.graph.clone() }))
    }
}

struct ReferenceRun {
    graph: Graph,
}

impl Run for ReferenceRun {
    fn run(&self, inputs: &[Tensor], profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> {
        let err = |e| BackendError::from_ir("REFERENCE", e);
        match profile {
            None => kiln_ir::eval::run_graph(&self.graph, inputs).map_err(err),
            Some(timings) => {
                let mut last = Instant::now();
                let out = kiln_ir::eval::run_graph_with(&self.graph, inputs, &mut |name, op, _| {
                    let now = Instant::now();
                    timings.push(KernelTiming {
                        nodes: vec![name.to_string()],
                        kind: op.name().to_string(),
                        device: "REFERENCE".into(),
                        nanos: (now - last).as_nanos() as u64,
                    });
                    last = now;
                });
                out.map_err(err)
            }
        }
    }
}
