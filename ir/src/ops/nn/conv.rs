//! Conv, ConvInteger and QLinearConv: im2col (skipped for pointwise kernels) followed by
//! the blocked [`gemm`] per image and group.

use super::gemm::{gemm, wrapping_i64, Acc};
use super::geometry::{bounded_numel, next_index, valid_range, Window};
use super::quant::{quantize_value, round_to, scale_values};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::{AutoPad, Op};
use crate::ops::util::{input, input_type, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;
use std::num::Wrapping;

/// The attributes Conv, ConvInteger and QLinearConv share.
pub(crate) struct ConvAttrs<'a> {
    pub auto_pad: AutoPad,
    pub dilations: &'a [i64],
    pub group: i64,
    pub kernel_shape: &'a [i64],
    pub pads: &'a [i64],
    pub strides: &'a [i64],
}

pub(crate) fn conv_attrs(op: &Op) -> Option<ConvAttrs<'_>> {
    match op {
        Op::Conv {
            auto_pad,
            dilations,
            group,
            kernel_shape,
            pads,
            strides,
        }
        | Op::ConvInteger {
            auto_pad,
            dilations,
            group,
            kernel_shape,
            pads,
            strides,
        }
        | Op::QLinearConv {
            auto_pad,
            dilations,
            group,
            kernel_shape,
            pads,
            strides,
        } => Some(ConvAttrs {
            auto_pad: *auto_pad,
            dilations,
            group: *group,
            kernel_shape,
            pads,
            strides,
        }),
        _ => None,
    }
}

/// Which inputs are x and w, per op.
fn x_w_index(op: &Op) -> (usize, usize) {
    match op {
        Op::QLinearConv { .. } => (0, 3),
        _ => (0, 1),
    }
}

pub(crate) fn infer(op: &Op, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let a = conv_attrs(op).ok_or_else(|| IrError::msg("not a convolution"))?;
    let (xi, wi) = x_w_index(op);
    let x = input_type(types, xi)?;
    let w = input_type(types, wi)?;
    let dtype = match op {
        Op::Conv { .. } => {
            if !x.dtype.is_float() {
                return Err(IrError::msg(format!(
                    "conv takes float tensors, found {}",
                    x.dtype
                )));
            }
            if w.dtype != x.dtype {
                return Err(IrError::msg(format!(
                    "x is {} but w is {}",
                    x.dtype, w.dtype
                )));
            }
            x.dtype
        }
        Op::ConvInteger { .. } => DType::I32,
        _ => match types.get(7).copied().flatten() {
            Some(t) => t.dtype,
            None => x.dtype,
        },
    };
    let (xd, wd) = (x.shape.dims(), w.shape.dims());
    let rank = match (xd, wd) {
        (Some(d), _) | (None, Some(d)) => d.len(),
        (None, None) => return Ok(vec![TensorType::unknown_shape(dtype)]),
    };
    if rank < 3 {
        return Err(IrError::msg(format!("x must have rank >= 3, found {rank}")));
    }
    if let (Some(x), Some(w)) = (xd, wd) {
        if x.len() != w.len() {
            return Err(IrError::msg(format!(
                "x has rank {} but w has rank {}",
                x.len(),
                w.len()
            )));
        }
    }
    let n_sp = rank - 2;
    let kernel_from_w = wd.and_then(|w| {
        w[2..]
            .iter()
            .map(|d| d.known())
            .collect::<Option<Vec<usize>>>()
    });
    let batch = xd.map_or(Dim::Unknown, |x| x[0].clone());
    let channels = wd.map_or(Dim::Unknown, |w| w[0].clone());
    let mut dims = vec![batch, channels];
    if a.kernel_shape.is_empty() && kernel_from_w.is_none() {
        dims.extend(std::iter::repeat_n(Dim::Unknown, n_sp));
    } else {
        let win = Window::new(
            n_sp,
            a.kernel_shape,
            kernel_from_w,
            a.strides,
            a.dilations,
            a.pads,
            a.auto_pad,
        )?;
        match xd {
            Some(x) => dims.extend(win.out_dims(&x[2..], false)?),
            None => dims.extend(std::iter::repeat_n(Dim::Unknown, n_sp)),
        }
    }
    Ok(vec![TensorType::new(dtype, Shape(Some(dims)))])
}

/// Sizes of one convolution: batch, channels, groups and the spatial geometry.
#[derive(Clone, Debug)]
pub(crate) struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub group: usize,
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub out: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_begin: Vec<usize>,
}

impl ConvShape {
    pub fn out_shape(&self) -> Vec<usize> {
        let mut s = vec![self.n, self.m];
        s.extend(&self.out);
        s
    }
}

