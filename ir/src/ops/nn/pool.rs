//! Pool (max, average, Lp over 1-D/2-D/3-D windows; max pool's optional Indices output)
//! and GlobalPool.
//!
//! A window position reads the input where its coordinate lies inside the input; padding
//! is never read. Average pooling divides by the number of positions inside the input, or
//! with `count_include_pad` by the number inside input plus explicit padding (positions
//! that ceil mode adds past the end padding never count).

use super::geometry::{bounded_numel, next_index, Window};
use crate::dtype::{DType, Element};
use crate::error::{IrError, Result};
use crate::op::{Op, PoolKind};
use crate::ops::util::{input, input_type, strides};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{Storable, Tensor};

struct PoolAttrs<'a> {
    kind: PoolKind,
    auto_pad: crate::op::AutoPad,
    ceil_mode: bool,
    count_include_pad: bool,
    dilations: &'a [i64],
    kernel_shape: &'a [i64],
    pads: &'a [i64],
    strides: &'a [i64],
    storage_order: i64,
    p: i64,
}

fn attrs(op: &Op) -> Result<PoolAttrs<'_>> {
    match op {
        Op::Pool {
            kind,
            auto_pad,
            ceil_mode,
            count_include_pad,
            dilations,
            kernel_shape,
            pads,
            strides,
            storage_order,
            p,
        } => Ok(PoolAttrs {
            kind: *kind,
            auto_pad: *auto_pad,
            ceil_mode: *ceil_mode,
            count_include_pad: *count_include_pad,
            dilations,
            kernel_shape,
            pads,
            strides,
            storage_order: *storage_order,
            p: *p,
        }),
        _ => Err(IrError::msg("not a pool")),
    }
}

fn check_dtype(kind: PoolKind, d: DType) -> Result<()> {
    let ok = match kind {
        PoolKind::Max => d != DType::Bool,
        _ => d.is_float(),
    };
    if ok {
        Ok(())
    } else {
        Err(IrError::msg(format!(
            "{kind} pooling does not take {d} tensors"
        )))
    }
}

fn window(a: &PoolAttrs, n_sp: usize) -> Result<Window> {
    if a.kernel_shape.is_empty() {
        return Err(IrError::msg("kernel_shape is required"));
    }
    Window::new(
        n_sp,
        a.kernel_shape,
        None,
        a.strides,
        a.dilations,
        a.pads,
        a.auto_pad,
    )
}

