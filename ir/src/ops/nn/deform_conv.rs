//! DeformConv (2-D) on (x, w, offset, b?, mask?), in ONNX's order: each
//! kernel tap reads the input at its regular position plus a learned offset, by bilinear
//! interpolation (zero outside the input), scaled by an optional mask.
//! The sampled patches form an im2col matrix that the [`gemm`] kernel multiplies by the
//! weights.

use super::gemm::gemm;
use super::geometry::{bounded_numel, Window};
use crate::error::{IrError, Result};
use crate::op::{AutoPad, Op};
use crate::ops::util::{input, input_type, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

struct Attrs<'a> {
    dilations: &'a [i64],
    group: i64,
    kernel_shape: &'a [i64],
    offset_group: i64,
    pads: &'a [i64],
    strides: &'a [i64],
}

fn attrs(op: &Op) -> Result<Attrs<'_>> {
    match op {
        Op::DeformConv {
            dilations,
            group,
            kernel_shape,
            offset_group,
            pads,
            strides,
        } => Ok(Attrs {
            dilations,
            group: *group,
            kernel_shape,
            offset_group: *offset_group,
            pads,
            strides,
        }),
        _ => Err(IrError::msg("not a deform_conv")),
    }
}

pub(crate) fn infer(op: &Op, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let _ = attrs(op)?;
    let (x, w, offset) = (
        input_type(types, 0)?,
        input_type(types, 1)?,
        input_type(types, 2)?,
    );
    if !x.dtype.is_float() || w.dtype != x.dtype || offset.dtype != x.dtype {
        return Err(IrError::msg(format!(
            "deform_conv takes float x, w and offset of one type, found {}, {} and {}",
            x.dtype, w.dtype, offset.dtype
        )));
    }
    let rank = x.shape.rank().or(w.shape.rank()).or(offset.shape.rank());
    let Some(rank) = rank else {
        return Ok(vec![TensorType::unknown_shape(x.dtype)]);
    };
    let mut dims = vec![
        x.shape.dims().map_or(Dim::Unknown, |d| d[0].clone()),
        w.shape.dims().map_or(Dim::Unknown, |d| d[0].clone()),
    ];
    // The output grid is the offset's.
    match offset.shape.dims() {
        Some(d) if d.len() == rank => dims.extend(d[2..].iter().cloned()),
        _ => dims.extend(std::iter::repeat_n(Dim::Unknown, rank.saturating_sub(2))),
    }
    Ok(vec![TensorType::new(x.dtype, Shape(Some(dims)))])
}