/// Checks x [N, C, ...] against w [M, C/group, k...] and works out the geometry.
pub(crate) fn conv_shape(a: &ConvAttrs, xs: &[usize], ws: &[usize]) -> Result<ConvShape> {
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(IrError::msg(format!(
            "x {xs:?} and w {ws:?} must have the same rank, at least 3"
        )));
    }
    if a.group < 1 {
        return Err(IrError::msg(format!(
            "group must be positive, found {}",
            a.group
        )));
    }
    let group = usize::try_from(a.group).map_err(|_| IrError::msg("group is too large"))?;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if ws[1].checked_mul(group) != Some(c) || m % group != 0 {
        return Err(IrError::msg(format!(
            "x has {c} channels and w is {ws:?}: need C = w[1]·group and M divisible by group ({group})"
        )));
    }
    let n_sp = xs.len() - 2;
    let win = Window::new(
        n_sp,
        a.kernel_shape,
        Some(ws[2..].to_vec()),
        a.strides,
        a.dilations,
        a.pads,
        a.auto_pad,
    )?;
    if win.kernel != ws[2..] {
        return Err(IrError::msg(format!(
            "kernel_shape {:?} disagrees with the weights {ws:?}",
            win.kernel
        )));
    }
    let mut out = Vec::with_capacity(n_sp);
    let mut pad_begin = Vec::with_capacity(n_sp);
    for i in 0..n_sp {
        let (o, pb, _) = win.dim(i, xs[i + 2], false)?;
        out.push(o);
        pad_begin.push(pb);
    }
    let cs = ConvShape {
        n,
        c,
        m,
        group,
        input: xs[2..].to_vec(),
        kernel: win.kernel.clone(),
        out,
        strides: win.strides.clone(),
        dilations: win.dilations.clone(),
        pad_begin,
    };
    bounded_numel(&cs.out_shape())?;
    // The im2col buffer holds C/group · prod(kernel) · prod(out) elements.
    let mut col = cs.out.clone();
    col.extend(&cs.kernel);
    col.push(c / group);
    bounded_numel(&col)?;
    Ok(cs)
}

/// Convolution of x [N, C, in...] with w [M, C/group, k...] into [N, M, out...], no bias.
pub(crate) fn conv_nd<T: Acc>(cs: &ConvShape, x: &[T], w: &[T]) -> Vec<T> {
    let in_prod: usize = cs.input.iter().product();
    let k_prod: usize = cs.kernel.iter().product();
    let p: usize = cs.out.iter().product();
    let (cg, mg) = (cs.c / cs.group, cs.m / cs.group);
    let kg = cg * k_prod;
    let mut out = vec![T::default(); cs.n * cs.m * p];
    let pointwise = cs.kernel.iter().all(|&k| k == 1)
        && cs.strides.iter().all(|&s| s == 1)
        && cs.pad_begin.iter().all(|&q| q == 0)
        && cs.out == cs.input;
    let mut col = if pointwise {
        Vec::new()
    } else {
        vec![T::default(); kg * p]
    };
    for b in 0..cs.n {
        for g in 0..cs.group {
            let xg = &x[(b * cs.c + g * cg) * in_prod..(b * cs.c + (g + 1) * cg) * in_prod];
            let cols: &[T] = if pointwise {
                xg
            } else if kg == 0 || p == 0 {
                // An empty kernel or output: gemm only needs the (empty) shapes.
                &col
            } else {
                im2col(cs, xg, &mut col);
                &col
            };
            let wg = &w[g * mg * kg..(g + 1) * mg * kg];
            let og = &mut out[(b * cs.m + g * mg) * p..(b * cs.m + (g + 1) * mg) * p];
            gemm(mg, p, kg, wg, cols, og);
        }
    }
    out
}

