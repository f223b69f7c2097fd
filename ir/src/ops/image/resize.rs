//! Resize (ONNX opset 19+): nearest, N-D linear and cubic interpolation, separable, one axis
//! at a time in the order the axes are listed, as ONNX's reference does.

use super::{bounded_numel, from_f64_saturating, MAX_ELEMENTS};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::{CoordinateTransform, KeepAspectRatio, NearestMode, Op, ResizeMode};
use crate::ops::util::{const_input, input, input_type, norm_axis, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

/// The attributes of a Resize node.
struct Params<'a> {
    antialias: bool,
    axes: &'a [i64],
    ct: CoordinateTransform,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    keep: KeepAspectRatio,
    mode: ResizeMode,
    nearest: NearestMode,
}

fn params(op: &Op) -> Option<Params<'_>> {
    match op {
        Op::Resize {
            antialias,
            axes,
            coordinate_transformation_mode,
            cubic_coeff_a,
            exclude_outside,
            extrapolation_value,
            keep_aspect_ratio_policy,
            mode,
            nearest_mode,
        } => Some(Params {
            antialias: *antialias,
            axes,
            ct: *coordinate_transformation_mode,
            cubic_a: *cubic_coeff_a as f64,
            exclude_outside: *exclude_outside,
            extrapolation: *extrapolation_value as f64,
            keep: *keep_aspect_ratio_policy,
            mode: *mode,
            nearest: *nearest_mode,
        }),
        _ => None,
    }
}

/// ONNX lets an optional input be present but empty, which means absent.
fn nonempty(t: Option<&Tensor>) -> Option<&Tensor> {
    t.filter(|t| !t.is_empty())
}

/// The resized axes, normalised; all axes when the attribute is empty.
fn resized_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(IrError::msg(format!(
                "axis {a} is listed twice in axes {axes:?}"
            )));
        }
        out.push(a);
    }
    Ok(out)
}

