//! Ops that change only the shape, never the element order: Reshape, Flatten, Squeeze,
//! Unsqueeze; and the shape queries Shape and Size.

use super::{dim_from_value, dim_product, int_values, norm_axes, unknown_dims};
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::util::{const_input, input, input_type, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;
use crate::{bail, ensure};

/// Reshape's target from its `shape` input: 0 copies the input dim (unless `allowzero`),
/// -1 is inferred from the element count.
pub(super) fn reshape_target(
    in_shape: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>> {
    ensure!(
        spec.iter().filter(|&&v| v == -1).count() <= 1,
        "shape {spec:?} has more than one -1"
    );
    ensure!(
        !(allowzero && spec.contains(&0) && spec.contains(&-1)),
        "shape {spec:?} has both 0 and -1, which allowzero makes ambiguous"
    );
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &v) in spec.iter().enumerate() {
        out.push(match v {
            -1 => {
                infer_at = Some(i);
                1
            }
            0 if !allowzero => match in_shape.get(i) {
                Some(&d) => d,
                None => bail!(
                    "shape {spec:?} copies dim {i} (0), but the input {in_shape:?} has rank {}",
                    in_shape.len()
                ),
            },
            v if v < -1 => bail!("shape {spec:?} has an invalid entry {v}"),
            v => dim_from_value(v, "the shape")?,
        });
    }
    let numel = crate::tensor::checked_numel(in_shape)?;
    if let Some(i) = infer_at {
        let rest = crate::tensor::checked_numel(&out)?;
        ensure!(
            rest != 0,
            "cannot infer the -1 in shape {spec:?}: the other dims have no elements"
        );
        ensure!(
            numel % rest == 0,
            "cannot reshape {in_shape:?} to {spec:?}: {numel} elements do not divide by {rest}"
        );
        out[i] = numel / rest;
    }
    let total = crate::tensor::checked_numel(&out)?;
    ensure!(
        total == numel,
        "cannot reshape {in_shape:?} ({numel} elements) to {out:?} ({total} elements)"
    );
    Ok(out)
}

pub(super) fn eval_reshape(allowzero: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let spec = int_values(input(inputs, 1)?, "the shape")?;
    let target = reshape_target(x.shape(), &spec, allowzero)?;
    x.reshape(target)
}

/// A product of dims split into its known factor, its symbols, and whether any is unknown.
struct Factors {
    known: usize,
    syms: Vec<String>,
    unknown: bool,
}

fn factors<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Option<Factors> {
    let mut f = Factors {
        known: 1,
        syms: vec![],
        unknown: false,
    };
    for d in dims {
        match d {
            Dim::Known(k) => f.known = f.known.checked_mul(*k)?,
            Dim::Sym(s) => f.syms.push(s.clone()),
            Dim::Unknown => f.unknown = true,
        }
    }
    Some(f)
}

/// The -1 dim of a reshape from `input` dims when the other output dims are `others`:
/// symbols present on both sides cancel, so [N,3,4,4] → [0,-1] gives 48.
fn infer_minus_one(input: &[Dim], others: &[Dim]) -> Result<Dim> {
    let (Some(a), Some(b)) = (factors(input), factors(others)) else {
        return Ok(Dim::Unknown);
    };
    if a.unknown || b.unknown {
        return Ok(Dim::Unknown);
    }
    let mut rest = a.syms.clone();
    for s in &b.syms {
        match rest.iter().position(|r| r == s) {
            Some(p) => {
                rest.remove(p);
            }
            None => return Ok(Dim::Unknown),
        }
    }
    if b.known == 0 {
        if a.known == 0 {
            bail!("cannot infer a -1 dim when the other dims have no elements");
        }
        return Ok(Dim::Unknown);
    }
    if a.known % b.known != 0 {
        if rest.is_empty() {
            bail!(
                "cannot reshape {} elements into a multiple of {}",
                a.known,
                b.known
            );
        }
        return Ok(Dim::Unknown);
    }
    let q = a.known / b.known;
    Ok(match rest.as_slice() {
        [] => Dim::Known(q),
        [s] if q == 1 => Dim::Sym(s.clone()),
        _ => Dim::Unknown,
    })
}

pub(super) fn infer_reshape(
    allowzero: bool,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let st = input_type(types, 1)?;
    let Some(shape_t) = const_input(consts, 1) else {
        // The rank is the shape input's length, when that is known.
        let shape = match st.shape.dims() {
            Some([Dim::Known(n)]) => unknown_dims(*n),
            _ => Shape::unknown_rank(),
        };
        return Ok(TensorType {
            dtype: x.dtype,
            shape,
        });
    };
    let spec = int_values(shape_t, "the shape")?;
    if let Some(c) = x.shape.concrete() {
        return Ok(TensorType::known(
            x.dtype,
            &reshape_target(&c, &spec, allowzero)?,
        ));
    }
    ensure!(
        spec.iter().filter(|&&v| v == -1).count() <= 1,
        "shape {spec:?} has more than one -1"
    );
    let in_dims = x.shape.dims();
    let mut out: Vec<Dim> = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &v) in spec.iter().enumerate() {
        out.push(match v {
            -1 => {
                infer_at = Some(i);
                Dim::Unknown
            }
            0 if !allowzero => match in_dims {
                Some(d) => match d.get(i) {
                    Some(d) => d.clone(),
                    None => bail!(
                        "shape {spec:?} copies dim {i} (0), but the input has rank {}",
                        d.len()
                    ),
                },
                None => Dim::Unknown,
            },
            v if v < -1 => bail!("shape {spec:?} has an invalid entry {v}"),
            v => Dim::Known(dim_from_value(v, "the shape")?),
        });
    }
    if let (Some(i), Some(in_dims)) = (infer_at, in_dims) {
        let others: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, d)| d.clone())
            .collect();
        out[i] = infer_minus_one(in_dims, &others)?;
    }
    Ok(TensorType::new(x.dtype, out))
}

