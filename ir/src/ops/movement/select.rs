//! Ops whose output is chosen by the data: NonZero, Compress, Unique; and the masking or
//! reordering ops Trilu and ReverseSequence.

use super::take_along_axis;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::util::{input, input_type, norm_axis, opt_input, scalar_i64};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Storable, Tensor};
use crate::{bail, ensure, with_data};
use std::cmp::Ordering;

pub(super) fn eval_non_zero(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let flat: Vec<usize> = with_data!(x.data(), v, T => {
        let zero = T::default();
        v.iter().enumerate().filter(|(_, e)| **e != zero).map(|(i, _)| i).collect()
    });
    let rank = x.rank();
    let n = flat.len();
    let st = crate::ops::util::strides(x.shape());
    let mut out = vec![0i64; rank * n];
    for (k, &f) in flat.iter().enumerate() {
        for d in 0..rank {
            out[d * n + k] = ((f / st[d]) % x.shape()[d]) as i64;
        }
    }
    Tensor::new(vec![rank, n], out)
}

pub(super) fn infer_non_zero(types: &[Option<&TensorType>]) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let rank = match x.shape.rank() {
        Some(r) => Dim::Known(r),
        None => Dim::Unknown,
    };
    Ok(TensorType::new(DType::I64, vec![rank, Dim::Unknown]))
}

/// Positions where `cond` is true, which must lie below `len`.
fn true_positions(cond: &Tensor, len: usize) -> Result<Vec<usize>> {
    ensure!(
        cond.rank() == 1,
        "condition must be 1-D, found shape {:?}",
        cond.shape()
    );
    let pos: Vec<usize> = cond
        .to_f64_vec()
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 0.0)
        .map(|(i, _)| i)
        .collect();
    if let Some(&bad) = pos.iter().find(|&&p| p >= len) {
        bail!("condition is true at {bad}, beyond the {len} selectable elements");
    }
    Ok(pos)
}

pub(super) fn eval_compress(axis: Option<i64>, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let cond = input(inputs, 1)?;
    match axis {
        None => {
            let flat = x.reshape(vec![x.len()])?;
            let pos = true_positions(cond, x.len())?;
            take_along_axis(&flat, 0, &pos, &[pos.len()])
        }
        Some(a) => {
            let a = norm_axis(a, x.rank())?;
            let pos = true_positions(cond, x.shape()[a])?;
            take_along_axis(x, a, &pos, &[pos.len()])
        }
    }
}

pub(super) fn infer_compress(
    axis: Option<i64>,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    // A constant condition fixes the selected count.
    let count = match crate::ops::util::const_input(consts, 1) {
        Some(c) => {
            ensure!(
                c.rank() == 1,
                "condition must be 1-D, found shape {:?}",
                c.shape()
            );
            Dim::Known(c.to_f64_vec().iter().filter(|&&v| v != 0.0).count())
        }
        None => Dim::Unknown,
    };
    Ok(match (axis, x.shape.dims()) {
        (None, _) => TensorType::new(x.dtype, vec![count]),
        (Some(a), Some(d)) => {
            let a = norm_axis(a, d.len())?;
            let mut out = d.to_vec();
            out[a] = count;
            TensorType::new(x.dtype, out)
        }
        (Some(_), None) => x.clone(),
    })
}

/// A total order for sorting: NaN after every number and equal to itself (numpy's sort
/// order and `np.unique`'s NaN collapsing).
fn total_cmp<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    match a.partial_cmp(b) {
        Some(o) => o,
        #[allow(clippy::eq_op)]
        None => (a != a).cmp(&(b != b)),
    }
}

/// Groups `count` items (compared by `cmp`) into unique values. Returns, in output order
/// (sorted, or by first occurrence), each group's first index and count, and for every
/// item its group's output position.
fn unique_groups(
    count: usize,
    sorted: bool,
    cmp: impl Fn(usize, usize) -> Ordering,
) -> (Vec<usize>, Vec<i64>, Vec<i64>) {
    let mut order: Vec<usize> = (0..count).collect();
    // Stable, so the first item of each run of equals is its first occurrence.
    order.sort_by(|&a, &b| cmp(a, b));
    let mut firsts: Vec<usize> = Vec::new();
    let mut counts: Vec<i64> = Vec::new();
    let mut group_of = vec![0usize; count];
    for (k, &i) in order.iter().enumerate() {
        if k == 0 || cmp(order[k - 1], i) != Ordering::Equal {
            firsts.push(i);
            counts.push(0);
        }
        let g = firsts.len() - 1;
        counts[g] += 1;
        group_of[i] = g;
    }
    // Output position of each sorted group.
    let mut pos: Vec<usize> = (0..firsts.len()).collect();
    if !sorted {
        let mut by_first: Vec<usize> = (0..firsts.len()).collect();
        by_first.sort_by_key(|&g| firsts[g]);
        for (p, &g) in by_first.iter().enumerate() {
            pos[g] = p;
        }
        let mut f2 = vec![0usize; firsts.len()];
        let mut c2 = vec![0i64; firsts.len()];
        for g in 0..firsts.len() {
            f2[pos[g]] = firsts[g];
            c2[pos[g]] = counts[g];
        }
        firsts = f2;
        counts = c2;
    }
    let inverse: Vec<i64> = group_of.iter().map(|&g| pos[g] as i64).collect();
    (firsts, inverse, counts)
}