pub(crate) fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let a = attrs(op)?;
    let (x, w, offset) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
    let (bias, mask) = (opt_input(inputs, 3), opt_input(inputs, 4));
    let dt = x.dtype();
    if !dt.is_float()
        || [w, offset]
            .iter()
            .chain(bias.iter())
            .chain(mask.iter())
            .any(|t| t.dtype() != dt)
    {
        return Err(IrError::msg("deform_conv takes float inputs of one type"));
    }
    let (xs, ws, os) = (x.shape(), w.shape(), offset.shape());
    if xs.len() != 4 || ws.len() != 4 || os.len() != 4 {
        return Err(IrError::msg(format!(
            "deform_conv supports 2-D inputs only: x {xs:?}, w {ws:?}, offset {os:?}"
        )));
    }
    let (n, c, ih, iw) = (xs[0], xs[1], xs[2], xs[3]);
    let oc = ws[0];
    let (group, og) = (a.group, a.offset_group);
    if group < 1 || og < 1 {
        return Err(IrError::msg("group and offset_group must be positive"));
    }
    let (group, og) = (group as usize, og as usize);
    if ws[1].checked_mul(group) != Some(c) || oc % group != 0 || c % og != 0 {
        return Err(IrError::msg(format!(
            "x {xs:?}, w {ws:?}: channels do not divide into {group} groups and {og} offset groups"
        )));
    }
    let win = Window::new(
        2,
        a.kernel_shape,
        Some(ws[2..].to_vec()),
        a.strides,
        a.dilations,
        a.pads,
        AutoPad::NotSet,
    )?;
    if win.kernel != ws[2..] {
        return Err(IrError::msg(format!(
            "kernel_shape {:?} disagrees with the weights {ws:?}",
            win.kernel
        )));
    }
    let (kh, kw) = (win.kernel[0], win.kernel[1]);
    let (oh, _, _) = win.dim(0, ih, false)?;
    let (ow, _, _) = win.dim(1, iw, false)?;
    let taps = kh * kw;
    if os != [n, og * taps * 2, oh, ow] {
        return Err(IrError::msg(format!(
            "offset must have shape {:?}, found {os:?}",
            [n, og * taps * 2, oh, ow]
        )));
    }
    if let Some(m) = mask {
        if m.shape() != [n, og * taps, oh, ow] {
            return Err(IrError::msg(format!(
                "mask must have shape {:?}, found {:?}",
                [n, og * taps, oh, ow],
                m.shape()
            )));
        }
    }
    if let Some(b) = bias {
        if b.len() != oc {
            return Err(IrError::msg(format!(
                "bias has {} values, expected {oc}",
                b.len()
            )));
        }
    }
    let out_shape = vec![n, oc, oh, ow];
    bounded_numel(&out_shape)?;
    let p = oh * ow;
    let (cg, mg) = (c / group, oc / group);
    bounded_numel(&[cg, taps, p])?;
    let xv = x.to_f64_vec();
    let wv = w.to_f64_vec();
    let ov = offset.to_f64_vec();
    let mv = mask.map(|m| m.to_f64_vec());
    let bv = bias.map(|b| b.to_f64_vec());
    let (sh, sw) = (win.strides[0] as f64, win.strides[1] as f64);
    let (dh, dw) = (win.dilations[0] as f64, win.dilations[1] as f64);
    let (ph, pw) = (win.pads[0] as f64, win.pads[1] as f64);
    let c_per_og = c / og;
    let mut y = vec![0.0f64; n * oc * p];
    let mut col = vec![0.0f64; cg * taps * p];
    for b in 0..n {
        for g in 0..group {
            for ci in 0..cg {
                let ch = g * cg + ci;
                let ogi = ch / c_per_og;
                let plane = &xv[(b * c + ch) * ih * iw..(b * c + ch + 1) * ih * iw];
                for t in 0..taps {
                    let (ki, kj) = ((t / kw) as f64, (t % kw) as f64);
                    let oy = &ov[((b * og * taps + ogi * taps + t) * 2) * p..][..p];
                    let ox = &ov[((b * og * taps + ogi * taps + t) * 2 + 1) * p..][..p];
                    let row = &mut col[(ci * taps + t) * p..(ci * taps + t + 1) * p];
                    for i in 0..oh {
                        for j in 0..ow {
                            let q = i * ow + j;
                            let yy = i as f64 * sh - ph + ki * dh + oy[q];
                            let xx = j as f64 * sw - pw + kj * dw + ox[q];
                            let mut v = bilinear(plane, ih, iw, yy, xx);
                            if let Some(m) = &mv {
                                v *= m[(b * og * taps + ogi * taps + t) * p + q];
                            }
                            row[q] = v;
                        }
                    }
                }
            }
            let wg = &wv[g * mg * cg * taps..(g + 1) * mg * cg * taps];
            let yg = &mut y[(b * oc + g * mg) * p..(b * oc + (g + 1) * mg) * p];
            gemm(mg, p, cg * taps, wg, &col, yg);
        }
    }
    if let Some(bv) = bv {
        for (i, v) in y.iter_mut().enumerate() {
            *v += bv[(i / p.max(1)) % oc];
        }
    }
    Ok(vec![Tensor::from_f64(dt, out_shape, &y)?])
}

/// Bilinear interpolation of an h×w plane at (y, x); corners outside the plane read 0.
fn bilinear(plane: &[f64], h: usize, w: usize, y: f64, x: f64) -> f64 {
    if !(y > -1.0 && y < h as f64 && x > -1.0 && x < w as f64) {
        return 0.0;
    }
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let at = |yy: f64, xx: f64| -> f64 {
        if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
            0.0
        } else {
            plane[yy as usize * w + xx as usize]
        }
    };
    at(y0, x0) * (1.0 - fy) * (1.0 - fx)
        + at(y0, x0 + 1.0) * (1.0 - fy) * fx
        + at(y0 + 1.0, x0) * fy * (1.0 - fx)
        + at(y0 + 1.0, x0 + 1.0) * fy * fx
}
