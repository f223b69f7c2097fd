//! ConvTranspose: per image and group, the gemm Wᵀ·X gives every (output channel, kernel
//! position) contribution of every input position; col2im adds them into the output at
//! `input · stride + kernel · dilation - pad_begin`.

use super::gemm::{gemm, transpose, Acc};
use super::geometry::{bounded_numel, next_index, valid_range, Window};
use crate::error::{IrError, Result};
use crate::op::{AutoPad, Op};
use crate::ops::util::{input, input_type, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

struct Attrs<'a> {
    auto_pad: AutoPad,
    dilations: &'a [i64],
    group: i64,
    kernel_shape: &'a [i64],
    output_padding: &'a [i64],
    output_shape: &'a [i64],
    pads: &'a [i64],
    strides: &'a [i64],
}

fn attrs(op: &Op) -> Result<Attrs<'_>> {
    match op {
        Op::ConvTranspose {
            auto_pad,
            dilations,
            group,
            kernel_shape,
            output_padding,
            output_shape,
            pads,
            strides,
        } => Ok(Attrs {
            auto_pad: *auto_pad,
            dilations,
            group: *group,
            kernel_shape,
            output_padding,
            output_shape,
            pads,
            strides,
        }),
        _ => Err(IrError::msg("not a conv_transpose")),
    }
}

/// Per spatial dim: output size and begin padding (negative when the output is larger
/// than the full result, e.g. an `output_shape` past it).
struct Geometry {
    win: Window,
    out: Vec<usize>,
    pad_begin: Vec<isize>,
}

fn geometry(a: &Attrs, input: &[usize], kernel: &[usize]) -> Result<Geometry> {
    let n = input.len();
    let win = Window::new(
        n,
        &[],
        Some(kernel.to_vec()),
        a.strides,
        a.dilations,
        a.pads,
        a.auto_pad,
    )?;
    let attr_differs = a.kernel_shape.len() != n
        || a.kernel_shape
            .iter()
            .zip(kernel)
            .any(|(&k, &w)| k != w as i64);
    if !a.kernel_shape.is_empty() && attr_differs {
        return Err(IrError::msg(format!(
            "kernel_shape {:?} disagrees with the weights' {kernel:?}",
            a.kernel_shape
        )));
    }
    let out_pad: Vec<usize> = match a.output_padding.len() {
        0 => vec![0; n],
        l if l == n => a
            .output_padding
            .iter()
            .map(|&v| match usize::try_from(v) {
                Ok(u) if v <= 1 << 31 => Ok(u),
                _ => Err(IrError::msg(format!(
                    "output_padding value {v} is out of range"
                ))),
            })
            .collect::<Result<_>>()?,
        l => {
            return Err(IrError::msg(format!(
                "output_padding has {l} values, expected {n}"
            )))
        }
    };
    // output_shape may name the spatial dims only, or the whole shape.
    let out_shape: Option<&[i64]> = match a.output_shape.len() {
        0 => None,
        l if l == n => Some(a.output_shape),
        l if l == n + 2 => Some(&a.output_shape[2..]),
        l => {
            return Err(IrError::msg(format!(
                "output_shape has {l} values, expected {n}"
            )))
        }
    };
    let mut out = Vec::with_capacity(n);
    let mut pad_begin = Vec::with_capacity(n);
    for i in 0..n {
        // stride·(in - 1) + output_padding + extent: every position an input can reach.
        let full = win.strides[i]
            .checked_mul(input[i])
            .and_then(|v| v.checked_add(out_pad[i] + win.extent(i)))
            .and_then(|v| i64::try_from(v).ok())
            .ok_or_else(|| IrError::msg(format!("spatial dim {i}: the output size overflows")))?
            - win.strides[i] as i64;
        if full < 0 {
            return Err(IrError::msg(format!(
                "spatial dim {i}: an empty input has no output size"
            )));
        }
        let same = |target: i64| -> isize {
            let total = full - target;
            let half = total.div_euclid(2);
            (if a.auto_pad == AutoPad::SameUpper {
                half
            } else {
                total - half
            }) as isize
        };
        let (o, pb) = if let Some(os) = out_shape {
            if os[i] < 0 || os[i] > 1 << 31 {
                return Err(IrError::msg(format!(
                    "output_shape value {} is out of range",
                    os[i]
                )));
            }
            (os[i], same(os[i]))
        } else {
            match a.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let target = input[i]
                        .checked_mul(win.strides[i])
                        .and_then(|v| i64::try_from(v).ok())
                        .ok_or_else(|| {
                            IrError::msg(format!("spatial dim {i}: the output size overflows"))
                        })?;
                    (target, same(target))
                }
                AutoPad::Valid => (full, 0),
                AutoPad::NotSet => {
                    let (pb, pe) = (win.pads[i] as i64, win.pads[i + n] as i64);
                    if full < pb + pe {
                        return Err(IrError::msg(format!(
                            "spatial dim {i}: pads {pb}+{pe} exceed the full output {full}"
                        )));
                    }
                    (full - pb - pe, pb as isize)
                }
            }
        };
        out.push(o as usize);
        pad_begin.push(pb);
    }
    Ok(Geometry {
        win,
        out,
        pad_begin,
    })
}