pub(super) fn eval_unique(
    axis: Option<i64>,
    sorted: bool,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    ensure!(
        (1..=4).contains(&n_outputs),
        "Unique has 1 to 4 outputs, the node has {n_outputs}"
    );
    let (y, firsts, inverse, counts) = match axis {
        None => {
            let n = x.len();
            let (firsts, inverse, counts) = with_data!(x.data(), v, T => unique_groups(n, sorted, |a, b| total_cmp(&v[a], &v[b])));
            let flat = x.reshape(vec![n])?;
            let y = take_along_axis(&flat, 0, &firsts, &[firsts.len()])?;
            (y, firsts, inverse, counts)
        }
        Some(a) => {
            let a = norm_axis(a, x.rank())?;
            let dim = x.shape()[a];
            let outer: usize = x.shape()[..a].iter().product();
            let inner: usize = x.shape()[a + 1..].iter().product();
            // Slices along the axis compare lexicographically in (outer, inner) order.
            let (firsts, inverse, counts) = with_data!(x.data(), v, T => unique_groups(dim, sorted, |p, q| {
                for o in 0..outer {
                    let (bp, bq) = ((o * dim + p) * inner, (o * dim + q) * inner);
                    for i in 0..inner {
                        let c = total_cmp(&v[bp + i], &v[bq + i]);
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                }
                Ordering::Equal
            }));
            let y = take_along_axis(x, a, &firsts, &[firsts.len()])?;
            (y, firsts, inverse, counts)
        }
    };
    let k = firsts.len();
    let indices: Vec<i64> = firsts.iter().map(|&f| f as i64).collect();
    let n_inv = inverse.len();
    let outs = vec![
        y,
        Tensor::new(vec![k], indices)?,
        Tensor::new(vec![n_inv], inverse)?,
        Tensor::new(vec![k], counts)?,
    ];
    Ok(outs.into_iter().take(n_outputs).collect())
}

pub(super) fn infer_unique(
    axis: Option<i64>,
    types: &[Option<&TensorType>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = input_type(types, 0)?;
    ensure!(
        (1..=4).contains(&n_outputs),
        "Unique has 1 to 4 outputs, the node has {n_outputs}"
    );
    let (y, n_inv) = match (axis, x.shape.dims()) {
        (None, _) => (
            TensorType::new(x.dtype, vec![Dim::Unknown]),
            x.shape.numel().map_or(Dim::Unknown, Dim::Known),
        ),
        (Some(a), Some(d)) => {
            let a = norm_axis(a, d.len())?;
            let mut out = d.to_vec();
            let n_inv = std::mem::replace(&mut out[a], Dim::Unknown);
            (TensorType::new(x.dtype, out), n_inv)
        }
        (Some(_), None) => (TensorType::unknown_shape(x.dtype), Dim::Unknown),
    };
    let idx = TensorType::new(DType::I64, vec![Dim::Unknown]);
    let outs = vec![
        y,
        idx.clone(),
        TensorType::new(DType::I64, vec![n_inv]),
        idx,
    ];
    Ok(outs.into_iter().take(n_outputs).collect())
}

pub(super) fn eval_trilu(upper: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let k = match opt_input(inputs, 1) {
        Some(t) => scalar_i64(t)?,
        None => 0,
    };
    let r = x.rank();
    ensure!(
        r >= 2,
        "Trilu takes a tensor of rank at least 2, found shape {:?}",
        x.shape()
    );
    let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
    let mat = rows * cols;
    let keep = |i: usize, j: usize| {
        let diff = j as i128 - i as i128;
        if upper {
            diff >= k as i128
        } else {
            diff <= k as i128
        }
    };
    let data = with_data!(x.data(), v, T => {
        let zero = T::default();
        let out: Vec<T> = v.iter().enumerate().map(|(f, &e)| {
            let m = f % mat.max(1);
            if keep(m / cols.max(1), m % cols.max(1)) { e } else { zero }
        }).collect();
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(x.shape().to_vec(), data)
}

pub(super) fn eval_reverse_sequence(
    batch_axis: i64,
    time_axis: i64,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let lens = input(inputs, 1)?;
    ensure!(
        x.rank() >= 2,
        "ReverseSequence takes a tensor of rank at least 2, found shape {:?}",
        x.shape()
    );
    let b = norm_axis(batch_axis, x.rank())?;
    let t = norm_axis(time_axis, x.rank())?;
    ensure!(b != t, "batch_axis and time_axis are both {b}");
    ensure!(
        lens.dtype().is_int(),
        "sequence_lens must be integers, found {}",
        lens.dtype()
    );
    let (nb, nt) = (x.shape()[b], x.shape()[t]);
    ensure!(
        lens.shape() == [nb],
        "sequence_lens has shape {:?}, expected [{nb}]",
        lens.shape()
    );
    let lens: Vec<usize> = lens
        .to_i64_vec()
        .into_iter()
        .map(|l| {
            ensure!(
                l >= 0 && l as u64 <= nt as u64,
                "sequence length {l} is outside [0, {nt}]"
            );
            Ok(l as usize)
        })
        .collect::<Result<_>>()?;
    let st = crate::ops::util::strides(x.shape());
    let (sb, stt) = (st[b], st[t]);
    let data = with_data!(x.data(), v, T => {
        let out: Vec<T> = (0..v.len()).map(|f| {
            let (bi, ti) = ((f / sb) % nb, (f / stt) % nt);
            let l = lens[bi];
            if ti < l { v[f - ti * stt + (l - 1 - ti) * stt] } else { v[f] }
        }).collect();
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(x.shape().to_vec(), data)
}
