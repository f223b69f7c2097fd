//! Linear algebra, convolution, pooling and quantization: MatMul, Gemm, Einsum, the integer
//! and quantized matmuls and convolutions, Conv, ConvTranspose, DeformConv, Pool,
//! GlobalPool, QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.
//!
//! Matmul and convolution reduce to one blocked matrix-multiply kernel ([`gemm`]) so that
//! the reference device runs real models (ResNet-50, transformers) in seconds.

mod conv;
mod conv_transpose;
mod deform_conv;
mod einsum;
mod gemm;
mod geometry;
mod matmul;
mod pool;
mod quant;
pub use conv_transpose::{conv_transpose_geometry, ConvTransposeGeometry};

use crate::error::Result;
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;

pub(crate) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<TensorType>>> {
    let _ = consts;
    Some(match op {
        Op::MatMul => matmul::infer_matmul(types),
        Op::Gemm {
            trans_a, trans_b, ..
        } => matmul::infer_gemm(types, *trans_a, *trans_b),
        Op::Einsum { equation } => einsum::infer(equation, types),
        Op::MatMulInteger => matmul::infer_matmul_integer(types),
        Op::QLinearMatMul => matmul::infer_qlinear_matmul(types),
        Op::Conv { .. } | Op::ConvInteger { .. } | Op::QLinearConv { .. } => conv::infer(op, types),
        Op::ConvTranspose { .. } => conv_transpose::infer(op, types),
        Op::DeformConv { .. } => deform_conv::infer(op, types),
        Op::Pool { .. } => pool::infer_pool(op, types, n_outputs),
        Op::GlobalPool { .. } => pool::infer_global(types),
        Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } | Op::DynamicQuantizeLinear => {
            quant::infer(op, types)
        }
        _ => return None,
    })
}

pub(crate) fn eval(
    op: &Op,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<Tensor>>> {
    Some(match op {
        Op::MatMul => matmul::eval_matmul(inputs),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => matmul::eval_gemm(inputs, *alpha, *beta, *trans_a, *trans_b),
        Op::Einsum { equation } => einsum::eval(equation, inputs),
        Op::MatMulInteger => matmul::eval_matmul_integer(inputs),
        Op::QLinearMatMul => matmul::eval_qlinear_matmul(inputs),
        Op::Conv { .. } | Op::ConvInteger { .. } | Op::QLinearConv { .. } => conv::eval(op, inputs),
        Op::ConvTranspose { .. } => conv_transpose::eval(op, inputs),
        Op::DeformConv { .. } => deform_conv::eval(op, inputs),
        Op::Pool { .. } => pool::eval_pool(op, inputs, n_outputs),
        Op::GlobalPool { kind, p } => pool::eval_global(*kind, *p, inputs),
        Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } | Op::DynamicQuantizeLinear => {
            quant::eval(op, inputs)
        }
        _ => return None,
    })
}
