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
    /// x86-64 with AVX-512F (the same tiles, one zmm register per row), System V.
    X86_64Avx512F,
}

impl Isa {
    /// The instruction set whose kernels this CPU runs best (`None`: only the portable
    /// kernels). The zmm form is taken on AMD CPUs with AVX-512F only: it was measured
    /// on Zen 4, where a zmm FMA issues once per cycle and the tile's 6 accumulators
    /// cover its latency; Intel cores with two 512-bit FMA ports would need 8 or more,
    /// and some lower their clock for zmm code, so they keep the ymm form.
    pub fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("fma")
                && amd()
            {
                return Some(Isa::X86_64Avx512F);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Some(Isa::X86_64Avx2Fma);
            }
        }
        None
    }

    /// The kernel for `mr` rows with B a packed panel.
    fn packed(self, mr: usize) -> Vec<u8> {
        match self {
            Isa::X86_64Avx2Fma => kernel_x86::avx2_fma(mr),
            Isa::X86_64Avx512F => kernel_x86::avx512_fma(mr),
        }
    }

    /// The kernel for `mr` rows reading B's rows in place at `TileArgs::rs_b`.
    pub fn rows_b(self, mr: usize) -> Vec<u8> {
        match self {
            Isa::X86_64Avx2Fma => kernel_x86::avx2_fma_rows_b(mr),
            Isa::X86_64Avx512F => kernel_x86::avx512_fma_rows_b(mr),
        }
    }
}

/// Whether the CPU's vendor string is AMD's.
#[cfg(target_arch = "x86_64")]
fn amd() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
    vendor == b"AuthenticAMD"
}

/// A microkernel's machine code and the tile (mr×nr) it computes.
#[derive(Clone, Debug)]
pub struct Microkernel {
    /// Position-independent code with no relocations.
    pub bytes: Vec<u8>,
    pub mr: usize,
    pub nr: usize,
    /// Function alignment to request from the module (a cache line keeps the loop in one).
    pub alignment: u64,
}

/// The microkernels for `isa`, as bytes to place in a module: index `r` computes `r + 1`
/// rows (the full tile is the last).
pub fn microkernels(isa: Isa) -> Vec<Microkernel> {
    (1..=MR)
        .map(|mr| Microkernel {
            bytes: isa.packed(mr),
            mr,
            nr: NR,
            alignment: 64,
        })
        .collect()
}

/// The kernel's signature in CLIF: `(k: i64, a, b, c, args: pointers) -> ()`, System V.
pub fn signature() -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// Declares `{prefix}_{mr}x16` for every kernel of `isa` in `module` with [`signature`] and
/// defines each from its bytes; returns their ids, index `r` for `r + 1` rows. Other
/// functions of the module call them through `declare_func_in_func`.
#[allow(clippy::result_large_err)] // ModuleResult is Cranelift's type
pub fn define_microkernels<M: Module>(
    module: &mut M,
    prefix: &str,
    linkage: Linkage,
    isa: Isa,
) -> ModuleResult<Vec<FuncId>> {
    let mut ids = Vec::new();
    for kernel in microkernels(isa) {
        let name = format!("{prefix}_{}x{}", kernel.mr, kernel.nr);
        let id = module.declare_function(&name, linkage, &signature())?;
        module.define_function_bytes(id, kernel.alignment, &kernel.bytes, &[])?;
        ids.push(id);
    }
    Ok(ids)
}

/// One kernel per row count: index `r` computes `r + 1` rows of 16 columns.
pub type Kernels = [KernelFn; MR];

/// Which microkernel the Rust driver runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The machine code, placed by a JITModule: AVX2+FMA, or the same tiles in zmm
    /// registers where the CPU has AVX-512F ([`Isa::detect`]).
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

    /// The callable kernels. `Avx2Fma` on a CPU without AVX2/FMA falls back to `Portable`,
    /// so no caller can run instructions the CPU lacks.
    pub fn functions(self) -> Kernels {
        match self {
            Kernel::Avx2Fma if Kernel::detect() == Kernel::Avx2Fma => {
                jit_x86().map_or(portable::KERNELS, |k| k.packed)
            }
            _ => portable::KERNELS,
        }
    }

    /// The kernels that read B's rows in place at `TileArgs::rs_b` with A packed
    /// ([`kernel_x86::avx2_fma_rows_b`]); `None` where only the portable kernels run
    /// (the caller then packs B).
    pub fn rows_b_functions(self) -> Option<Kernels> {
        match self {
            Kernel::Avx2Fma if Kernel::detect() == Kernel::Avx2Fma => jit_x86().map(|k| k.rows_b),
            _ => None,
        }
    }
}

/// The two machine-code kernel sets (packed B, B in place), one kernel per row count each.
struct X86Kernels {
    packed: Kernels,
    rows_b: Kernels,
}

/// The x86 kernels, for the widest ISA the CPU has, placed once per process by a
/// JITModule; `None` if the JIT could not get executable memory (then the portable kernels
/// run: slower, still correct).
#[allow(clippy::result_large_err)] // ModuleResult is Cranelift's type
fn jit_x86() -> Option<X86Kernels> {
    static KERNELS: OnceLock<Option<[[usize; MR]; 2]>> = OnceLock::new();
    let [packed, rows_b] = (*KERNELS.get_or_init(|| {
        let place = || -> ModuleResult<[[usize; MR]; 2]> {
            let builder =
                cranelift_jit::JITBuilder::new(cranelift_module::default_libcall_names())?;
            let mut module = cranelift_jit::JITModule::new(builder);
            // Isa::detect is Some here: Kernel::detect found at least AVX2 and FMA.
            let isa = Isa::detect().unwrap_or(Isa::X86_64Avx2Fma);
            let ids = define_microkernels(&mut module, "kiln_sgemm", Linkage::Local, isa)?;
            let mut rows_ids = Vec::new();
            for mr in 1..=MR {
                let id = module.declare_function(
                    &format!("kiln_sgemm_rows_b_{mr}x{NR}"),
                    Linkage::Local,
                    &signature(),
                )?;
                module.define_function_bytes(id, 64, &isa.rows_b(mr), &[])?;
                rows_ids.push(id);
            }
            module.finalize_definitions()?;
            let addrs = |ids: &[FuncId]| -> [usize; MR] {
                std::array::from_fn(|r| module.get_finalized_function(ids[r]) as usize)
            };
            let found = [addrs(&ids), addrs(&rows_ids)];
            // The code lives as long as the module's memory: for the whole process.
            std::mem::forget(module);
            Ok(found)
        };
        place().ok()
    }))?;
    // SAFETY: each address is the finalized entry of a kernel, whose ABI is KernelFn.
    let functions = |addrs: [usize; MR]| {
        addrs.map(|addr| unsafe { std::mem::transmute::<usize, KernelFn>(addr) })
    };
    Some(X86Kernels {
        packed: functions(packed),
        rows_b: functions(rows_b),
    })
}