fn flatten_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        axis >= -r && axis <= r,
        "axis {axis} is out of range for rank {rank}"
    );
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

pub(super) fn eval_flatten(axis: i64, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let a = flatten_axis(axis, x.rank())?;
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a..].iter().product();
    x.reshape(vec![outer, inner])
}

pub(super) fn infer_flatten(axis: i64, types: &[Option<&TensorType>]) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(TensorType::new(x.dtype, unknown_dims(2)));
    };
    let a = flatten_axis(axis, dims.len())?;
    Ok(TensorType::new(
        x.dtype,
        vec![dim_product(&dims[..a]), dim_product(&dims[a..])],
    ))
}

pub(super) fn eval_squeeze(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let shape = x.shape();
    let keep: Vec<usize> = match opt_input(inputs, 1) {
        None => shape.iter().copied().filter(|&d| d != 1).collect(),
        Some(a) => {
            let axes = norm_axes(&int_values(a, "axes")?, x.rank())?;
            for &a in &axes {
                ensure!(
                    shape[a] == 1,
                    "cannot squeeze axis {a} of size {}",
                    shape[a]
                );
            }
            shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
    };
    x.reshape(keep)
}

pub(super) fn infer_squeeze(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let dtype = x.dtype;
    let Some(dims) = x.shape.dims() else {
        return Ok(TensorType::unknown_shape(dtype));
    };
    let axes_given = types.get(1).copied().flatten();
    match (axes_given, const_input(consts, 1)) {
        (None, _) => {
            // Without axes every size-1 dim goes; a symbolic dim might be 1, so the rank
            // is known only when every dim is.
            if dims.iter().all(|d| d.known().is_some()) {
                Ok(TensorType::new(
                    dtype,
                    dims.iter()
                        .filter(|d| **d != Dim::Known(1))
                        .cloned()
                        .collect::<Vec<_>>(),
                ))
            } else {
                Ok(TensorType::unknown_shape(dtype))
            }
        }
        (Some(_), Some(a)) => {
            let axes = norm_axes(&int_values(a, "axes")?, dims.len())?;
            for &a in &axes {
                if let Dim::Known(k) = dims[a] {
                    ensure!(k == 1, "cannot squeeze axis {a} of size {k}");
                }
            }
            Ok(TensorType::new(
                dtype,
                dims.iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect::<Vec<_>>(),
            ))
        }
        (Some(at), None) => Ok(match at.shape.dims() {
            Some([Dim::Known(n)]) if *n <= dims.len() => {
                TensorType::new(dtype, unknown_dims(dims.len() - n))
            }
            _ => TensorType::unknown_shape(dtype),
        }),
    }
}

/// Output shape of Unsqueeze: `axes` index the output, whose rank is rank + len(axes).
fn unsqueeze_dims<D: Clone>(dims: &[D], axes: &[i64], one: D) -> Result<Vec<D>> {
    let out_rank = dims.len() + axes.len();
    let axes = norm_axes(axes, out_rank)?;
    let mut src = dims.iter();
    let mut out = Vec::with_capacity(out_rank);
    for i in 0..out_rank {
        if axes.contains(&i) {
            out.push(one.clone());
        } else {
            match src.next() {
                Some(d) => out.push(d.clone()),
                None => bail!("internal: unsqueeze ran out of input dims"),
            }
        }
    }
    Ok(out)
}

pub(super) fn eval_unsqueeze(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let axes = int_values(input(inputs, 1)?, "axes")?;
    x.reshape(unsqueeze_dims(x.shape(), &axes, 1)?)
}

pub(super) fn infer_unsqueeze(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let at = input_type(types, 1)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(TensorType::unknown_shape(x.dtype));
    };
    match const_input(consts, 1) {
        Some(a) => Ok(TensorType::new(
            x.dtype,
            unsqueeze_dims(dims, &int_values(a, "axes")?, Dim::Known(1))?,
        )),
        None => Ok(match at.shape.dims() {
            Some([Dim::Known(n)]) => TensorType::new(x.dtype, unknown_dims(dims.len() + n)),
            Some([]) => TensorType::new(x.dtype, unknown_dims(dims.len() + 1)),
            _ => TensorType::unknown_shape(x.dtype),
        }),
    }
}

/// Shape's [start, end) after ONNX's clamping of negative and out-of-range values.
fn shape_range(start: i64, end: Option<i64>, rank: usize) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| -> usize {
        let v = if v < 0 { v.saturating_add(r) } else { v };
        v.clamp(0, r) as usize
    };
    let s = clamp(start);
    let e = clamp(end.unwrap_or(r));
    (s, e.max(s))
}

pub(super) fn eval_shape(
    start: i64,
    end: Option<i64>,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let (s, e) = shape_range(start, end, x.rank());
    let v: Vec<i64> = x.shape()[s..e].iter().map(|&d| d as i64).collect();
    Tensor::new(vec![v.len()], v)
}

pub(super) fn infer_shape(
    start: i64,
    end: Option<i64>,
    types: &[Option<&TensorType>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    Ok(match x.shape.rank() {
        Some(r) => {
            let (s, e) = shape_range(start, end, r);
            TensorType::known(DType::I64, &[e - s])
        }
        None => TensorType::new(DType::I64, unknown_dims(1)),
    })
}

pub(super) fn eval_size(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    Ok(Tensor::scalar(input(inputs, 0)?.len() as i64))
}

pub(super) fn infer_size(types: &[Option<&TensorType>]) -> Result<TensorType> {
    input_type(types, 0)?;
    Ok(TensorType::known(DType::I64, &[]))
}
