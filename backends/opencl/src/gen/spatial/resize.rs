//! Resize: the interpolation taps of each resized axis (input positions and weights per
//! output position) are computed on the host exactly as `ir::eval` computes them, and become
//! constant tables of the kernel; each output element sums the product of its axes' taps.
//! Eval resizes one axis at a time; the product of the separable weights is the same sum.

use super::{array, input, lit, shape_of, store, Gen};
use kiln_ir::{CoordinateTransform, KeepAspectRatio, NearestMode, Op, ResizeMode, Value};
use std::fmt::Write;

/// Table entries one kernel may carry (the source grows with them).
const MAX_TAPS: usize = 1 << 20;

struct P {
    antialias: bool,
    ct: CoordinateTransform,
    cubic_a: f64,
    exclude_outside: bool,
    mode: ResizeMode,
    nearest: NearestMode,
}

fn nonempty(g: &Gen, v: Option<Value>) -> Option<kiln_ir::Tensor> {
    let v = v?;
    g.graph.const_value(v).filter(|t| !t.is_empty()).cloned()
}

fn is_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

pub fn body(g: &Gen, op: &Op, ins: &[Option<Value>], shape: &[usize]) -> Result<String, String> {
    let Op::Resize {
        antialias,
        axes,
        coordinate_transformation_mode: ct,
        cubic_coeff_a,
        exclude_outside,
        extrapolation_value,
        keep_aspect_ratio_policy: keep,
        mode,
        nearest_mode,
    } = op
    else {
        return Err("not a resize".into());
    };
    let p = P { antialias: *antialias, ct: *ct, cubic_a: *cubic_coeff_a as f64, exclude_outside: *exclude_outside, mode: *mode, nearest: *nearest_mode };
    let x = input(ins, 0)?;
    let xs = shape_of(g, x)?;
    let r = xs.len();
    let mut ax = Vec::new();
    if axes.is_empty() {
        ax.extend(0..r);
    } else {
        for &a in axes {
            let n = if a < 0 { a + r as i64 } else { a };
            if n < 0 || n as usize >= r || ax.contains(&(n as usize)) {
                return Err(format!("axes {axes:?} are out of range or repeated for rank {r}"));
            }
            ax.push(n as usize);
        }
    }
    for (name, i) in [("scales", 2), ("sizes", 3)] {
        if let Some(v) = ins.get(i).copied().flatten() {
            if g.graph.const_value(v).is_none() {
                return Err(format!("{name} must be a constant"));
            }
        }
    }
    // Per-axis scales as eval's plan derives them.
    let mut scales = vec![1.0f64; r];
    match (nonempty(g, ins.get(2).copied().flatten()), nonempty(g, ins.get(3).copied().flatten())) {
        (Some(s), None) => {
            let s = s.to_f64_vec();
            if s.len() != ax.len() {
                return Err(format!("scales has {} values for {} axes", s.len(), ax.len()));
            }
            for (&a, &v) in ax.iter().zip(&s) {
                scales[a] = v;
            }
        }
        (None, Some(s)) => {
            let s = s.to_i64_vec();
            if s.len() != ax.len() {
                return Err(format!("sizes has {} values for {} axes", s.len(), ax.len()));
            }
            let ratio = |a: usize, sz: i64| if xs[a] == 0 { 1.0 } else { sz as f64 / xs[a] as f64 };
            match keep {
                KeepAspectRatio::Stretch => {
                    for (&a, &sz) in ax.iter().zip(&s) {
                        scales[a] = ratio(a, sz);
                    }
                }
                _ => {
                    let rs = ax.iter().zip(&s).map(|(&a, &sz)| ratio(a, sz));
                    let common = if *keep == KeepAspectRatio::NotLarger { rs.fold(f64::INFINITY, f64::min) } else { rs.fold(f64::NEG_INFINITY, f64::max) };
                    for &a in &ax {
                        scales[a] = common;
                    }
                }
            }
        }
        _ => return Err("exactly one of scales and sizes must be given".into()),
    }
    let mut roi = vec![(0.0f64, 1.0f64); r];
    if *ct == CoordinateTransform::TfCropAndResize {
        if let Some(t) = nonempty(g, ins.get(1).copied().flatten()) {
            let v = t.to_f64_vec();
            if v.len() != 2 * ax.len() {
                return Err(format!("roi has {} values for {} axes", v.len(), ax.len()));
            }
            for (i, &a) in ax.iter().enumerate() {
                roi[a] = (v[i], v[ax.len() + i]);
            }
        } else if ins.get(1).copied().flatten().is_some_and(|v| g.graph.const_value(v).is_none()) {
            return Err("roi must be a constant".into());
        }
    }
    if shape.len() != r {
        return Err(format!("output rank {} differs from the input's {r}", shape.len()));
    }
    let out_ty = g.dtype(x);
    let mut s = String::new();
    let mut head = String::new();
    let mut close = String::new();
    let mut weight = Vec::new();
    let mut xc: Vec<String> = (0..r).map(|j| format!("i{j}")).collect();
    let mut total = 0usize;
    for &a in &ax {
        let identity_roi = *ct != CoordinateTransform::TfCropAndResize || roi[a] == (0.0, 1.0);
        if is_close(scales[a], 1.0) && shape[a] == xs[a] && identity_roi {
            continue;
        }
        if !(scales[a] > 0.0 && scales[a].is_finite()) {
            return Err(format!("scale {} for axis {a} must be positive and finite", scales[a]));
        }
        // An antialiasing filter is 1/scale times wider: bound it before building it.
        if p.antialias && 4.0 / scales[a] > MAX_TAPS as f64 {
            return Err(format!("scale {} for axis {a} makes the antialiasing filter wider than {MAX_TAPS} taps", scales[a]));
        }
        let n = coefficients(&p, 0.5, scales[a]).len();
        total = total.saturating_add(n.saturating_mul(shape[a]));
        if total > MAX_TAPS {
            return Err(format!("the interpolation tables would have more than {MAX_TAPS} entries"));
        }
        let taps = axis_taps(&p, xs[a], shape[a], scales[a], roi[a])?;
        // A position where tf_crop_and_resize extrapolates has the index -1.
        let mut idx = Vec::with_capacity(n * shape[a]);
        let mut w = Vec::with_capacity(n * shape[a]);
        for t in &taps {
            match t {
                Some(t) => {
                    for &(k, c) in t {
                        idx.push(k as i64);
                        w.push(lit(c));
                    }
                }
                None => {
                    idx.extend(std::iter::repeat_n(-1, n));
                    w.extend(std::iter::repeat_n("0".to_string(), n));
                }
            }
        }
        let _ = writeln!(s, "  const long ix{a}[] = {}; const M w{a}[] = {};", array(&idx), array(&w));
        let _ = write!(
            head,
            "  for (long t{a} = 0; t{a} < {n}L; t{a}++) {{ long p{a} = ix{a}[i{a} * {n}L + t{a}]; if (p{a} < 0) return {}; M c{a} = w{a}[i{a} * {n}L + t{a}];\n",
            store(out_ty, &lit(*extrapolation_value as f64))?
        );
        close.push_str(" }");
        weight.push(format!("c{a}"));
        xc[a] = format!("p{a}");
    }
    let v = format!("(M){}", g.at(x, &xc));
    if weight.is_empty() {
        let _ = write!(s, "  return {};", store(out_ty, &v)?);
        return Ok(s);
    }
    let _ = write!(s, "  M acc = 0;\n{head}    acc += {} * {v};\n {close}\n  return {};", weight.join(" * "), store(out_ty, "acc")?);
    Ok(s)
}