/// How the output size is given.
enum Target<'a> {
    Scales(&'a [f64]),
    Sizes(&'a [i64]),
}

/// Per-axis scale factors (1 on axes not resized) and output sizes for an input of
/// `in_dims`, as ONNX derives them: `floor(in * scale)` from scales; from sizes, the sizes
/// themselves, or with a keep-aspect-ratio policy one common scale and `round(in * scale)`.
fn plan(
    in_dims: &[usize],
    axes: &[usize],
    target: &Target,
    keep: KeepAspectRatio,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let mut scales = vec![1.0f64; in_dims.len()];
    let mut out = in_dims.to_vec();
    let check_len = |n: usize, what: &str| -> Result<()> {
        if n != axes.len() {
            return Err(IrError::msg(format!(
                "{what} has {n} values for {} resized axes",
                axes.len()
            )));
        }
        Ok(())
    };
    match target {
        Target::Scales(s) => {
            check_len(s.len(), "scales")?;
            for (&a, &sc) in axes.iter().zip(s.iter()) {
                if !(sc > 0.0 && sc.is_finite()) {
                    return Err(IrError::msg(format!(
                        "scale {sc} for axis {a} must be positive and finite"
                    )));
                }
                let n = (sc * in_dims[a] as f64).floor();
                if n > MAX_ELEMENTS as f64 {
                    return Err(IrError::msg(format!(
                        "scale {sc} makes axis {a} {n} long, more than 2^31"
                    )));
                }
                scales[a] = sc;
                out[a] = n as usize;
            }
        }
        Target::Sizes(s) => {
            check_len(s.len(), "sizes")?;
            for (&a, &sz) in axes.iter().zip(s.iter()) {
                if sz < 0 || sz as u64 > MAX_ELEMENTS as u64 {
                    return Err(IrError::msg(format!(
                        "size {sz} for axis {a} must be in [0, 2^31]"
                    )));
                }
                if in_dims[a] == 0 && sz != 0 {
                    return Err(IrError::msg(format!(
                        "axis {a} is empty and cannot be resized to {sz}"
                    )));
                }
            }
            let ratio = |a: usize, sz: i64| {
                if in_dims[a] == 0 {
                    1.0
                } else {
                    sz as f64 / in_dims[a] as f64
                }
            };
            match keep {
                KeepAspectRatio::Stretch => {
                    for (&a, &sz) in axes.iter().zip(s.iter()) {
                        scales[a] = ratio(a, sz);
                        out[a] = sz as usize;
                    }
                }
                KeepAspectRatio::NotLarger | KeepAspectRatio::NotSmaller => {
                    let rs = axes.iter().zip(s.iter()).map(|(&a, &sz)| ratio(a, sz));
                    let common = if keep == KeepAspectRatio::NotLarger {
                        rs.fold(f64::INFINITY, f64::min)
                    } else {
                        rs.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &a in axes {
                        let n = (common * in_dims[a] as f64 + 0.5).floor();
                        if n > MAX_ELEMENTS as f64 {
                            return Err(IrError::msg(format!(
                                "axis {a} would be {n} long, more than 2^31"
                            )));
                        }
                        scales[a] = common;
                        out[a] = n as usize;
                    }
                }
            }
        }
    }
    Ok((scales, out))
}

/// The scales or sizes input as a target; `None` when neither is given.
fn target_of<'a>(
    scales: Option<&'a Tensor>,
    sizes: Option<&'a Tensor>,
    sv: &'a mut Vec<f64>,
    zv: &'a mut Vec<i64>,
) -> Result<Option<Target<'a>>> {
    match (nonempty(scales), nonempty(sizes)) {
        (Some(_), Some(_)) => Err(IrError::msg("only one of scales and sizes may be given")),
        (Some(s), None) => {
            *sv = s.to_f64_vec();
            Ok(Some(Target::Scales(sv)))
        }
        (None, Some(s)) => {
            if s.dtype() != DType::I64 {
                return Err(IrError::msg(format!(
                    "sizes must be i64, found {}",
                    s.dtype()
                )));
            }
            *zv = s.to_i64_vec();
            Ok(Some(Target::Sizes(zv)))
        }
        (None, None) => Ok(None),
    }
}

