//! QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear, and the rounding helpers the
//! quantized matmul and convolution share.
//!
//! Scales and zero points come per tensor (one value), per axis (one value per index of
//! `axis`) or blocked (the shape of x with `axis` shrunk to ceil(D / block_size)).

use crate::dtype::{DType, Element};
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::ops::util::{input, input_type, norm_axis, opt_input};
use crate::shape::{Shape, TensorType};
use crate::tensor::Tensor;

/// `v` rounded to the nearest value of float type `d` (unchanged for other types): the
/// ONNX reference does some arithmetic in the tensors' own precision, and matching it
/// keeps results identical at rounding ties.
pub(crate) fn round_to(d: DType, v: f64) -> f64 {
    if d.is_float() {
        crate::with_dtype!(d, T => T::from_f64(v).to_f64())
    } else {
        v
    }
}

/// The representable range of an integer quantized type.
pub(crate) fn quant_range(d: DType) -> Result<(i64, i64)> {
    Ok(match d {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        other => {
            return Err(IrError::msg(format!(
                "{other} is not a quantized type (u8, i8, u16, i16, i32)"
            )))
        }
    })
}

/// round-half-to-even(v) + zero point, saturated to the range of `d`.
pub(crate) fn quantize_value(v: f64, zp: i64, d: DType) -> Result<i64> {
    let (lo, hi) = quant_range(d)?;
    let r = v.round_ties_even();
    // NaN saturates to the low end, as numpy's rint→int32 conversion does on x86.
    let r = if r.is_nan() {
        lo as f64
    } else {
        r.clamp(-9.0e18, 9.0e18)
    };
    Ok((r as i64).saturating_add(zp).clamp(lo, hi))
}

/// A scale input's values as f64: one value, or exactly `n`.
pub(crate) fn scale_values(t: &Tensor, n: usize, name: &str) -> Result<Vec<f64>> {
    if t.len() == 1 || (t.len() == n && t.rank() <= 1) {
        Ok(t.to_f64_vec())
    } else {
        Err(IrError::msg(format!(
            "{name} must have one value or {n}, found shape {:?}",
            t.shape()
        )))
    }
}

/// For each element of x, the index of its scale (and zero point).
struct Layout {
    outer: usize,
    dim: usize,
    inner: usize,
    mode: Mode,
}

enum Mode {
    PerTensor,
    PerAxis,
    Blocked(usize),
}

impl Layout {
    fn new(x: &[usize], scale: &[usize], axis: i64, block_size: i64) -> Result<Layout> {
        let numel: usize = scale.iter().product();
        if numel == 1 && block_size <= 0 {
            return Ok(Layout {
                outer: 0,
                dim: 0,
                inner: 0,
                mode: Mode::PerTensor,
            });
        }
        let ax = norm_axis(axis, x.len())?;
        let outer = x[..ax].iter().product();
        let inner = x[ax + 1..].iter().product();
        let dim = x[ax];
        if block_size <= 0 {
            if scale.len() != 1 || scale[0] != dim {
                return Err(IrError::msg(format!(
                    "per-axis scale must have shape [{dim}], found {scale:?}"
                )));
            }
            return Ok(Layout {
                outer,
                dim,
                inner,
                mode: Mode::PerAxis,
            });
        }
        let bs =
            usize::try_from(block_size).map_err(|_| IrError::msg("block_size is too large"))?;
        let mut want = x.to_vec();
        want[ax] = dim.div_ceil(bs);
        if scale != want.as_slice() {
            return Err(IrError::msg(format!(
                "blocked scale must have shape {want:?}, found {scale:?}"
            )));
        }
        Ok(Layout {
            outer,
            dim,
            inner,
            mode: Mode::Blocked(bs),
        })
    }

    /// The scale index of every element of x, in order.
    fn indices(&self, n: usize) -> Vec<usize> {
        match self.mode {
            Mode::PerTensor => vec![0; n],
            Mode::PerAxis => (0..n)
                .map(|i| (i / self.inner.max(1)) % self.dim.max(1))
                .collect(),
            Mode::Blocked(bs) => {
                let nb = self.dim.div_ceil(bs);
                let mut out = Vec::with_capacity(n);
                for o in 0..self.outer {
                    for a in 0..self.dim {
                        for i in 0..self.inner {
                            out.push((o * nb + a / bs) * self.inner + i);
                        }
                    }
                }
                out
            }
        }
    }
}

pub(crate) fn infer(op: &Op, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let x = input_type(types, 0)?;
    match op {
        Op::QuantizeLinear { output_dtype, .. } => {
            let dt = quantize_dtype(
                types.get(2).copied().flatten().map(|t| t.dtype),
                *output_dtype,
            )?;
            Ok(vec![TensorType::new(dt, x.shape.clone())])
        }
        Op::DequantizeLinear { output_dtype, .. } => {
            let scale = input_type(types, 1)?;
            Ok(vec![TensorType::new(
                output_dtype.unwrap_or(scale.dtype),
                x.shape.clone(),
            )])
        }
        _ => Ok(vec![
            TensorType::new(DType::U8, x.shape.clone()),
            TensorType::new(x.dtype, Shape::known(&[])),
            TensorType::new(DType::U8, Shape::known(&[])),
        ]),
    }
}

