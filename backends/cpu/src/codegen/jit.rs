//! JIT placement: the host ISA (detected once), one `JITModule` per kernel, and the finalized
//! entry point kept alive as long as the kernel.

use super::elementwise::define_kernel;
use super::plan::Plan;
use super::Unsupported;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Linkage;
use std::sync::OnceLock;

/// The entry point ABI of a kernel: see [`super::elementwise`].
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, start: u64, end: u64);

/// The host's ISA with the CPU's features (SSE4.1, AVX, FMA…) and `opt_level = speed`.
pub fn host_isa() -> Result<OwnedTargetIsa, Unsupported> {
    static ISA: OnceLock<Result<OwnedTargetIsa, String>> = OnceLock::new();
    ISA.get_or_init(|| {
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, k: &str, v: &str| {
            flags.set(k, v).map_err(|e| format!("setting {k}: {e}"))
        };
        set(&mut flags, "opt_level", "speed")?;
        // The JIT links with absolute addresses (JITBuilder::new sets the same two).
        set(&mut flags, "is_pic", "false")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        let isa = cranelift_native::builder().map_err(|e| format!("host ISA: {e}"))?;
        isa.finish(settings::Flags::new(flags))
            .map_err(|e| format!("host ISA: {e}"))
    })
    .clone()
    .map_err(Unsupported::new)
}

/// A compiled kernel's code: the module owning the executable memory, and its entry.
pub struct JitCode {
    module: Option<JITModule>,
    entry: KernelFn,
}

// SAFETY: after `finalize_definitions` the module is never touched again except to free
// its memory on drop (which needs `&mut self`, so no call can be running); the code itself
// is immutable and reentrant: it writes only through the pointers it is given.
unsafe impl Send for JitCode {}
unsafe impl Sync for JitCode {}

impl JitCode {
    pub fn compile(plan: &Plan) -> Result<JitCode, Unsupported> {
        let builder = JITBuilder::with_isa(host_isa()?, cranelift_module::default_libcall_names());
        let mut module = JITModule::new(builder);
        let id = define_kernel(&mut module, "kiln_elementwise", Linkage::Local, plan)?;
        module
            .finalize_definitions()
            .map_err(|e| Unsupported::new(format!("finalizing the kernel: {e}")))?;
        let addr = module.get_finalized_function(id);
        // SAFETY: the function was defined with `elementwise::signature`, whose ABI is
        // `KernelFn` (three 64-bit integer arguments, no result, the host's C convention).
        let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(addr) };
        Ok(JitCode {
            module: Some(module),
            entry,
        })
    }

    pub fn entry(&self) -> KernelFn {
        self.entry
    }
}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the entry pointer dies with `self`; nothing else points into the code.
            unsafe { module.free_memory() };
        }
    }
}
