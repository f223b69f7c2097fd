//! Ops that grow (or crop) a tensor by reading its elements at computed positions: Pad
//! (constant/reflect/edge/wrap, negative pads crop), Tile and Expand (strided reads with
//! zero strides on the repeated or broadcast dims).

use super::{dim_from_value, int_values, istrides, norm_axes, out_numel, strided};
use crate::error::{IrError, Result};
use crate::op::PadMode;
use crate::ops::util::{
    broadcast_dims, broadcast_shapes, const_input, input, input_type, opt_input,
};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{Storable, Tensor};
use crate::{bail, ensure, with_data};

/// Per-axis (begin, end) pads from the `pads` and `axes` inputs.
fn pad_pairs(rank: usize, pads: &[i64], axes: Option<&[i64]>) -> Result<Vec<(i64, i64)>> {
    let axes: Vec<usize> = match axes {
        Some(a) => norm_axes(a, rank)?,
        None => (0..rank).collect(),
    };
    let n = axes.len();
    ensure!(
        pads.len() == 2 * n,
        "pads has {} entries, expected {} (two per axis)",
        pads.len(),
        2 * n
    );
    let mut out = vec![(0i64, 0i64); rank];
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[n + i]);
    }
    Ok(out)
}

/// For each output position along one axis, the input position it reads, or `None` for
/// the constant. `begin` may be negative (crop).
fn axis_map(dim: usize, begin: i64, out: usize, mode: PadMode) -> Result<Vec<Option<usize>>> {
    // i128: begin may be near i64::MIN when the end pad cancels it.
    let d = dim as i128;
    let mut m = Vec::with_capacity(out);
    for o in 0..out as i128 {
        let i = o - begin as i128;
        m.push(if (0..d).contains(&i) {
            Some(i as usize)
        } else {
            match mode {
                PadMode::Constant => None,
                _ if d == 0 => bail!("cannot {mode}-pad an empty axis"),
                PadMode::Edge => Some(i.clamp(0, d - 1) as usize),
                PadMode::Wrap => Some(i.rem_euclid(d) as usize),
                PadMode::Reflect if d == 1 => Some(0),
                PadMode::Reflect => {
                    // numpy's repeated reflection is a triangle wave of period 2(d-1).
                    let p = 2 * (d - 1);
                    let r = i.rem_euclid(p);
                    Some(if r >= d { (p - r) as usize } else { r as usize })
                }
            }
        });
    }
    Ok(m)
}

