//! REFERENCE: `kiln_ir::eval`, op by op. Slow and obviously correct: the oracle that every
//! other device is tested against.

use crate::{Backend, BackendError, CompileOptions, Executable, Kernel, KernelTiming, Program, Result};
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
        let graph = program.graph.clone();
        Ok(Executable::new(move |inputs, profile| {
            let err = |e| BackendError::from_ir("REFERENCE", e);
            let Some(timings) = profile else {
                return kiln_ir::eval::run_graph(&graph, inputs).map_err(err);
            };
            let mut last = Instant::now();
            kiln_ir::eval::run_graph_with(&graph, inputs, &mut |name, op, _| {
                let now = Instant::now();
                // Inputs and constants are not kernels: nothing runs for them.
                if matches!(op, kiln_ir::Op::Input | kiln_ir::Op::Const { .. }) {
                    last = now;
                    return;
                }
                timings.push(KernelTiming {
                    nodes: vec![name.to_string()],
                    kind: crate::kind_of(op),
                    device: "REFERENCE".into(),
                    nanos: (now - last).as_nanos() as u64,
                });
                last = now;
            })
            .map_err(err)
        }))
    }
}