pub(super) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let p = params(op).ok_or_else(|| IrError::msg("not a resize"))?;
    let x = input_type(types, 0)?;
    if x.dtype == DType::Bool {
        return Err(IrError::msg("resize does not take bool tensors"));
    }
    let Some(dims) = x.shape.dims() else {
        return Ok(TensorType::unknown_shape(x.dtype));
    };
    let rank = dims.len();
    let axes = resized_axes(p.axes, rank)?;
    let scales_absent = types.get(2).copied().flatten().is_none();
    let sizes_absent = types.get(3).copied().flatten().is_none();
    let (mut sv, mut zv) = (Vec::new(), Vec::new());
    // The value-carrying input must be constant (an absent one counts as an empty constant).
    let scales_c = if scales_absent {
        None
    } else {
        const_input(consts, 2)
    };
    let sizes_c = if sizes_absent {
        None
    } else {
        const_input(consts, 3)
    };
    let scales_known = scales_absent || scales_c.is_some();
    let sizes_known = sizes_absent || sizes_c.is_some();
    let mut out: Vec<Dim> = dims.to_vec();
    let target = if scales_known && sizes_known {
        target_of(scales_c, sizes_c, &mut sv, &mut zv)?
    } else {
        None
    };
    let Some(target) = target else {
        for &a in &axes {
            out[a] = Dim::Unknown;
        }
        return Ok(TensorType::new(x.dtype, Shape(Some(out))));
    };
    if let Some(known) = x.shape.concrete() {
        let (_, sizes) = plan(&known, &axes, &target, p.keep)?;
        return Ok(TensorType::known(x.dtype, &sizes));
    }
    // Some dims are symbolic: keep those a scale of 1 leaves alone, compute known ones.
    match (&target, p.keep) {
        (Target::Scales(s), _) => {
            if s.len() != axes.len() {
                return Err(IrError::msg(format!(
                    "scales has {} values for {} resized axes",
                    s.len(),
                    axes.len()
                )));
            }
            for (&a, &sc) in axes.iter().zip(s.iter()) {
                if !(sc > 0.0 && sc.is_finite()) {
                    return Err(IrError::msg(format!(
                        "scale {sc} for axis {a} must be positive and finite"
                    )));
                }
                out[a] = match &dims[a] {
                    _ if sc == 1.0 => dims[a].clone(),
                    Dim::Known(d) => {
                        let n = (sc * *d as f64).floor();
                        if n > MAX_ELEMENTS as f64 {
                            return Err(IrError::msg(format!(
                                "scale {sc} makes axis {a} {n} long, more than 2^31"
                            )));
                        }
                        Dim::Known(n as usize)
                    }
                    _ => Dim::Unknown,
                };
            }
        }
        (Target::Sizes(s), KeepAspectRatio::Stretch) => {
            if s.len() != axes.len() {
                return Err(IrError::msg(format!(
                    "sizes has {} values for {} resized axes",
                    s.len(),
                    axes.len()
                )));
            }
            for (&a, &sz) in axes.iter().zip(s.iter()) {
                out[a] = Dim::Known(super::size_from(sz, "a resize size")?);
            }
        }
        (Target::Sizes(_), _) => {
            let known: Option<Vec<usize>> = axes.iter().map(|&a| dims[a].known()).collect();
            match known {
                Some(k) => {
                    // Only the resized axes matter to the policy; plan on them alone.
                    let sub_axes: Vec<usize> = (0..k.len()).collect();
                    let (_, sizes) = plan(&k, &sub_axes, &target, p.keep)?;
                    for (i, &a) in axes.iter().enumerate() {
                        out[a] = Dim::Known(sizes[i]);
                    }
                }
                None => {
                    for &a in &axes {
                        out[a] = Dim::Unknown;
                    }
                }
            }
        }
    }
    Ok(TensorType::new(x.dtype, Shape(Some(out))))
}

/// For each output position along one resized axis, the input positions and weights that
/// make it, or `None` where tf_crop_and_resize extrapolates.
pub type AxisTaps = Vec<Option<Vec<(usize, f64)>>>;

/// A Resize worked out for one input shape: the output shape and, for every axis that
/// changes, in the order eval applies them, its taps. Devices that build interpolation
/// tables on the host take them from here, so their arithmetic is eval's by construction.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeTaps {
    pub out_shape: Vec<usize>,
    pub axes: Vec<(usize, AxisTaps)>,
}

