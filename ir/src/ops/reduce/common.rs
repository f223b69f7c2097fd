//! Shared machinery: splitting a shape around one axis, enumerating the elements a
//! reduction visits, NaN-aware ordering, parameter broadcasting.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::ops::util::{broadcast_index_map, broadcast_shapes, strides};
use crate::shape::{Dim, TensorType};
use crate::tensor::{checked_numel, Tensor};
use std::cmp::Ordering;

/// Outputs larger than this are refused when their size is not backed by input data
/// (a reduction of an empty tensor can have a large output).
pub const MAX_OUTPUT_ELEMENTS: usize = 1 << 31;

/// `shape` seen as `[outer, n, inner]` around `axis`: element `(o, j, i)` is at flat
/// index `(o * n + j) * inner + i`.
pub fn lanes(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let n = shape[axis];
    let inner = shape[axis + 1..].iter().product();
    (outer, n, inner)
}

/// Every flat offset reached by a row-major walk over `dims` (size, stride) pairs.
pub fn enumerate_offsets(dims: &[(usize, usize)]) -> Vec<usize> {
    let n: usize = dims.iter().map(|d| d.0).product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; dims.len()];
    let mut off = 0usize;
    loop {
        out.push(off);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            off += dims[d].1;
            if idx[d] < dims[d].0 {
                break;
            }
            off -= dims[d].1 * idx[d];
            idx[d] = 0;
        }
    }
}

/// How a reduction over some axes visits its input: output element `k` reduces the input
/// elements at `bases[k] + offsets[j]` for every `j`. Memory is one index per output
/// element plus one per reduced position, never one per input element per output.
pub struct ReducePlan {
    /// The output shape with the reduced dims kept as 1.
    pub keep_shape: Vec<usize>,
    pub bases: Vec<usize>,
    pub offsets: Vec<usize>,
}

impl ReducePlan {
    pub fn new(shape: &[usize], reduced: &[bool]) -> Result<ReducePlan> {
        let st = strides(shape);
        let keep_shape: Vec<usize> = shape.iter().zip(reduced).map(|(&d, &r)| if r { 1 } else { d }).collect();
        let out_n = checked_numel(&keep_shape)?;
        if out_n > MAX_OUTPUT_ELEMENTS {
            return Err(IrError::msg(format!("output shape {keep_shape:?} has more than 2^31 elements")));
        }
        let kept: Vec<(usize, usize)> = (0..shape.len()).filter(|&i| !reduced[i]).map(|i| (shape[i], st[i])).collect();
        let red: Vec<(usize, usize)> = (0..shape.len()).filter(|&i| reduced[i]).map(|i| (shape[i], st[i])).collect();
        // An empty input with a non-empty output reduces empty sets: no offsets at all.
        let in_n = checked_numel(shape)?;
        let offsets = if in_n == 0 { Vec::new() } else { enumerate_offsets(&red) };
        let bases = if in_n == 0 { vec![0; out_n] } else { enumerate_offsets(&kept) };
        Ok(ReducePlan { keep_shape, bases, offsets })
    }
}

/// Which axes `axes` (each in `[-rank, rank)`, no repeats) select.
pub fn axes_mask(axes: &[i64], rank: usize) -> Result<Vec<bool>> {
    let mut mask = vec![false; rank];
    for &a in axes {
        let i = crate::ops::util::norm_axis(a, rank)?;
        if mask[i] {
            return Err(IrError::msg(format!("axis {a} is repeated in {axes:?}")));
        }
        mask[i] = true;
    }
    Ok(mask)
}

/// A total order that puts NaN above every number (`nan_high`) or below it; NaNs are equal.
#[allow(clippy::eq_op)]
pub fn cmp_nan<T: PartialOrd>(a: &T, b: &T, nan_high: bool) -> Ordering {
    match a.partial_cmp(b) {
        Some(o) => o,
        None => {
            let o = (a != a).cmp(&(b != b));
            if nan_high {
                o
            } else {
                o.reverse()
            }
        }
    }
}

pub fn require_float(what: &str, d: DType) -> Result<()> {
    if d.is_float() {
        Ok(())
    } else {
        Err(IrError::msg(format!("{what} takes a float tensor, found {d}")))
    }
}

/// Input `i`'s type with a float dtype.
pub fn float_type<'a>(types: &[Option<&'a TensorType>], i: usize) -> Result<&'a TensorType> {
    let t = crate::ops::util::input_type(types, i)?;
    require_float(&format!("input {i}"), t.dtype)?;
    Ok(t)
}

/// The dims of `t` with those from `from` on replaced by 1 (the shape of per-row
/// statistics when normalizing over the trailing axes).
pub fn stat_dims(dims: &[Dim], from: usize) -> Vec<Dim> {
    dims.iter().enumerate().map(|(i, d)| if i >= from { Dim::Known(1) } else { d.clone() }).collect()
}

/// A parameter tensor unidirectionally broadcast to a data shape, read by the data's flat
/// index without materializing the broadcast when it is a plain trailing match.
pub struct Bcast {
    vals: Vec<f64>,
    /// Flat data index to parameter index, when the broadcast is not a trailing match.
    map: Option<Vec<usize>>,
}

impl Bcast {
    pub fn new(p: &Tensor, shape: &[usize]) -> Result<Bcast> {
        let target = broadcast_shapes(p.shape(), shape)?;
        if target != shape {
            return Err(IrError::msg(format!("a parameter of shape {:?} does not broadcast to {:?}", p.shape(), shape)));
        }
        let vals = p.to_f64_vec();
        // With leading 1s stripped, a parameter equal to the data's trailing dims repeats
        // every `len` elements.
        let core: Vec<usize> = p.shape().iter().copied().skip_while(|&d| d == 1).collect();
        let trailing = core.len() <= shape.len() && shape[shape.len() - core.len()..] == core[..];
        let map = if trailing || vals.len() == 1 { None } else { Some(broadcast_index_map(p.shape(), shape)) };
        Ok(Bcast { vals, map })
    }

    /// The parameter value for data element `i`.
    pub fn at(&self, i: usize) -> f64 {
        match &self.map {
            Some(m) => self.vals[m[i]],
            None => self.vals[i % self.vals.len()],
        }
    }
}

/// A per-channel parameter: a tensor of exactly `c` elements (any shape with that count,
/// as ONNX reshapes them to `[c, 1, …]`).
pub fn per_channel(p: &Tensor, c: usize, what: &str) -> Result<Vec<f64>> {
    if p.len() != c {
        return Err(IrError::msg(format!("{what} must have {c} elements (one per channel), found shape {:?}", p.shape())));
    }
    Ok(p.to_f64_vec())
}
