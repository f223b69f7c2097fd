//! RoiAlign: average or max of bilinear samples over a grid of bins in each region.

use super::{bounded_numel, need_float, size_from, MAX_ELEMENTS};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::{CoordinateTransform, Op, RoiPoolMode};
use crate::ops::util::{input, input_type};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

pub(super) fn infer(
    output_height: i64,
    output_width: i64,
    types: &[Option<&TensorType>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    need_float("x", x.dtype)?;
    let rois = input_type(types, 1)?;
    let bi = input_type(types, 2)?;
    let oh = size_from(output_height, "output_height")?;
    let ow = size_from(output_width, "output_width")?;
    let r = match (
        rois.shape.dims().and_then(|d| d.first()),
        bi.shape.dims().and_then(|d| d.first()),
    ) {
        (Some(Dim::Known(n)), _) | (_, Some(Dim::Known(n))) => Dim::Known(*n),
        (Some(d), _) => d.clone(),
        _ => Dim::Unknown,
    };
    let c = x
        .shape
        .dims()
        .and_then(|d| d.get(1).cloned())
        .unwrap_or(Dim::Unknown);
    Ok(TensorType::new(
        x.dtype,
        Shape(Some(vec![r, c, Dim::Known(oh), Dim::Known(ow)])),
    ))
}

/// One bilinear sample: four (flat offset in the plane, weight) pairs.
type Sample = [(usize, f64); 4];

pub(super) fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let Op::RoiAlign {
        coordinate_transformation_mode,
        mode,
        output_height,
        output_width,
        sampling_ratio,
        spatial_scale,
    } = op
    else {
        return Err(IrError::msg("not a roi_align"));
    };
    let half_pixel = match coordinate_transformation_mode {
        CoordinateTransform::HalfPixel => true,
        CoordinateTransform::OutputHalfPixel => false,
        other => {
            return Err(IrError::msg(format!(
                "roi_align takes half_pixel or output_half_pixel, not {other}"
            )))
        }
    };
    let x = input(inputs, 0)?;
    need_float("x", x.dtype())?;
    let rois = input(inputs, 1)?;
    let bi = input(inputs, 2)?;
    if x.rank() != 4 {
        return Err(IrError::msg(format!(
            "x must be [N, C, H, W], found {:?}",
            x.shape()
        )));
    }
    let (n_batch, channels, height, width) =
        (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let n_rois = bi.len();
    if rois.shape() != [n_rois, 4] || bi.rank() != 1 {
        return Err(IrError::msg(format!(
            "rois must be [R, 4] and batch_indices [R], found {:?} and {:?}",
            rois.shape(),
            bi.shape()
        )));
    }
    if bi.dtype() == DType::Bool || bi.dtype().is_float() {
        return Err(IrError::msg(format!(
            "batch_indices must be integers, found {}",
            bi.dtype()
        )));
    }
    let ph = size_from(*output_height, "output_height")?;
    let pw = size_from(*output_width, "output_width")?;
    let out_shape = vec![n_rois, channels, ph, pw];
    let total = bounded_numel(&out_shape)?;
    let xv = x.to_f64_vec();
    let rv = rois.to_f64_vec();
    let batch = bi.to_i64_vec();
    let scale = *spatial_scale as f64;
    let offset = if half_pixel { 0.5 } else { 0.0 };
    let plane = height * width;
    let mut out = vec![0.0f64; total];
    for n in 0..n_rois {
        let b = batch[n];
        if b < 0 || b as usize >= n_batch {
            return Err(IrError::msg(format!(
                "batch index {b} of roi {n} is out of range for {n_batch} images"
            )));
        }
        let r = &rv[n * 4..n * 4 + 4];
        let start_w = r[0] * scale - offset;
        let start_h = r[1] * scale - offset;
        let end_w = r[2] * scale - offset;
        let end_h = r[3] * scale - offset;
        let mut roi_w = end_w - start_w;
        let mut roi_h = end_h - start_h;
        if !half_pixel {
            // The legacy mode forces malformed rois to be 1x1.
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let bin_h = roi_h / ph as f64;
        let bin_w = roi_w / pw as f64;
        let grid = |len: f64, bins: usize| -> Result<usize> {
            if *sampling_ratio > 0 {
                return size_from(*sampling_ratio, "sampling_ratio");
            }
            let g = (len / bins as f64).ceil();
            if !g.is_finite() || g > MAX_ELEMENTS as f64 {
                return Err(IrError::msg(format!("roi {n} needs {g} samples per bin")));
            }
            Ok(g.max(0.0) as usize)
        };
        let (grid_h, grid_w) = (grid(roi_h, ph)?, grid(roi_w, pw)?);
        let per_bin = grid_h
            .checked_mul(grid_w)
            .filter(|&s| s.saturating_mul(ph * pw) <= MAX_ELEMENTS);
        let per_bin = per_bin.ok_or_else(|| {
            IrError::msg(format!(
                "roi {n} needs too many samples ({grid_h} x {grid_w} per bin)"
            ))
        })?;
        let count = per_bin.max(1) as f64;
        // Samples shared by every channel: per bin, its grid of bilinear samples.
        let mut samples: Vec<Sample> = Vec::with_capacity(per_bin * ph * pw);
        for py in 0..ph {
            for px in 0..pw {
                for iy in 0..grid_h {
                    let yy =
                        start_h + py as f64 * bin_h + (iy as f64 + 0.5) * bin_h / grid_h as f64;
                    for ix in 0..grid_w {
                        let xx =
                            start_w + px as f64 * bin_w + (ix as f64 + 0.5) * bin_w / grid_w as f64;
                        samples.push(bilinear(yy, xx, height, width));
                    }
                }
            }
        }
        if plane == 0 {
            // No pixels: every sample lies outside the map and reads zero.
            continue;
        }
        for c in 0..channels {
            let data =
                &xv[(b as usize * channels + c) * plane..(b as usize * channels + c + 1) * plane];
            for bin in 0..ph * pw {
                let s = &samples[bin * per_bin..(bin + 1) * per_bin];
                let v = match mode {
                    RoiPoolMode::Average => {
                        s.iter()
                            .map(|t| t.iter().map(|&(o, w)| w * data[o]).sum::<f64>())
                            .sum::<f64>()
                            / count
                    }
                    // As ONNX's reference: the largest weighted corner, not the largest sample.
                    RoiPoolMode::Max => s
                        .iter()
                        .map(|t| {
                            t.iter()
                                .map(|&(o, w)| w * data[o])
                                .fold(f64::NEG_INFINITY, f64::max)
                        })
                        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                        .unwrap_or(0.0),
                };
                out[((n * channels + c) * ph * pw) + bin] = v;
            }
        }
    }
    Tensor::from_f64(x.dtype(), out_shape, &out)
}

/// The four neighbours of (y, x) and their weights; all weights zero outside the map.
fn bilinear(y: f64, x: f64, height: usize, width: usize) -> Sample {
    let zero = [(0, 0.0); 4];
    if height == 0
        || width == 0
        || !(y >= -1.0 && y <= height as f64 && x >= -1.0 && x <= width as f64)
    {
        return zero;
    }
    let mut y = y.max(0.0);
    let mut x = x.max(0.0);
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low >= height - 1 {
        y_low = height - 1;
        y_high = y_low;
        y = y_low as f64;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= width - 1 {
        x_low = width - 1;
        x_high = x_low;
        x = x_low as f64;
    } else {
        x_high = x_low + 1;
    }
    let ly = y - y_low as f64;
    let lx = x - x_low as f64;
    let hy = 1.0 - ly;
    let hx = 1.0 - lx;
    [
        (y_low * width + x_low, hy * hx),
        (y_low * width + x_high, hy * lx),
        (y_high * width + x_low, ly * hx),
        (y_high * width + x_high, ly * lx),
    ]
}
