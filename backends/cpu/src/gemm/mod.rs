//! Single-precision matrix multiply for the CPU device: `C = epilogue(beta·C + A·B)`.
//!
//! - B (the weights) is packed once into [`PackedB`]; A is read in place or packed per call.
//! - The work is cut into 6×16 tiles computed by a microkernel: AVX2+FMA machine code
//!   ([`kernel_x86`]) placed in a Cranelift module ([`module`]), or a portable Rust kernel
//!   with the same ABI ([`portable`]) on machines without AVX2/FMA.
//! - The epilogue (bias per row or column, residual add, clip/relu) runs while the tile is
//!   still in registers, so fused convolution and matmul kernels write C once.
//! - [`driver`] holds the cache-blocking loops; [`threads`] splits them over the cores;
//!   [`source`] runs them with B packed per block by the caller (convolution patches).

pub mod driver;
pub mod kernel_x86;
pub mod module;
#[cfg(target_arch = "x86_64")]
mod narrow;
pub mod pack;
pub mod portable;
pub mod source;
pub mod threads;

pub use driver::{gemm, gemm_with, Options};
pub use kernel_x86::{MR, NR};
pub use module::{microkernels, Isa, Kernel, Kernels, Microkernel};
pub use pack::{PackedA, PackedB};
pub use source::{
    gemm_source, gemm_source_packed, gemm_source_uninit, PanelSource, RowMajor, SourceA,
};

/// Add the tile's old contents of C (beta = 1).
pub const FLAG_BETA: u64 = 1;
/// Add `bias[j]` to column j.
pub const FLAG_BIAS_COL: u64 = 2;
/// Add `bias[i]` to row i.
pub const FLAG_BIAS_ROW: u64 = 4;
/// Add `residual[i*ldr + j]`.
pub const FLAG_RESIDUAL: u64 = 8;
/// Clamp to `[lo, hi]` (relu is `[0, +inf]`, relu6 `[0, 6]`).
pub const FLAG_CLIP: u64 = 16;

/// What the microkernel needs beyond its four pointer arguments; one per tile call.
/// The layout is the kernel's ABI (the machine code reads these offsets).
/// Strides are in elements; `bias` and `residual` point at the tile's origin.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TileArgs {
    /// Element distance between rows of A.
    pub rs_a: usize,
    /// Element distance between consecutive k of A.
    pub cs_a: usize,
    pub ldc: usize,
    pub flags: u64,
    pub bias: *const f32,
    pub residual: *const f32,
    pub ldr: usize,
    pub lo: f32,
    pub hi: f32,
    /// Element distance between rows of B, read only by the kernels that take B in place
    /// ([`kernel_x86::avx2_fma_rows_b`]); the packed-panel kernels ignore it.
    pub rs_b: usize,
}

/// The microkernel's signature, shared by the machine code and the portable kernel.
pub type KernelFn = unsafe extern "C" fn(
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    args: *const TileArgs,
);

/// Bias added before the activation.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    /// One value per output column (length n): dense layers, NHWC convolution.
    PerCol(&'a [f32]),
    /// One value per output row (length m): NCHW convolution computed as W·X.
    PerRow(&'a [f32]),
}

/// The ops fused after the product, applied in this order:
/// `C = clip(beta·C + A·B + bias + residual, lo, hi)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<Bias<'a>>,
    /// An m×n matrix with row stride `ldr`: the skip connection of a residual block.
    pub residual: Option<(&'a [f32], usize)>,
    /// `(lo, hi)`: relu is `(0, f32::INFINITY)`, relu6 `(0, 6)`. NaN stays NaN.
    pub clip: Option<(f32, f32)>,
}

impl Epilogue<'_> {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn relu() -> Self {
        Epilogue {
            clip: Some((0.0, f32::INFINITY)),
            ..Self::default()
        }
    }
}

/// A call whose sizes do not match its buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gemm: {}", self.0)
    }
}

impl std::error::Error for ShapeError {}
