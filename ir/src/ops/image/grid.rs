//! GridSample (any number of spatial dims, ONNX opset 22) and AffineGrid (2-D and 3-D).

use super::{bounded_numel, from_f64_saturating, need_float, round_to, size_from};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::{GridPaddingMode, GridSampleMode};
use crate::ops::util::{const_input, input, input_type, strides};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

pub(super) fn infer_grid_sample(types: &[Option<&TensorType>]) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let g = input_type(types, 1)?;
    need_float("grid", g.dtype)?;
    let (Some(xd), Some(gd)) = (x.shape.dims(), g.shape.dims()) else {
        return Ok(TensorType::unknown_shape(x.dtype));
    };
    if xd.len() < 3 || gd.len() != xd.len() {
        return Err(IrError::msg(format!(
            "x {} and grid {} must have the same rank, at least 3",
            x.shape, g.shape
        )));
    }
    if let Some(k) = gd[gd.len() - 1].known() {
        if k != xd.len() - 2 {
            return Err(IrError::msg(format!(
                "grid's last dim is {k}; x has {} spatial dims",
                xd.len() - 2
            )));
        }
    }
    let n = if xd[0] == Dim::Unknown {
        gd[0].clone()
    } else {
        xd[0].clone()
    };
    let mut out = vec![n, xd[1].clone()];
    out.extend(gd[1..gd.len() - 1].iter().cloned());
    Ok(TensorType::new(x.dtype, Shape(Some(out))))
}

/// Reflects `x` at the borders `lo` and `hi` until it lies between them.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / range).trunc();
        let r = dx - n * range;
        if n % 2.0 == 0.0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / range).trunc();
        let r = dx - n * range;
        if n % 2.0 == 0.0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