type Taps = Vec<Option<Vec<(usize, f64)>>>;

/// Eval's `axis_taps` (ir/src/ops/image/resize.rs), the same arithmetic in the same order.
fn axis_taps(p: &P, in_len: usize, out_len: usize, scale: f64, roi: (f64, f64)) -> Result<Taps, String> {
    let in_w = in_len as f64;
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
                let x = if out_w == 1.0 { (e - s) * (in_w - 1.0) / 2.0 } else { y * (e - s) * (in_w - 1.0) / (out_w - 1.0) };
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
            CoordinateTransform::OutputHalfPixel => return Err("output_half_pixel is a RoiAlign mode, not a Resize one".into()),
        };
        if !x.is_finite() {
            return Err(format!("output position {j} maps to the non-finite input position {x}"));
        }
        let xf = x.floor();
        let ratio = if x == xf { 1.0 } else { x - xf };
        let mut coeffs = coefficients(p, ratio, scale);
        let n = coeffs.len() as i64;
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
        taps.push(Some(coeffs.iter().enumerate().map(|(k, &c)| ((start + k as i64).clamp(0, last.max(0)) as usize, c)).collect()));
    }
    Ok(taps)
}

/// Eval's interpolation weights for neighbours around a position `ratio` past the left one.
fn coefficients(p: &P, ratio: f64, scale: f64) -> Vec<f64> {
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
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            normalized((start..start + footprint).map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect())
        }
        ResizeMode::Linear => vec![1.0 - ratio, ratio],
        ResizeMode::Cubic if p.antialias => {
            let s = scale.min(1.0);
            let start = (-2.0 / s).floor() as i64 + 1;
            normalized((start..2 - start).map(|i| cubic_kernel(s * (i as f64 - ratio), p.cubic_a)).collect())
        }
        ResizeMode::Cubic => {
            let (a, r) = (p.cubic_a, ratio);
            vec![
                ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a) * ((1.0 - r) + 1.0) - 4.0 * a,
            ]
        }
    }
}

fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
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
