//! Where, Cast, BitCast, Dropout (inference) and Det.

use super::kernel::{map3, need_float, with_float, Flt};
use super::math;
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::tensor::{checked_numel, Tensor};
use crate::with_data;

/// Where(cond, x, y) with all three broadcast together.
pub(crate) fn where_(c: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    check_where(c.dtype(), x.dtype(), y.dtype())?;
    let cv = c.as_slice::<bool>()?;
    with_data!(x.data(), xv, T => {
        let yv = y.as_slice::<T>()?;
        map3((c, cv), (x, xv), (y, yv), |k, a, b| if k { a } else { b })
    })
}

pub(crate) fn check_where(c: DType, x: DType, y: DType) -> Result<()> {
    if c != DType::Bool {
        return Err(IrError::msg(format!(
            "where's condition must be bool, found {c}"
        )));
    }
    if x != y {
        return Err(IrError::msg(format!(
            "where needs x and y of one dtype, found {x} and {y}"
        )));
    }
    Ok(())
}

/// BitCast: each element's bytes read as `to`, which must have the same size.
pub(crate) fn bitcast(x: &Tensor, to: DType) -> Result<Tensor> {
    check_bitcast(x.dtype(), to)?;
    Tensor::from_le_bytes(to, x.shape().to_vec(), &x.to_le_bytes())
}

pub(crate) fn check_bitcast(from: DType, to: DType) -> Result<()> {
    if from.size() != to.size() {
        return Err(IrError::msg(format!(
            "bitcast needs types of one size: {from} has {} bytes, {to} has {}",
            from.size(),
            to.size()
        )));
    }
    Ok(())
}

/// Inference Dropout: (data, ratio?, training_mode?) → (data, all-true mask?).
pub(crate) fn dropout(inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let x = crate::ops::util::input(inputs, 0)?;
    let ratio = match crate::ops::util::opt_input(inputs, 1) {
        Some(r) => crate::ops::util::scalar_f64(r)?,
        None => 0.5,
    };
    let training = match crate::ops::util::opt_input(inputs, 2) {
        Some(t) => crate::ops::util::scalar_f64(t)? != 0.0,
        None => false,
    };
    if training && ratio > 0.0 {
        return Err(IrError::msg("training-mode dropout is random"));
    }
    match n_outputs {
        1 => Ok(vec![x.clone()]),
        2 => {
            let mask = Tensor::new(x.shape().to_vec(), vec![true; x.len()])?;
            Ok(vec![x.clone(), mask])
        }
        n => Err(IrError::msg(format!(
            "dropout has one or two outputs, not {n}"
        ))),
    }
}

/// Det over the last two dims (square), batched over the rest; LU in f64.
pub(crate) fn det(x: &Tensor) -> Result<Tensor> {
    need_float("det", x.dtype())?;
    let (batch, n) = det_shape(x.shape())?;
    let out_shape = batch.to_vec();
    let count = checked_numel(&out_shape)?;
    let vals = x.to_f64_vec();
    let nn = n * n;
    let mut out = Vec::with_capacity(count);
    let mut m = vec![0.0; nn];
    for b in 0..count {
        let src = vals
            .get(b * nn..(b + 1) * nn)
            .ok_or_else(|| IrError::msg("det: input is shorter than its shape"))?;
        m.copy_from_slice(src);
        out.push(math::det(&mut m, n));
    }
    with_float!(x.dtype(), T => Tensor::new(out_shape, out.iter().map(|&d| T::of(d)).collect::<Vec<T>>()),
        _ => Err(IrError::msg(format!("det does not take {} tensors", x.dtype()))))
}

/// Batch dims and matrix size of a Det input `[*, M, M]`.
pub(crate) fn det_shape(s: &[usize]) -> Result<(&[usize], usize)> {
    match s {
        [batch @ .., r, c] if r == c => Ok((batch, *r)),
        _ => Err(IrError::msg(format!(
            "det needs square matrices in the last two dims, found shape {s:?}"
        ))),
    }
}

/// Cast with ONNX semantics (see [`Tensor::cast`]).
pub(crate) fn cast(x: &Tensor, to: DType) -> Tensor {
    x.cast(to)
}