pub(crate) fn infer_pool(
    op: &Op,
    types: &[Option<&TensorType>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let a = attrs(op)?;
    let x = input_type(types, 0)?;
    check_dtype(a.kind, x.dtype)?;
    if n_outputs > 2 || (n_outputs == 2 && a.kind != PoolKind::Max) {
        return Err(IrError::msg(format!(
            "{} pooling has no output {}",
            a.kind,
            n_outputs - 1
        )));
    }
    let shape = match x.shape.dims() {
        None => Shape(Some(vec![Dim::Unknown; a.kernel_shape.len() + 2])),
        Some(d) => {
            if d.len() < 3 || d.len() != a.kernel_shape.len() + 2 {
                return Err(IrError::msg(format!(
                    "x has rank {} but the kernel has {} dims",
                    d.len(),
                    a.kernel_shape.len()
                )));
            }
            let win = window(&a, d.len() - 2)?;
            let mut dims = d[..2].to_vec();
            dims.extend(win.out_dims(&d[2..], a.ceil_mode)?);
            Shape(Some(dims))
        }
    };
    let mut out = vec![TensorType::new(x.dtype, shape.clone())];
    if n_outputs == 2 {
        out.push(TensorType::new(DType::I64, shape));
    }
    Ok(out)
}

pub(crate) fn infer_global(types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let x = input_type(types, 0)?;
    let shape = match x.shape.dims() {
        None => Shape::unknown_rank(),
        Some(d) if d.len() < 2 => {
            return Err(IrError::msg(format!(
                "x must have rank >= 2, found {}",
                d.len()
            )))
        }
        Some(d) => {
            let mut dims = d[..2].to_vec();
            dims.extend(std::iter::repeat_n(Dim::Known(1), d.len() - 2));
            Shape(Some(dims))
        }
    };
    Ok(vec![TensorType::new(x.dtype, shape)])
}

/// Per spatial dim and output index: the input coordinates the window reads, and how many
/// positions count for `count_include_pad` averaging.
struct DimPlan {
    coords: Vec<Vec<usize>>,
    padded_count: Vec<usize>,
}

fn plan_dim(win: &Window, i: usize, input: usize, out: usize, pb: usize, pe: usize) -> DimPlan {
    let (s, d, k) = (
        win.strides[i] as isize,
        win.dilations[i] as isize,
        win.kernel[i],
    );
    let mut coords = Vec::with_capacity(out);
    let mut padded_count = Vec::with_capacity(out);
    for o in 0..out {
        let start = o as isize * s - pb as isize;
        let mut c = Vec::with_capacity(k);
        let mut cnt = 0;
        for t in 0..k as isize {
            let pos = start + t * d;
            if pos >= -(pb as isize) && pos < (input + pe) as isize {
                cnt += 1;
            }
            if pos >= 0 && pos < input as isize {
                c.push(pos as usize);
            }
        }
        coords.push(c);
        padded_count.push(cnt);
    }
    DimPlan {
        coords,
        padded_count,
    }
}

pub(crate) fn eval_pool(
    op: &Op,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let a = attrs(op)?;
    let x = input(inputs, 0)?;
    check_dtype(a.kind, x.dtype())?;
    if n_outputs > 2 || (n_outputs == 2 && a.kind != PoolKind::Max) {
        return Err(IrError::msg(format!(
            "{} pooling has no output {}",
            a.kind,
            n_outputs - 1
        )));
    }
    let xs = x.shape();
    if xs.len() < 3 || xs.len() != a.kernel_shape.len() + 2 {
        return Err(IrError::msg(format!(
            "x {xs:?} does not match a {}-d kernel",
            a.kernel_shape.len()
        )));
    }
    let n_sp = xs.len() - 2;
    let win = window(&a, n_sp)?;
    let mut out_sp = Vec::with_capacity(n_sp);
    let mut plans = Vec::with_capacity(n_sp);
    for i in 0..n_sp {
        let (o, pb, pe) = win.dim(i, xs[i + 2], a.ceil_mode)?;
        out_sp.push(o);
        // Planning is per output index, so refuse before allocating absurd plans.
        bounded_numel(&[o, win.kernel[i]])?;
        plans.push(plan_dim(&win, i, xs[i + 2], o, pb, pe));
    }
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend(&out_sp);
    bounded_numel(&out_shape)?;
    let p = a.p;
    if a.kind == PoolKind::Lp && p < 1 {
        return Err(IrError::msg(format!("p must be positive, found {p}")));
    }
    let geo = Geo {
        in_sp: &xs[2..],
        out_sp: &out_sp,
        plans: &plans,
        channels: xs[0] * xs[1],
    };
    let y = crate::with_data!(x.data(), v, T => {
        match a.kind {
            PoolKind::Max => {
                let (y, idx) = max_pool(&geo, v, a.storage_order != 0);
                let mut outs = vec![Tensor::new(out_shape.clone(), y)?];
                if n_outputs == 2 {
                    outs.push(Tensor::new(out_shape.clone(), idx)?);
                }
                return Ok(outs);
            }
            _ => Tensor::from_f64(x.dtype(), out_shape.clone(), &avg_lp_pool(&geo, v, a.kind, a.count_include_pad, p))?,
        }
    });
    Ok(vec![y])
}

struct Geo<'a> {
    in_sp: &'a [usize],
    out_sp: &'a [usize],
    plans: &'a [DimPlan],
    /// N·C: the pooled planes.
    channels: usize,
}

/// Flat spatial offsets (row-major) of every input position the window at `oidx` reads.
fn window_offsets(
    geo: &Geo,
    oidx: &[usize],
    in_strides: &[usize],
    buf: &mut Vec<usize>,
    kidx: &mut [usize],
    lens: &mut [usize],
) {
    buf.clear();
    for (i, &o) in oidx.iter().enumerate() {
        lens[i] = geo.plans[i].coords[o].len();
        if lens[i] == 0 {
            return;
        }
    }
    kidx.iter_mut().for_each(|v| *v = 0);
    loop {
        let mut off = 0;
        for (i, &o) in oidx.iter().enumerate() {
            off += geo.plans[i].coords[o][kidx[i]] * in_strides[i];
        }
        buf.push(off);
        if !next_index(kidx, lens) {
            break;
        }
    }
}

