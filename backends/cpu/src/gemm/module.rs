//! Placing the microkernel in Cranelift modules, and choosing the kernel for this CPU.
//!
//! The machine code has no relocations, so `define_function_bytes` puts it in a JITModule
//! (the JIT path, and how [`Kernel::Avx2Fma`] gets executable memory here) or in an
//! ObjectModule (the ahead-of-time `.o`), where Cranelift functions call it by `FuncId`.

use super::{kernel_x86, portable, KernelFn, MR, NR};
use cranelift_codegen::ir::{types, AbiParam, Signature};
use cranelift_codegen::isa::CallConv;
use cranelift_module::{FuncId, Linkage, Module, ModuleResult};
use std::sync::OnceLock;

/// Instruction sets a microkernel exists for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX2 and FMA (256-bit vectors), System V calling convention.
    X86_64Avx2Fma,
}

/// A microkernel's machine code and the tile it computes.
#[derive(Clone, Debug)]
pub struct Microkernel {
    /// Position-independent code with no relocations.
    pub bytes: Vec<u8>,
    pub mr: usize,
    pub nr: usize,
    /// Function alignment to request from the module (a cache line keeps the loop in one).
    pub alignment: u64,
}

/// The microkernel for `isa`, as bytes to place in a module.
pub fn microkernel(isa: Isa) -> Microkernel {
    match isa {
        Isa::X86_64Avx2Fma => {
            Microkernel { bytes: kernel_x86::avx2_fma_6x16(), mr: MR, nr: NR, alignment: 64 }
        }
    }
}

/// The kernel's signature in CLIF: `(k: i64, a, b, c, args: pointers) -> ()`, System V.
pub fn signature() -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// Declares `name` in `module` with [`signature`] and defines it from the kernel's bytes.
/// Other functions of the module call it through `declare_func_in_func` on the returned id.
pub fn define_microkernel<M: Module>(
    module: &mut M,
    name: &str,
    linkage: Linkage,
    isa: Isa,
) -> ModuleResult<FuncId> {
    let kernel = microkernel(isa);
    let id = module.declare_function(name, linkage, &signature())?;
    module.define_function_bytes(id, kernel.alignment, &kernel.bytes, &[])?;
    Ok(id)
}

/// Which microkernel the Rust driver runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The machine code, placed by a JITModule.
    Avx2Fma,
    /// Plain Rust, any CPU.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Kernel::Avx2Fma;
        }
        Kernel::Portable
    }

    /// The callable kernel. `Avx2Fma` on a CPU without AVX2/FMA falls back to `Portable`,
    /// so no caller can run instructions the CPU lacks.
    pub fn function(self) -> KernelFn {
        match self {
            Kernel::Avx2Fma if Kernel::detect() == Kernel::Avx2Fma => {
                jit_avx2().unwrap_or(portable::kernel_6x16)
            }
            _ => portable::kernel_6x16,
        }
    }
}

/// The AVX2 kernel placed once per process by a JITModule; `None` if the JIT could not get
/// executable memory (then the portable kernel runs: slower, still correct).
fn jit_avx2() -> Option<KernelFn> {
    static KERNEL: OnceLock<Option<usize>> = OnceLock::new();
    let addr = (*KERNEL.get_or_init(|| {
        let place = || -> ModuleResult<usize> {
            let builder =
                cranelift_jit::JITBuilder::new(cranelift_module::default_libcall_names())?;
            let mut module = cranelift_jit::JITModule::new(builder);
            let id = define_microkernel(&mut module, "kiln_sgemm_6x16", Linkage::Local, Isa::X86_64Avx2Fma)?;
            module.finalize_definitions()?;
            let addr = module.get_finalized_function(id) as usize;
            // The code lives as long as the module's memory: for the whole process.
            std::mem::forget(module);
            Ok(addr)
        };
        place().ok()
    }))?;
    // SAFETY: addr is the finalized entry of the kernel, whose ABI is KernelFn.
    Some(unsafe { std::mem::transmute::<usize, KernelFn>(addr) })
}