/// The taps of `op` (a Resize) on an input of shape `x_shape`, from its roi, scales and
/// sizes inputs (absent or empty means not given).
pub fn resize_taps(
    op: &Op,
    x_shape: &[usize],
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> Result<ResizeTaps> {
    let p = params(op).ok_or_else(|| IrError::msg("not a resize"))?;
    let rank = x_shape.len();
    let axes = resized_axes(p.axes, rank)?;
    let (mut sv, mut zv) = (Vec::new(), Vec::new());
    let target = target_of(scales, sizes, &mut sv, &mut zv)?
        .ok_or_else(|| IrError::msg("one of scales and sizes must be given"))?;
    let (scales, out_dims) = plan(x_shape, &axes, &target, p.keep)?;
    bounded_numel(&out_dims)?;

    // Region of interest per axis (start, end), used by tf_crop_and_resize only.
    let mut rois = vec![(0.0f64, 1.0f64); rank];
    if p.ct == CoordinateTransform::TfCropAndResize {
        if let Some(r) = nonempty(roi) {
            let v = r.to_f64_vec();
            if v.len() != 2 * axes.len() {
                return Err(IrError::msg(format!(
                    "roi has {} values; {} resized axes need {}",
                    v.len(),
                    axes.len(),
                    2 * axes.len()
                )));
            }
            for (i, &a) in axes.iter().enumerate() {
                rois[a] = (v[i], v[axes.len() + i]);
            }
        }
    }
    if p.ct == CoordinateTransform::OutputHalfPixel {
        return Err(IrError::msg(
            "output_half_pixel is a RoiAlign mode, not a Resize one",
        ));
    }
    let mut taps = Vec::new();
    for &a in &axes {
        let identity_roi = p.ct != CoordinateTransform::TfCropAndResize
            || (rois[a].0 == 0.0 && rois[a].1 == 1.0);
        if is_close(scales[a], 1.0) && out_dims[a] == x_shape[a] && identity_roi {
            continue;
        }
        taps.push((a, axis_taps(&p, x_shape[a], out_dims[a], scales[a], rois[a])?));
    }
    Ok(ResizeTaps {
        out_shape: out_dims,
        axes: taps,
    })
}

pub(super) fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let p = params(op).ok_or_else(|| IrError::msg("not a resize"))?;
    let x = input(inputs, 0)?;
    if x.dtype() == DType::Bool {
        return Err(IrError::msg("resize does not take bool tensors"));
    }
    let plan = resize_taps(
        op,
        x.shape(),
        opt_input(inputs, 1),
        opt_input(inputs, 2),
        opt_input(inputs, 3),
    )?;
    let mut cur = x.to_f64_vec();
    let mut shape = x.shape().to_vec();
    for (a, taps) in &plan.axes {
        let a = *a;
        let mut next_shape = shape.clone();
        next_shape[a] = plan.out_shape[a];
        let n = bounded_numel(&next_shape)?;
        let outer = crate::tensor::checked_numel(&shape[..a])?;
        let inner = crate::tensor::checked_numel(&shape[a + 1..])?;
        let in_len = shape[a];
        let mut next = Vec::with_capacity(n);
        for o in 0..outer {
            for tap in taps {
                for i in 0..inner {
                    next.push(match tap {
                        None => p.extrapolation,
                        Some(t) => t
                            .iter()
                            .map(|&(k, c)| c * cur[(o * in_len + k) * inner + i])
                            .sum(),
                    });
                }
            }
        }
        cur = next;
        shape = next_shape;
    }
    from_f64_saturating(x.dtype(), shape, &cur)
}