/// Lays out the input patches of one group as a (C/group · prod(kernel)) × prod(out) matrix:
/// row (c, kernel position), column output position. Padding reads as zero.
fn im2col<T: Acc>(cs: &ConvShape, xg: &[T], col: &mut [T]) {
    let nd = cs.input.len();
    let last = nd - 1;
    let in_prod: usize = cs.input.iter().product();
    let p: usize = cs.out.iter().product();
    let ow = cs.out[last];
    let in_strides = crate::ops::util::strides(&cs.input);
    let outer_dims = &cs.out[..last];
    let (s_last, iw) = (cs.strides[last], cs.input[last]);
    let cg = cs.c / cs.group;
    let mut row = 0;
    let mut kidx = vec![0usize; nd];
    let mut oidx = vec![0usize; last];
    for ci in 0..cg {
        let xc = &xg[ci * in_prod..(ci + 1) * in_prod];
        kidx.iter_mut().for_each(|v| *v = 0);
        loop {
            let dst = &mut col[row * p..(row + 1) * p];
            let off = (kidx[last] * cs.dilations[last]) as isize - cs.pad_begin[last] as isize;
            let (lo, hi) = valid_range(ow, s_last, off, iw);
            oidx.iter_mut().for_each(|v| *v = 0);
            let mut t = 0;
            loop {
                let seg = &mut dst[t * ow..(t + 1) * ow];
                let mut base = 0usize;
                let mut inside = true;
                for i in 0..last {
                    let coord = (oidx[i] * cs.strides[i] + kidx[i] * cs.dilations[i]) as isize
                        - cs.pad_begin[i] as isize;
                    if coord < 0 || coord as usize >= cs.input[i] {
                        inside = false;
                        break;
                    }
                    base += coord as usize * in_strides[i];
                }
                if !inside || lo >= hi {
                    seg.iter_mut().for_each(|v| *v = T::default());
                } else {
                    seg[..lo].iter_mut().for_each(|v| *v = T::default());
                    seg[hi..].iter_mut().for_each(|v| *v = T::default());
                    // First input element read, then every s_last-th.
                    let first = base + (lo as isize * s_last as isize + off) as usize;
                    if s_last == 1 {
                        seg[lo..hi].copy_from_slice(&xc[first..first + (hi - lo)]);
                    } else {
                        let src = &xc[first..];
                        for (k, v) in seg[lo..hi].iter_mut().enumerate() {
                            *v = src[k * s_last];
                        }
                    }
                }
                t += 1;
                if !next_index(&mut oidx, outer_dims) {
                    break;
                }
            }
            row += 1;
            if !next_index(&mut kidx, &cs.kernel) {
                break;
            }
        }
    }
}

/// Adds `bias[m]` (M values, or one for all) to every output channel of [N, M, P].
fn add_bias<T: Copy + std::ops::Add<Output = T>>(
    out: &mut [T],
    bias: &[T],
    n: usize,
    m: usize,
    p: usize,
) -> Result<()> {
    if bias.len() != m && bias.len() != 1 {
        return Err(IrError::msg(format!(
            "bias has {} values, expected {m}",
            bias.len()
        )));
    }
    for b in 0..n {
        for c in 0..m {
            let v = if bias.len() == 1 { bias[0] } else { bias[c] };
            out[(b * m + c) * p..(b * m + c + 1) * p]
                .iter_mut()
                .for_each(|o| *o = *o + v);
        }
    }
    Ok(())
}

pub(crate) fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let a = conv_attrs(op).ok_or_else(|| IrError::msg("not a convolution"))?;
    match op {
        Op::Conv { .. } => eval_conv(&a, inputs),
        Op::ConvInteger { .. } => eval_conv_integer(&a, inputs),
        _ => eval_qlinear_conv(&a, inputs),
    }
}

fn eval_conv(a: &ConvAttrs, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let (x, w, bias) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
    let dt = x.dtype();
    if !dt.is_float() || w.dtype() != dt || bias.is_some_and(|b| b.dtype() != dt) {
        return Err(IrError::msg(format!(
            "conv takes float x, w and b of one type, found {dt} and {}",
            w.dtype()
        )));
    }
    let cs = conv_shape(a, x.shape(), w.shape())?;
    let p: usize = cs.out.iter().product();
    // Every float type accumulates in f64 and rounds once at the end.
    let mut out = conv_nd(&cs, &x.to_f64_vec(), &w.to_f64_vec());
    if let Some(b) = bias {
        add_bias(&mut out, &b.to_f64_vec(), cs.n, cs.m, p)?;
    }
    Ok(vec![Tensor::from_f64(dt, cs.out_shape(), &out)?])
}

fn is_8bit(d: DType) -> bool {
    matches!(d, DType::U8 | DType::I8)
}

/// One zero point for the whole tensor: its value, or 0 when absent.
fn scalar_zero_point(zp: Option<&Tensor>, of: &Tensor, name: &str) -> Result<i64> {
    match zp {
        None => Ok(0),
        Some(z) if z.len() == 1 && z.dtype() == of.dtype() => Ok(z.to_i64_vec()[0]),
        Some(z) => Err(IrError::msg(format!(
            "{name} must be one {} value, found {} {:?}",
            of.dtype(),
            z.dtype(),
            z.shape()
        ))),
    }
}

