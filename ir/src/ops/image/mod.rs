//! Image and signal ops: resampling (Resize, GridSample, AffineGrid, RoiAlign), detection
//! (NonMaxSuppression), patch movement (Col2Im, MaxUnpool, CenterCropPad) and spectral
//! transforms (DFT, STFT, windows, mel filter banks). One file per op family; each answers
//! `None` for ops that are not its own. Arithmetic is done in f64 and rounded once to the
//! output type.

mod col2im;
mod crop;
mod grid;
mod nms;
mod resize;
pub use resize::{resize_taps, AxisTaps, ResizeTaps};
mod roi;
mod spectral;
mod unpool;

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::{Dim, TensorType};
use crate::tensor::{checked_numel, Tensor};

pub(crate) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<TensorType>>> {
    let one = |r: Result<TensorType>| r.map(|t| vec![t]);
    let r = match op {
        Op::Resize { .. } => resize::infer(op, types, consts),
        Op::CenterCropPad { axes } => crop::infer(axes, types, consts),
        Op::GridSample { .. } => grid::infer_grid_sample(types),
        Op::AffineGrid { .. } => grid::infer_affine_grid(types, consts),
        Op::RoiAlign {
            output_height,
            output_width,
            ..
        } => roi::infer(*output_height, *output_width, types),
        Op::NonMaxSuppression { .. } => Ok(TensorType::new(
            DType::I64,
            vec![Dim::Unknown, Dim::Known(3)],
        )),
        Op::Col2Im { .. } => col2im::infer(types, consts),
        Op::MaxUnpool {
            kernel_shape,
            pads,
            strides,
        } => unpool::infer(kernel_shape, pads, strides, types, consts),
        Op::Dft { inverse, onesided } => spectral::infer_dft(*inverse, *onesided, types, consts),
        Op::Stft { onesided } => spectral::infer_stft(*onesided, types, consts),
        Op::Window { output_dtype, .. } => spectral::infer_window(*output_dtype, consts),
        Op::MelWeightMatrix { output_dtype } => spectral::infer_mel(*output_dtype, consts),
        _ => return None,
    };
    let _ = n_outputs;
    Some(one(r))
}

pub(crate) fn eval(
    op: &Op,
    inputs: &[Option<Tensor>],
    _n_outputs: usize,
) -> Option<Result<Vec<Tensor>>> {
    let r = match op {
        Op::Resize { .. } => resize::eval(op, inputs),
        Op::CenterCropPad { axes } => crop::eval(axes, inputs),
        Op::GridSample {
            align_corners,
            mode,
            padding_mode,
        } => grid::eval_grid_sample(*align_corners, *mode, *padding_mode, inputs),
        Op::AffineGrid { align_corners } => grid::eval_affine_grid(*align_corners, inputs),
        Op::RoiAlign { .. } => roi::eval(op, inputs),
        Op::NonMaxSuppression { center_point_box } => nms::eval(*center_point_box, inputs),
        Op::Col2Im {
            dilations,
            pads,
            strides,
        } => col2im::eval(dilations, pads, strides, inputs),
        Op::MaxUnpool {
            kernel_shape,
            pads,
            strides,
        } => unpool::eval(kernel_shape, pads, strides, inputs),
        Op::Dft { inverse, onesided } => spectral::eval_dft(*inverse, *onesided, inputs),
        Op::Stft { onesided } => spectral::eval_stft(*onesided, inputs),
        Op::Window {
            kind,
            periodic,
            output_dtype,
        } => spectral::eval_window(*kind, *periodic, *output_dtype, inputs),
        Op::MelWeightMatrix { output_dtype } => spectral::eval_mel(*output_dtype, inputs),
        _ => return None,
    };
    Some(r.map(|t| vec![t]))
}

/// The most elements an op here will allocate for an output whose size comes from data.
pub(crate) const MAX_ELEMENTS: usize = 1 << 31;

/// The element count of `shape`, refused when it overflows or exceeds [`MAX_ELEMENTS`].
pub(crate) fn bounded_numel(shape: &[usize]) -> Result<usize> {
    let n = checked_numel(shape)?;
    if n > MAX_ELEMENTS {
        return Err(IrError::msg(format!(
            "output shape {shape:?} has {n} elements, more than the limit of 2^31"
        )));
    }
    Ok(n)
}

/// A size taken from data (a dim, a count): must be non-negative and at most 2^31.
pub(crate) fn size_from(v: i64, what: &str) -> Result<usize> {
    if v < 0 || v as u64 > MAX_ELEMENTS as u64 {
        return Err(IrError::msg(format!(
            "{what} is {v}; it must be in [0, 2^31]"
        )));
    }
    Ok(v as usize)
}

/// f64 results as a tensor of `dtype`: floats round to nearest; integers round half to even
/// and saturate, as ONNX's reference casts resampled values back.
pub(crate) fn from_f64_saturating(dtype: DType, shape: Vec<usize>, vals: &[f64]) -> Result<Tensor> {
    if dtype.is_float() || dtype == DType::Bool {
        return Tensor::from_f64(dtype, shape, vals);
    }
    // `as` casts from f64 saturate and send NaN to 0, which is the clipping wanted here.
    let rounded: Vec<f64> = vals.iter().map(|v| v.round_ties_even()).collect();
    Tensor::from_f64(dtype, shape, &rounded)
}

/// Rejects non-float tensors for ops defined on floats only.
pub(crate) fn need_float(what: &str, d: DType) -> Result<()> {
    if !d.is_float() {
        return Err(IrError::msg(format!(
            "{what} must be a float tensor, found {d}"
        )));
    }
    Ok(())
}

/// A tensor of `shape` whose element i is `t`'s element `map[i]`, or zero where that is `None`.
pub(crate) fn gather_or_zero(
    t: &Tensor,
    shape: Vec<usize>,
    map: &[Option<usize>],
) -> Result<Tensor> {
    let data = crate::with_data!(t.data(), v, T => {
        let mut out: Vec<T> = Vec::with_capacity(map.len());
        for m in map {
            out.push(match m {
                Some(i) => *v.get(*i).ok_or_else(|| IrError::msg("source index out of range"))?,
                None => T::default(),
            });
        }
        <T as crate::tensor::Storable>::wrap(out)
    });
    Tensor::from_data(shape, data)
}

/// `v` rounded to the precision of the float type `d`, where following ONNX's reference
/// means doing a step of arithmetic in the input's own type.
pub(crate) fn round_to(d: DType, v: f64) -> f64 {
    match d {
        DType::F32 => v as f32 as f64,
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}