/// Where a ConvTranspose puts its contributions, worked out for one input: per spatial
/// dim the output size, the begin padding (input position i and kernel position k land
/// on `i·stride + k·dilation - pad_begin`), the stride and the dilation. Devices take it
/// from here so that their geometry is eval's by construction.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTransposeGeometry {
    pub out: Vec<usize>,
    pub pad_begin: Vec<isize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
}

/// The geometry of `op` (a ConvTranspose) on spatial input dims `input` with spatial
/// kernel dims `kernel`.
pub fn conv_transpose_geometry(op: &Op, input: &[usize], kernel: &[usize]) -> Result<ConvTransposeGeometry> {
    let g = geometry(&attrs(op)?, input, kernel)?;
    Ok(ConvTransposeGeometry {
        strides: g.win.strides.clone(),
        dilations: g.win.dilations.clone(),
        out: g.out,
        pad_begin: g.pad_begin,
    })
}

pub(crate) fn infer(op: &Op, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let a = attrs(op)?;
    let (x, w) = (input_type(types, 0)?, input_type(types, 1)?);
    if !x.dtype.is_float() || w.dtype != x.dtype {
        return Err(IrError::msg(format!(
            "conv_transpose takes float x and w of one type, found {} and {}",
            x.dtype, w.dtype
        )));
    }
    let (xd, wd) = (x.shape.dims(), w.shape.dims());
    let rank = match (xd, wd) {
        (Some(d), _) | (None, Some(d)) => d.len(),
        (None, None) => return Ok(vec![TensorType::unknown_shape(x.dtype)]),
    };
    if rank < 3 {
        return Err(IrError::msg(format!("x must have rank >= 3, found {rank}")));
    }
    let n_sp = rank - 2;
    let batch = xd.map_or(Dim::Unknown, |x| x[0].clone());
    let channels = match wd.and_then(|w| w[1].known()) {
        Some(m) => Dim::Known(m * usize::try_from(a.group.max(1)).unwrap_or(1)),
        None => Dim::Unknown,
    };
    let kernel = match wd.and_then(|w| w[2..].iter().map(|d| d.known()).collect::<Option<Vec<_>>>())
    {
        Some(k) => Some(k),
        None if a.kernel_shape.len() == n_sp && a.kernel_shape.iter().all(|&k| k > 0) => {
            Some(a.kernel_shape.iter().map(|&k| k as usize).collect())
        }
        None => None,
    };
    let input_sp = xd.and_then(|x| x[2..].iter().map(|d| d.known()).collect::<Option<Vec<_>>>());
    let mut dims = vec![batch, channels];
    match (input_sp, kernel) {
        (Some(i), Some(k)) => dims.extend(geometry(&a, &i, &k)?.out.into_iter().map(Dim::Known)),
        _ => dims.extend(std::iter::repeat_n(Dim::Unknown, n_sp)),
    }
    Ok(vec![TensorType::new(x.dtype, Shape(Some(dims)))])
}

pub(crate) fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let a = attrs(op)?;
    let (x, w, bias) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
    let dt = x.dtype();
    if !dt.is_float() || w.dtype() != dt || bias.is_some_and(|b| b.dtype() != dt) {
        return Err(IrError::msg(format!(
            "conv_transpose takes float x, w and b of one type, found {dt} and {}",
            w.dtype()
        )));
    }
    let (xs, ws) = (x.shape(), w.shape());
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
    if ws[0] != xs[1] || xs[1] % group != 0 {
        return Err(IrError::msg(format!(
            "w {ws:?} must have x's {} channels first, divisible by group {group}",
            xs[1]
        )));
    }
    let m = ws[1]
        .checked_mul(group)
        .ok_or_else(|| IrError::msg("too many output channels"))?;
    let g = geometry(&a, &xs[2..], &ws[2..])?;
    let mut out_shape = vec![xs[0], m];
    out_shape.extend(&g.out);
    bounded_numel(&out_shape)?;
    let mut cols_shape = ws[1..].to_vec();
    cols_shape.extend(&xs[2..]);
    bounded_numel(&cols_shape)?;
    let shape = Plan {
        n: xs[0],
        c: xs[1],
        m,
        group,
        input: &xs[2..],
        kernel: &ws[2..],
        g: &g,
    };
    // Every float type accumulates in f64 and rounds once at the end.
    let mut y = conv_transpose(&shape, &x.to_f64_vec(), &w.to_f64_vec());
    if let Some(b) = bias {
        add_bias(&mut y, &b.to_f64_vec(), m, g.out.iter().product())?;
    }
    Ok(vec![Tensor::from_f64(dt, out_shape, &y)?])
}

