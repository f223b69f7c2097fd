//! The CPU device. Today: the packed f32 GEMM with AVX2+FMA microkernels that the generated
//! convolution and matmul kernels will call (see README.md).

pub mod codegen;
pub mod gemm;