/// Keys' cubic weights (a = -0.75) for the four neighbours of a point `t` in [0, 1) past
/// the first of the middle two.
fn cubic_weights(t: f64) -> [f64; 4] {
    let a = -0.75;
    let x = t.abs();
    [
        ((a * (x + 1.0) - 5.0 * a) * (x + 1.0) + 8.0 * a) * (x + 1.0) - 4.0 * a,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        ((a + 2.0) * (1.0 - x) - (a + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0,
        ((a * (2.0 - x) - 5.0 * a) * (2.0 - x) + 8.0 * a) * (2.0 - x) - 4.0 * a,
    ]
}

/// An integer coordinate that cannot overflow when neighbours are added to it.
fn int_coord(x: f64) -> i64 {
    x.clamp(-1e15, 1e15) as i64
}

pub(super) fn eval_grid_sample(
    align_corners: bool,
    mode: GridSampleMode,
    padding: GridPaddingMode,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let grid = input(inputs, 1)?;
    need_float("grid", grid.dtype())?;
    if x.dtype() == DType::Bool {
        return Err(IrError::msg("grid_sample does not take bool tensors"));
    }
    let xs = x.shape();
    let gs = grid.shape();
    if xs.len() < 3 || gs.len() != xs.len() {
        return Err(IrError::msg(format!(
            "x {xs:?} and grid {gs:?} must have the same rank, at least 3"
        )));
    }
    let r = xs.len() - 2;
    if gs[0] != xs[0] || gs[r + 1] != r {
        return Err(IrError::msg(format!(
            "grid {gs:?} must be [{}, ..., {r}] for x {xs:?}",
            xs[0]
        )));
    }
    let (n_batch, channels) = (xs[0], xs[1]);
    let dims = &xs[2..];
    let mut out_shape = vec![n_batch, channels];
    out_shape.extend_from_slice(&gs[1..=r]);
    let total = bounded_numel(&out_shape)?;
    let points = crate::tensor::checked_numel(&gs[1..=r])?;
    let plane = crate::tensor::checked_numel(&dims)?;
    let dstrides = strides(dims);
    let xv = x.to_f64_vec();
    let gv = grid.to_f64_vec();
    let gt = grid.dtype();
    // The sampling area per spatial dim: pixel centres (align_corners) or pixel edges.
    let (lo, hi): (Vec<f64>, Vec<f64>) = dims
        .iter()
        .map(|&d| {
            if align_corners {
                (0.0, d as f64 - 1.0)
            } else {
                (-0.5, d as f64 - 0.5)
            }
        })
        .unzip();

    // The flat offset of a pixel in one plane, per padding mode; None reads as zero.
    let pixel = |i: usize, p: i64| -> Option<usize> {
        let d = dims[i] as i64;
        if d == 0 {
            return None;
        }
        let q = match padding {
            GridPaddingMode::Zeros => {
                if p < 0 || p >= d {
                    return None;
                }
                p
            }
            GridPaddingMode::Border => p.clamp(0, d - 1),
            GridPaddingMode::Reflection => {
                (reflect(p as f64, lo[i], hi[i]).trunc() as i64).clamp(0, d - 1)
            }
        };
        Some(q as usize * dstrides[i])
    };

    let mut out = vec![0.0f64; total];
    for n in 0..n_batch {
        for pt in 0..points {
            let g = &gv[(n * points + pt) * r..(n * points + pt + 1) * r];
            // Grid coordinates list the innermost dim first (x, y, z).
            let mut coord = vec![0.0f64; r];
            for i in 0..r {
                let v = g[r - 1 - i];
                let len = dims[i] as f64;
                let c = if align_corners {
                    round_to(gt, round_to(gt, round_to(gt, v + 1.0) / 2.0) * (len - 1.0))
                } else {
                    round_to(gt, round_to(gt, round_to(gt, v + 1.0) * len - 1.0) / 2.0)
                };
                // The reference keeps denormalised coordinates in f32.
                let mut c = c as f32 as f64;
                if mode == GridSampleMode::Nearest {
                    c = c.round_ties_even();
                }
                if c < lo[i] || c > hi[i] {
                    match padding {
                        GridPaddingMode::Border => c = c.min(dims[i] as f64 - 1.0).max(0.0),
                        GridPaddingMode::Reflection => c = reflect(c, lo[i], hi[i]) as f32 as f64,
                        GridPaddingMode::Zeros => {}
                    }
                }
                coord[i] = c;
            }
            // Per dim: (neighbour offset or None, weight).
            let per_dim: Vec<Vec<(Option<usize>, f64)>> = (0..r)
                .map(|i| {
                    let c = coord[i];
                    match mode {
                        GridSampleMode::Nearest => vec![(pixel(i, int_coord(c.trunc())), 1.0)],
                        GridSampleMode::Linear => {
                            let x0 = int_coord(c.floor());
                            let t = c - c.floor();
                            vec![(pixel(i, x0), 1.0 - t), (pixel(i, x0 + 1), t)]
                        }
                        GridSampleMode::Cubic => {
                            let x0 = int_coord(c.floor());
                            let w = cubic_weights(c - c.floor());
                            (0..4)
                                .map(|k| (pixel(i, x0 - 1 + k as i64), w[k]))
                                .collect()
                        }
                    }
                })
                .collect();
            // The tensor product of the per-dim taps.
            let mut taps: Vec<(Option<usize>, f64)> = vec![(Some(0), 1.0)];
            for dim_taps in &per_dim {
                let mut next = Vec::with_capacity(taps.len() * dim_taps.len());
                for &(off, w) in &taps {
                    for &(o, wd) in dim_taps {
                        next.push((off.zip(o).map(|(a, b)| a + b), w * wd));
                    }
                }
                taps = next;
            }
            for c in 0..channels {
                let base = (n * channels + c) * plane;
                let mut acc = 0.0;
                for &(off, w) in &taps {
                    if let Some(o) = off {
                        acc += w * xv[base + o];
                    }
                }
                out[(n * channels + c) * points + pt] = acc;
            }
        }
    }
    from_f64_saturating(x.dtype(), out_shape, &out)
}

pub(super) fn infer_affine_grid(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let theta = input_type(types, 0)?;
    need_float("theta", theta.dtype)?;
    input_type(types, 1)?;
    let spatial = theta
        .shape
        .dims()
        .and_then(|d| d.get(1))
        .and_then(|d| d.known());
    if let Some(size) = const_input(consts, 1) {
        let s = size_list(size)?;
        let mut out: Vec<usize> = vec![s[0]];
        out.extend_from_slice(&s[2..]);
        out.push(s.len() - 2);
        return Ok(TensorType::known(theta.dtype, &out));
    }
    match spatial {
        Some(k) if k == 2 || k == 3 => {
            let n = theta
                .shape
                .dims()
                .map(|d| d[0].clone())
                .unwrap_or(Dim::Unknown);
            let mut out = vec![n];
            out.extend(std::iter::repeat(Dim::Unknown).take(k));
            out.push(Dim::Known(k));
            Ok(TensorType::new(theta.dtype, Shape(Some(out))))
        }
        _ => Ok(TensorType::unknown_shape(theta.dtype)),
    }
}

/// The `size` input of AffineGrid: [N, C, H, W] or [N, C, D, H, W].
fn size_list(size: &Tensor) -> Result<Vec<usize>> {
    let v = size.to_i64_vec();
    if v.len() != 4 && v.len() != 5 {
        return Err(IrError::msg(format!(
            "size must have 4 or 5 values, found {v:?}"
        )));
    }
    v.iter()
        .map(|&s| size_from(s, "an affine_grid size"))
        .collect()
}

/// The normalised coordinates of the pixel centres along a dim of length `d`, in [-1, 1].
fn base_coords(d: usize, align_corners: bool) -> Vec<f64> {
    if align_corners {
        if d == 1 {
            return vec![-1.0];
        }
        let step = 2.0 / (d as f64 - 1.0);
        (0..d).map(|i| -1.0 + i as f64 * step).collect()
    } else {
        let step = 2.0 / d as f64;
        let start = -1.0 + step / 2.0;
        (0..d).map(|i| start + i as f64 * step).collect()
    }
}

pub(super) fn eval_affine_grid(align_corners: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let theta = input(inputs, 0)?;
    need_float("theta", theta.dtype())?;
    let size = size_list(input(inputs, 1)?)?;
    let k = size.len() - 2;
    let n = size[0];
    if theta.shape() != [n, k, k + 1] {
        return Err(IrError::msg(format!(
            "theta must be [{n}, {k}, {}] for size {size:?}, found {:?}",
            k + 1,
            theta.shape()
        )));
    }
    let spatial = &size[2..];
    let mut out_shape = vec![n];
    out_shape.extend_from_slice(spatial);
    out_shape.push(k);
    let total = bounded_numel(&out_shape)?;
    let th = theta.to_f64_vec();
    let axes: Vec<Vec<f64>> = spatial
        .iter()
        .map(|&d| base_coords(d, align_corners))
        .collect();
    let points = crate::tensor::checked_numel(&spatial)?;
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; k];
    for b in 0..n {
        let t = &th[b * k * (k + 1)..(b + 1) * k * (k + 1)];
        for _ in 0..points {
            // The homogeneous source point lists the innermost dim first: (x, y[, z], 1).
            let mut hp: Vec<f64> = (0..k).map(|i| axes[k - 1 - i][idx[k - 1 - i]]).collect();
            hp.push(1.0);
            for row in 0..k {
                out.push((0..=k).map(|c| t[row * (k + 1) + c] * hp[c]).sum::<f64>());
            }
            for a in (0..k).rev() {
                idx[a] += 1;
                if idx[a] < spatial[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
    }
    Tensor::from_f64(theta.dtype(), out_shape, &out)
}