/// Python's `math.isclose` with its default relative tolerance.
fn is_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The taps of one axis (see [`AxisTaps`]).
fn axis_taps(
    p: &Params,
    in_len: usize,
    out_len: usize,
    scale: f64,
    roi: (f64, f64),
) -> Result<AxisTaps> {
    let in_w = in_len as f64;
    // The real-valued output length the scale implies (differs from out_len when it is not whole).
    let out_w = scale * in_w;
    let mut taps = Vec::with_capacity(out_len);
    for j in 0..out_len {
        let y = j as f64;
        let x = match p.ct {
            CoordinateTransform::AlignCorners => {
                if out_w == 1.0 {
                    0.0
                } else {
                    y * (in_w - 1.0) / (out_w - 1.0)
                }
            }
            CoordinateTransform::Asymmetric => y / scale,
            CoordinateTransform::TfCropAndResize => {
                let (s, e) = roi;
                let x = if out_w == 1.0 {
                    (e - s) * (in_w - 1.0) / 2.0
                } else {
                    y * (e - s) * (in_w - 1.0) / (out_w - 1.0)
                };
                let x = x + s * (in_w - 1.0);
                if x < 0.0 || x > in_w - 1.0 {
                    taps.push(None);
                    continue;
                }
                x
            }
            CoordinateTransform::PytorchHalfPixel => {
                if out_w == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            CoordinateTransform::HalfPixel => (y + 0.5) / scale - 0.5,
            CoordinateTransform::HalfPixelSymmetric => {
                let adjustment = out_len as f64 / out_w;
                let center = in_w / 2.0;
                let offset = center * (1.0 - adjustment);
                offset + (y + 0.5) / scale - 0.5
            }
            CoordinateTransform::TfHalfPixelForNn => (y + 0.5) / scale,
            CoordinateTransform::OutputHalfPixel => {
                return Err(IrError::msg(
                    "output_half_pixel is a RoiAlign mode, not a Resize one",
                ));
            }
        };
        if !x.is_finite() {
            return Err(IrError::msg(format!(
                "output position {j} maps to the non-finite input position {x}"
            )));
        }
        // ratio is in (0, 1]: an exact input position counts as the right end of the cell
        // to its left, which is how ONNX picks neighbours.
        let xf = x.floor();
        let ratio = if x == xf { 1.0 } else { x - xf };
        let mut coeffs = coefficients(p, ratio, scale);
        let n = coeffs.len() as i64;
        // The n input positions nearest x (ties to the smaller), found as ONNX does on an
        // edge-padded copy; clamping the positions is that padding.
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let pf = xp.floor();
        let frac = xp - pf;
        let offset = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = pf as i64 + offset - pad;
        let last = in_len as i64 - 1;
        if p.exclude_outside {
            for (k, c) in coeffs.iter_mut().enumerate() {
                let idx = start + k as i64;
                if idx < 0 || idx > last {
                    *c = 0.0;
                }
            }
            let sum: f64 = coeffs.iter().sum();
            let sum = if sum == 0.0 { 1.0 } else { sum };
            for c in coeffs.iter_mut() {
                *c /= sum;
            }
        }
        let tap = coeffs
            .iter()
            .enumerate()
            .map(|(k, &c)| ((start + k as i64).clamp(0, last.max(0)) as usize, c))
            .collect();
        taps.push(Some(tap));
    }
    Ok(taps)
}

/// Interpolation weights for neighbours at offsets `start..` around a position whose
/// distance from the neighbour on its left is `ratio`.
fn coefficients(p: &Params, ratio: f64, scale: f64) -> Vec<f64> {
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    match p.mode {
        ResizeMode::Nearest => {
            if ratio == 1.0 {
                return vec![0.0, 1.0];
            }
            match p.nearest {
                NearestMode::RoundPreferFloor => vec![b(ratio <= 0.5), b(ratio > 0.5)],
                NearestMode::RoundPreferCeil => vec![b(ratio < 0.5), b(ratio >= 0.5)],
                NearestMode::Floor => vec![1.0, 0.0],
                NearestMode::Ceil => vec![0.0, 1.0],
            }
        }
        ResizeMode::Linear if p.antialias => {
            // A triangle filter stretched by 1/scale when downsampling.
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            let c: Vec<f64> = (start..start + footprint)
                .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                .collect();
            normalized(c)
        }
        ResizeMode::Linear => vec![1.0 - ratio, ratio],
        ResizeMode::Cubic if p.antialias => {
            let s = scale.min(1.0);
            let a = p.cubic_a;
            let start = (-2.0 / s).floor() as i64 + 1;
            let end = 2 - start;
            let c: Vec<f64> = (start..end)
                .map(|i| cubic_kernel(s * (i as f64 - ratio), a))
                .collect();
            normalized(c)
        }
        ResizeMode::Cubic => {
            let a = p.cubic_a;
            let r = ratio;
            vec![
                ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a)
                    * ((1.0 - r) + 1.0)
                    - 4.0 * a,
            ]
        }
    }
}

/// Keys' cubic convolution kernel with parameter `a`.
fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    let x2 = x * x;
    let x3 = x * x2;
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

fn normalized(mut c: Vec<f64>) -> Vec<f64> {
    let sum: f64 = c.iter().sum();
    if sum != 0.0 {
        for v in c.iter_mut() {
            *v /= sum;
        }
    }
    c
}
