//! A lowered program placed in a `JITModule` and called from Rust: how the tests check
//! every lowering against `ir::eval`, through the same entry function the artifact has.

use super::program::{lower_program, Program};
use super::{LowerCtx, LowerError, Result};
use crate::codegen::host_isa;
use cranelift_jit::{JITBuilder, JITModule};
use kiln_ir::{Graph, Tensor};

type Entry =
    unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8, *const u8, *const u8) -> i32;

pub struct JitProgram {
    module: Option<JITModule>,
    entry: Entry,
    pub program: Program,
}

impl JitProgram {
    /// Lowers `graph` (every shape concrete) for this machine; `avx2` places the GEMM
    /// microkernels when the CPU has them.
    pub fn compile(graph: &Graph, avx2: bool) -> Result<JitProgram> {
        let isa = host_isa().map_err(|e| LowerError::Module(e.reason))?;
        let mut module = JITModule::new(JITBuilder::with_isa(
            isa,
            cranelift_module::default_libcall_names(),
        ));
        let microkernels = if avx2 && crate::gemm::Kernel::detect() == crate::gemm::Kernel::Avx2Fma
        {
            Some(
                crate::gemm::module::define_microkernels(
                    &mut module,
                    "jit_sgemm",
                    cranelift_module::Linkage::Local,
                    crate::gemm::Isa::X86_64Avx2Fma,
                )
                .map_err(|e| LowerError::Module(e.to_string()))?,
            )
        } else {
            None
        };
        let mut ctx = LowerCtx::new(&mut module, "jit", microkernels);
        let program = lower_program(&mut ctx, graph)?;
        module
            .finalize_definitions()
            .map_err(|e| LowerError::Module(e.to_string()))?;
        let addr = module.get_finalized_function(program.entry);
        // SAFETY: the entry was defined with this signature (five pointers, an i32 result).
        let entry = unsafe { std::mem::transmute::<*const u8, Entry>(addr) };
        Ok(JitProgram {
            module: Some(module),
            entry,
            program,
        })
    }

    /// Runs on tensors of the program's input types; returns the outputs.
    pub fn run(&self, inputs: &[Tensor]) -> kiln_ir::Result<Vec<Tensor>> {
        let p = &self.program;
        if inputs.len() != p.inputs.len() {
            return Err(kiln_ir::IrError::msg(format!(
                "{} inputs given, {} expected",
                inputs.len(),
                p.inputs.len()
            )));
        }
        let mut bytes: Vec<Vec<u8>> = Vec::new();
        for (t, port) in inputs.iter().zip(&p.inputs) {
            if t.dtype() != port.dtype || t.shape() != port.shape.as_slice() {
                return Err(kiln_ir::IrError::msg(format!(
                    "input {} must be {} {:?}",
                    port.name, port.dtype, port.shape
                )));
            }
            bytes.push(t.to_le_bytes());
        }
        let mut outs: Vec<Vec<u8>> = p
            .outputs
            .iter()
            .map(|o| vec![0u8; o.shape.iter().product::<usize>() * o.dtype.size()])
            .collect();
        // u64 words keep the scratch 8-aligned; the 64 the entry checks is found inside.
        let mut scratch = vec![0u64; p.scratch_bytes / 8 + 16];
        let base = scratch.as_mut_ptr() as usize;
        let aligned = (base.div_ceil(64) * 64) as *mut u8;
        let in_ptrs: Vec<*const u8> = bytes.iter().map(|b| b.as_ptr()).collect();
        let out_ptrs: Vec<*mut u8> = outs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        // SAFETY: every buffer has its port's size; scratch holds scratch_bytes past the
        // aligned start; no runner, so the kernels run here before the call returns.
        let code = unsafe {
            (self.entry)(
                in_ptrs.as_ptr(),
                out_ptrs.as_ptr(),
                aligned,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if code != 0 {
            return Err(kiln_ir::IrError::msg(format!("the entry returned {code}")));
        }
        outs.into_iter()
            .zip(&p.outputs)
            .map(|(b, o)| Tensor::from_le_bytes(o.dtype, o.shape.clone(), &b))
            .collect()
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `entry` dies with self; nothing else points into the code.
            unsafe { m.free_memory() };
        }
    }
}