/// The output type of QuantizeLinear: the zero point's, else `output_dtype`, else u8.
fn quantize_dtype(zp: Option<DType>, output_dtype: Option<DType>) -> Result<DType> {
    let dt = match (zp, output_dtype) {
        (Some(z), Some(o)) if z != o => {
            return Err(IrError::msg(format!(
                "output_dtype {o} disagrees with the zero point's type {z}"
            )))
        }
        (Some(z), _) => z,
        (None, Some(o)) => o,
        (None, None) => DType::U8,
    };
    quant_range(dt)?;
    Ok(dt)
}

pub(crate) fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    match op {
        Op::QuantizeLinear {
            axis,
            block_size,
            output_dtype,
            ..
        } => quantize(inputs, *axis, *block_size, *output_dtype),
        Op::DequantizeLinear {
            axis,
            block_size,
            output_dtype,
        } => dequantize(inputs, *axis, *block_size, *output_dtype),
        _ => dynamic_quantize(input(inputs, 0)?),
    }
}

/// The zero point's values at each scale index (zeros when absent), checked against the
/// scale's shape.
fn zero_points(zp: Option<&Tensor>, scale: &Tensor) -> Result<Vec<i64>> {
    match zp {
        None => Ok(vec![0; scale.len()]),
        Some(z) if z.shape() == scale.shape() || (z.len() == 1 && scale.len() == 1) => {
            Ok(z.to_i64_vec())
        }
        Some(z) => Err(IrError::msg(format!(
            "zero point shape {:?} differs from the scale's {:?}",
            z.shape(),
            scale.shape()
        ))),
    }
}

fn quantize(
    inputs: &[Option<Tensor>],
    axis: i64,
    block_size: i64,
    output_dtype: Option<DType>,
) -> Result<Vec<Tensor>> {
    let (x, scale, zp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
    let dt = quantize_dtype(zp.map(|z| z.dtype()), output_dtype)?;
    let layout = Layout::new(x.shape(), scale.shape(), axis, block_size)?;
    let s = scale.to_f64_vec();
    let z = zero_points(zp, scale)?;
    let xd = x.dtype();
    let idx = layout.indices(x.len());
    let xv = x.to_f64_vec();
    let mut out = Vec::with_capacity(xv.len());
    for (&v, &k) in xv.iter().zip(&idx) {
        // x / scale is computed in x's precision, as the reference does.
        let q = if xd.is_float() {
            round_to(xd, v / s[k])
        } else {
            v / s[k]
        };
        out.push(quantize_value(q, z[k], dt)?);
    }
    Ok(vec![Tensor::from_i64(dt, x.shape().to_vec(), &out)?])
}

fn dequantize(
    inputs: &[Option<Tensor>],
    axis: i64,
    block_size: i64,
    output_dtype: Option<DType>,
) -> Result<Vec<Tensor>> {
    let (x, scale, zp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
    if quant_range(x.dtype()).is_err() {
        return Err(IrError::msg(format!(
            "x must be an integer quantized type, found {}",
            x.dtype()
        )));
    }
    if let Some(z) = zp {
        if z.dtype() != x.dtype() {
            return Err(IrError::msg(format!(
                "zero point is {} but x is {}",
                z.dtype(),
                x.dtype()
            )));
        }
    }
    if !scale.dtype().is_float() {
        return Err(IrError::msg(format!(
            "scale must be a float type, found {}",
            scale.dtype()
        )));
    }
    let out_dt = output_dtype.unwrap_or(scale.dtype());
    if !out_dt.is_float() {
        return Err(IrError::msg(format!(
            "output_dtype must be a float type, found {out_dt}"
        )));
    }
    let layout = Layout::new(x.shape(), scale.shape(), axis, block_size)?;
    let s = scale.to_f64_vec();
    let z = zero_points(zp, scale)?;
    let idx = layout.indices(x.len());
    let xv = x.to_i64_vec();
    // The reference subtracts in f32 and multiplies in f32 (f64 for an f64 scale).
    let prod_dt = if scale.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let out: Vec<f64> = xv
        .iter()
        .zip(&idx)
        .map(|(&v, &k)| {
            let dx = (v as f32 - z[k] as f32) as f64;
            round_to(prod_dt, dx * s[k])
        })
        .collect();
    Ok(vec![Tensor::from_f64(out_dt, x.shape().to_vec(), &out)?])
}

/// u8 quantization with scale and zero point from the data's range (always including 0),
/// computed in f32 as the ONNX formula is written.
fn dynamic_quantize(x: &Tensor) -> Result<Vec<Tensor>> {
    if !x.dtype().is_float() {
        return Err(IrError::msg(format!(
            "x must be a float type, found {}",
            x.dtype()
        )));
    }
    let xv: Vec<f32> = x.to_f64_vec().into_iter().map(|v| v as f32).collect();
    let maxx = xv.iter().copied().fold(0.0f32, f32::max);
    let minx = xv.iter().copied().fold(0.0f32, f32::min);
    let scale = if maxx == minx {
        1.0f32 / 255.0
    } else {
        (maxx - minx) / 255.0f32
    };
    let initial_zp = 0.0f32 - minx / scale;
    let zp = initial_zp.clamp(0.0, 255.0).round_ties_even();
    let y: Vec<u8> = xv
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8)
        .collect();
    Ok(vec![
        Tensor::new(x.shape().to_vec(), y)?,
        Tensor::from_f64(x.dtype(), vec![], &[scale as f64])?,
        Tensor::scalar(zp as u8),
    ])
}
