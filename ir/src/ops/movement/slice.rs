//! Slice: per-axis start/end/step with ONNX's clamping, read as one strided copy.

use super::{int_values, istrides, norm_axes, strided};
use crate::error::Result;
use crate::ops::util::{const_input, input, input_type, opt_input};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;
use crate::{bail, ensure};

/// The normalised slice of one axis: first index, step and element count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct AxisSlice {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

/// ONNX Slice clamping for one axis of size `dim`: negative start/end count from the end;
/// for positive steps both clamp to [0, dim], for negative steps start clamps to
/// [0, dim-1] and end to [-1, dim-1].
pub(super) fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> Result<AxisSlice> {
    ensure!(step != 0, "slice step cannot be 0");
    let d = dim as i64;
    let mut s = if start < 0 {
        start.saturating_add(d)
    } else {
        start
    };
    let mut e = if end < 0 { end.saturating_add(d) } else { end };
    let len = if step > 0 {
        s = s.max(0).min(d);
        e = e.max(0).min(d);
        if e > s {
            (e - s - 1) as u64 / step.unsigned_abs() + 1
        } else {
            0
        }
    } else {
        s = s.max(0).min(d - 1);
        e = e.max(-1).min(d - 1);
        if s > e {
            (s - e - 1) as u64 / step.unsigned_abs() + 1
        } else {
            0
        }
    };
    Ok(AxisSlice {
        start: s,
        step,
        len: len as usize,
    })
}

/// The (axis, start, end, step) lists of a Slice, with axes normalised and defaults filled.
struct SliceSpec {
    axes: Vec<usize>,
    starts: Vec<i64>,
    ends: Vec<i64>,
    steps: Vec<i64>,
}

fn spec(
    rank: usize,
    starts: Vec<i64>,
    ends: Vec<i64>,
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> Result<SliceSpec> {
    let n = starts.len();
    ensure!(
        ends.len() == n,
        "starts has {n} entries but ends has {}",
        ends.len()
    );
    let axes = match axes {
        Some(a) => {
            ensure!(
                a.len() == n,
                "starts has {n} entries but axes has {}",
                a.len()
            );
            norm_axes(&a, rank)?
        }
        None => {
            ensure!(n <= rank, "{n} starts for rank {rank}");
            (0..n).collect()
        }
    };
    let steps = match steps {
        Some(s) => {
            ensure!(
                s.len() == n,
                "starts has {n} entries but steps has {}",
                s.len()
            );
            s
        }
        None => vec![1; n],
    };
    Ok(SliceSpec {
        axes,
        starts,
        ends,
        steps,
    })
}

pub(super) fn eval_slice(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let starts = int_values(input(inputs, 1)?, "starts")?;
    let ends = int_values(input(inputs, 2)?, "ends")?;
    let axes = opt_input(inputs, 3)
        .map(|t| int_values(t, "axes"))
        .transpose()?;
    let steps = opt_input(inputs, 4)
        .map(|t| int_values(t, "steps"))
        .transpose()?;
    let sp = spec(x.rank(), starts, ends, axes, steps)?;
    let in_strides = istrides(x.shape());
    let mut shape = x.shape().to_vec();
    let mut strides = in_strides.clone();
    let mut base: isize = 0;
    for (k, &a) in sp.axes.iter().enumerate() {
        let s = slice_axis(x.shape()[a], sp.starts[k], sp.ends[k], sp.steps[k])?;
        shape[a] = s.len;
        if s.len > 0 {
            base += s.start as isize * in_strides[a];
        }
        strides[a] = (s.step as isize).saturating_mul(in_strides[a]);
    }
    if shape.contains(&0) {
        return Tensor::zeros(x.dtype(), shape);
    }
    strided(x, shape, base, &strides)
}

pub(super) fn infer_slice(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(x.clone());
    };
    let rank = dims.len();
    let given = |i: usize| types.get(i).copied().flatten().is_some();
    let konst = |i: usize, what: &str| {
        const_input(consts, i)
            .map(|t| int_values(t, what))
            .transpose()
    };
    let axes_c = if given(3) { konst(3, "axes")? } else { None };
    let steps_c = if given(4) { konst(4, "steps")? } else { None };
    let (starts_c, ends_c) = (konst(1, "starts")?, konst(2, "ends")?);
    let axes_known = !given(3) || axes_c.is_some();
    let steps_known = !given(4) || steps_c.is_some();
    if let (Some(starts), Some(ends), true, true) = (starts_c, ends_c, axes_known, steps_known) {
        let sp = spec(rank, starts, ends, axes_c, steps_c)?;
        let mut out = dims.to_vec();
        for (k, &a) in sp.axes.iter().enumerate() {
            let (s, e, st) = (sp.starts[k], sp.ends[k], sp.steps[k]);
            out[a] = match &dims[a] {
                Dim::Known(d) => Dim::Known(slice_axis(*d, s, e, st)?.len),
                // The whole axis, whatever its size: [0, huge) with step 1.
                d if s == 0 && st == 1 && e >= i32::MAX as i64 => d.clone(),
                _ => {
                    ensure!(st != 0, "slice step cannot be 0");
                    Dim::Unknown
                }
            };
        }
        return Ok(TensorType::new(x.dtype, out));
    }
    // Only which axes are sliced may be known; the others keep their dims.
    let sliced: Option<Vec<usize>> = match axes_c {
        Some(a) => Some(norm_axes(&a, rank)?),
        None if !given(3) => match input_type(types, 1)?.shape.dims() {
            Some([Dim::Known(n)]) if *n <= rank => Some((0..*n).collect()),
            Some([Dim::Known(n)]) => bail!("{n} starts for rank {rank}"),
            _ => None,
        },
        None => None,
    };
    let out: Vec<Dim> = match sliced {
        Some(ax) => dims
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if ax.contains(&i) {
                    Dim::Unknown
                } else {
                    d.clone()
                }
            })
            .collect(),
        None => vec![Dim::Unknown; rank],
    };
    Ok(TensorType::new(x.dtype, out))
}
