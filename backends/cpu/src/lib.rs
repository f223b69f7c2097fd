//! The CPU device (`kiln_cpu::Cpu`, device name "CPU").
//!
//! - [`gemm`]: the packed f32 GEMM with AVX2+FMA microkernels and fused epilogues.
//! - `program`: compiling a graph into a [`program::Plan`] — steps in topological order over
//!   a table of numbered values, each step one kernel; constants folded, epilogues matched.
//! - `kernels`: the kernels a step runs — convolution and matmul on the GEMM, depthwise
//!   convolution as a direct loop, fused bodies as sub-plans, elementwise groups as
//!   generated code, native pooling, softmax, transpose and Loop, and the `ir::eval`
//!   fallback for everything else ([`fallback_ops`]).
//! - `device`: the `Backend` implementation and the thread choice.

pub mod aot;
pub mod codegen;
mod device;
pub mod gemm;
mod kernels;
pub mod lower;
pub mod program;

pub use device::Cpu;
pub use kernels::{exp_f32, fallback_ops};