/// Weights minus their zero point (one, or one per output channel), as wrapping i64.
fn shifted_weights(w: &Tensor, zp: Option<&Tensor>) -> Result<Vec<Wrapping<i64>>> {
    let mut wv = wrapping_i64(w);
    let Some(z) = zp else { return Ok(wv) };
    let m = w.shape().first().copied().unwrap_or(0);
    if z.dtype() != w.dtype() || (z.len() != 1 && z.len() != m) {
        return Err(IrError::msg(format!(
            "w zero point must be one or {m} {} values, found {} {:?}",
            w.dtype(),
            z.dtype(),
            z.shape()
        )));
    }
    let zs = z.to_i64_vec();
    let per = wv.len().checked_div(m).unwrap_or(0);
    for (i, v) in wv.iter_mut().enumerate() {
        let zv = if zs.len() == 1 {
            zs[0]
        } else {
            zs[i / per.max(1)]
        };
        *v -= Wrapping(zv);
    }
    Ok(wv)
}

/// The integer convolution (x - x_zp) * (w - w_zp) shared by ConvInteger and QLinearConv.
fn integer_conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    xzp: Option<&Tensor>,
    wzp: Option<&Tensor>,
) -> Result<(ConvShape, Vec<Wrapping<i64>>)> {
    if !is_8bit(x.dtype()) || !is_8bit(w.dtype()) {
        return Err(IrError::msg(format!(
            "x and w must be u8 or i8, found {} and {}",
            x.dtype(),
            w.dtype()
        )));
    }
    let cs = conv_shape(a, x.shape(), w.shape())?;
    let xz = Wrapping(scalar_zero_point(xzp, x, "x zero point")?);
    let xv: Vec<Wrapping<i64>> = wrapping_i64(x).into_iter().map(|v| v - xz).collect();
    let wv = shifted_weights(w, wzp)?;
    let out = conv_nd(&cs, &xv, &wv);
    Ok((cs, out))
}

fn eval_conv_integer(a: &ConvAttrs, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
    let (cs, out) = integer_conv(a, x, w, opt_input(inputs, 2), opt_input(inputs, 3))?;
    let vals: Vec<i32> = out.iter().map(|v| v.0 as i32).collect();
    Ok(vec![Tensor::new(cs.out_shape(), vals)?])
}

fn eval_qlinear_conv(a: &ConvAttrs, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let (x_scale, w, w_scale, y_scale) = (
        input(inputs, 1)?,
        input(inputs, 3)?,
        input(inputs, 4)?,
        input(inputs, 6)?,
    );
    let yzp = opt_input(inputs, 7);
    let (cs, acc) = integer_conv(a, x, w, opt_input(inputs, 2), opt_input(inputs, 5))?;
    let p: usize = cs.out.iter().product();
    // The int32 accumulator, with the int32 bias added.
    let mut acc: Vec<i32> = acc.iter().map(|v| v.0 as i32).collect();
    if let Some(b) = opt_input(inputs, 8) {
        if b.dtype() != DType::I32 {
            return Err(IrError::msg(format!(
                "bias must be i32, found {}",
                b.dtype()
            )));
        }
        let bw: Vec<Wrapping<i32>> = b.as_slice::<i32>()?.iter().map(|&v| Wrapping(v)).collect();
        let mut aw: Vec<Wrapping<i32>> = acc.iter().map(|&v| Wrapping(v)).collect();
        add_bias(&mut aw, &bw, cs.n, cs.m, p)?;
        acc = aw.into_iter().map(|v| v.0).collect();
    }
    // The requantization multiplier per output channel, computed in the scales' own type
    // as the ONNX reference does: x_scale · w_scale / y_scale.
    let sd = x_scale.dtype();
    let xs = scale_values(x_scale, 1, "x_scale")?[0];
    let ys = scale_values(y_scale, 1, "y_scale")?[0];
    let ws = scale_values(w_scale, cs.m, "w_scale")?;
    let mult: Vec<f64> = ws
        .iter()
        .map(|&wsv| round_to(sd, round_to(sd, xs * wsv) / ys))
        .collect();
    let (out_dtype, zp) = match yzp {
        Some(z) if z.len() == 1 => (z.dtype(), z.to_i64_vec()[0]),
        Some(z) => {
            return Err(IrError::msg(format!(
                "y zero point must be one value, found shape {:?}",
                z.shape()
            )))
        }
        None => (x.dtype(), 0),
    };
    let mut vals = Vec::with_capacity(acc.len());
    for (i, &v) in acc.iter().enumerate() {
        let mch = (i / p.max(1)) % cs.m.max(1);
        let mv = if mult.len() == 1 { mult[0] } else { mult[mch] };
        vals.push(v as f64 * mv);
    }
    let q: Vec<i64> = vals
        .iter()
        .map(|&v| quantize_value(v, zp, out_dtype))
        .collect::<Result<_>>()?;
    Ok(vec![Tensor::from_i64(out_dtype, cs.out_shape(), &q)?])
}