fn max_pool<T: Storable>(geo: &Geo, x: &[T], column_major: bool) -> (Vec<T>, Vec<i64>) {
    let n_sp = geo.in_sp.len();
    let in_plane: usize = geo.in_sp.iter().product();
    let out_plane: usize = geo.out_sp.iter().product();
    let in_strides = strides(geo.in_sp);
    let mut y = Vec::with_capacity(geo.channels * out_plane);
    let mut ind = Vec::with_capacity(geo.channels * out_plane);
    let (mut buf, mut kidx, mut lens) = (Vec::new(), vec![0; n_sp], vec![0; n_sp]);
    let mut oidx = vec![0; n_sp];
    for c in 0..geo.channels {
        let plane = &x[c * in_plane..(c + 1) * in_plane];
        if out_plane == 0 {
            continue;
        }
        oidx.iter_mut().for_each(|v| *v = 0);
        loop {
            window_offsets(geo, &oidx, &in_strides, &mut buf, &mut kidx, &mut lens);
            // The first maximum wins; a window with nothing to read gives 0 and index -1,
            // as the ONNX reference does.
            let mut best: Option<(T, usize)> = None;
            for &off in &buf {
                let v = plane[off];
                if best.is_none_or(|(b, _)| v > b) {
                    best = Some((v, off));
                }
            }
            match best {
                Some((v, off)) => {
                    y.push(v);
                    let sp = if column_major {
                        column_major_offset(off, geo.in_sp, &in_strides)
                    } else {
                        off
                    };
                    ind.push((c * in_plane + sp) as i64);
                }
                None => {
                    y.push(T::default());
                    ind.push(-1);
                }
            }
            if !next_index(&mut oidx, geo.out_sp) {
                break;
            }
        }
    }
    (y, ind)
}

/// A row-major spatial offset re-expressed in column-major order (storage_order = 1).
fn column_major_offset(off: usize, dims: &[usize], row_strides: &[usize]) -> usize {
    let (mut rest, mut out, mut col_stride) = (off, 0, 1);
    for (&s, &d) in row_strides.iter().zip(dims) {
        out += rest / s * col_stride;
        rest %= s;
        col_stride *= d;
    }
    out
}

fn avg_lp_pool<T: Element>(
    geo: &Geo,
    x: &[T],
    kind: PoolKind,
    count_include_pad: bool,
    p: i64,
) -> Vec<f64> {
    let n_sp = geo.in_sp.len();
    let in_plane: usize = geo.in_sp.iter().product();
    let out_plane: usize = geo.out_sp.iter().product();
    let in_strides = strides(geo.in_sp);
    let mut y = Vec::with_capacity(geo.channels * out_plane);
    let (mut buf, mut kidx, mut lens) = (Vec::new(), vec![0; n_sp], vec![0; n_sp]);
    let mut oidx = vec![0; n_sp];
    let pf = p as f64;
    for c in 0..geo.channels {
        let plane = &x[c * in_plane..(c + 1) * in_plane];
        if out_plane == 0 {
            continue;
        }
        oidx.iter_mut().for_each(|v| *v = 0);
        loop {
            window_offsets(geo, &oidx, &in_strides, &mut buf, &mut kidx, &mut lens);
            let v = match kind {
                PoolKind::Average => {
                    let sum: f64 = buf.iter().map(|&o| plane[o].to_f64()).sum();
                    let count = if count_include_pad {
                        oidx.iter()
                            .enumerate()
                            .map(|(i, &o)| geo.plans[i].padded_count[o])
                            .product::<usize>()
                    } else {
                        buf.len()
                    };
                    sum / count as f64
                }
                _ => lp_norm(buf.iter().map(|&o| plane[o].to_f64()), pf),
            };
            y.push(v);
            if !next_index(&mut oidx, geo.out_sp) {
                break;
            }
        }
    }
    y
}

fn lp_norm(vals: impl Iterator<Item = f64>, p: f64) -> f64 {
    let s: f64 = vals.map(|v| v.abs().powf(p)).sum();
    s.powf(1.0 / p)
}

pub(crate) fn eval_global(
    kind: PoolKind,
    p: i64,
    inputs: &[Option<Tensor>],
) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    check_dtype(kind, x.dtype())?;
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(IrError::msg(format!("x must have rank >= 2, found {xs:?}")));
    }
    if kind == PoolKind::Lp && p < 1 {
        return Err(IrError::msg(format!("p must be positive, found {p}")));
    }
    let planes = xs[0] * xs[1];
    let plane: usize = xs[2..].iter().product();
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    let y = crate::with_data!(x.data(), v, T => {
        if kind == PoolKind::Max {
            let mut y = Vec::with_capacity(planes);
            for c in 0..planes {
                let s = &v[c * plane..(c + 1) * plane];
                let mut best = match s.first() {
                    Some(&f) => f,
                    None => return Err(IrError::msg("global max pool of an empty plane")),
                };
                for &e in s {
                    if e > best {
                        best = e;
                    }
                }
                y.push(best);
            }
            Tensor::new(out_shape, y)?
        } else {
            let mut y = Vec::with_capacity(planes);
            for c in 0..planes {
                let s = &v[c * plane..(c + 1) * plane];
                y.push(match kind {
                    PoolKind::Average => s.iter().map(|e| e.to_f64()).sum::<f64>() / plane as f64,
                    _ => lp_norm(s.iter().map(|e| e.to_f64()), p as f64),
                });
            }
            Tensor::from_f64(x.dtype(), out_shape, &y)?
        }
    });
    Ok(vec![y])
}