pub(super) fn eval_pad(mode: PadMode, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let pads = int_values(input(inputs, 1)?, "pads")?;
    let axes = opt_input(inputs, 3)
        .map(|t| int_values(t, "axes"))
        .transpose()?;
    let pairs = pad_pairs(x.rank(), &pads, axes.as_deref())?;
    // The constant in the data's own type (exact for wide integers).
    let cval = match opt_input(inputs, 2) {
        Some(c) if !c.is_empty() => {
            ensure!(
                c.len() == 1,
                "constant_value must have one element, found shape {:?}",
                c.shape()
            );
            c.cast(x.dtype())
        }
        _ => Tensor::zeros(x.dtype(), vec![])?,
    };
    let mut out_shape = Vec::with_capacity(x.rank());
    for (a, (&d, &(b, e))) in x.shape().iter().zip(&pairs).enumerate() {
        let o = (d as i64).checked_add(b).and_then(|v| v.checked_add(e));
        let Some(o) = o.filter(|&o| o >= 0) else {
            bail!("pads ({b}, {e}) on axis {a} of size {d} leave a negative size")
        };
        out_shape.push(dim_from_value(o, "the padded output")?);
    }
    let n = out_numel(&out_shape)?;
    if n == 0 {
        // Nothing to read; also keeps a huge pad on an otherwise empty tensor from
        // allocating per-axis maps.
        return Tensor::zeros(x.dtype(), out_shape);
    }
    let maps: Vec<Vec<Option<usize>>> = (0..x.rank())
        .map(|a| axis_map(x.shape()[a], pairs[a].0, out_shape[a], mode))
        .collect::<Result<_>>()?;
    let st = crate::ops::util::strides(x.shape());
    let rank = x.rank();
    let data = with_data!(x.data(), v, T => {
        let fill: T = cval.as_slice::<T>()?[0];
        let mut out: Vec<T> = Vec::with_capacity(n);
        if rank == 0 {
            out.extend_from_slice(v);
        } else {
            let last = &maps[rank - 1];
            let outer_shape = &out_shape[..rank - 1];
            let outer: usize = outer_shape.iter().product();
            let mut idx = vec![0usize; rank - 1];
            for _ in 0..outer {
                // The row's base offset, or None when some outer axis reads the constant.
                let mut base = Some(0usize);
                for (a, &i) in idx.iter().enumerate() {
                    base = match (base, maps[a][i]) {
                        (Some(b), Some(p)) => Some(b + p * st[a]),
                        _ => None,
                    };
                }
                match base {
                    None => out.extend(std::iter::repeat_n(fill, last.len())),
                    Some(b) => out.extend(last.iter().map(|p| p.map_or(fill, |p| v[b + p]))),
                }
                for d in (0..rank - 1).rev() {
                    idx[d] += 1;
                    if idx[d] < outer_shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(out_shape, data)
}

pub(super) fn infer_pad(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(x.clone());
    };
    let axes_given = types.get(3).copied().flatten().is_some();
    let axes_c = const_input(consts, 3);
    let (Some(p), true) = (const_input(consts, 1), !axes_given || axes_c.is_some()) else {
        return Ok(TensorType::new(x.dtype, super::unknown_dims(dims.len())));
    };
    let pads = int_values(p, "pads")?;
    let axes = axes_c.map(|a| int_values(a, "axes")).transpose()?;
    let pairs = pad_pairs(dims.len(), &pads, axes.as_deref())?;
    let out: Vec<Dim> = dims
        .iter()
        .zip(&pairs)
        .enumerate()
        .map(|(a, (d, &(b, e)))| match d {
            _ if b == 0 && e == 0 => Ok(d.clone()),
            Dim::Known(k) => {
                let o = (*k as i64).checked_add(b).and_then(|v| v.checked_add(e));
                match o.filter(|&o| o >= 0) {
                    Some(o) => Ok(Dim::Known(dim_from_value(o, "the padded output")?)),
                    None => bail!("pads ({b}, {e}) on axis {a} of size {k} leave a negative size"),
                }
            }
            _ => Ok(Dim::Unknown),
        })
        .collect::<Result<_>>()?;
    Ok(TensorType::new(x.dtype, out))
}

fn repeats_of(t: &Tensor, rank: usize) -> Result<Vec<usize>> {
    let r = int_values(t, "repeats")?;
    ensure!(
        r.len() == rank,
        "repeats has {} entries for rank {rank}",
        r.len()
    );
    r.iter().map(|&v| dim_from_value(v, "repeats")).collect()
}

pub(super) fn eval_tile(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let reps = repeats_of(input(inputs, 1)?, x.rank())?;
    // Read x as [r0, d0, r1, d1, …] with stride 0 on each repeat dim, then merge pairs.
    let st = istrides(x.shape());
    let mut view = Vec::with_capacity(2 * x.rank());
    let mut strides = Vec::with_capacity(2 * x.rank());
    let mut out_shape = Vec::with_capacity(x.rank());
    for (a, (&d, &r)) in x.shape().iter().zip(&reps).enumerate() {
        view.extend([r, d]);
        strides.extend([0, st[a]]);
        out_shape.push(
            d.checked_mul(r)
                .ok_or_else(|| IrError::msg("tiled output is too large"))?,
        );
    }
    out_numel(&out_shape)?;
    if out_shape.contains(&0) {
        return Tensor::zeros(x.dtype(), out_shape);
    }
    strided(x, view, 0, &strides)?.reshape(out_shape)
}

pub(super) fn infer_tile(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(x.clone());
    };
    let Some(r) = const_input(consts, 1) else {
        return Ok(TensorType::new(x.dtype, super::unknown_dims(dims.len())));
    };
    let reps = repeats_of(r, dims.len())?;
    let out: Vec<Dim> = dims
        .iter()
        .zip(&reps)
        .map(|(d, &r)| match d {
            Dim::Known(k) => k.checked_mul(r).map_or(Dim::Unknown, Dim::Known),
            _ if r == 1 => d.clone(),
            _ if r == 0 => Dim::Known(0),
            _ => Dim::Unknown,
        })
        .collect();
    Ok(TensorType::new(x.dtype, out))
}

fn expand_target(t: &Tensor) -> Result<Vec<usize>> {
    int_values(t, "shape")?
        .iter()
        .map(|&v| dim_from_value(v, "the expand shape"))
        .collect()
}

pub(super) fn eval_expand(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let target = expand_target(input(inputs, 1)?)?;
    let out = broadcast_shapes(x.shape(), &target)?;
    out_numel(&out)?;
    if out == x.shape() {
        return Ok(x.clone());
    }
    if out.contains(&0) {
        return Tensor::zeros(x.dtype(), out);
    }
    let st = istrides(x.shape());
    let lead = out.len() - x.rank();
    let strides: Vec<isize> = (0..out.len())
        .map(|i| {
            if i < lead || x.shape()[i - lead] == 1 {
                0
            } else {
                st[i - lead]
            }
        })
        .collect();
    strided(x, out, 0, &strides)
}

pub(super) fn infer_expand(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    match const_input(consts, 1) {
        Some(s) => {
            let target = Shape::known(&expand_target(s)?);
            Ok(TensorType {
                dtype: x.dtype,
                shape: broadcast_dims(&x.shape, &target)?,
            })
        }
        None => {
            let st = input_type(types, 1)?;
            Ok(match (x.shape.rank(), st.shape.dims()) {
                (Some(r), Some([Dim::Known(n)])) => {
                    TensorType::new(x.dtype, super::unknown_dims(r.max(*n)))
                }
                _ => TensorType::unknown_shape(x.dtype),
            })
        }
    }
}