/// Adds `b[c]` to every element of channel `c`'s planes (of `plane` elements), in every batch item.
fn add_bias<T: Acc>(y: &mut [T], b: &[T], m: usize, plane: usize) -> Result<()> {
    if b.len() != m {
        return Err(IrError::msg(format!(
            "bias has {} values, expected {m}",
            b.len()
        )));
    }
    for (i, v) in y.iter_mut().enumerate() {
        *v = *v + b[(i / plane.max(1)) % m];
    }
    Ok(())
}

/// Sizes of one transposed convolution.
struct Plan<'a> {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    input: &'a [usize],
    kernel: &'a [usize],
    g: &'a Geometry,
}

fn conv_transpose<T: Acc>(s: &Plan, x: &[T], w: &[T]) -> Vec<T> {
    let in_prod: usize = s.input.iter().product();
    let k_prod: usize = s.kernel.iter().product();
    let out_prod: usize = s.g.out.iter().product();
    let (cg, mg) = (s.c / s.group, s.m / s.group);
    let rows = mg * k_prod;
    let mut y = vec![T::default(); s.n * s.m * out_prod];
    let mut cols = vec![T::default(); rows * in_prod];
    // Wᵀ per group: (M/group · prod(kernel)) × (C/group).
    let wt: Vec<Vec<T>> = (0..s.group)
        .map(|gi| transpose(cg, rows, &w[gi * cg * rows..(gi + 1) * cg * rows]))
        .collect();
    for b in 0..s.n {
        for gi in 0..s.group {
            let xg = &x[(b * s.c + gi * cg) * in_prod..(b * s.c + (gi + 1) * cg) * in_prod];
            gemm(rows, in_prod, cg, &wt[gi], xg, &mut cols);
            let yg = &mut y[(b * s.m + gi * mg) * out_prod..(b * s.m + (gi + 1) * mg) * out_prod];
            col2im(s, &cols, yg, mg);
        }
    }
    y
}

/// Adds each row (output channel, kernel position) of `cols` into the output planes.
fn col2im<T: Acc>(s: &Plan, cols: &[T], yg: &mut [T], mg: usize) {
    let nd = s.input.len();
    let last = nd - 1;
    let in_prod: usize = s.input.iter().product();
    let out_prod: usize = s.g.out.iter().product();
    let k_prod: usize = s.kernel.iter().product();
    if in_prod == 0 || out_prod == 0 || k_prod == 0 {
        return;
    }
    let out_strides = crate::ops::util::strides(&s.g.out);
    let (st, dil, pb) = (&s.g.win.strides, &s.g.win.dilations, &s.g.pad_begin);
    let iw = s.input[last];
    let mut row = 0;
    let mut kidx = vec![0usize; nd];
    let mut iidx = vec![0usize; last];
    for mo in 0..mg {
        let plane = &mut yg[mo * out_prod..(mo + 1) * out_prod];
        kidx.iter_mut().for_each(|v| *v = 0);
        loop {
            let src = &cols[row * in_prod..(row + 1) * in_prod];
            let off = (kidx[last] * dil[last]) as isize - pb[last];
            let (lo, hi) = valid_range(iw, st[last], off, s.g.out[last]);
            iidx.iter_mut().for_each(|v| *v = 0);
            let mut t = 0;
            loop {
                let mut base = 0usize;
                let mut inside = true;
                for i in 0..last {
                    let coord = (iidx[i] * st[i] + kidx[i] * dil[i]) as isize - pb[i];
                    if coord < 0 || coord as usize >= s.g.out[i] {
                        inside = false;
                        break;
                    }
                    base += coord as usize * out_strides[i];
                }
                if inside && lo < hi {
                    let seg = &src[t * iw..(t + 1) * iw];
                    for j in lo..hi {
                        let o = base + (j as isize * st[last] as isize + off) as usize;
                        plane[o] = plane[o] + seg[j];
                    }
                }
                t += 1;
                if !next_index(&mut iidx, &s.input[..last]) {
                    break;
                }
            }
            row += 1;
            if !next_index(&mut kidx, s.kernel) {
                break;
            }
        }
    }
}
