//! Ops that permute elements by permuting axes of a (possibly reshaped) view: Transpose,
//! DepthToSpace, SpaceToDepth.

use super::{istrides, permute, strided};
use crate::error::Result;
use crate::op::DepthToSpaceMode;
use crate::ops::util::{input, input_type};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;
use crate::{bail, ensure};

/// `perm` checked to be a permutation of 0..rank; absent means reversed axes.
fn check_perm(perm: Option<&[i64]>, rank: usize) -> Result<Vec<usize>> {
    let Some(perm) = perm else {
        return Ok((0..rank).rev().collect());
    };
    // A file may carry a perm of thousands of entries: the message shows the first few.
    ensure!(
        perm.len() == rank,
        "perm {:?}{} has {} entries for rank {rank}",
        &perm[..perm.len().min(8)],
        if perm.len() > 8 { " (first 8 shown)" } else { "" },
        perm.len()
    );
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(rank);
    for &p in perm {
        let a = crate::ops::util::norm_axis(p, rank)?;
        ensure!(!seen[a], "perm {perm:?} repeats axis {p}");
        seen[a] = true;
        out.push(a);
    }
    Ok(out)
}

pub(super) fn eval_transpose(perm: Option<&[i64]>, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let perm = check_perm(perm, x.rank())?;
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x.clone());
    }
    permute(x, &perm)
}

pub(super) fn infer_transpose(
    perm: Option<&[i64]>,
    types: &[Option<&TensorType>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(match perm {
            Some(p) => TensorType::new(x.dtype, super::unknown_dims(p.len())),
            None => TensorType::unknown_shape(x.dtype),
        });
    };
    let perm = check_perm(perm, dims.len())?;
    Ok(TensorType::new(
        x.dtype,
        perm.iter().map(|&p| dims[p].clone()).collect::<Vec<_>>(),
    ))
}

fn blocksize(b: i64) -> Result<usize> {
    ensure!(b >= 1, "blocksize must be positive, found {b}");
    usize::try_from(b).map_err(|_| crate::IrError::msg(format!("blocksize {b} is too large")))
}

fn nchw(x: &Tensor, op: &str) -> Result<[usize; 4]> {
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => bail!("{op} takes a 4-D tensor, found shape {:?}", x.shape()),
    }
}

/// Reads `x` through a 6-D view `view` (a reshape of its 4-D shape), permutes that view's
/// axes by `perm` and returns the result reshaped to `out`.
fn view_permute(x: &Tensor, view: [usize; 6], perm: [usize; 6], out: Vec<usize>) -> Result<Tensor> {
    let st = istrides(&view);
    let shape: Vec<usize> = perm.iter().map(|&p| view[p]).collect();
    let strides: Vec<isize> = perm.iter().map(|&p| st[p]).collect();
    strided(x, shape, 0, &strides)?.reshape(out)
}

pub(super) fn eval_depth_to_space(
    b: i64,
    mode: DepthToSpaceMode,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let b = blocksize(b)?;
    let [n, c, h, w] = nchw(x, "DepthToSpace")?;
    let bb = b.checked_mul(b).filter(|&bb| c % bb == 0);
    let Some(bb) = bb else {
        bail!("channels {c} are not divisible by blocksize² ({b}²)")
    };
    let c2 = c / bb;
    let (Some(hb), Some(wb)) = (h.checked_mul(b), w.checked_mul(b)) else {
        bail!("blocksize {b} is too large")
    };
    let out = vec![n, c2, hb, wb];
    match mode {
        DepthToSpaceMode::Dcr => view_permute(x, [n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2], out),
        DepthToSpaceMode::Crd => view_permute(x, [n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3], out),
    }
}

pub(super) fn eval_space_to_depth(
    b: i64,
    mode: DepthToSpaceMode,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    let b = blocksize(b)?;
    let [n, c, h, w] = nchw(x, "SpaceToDepth")?;
    ensure!(
        h % b == 0 && w % b == 0,
        "spatial dims {h}x{w} are not divisible by blocksize {b}"
    );
    let Some(cbb) = c.checked_mul(b).and_then(|v| v.checked_mul(b)) else {
        bail!("blocksize {b} is too large")
    };
    let out = vec![n, cbb, h / b, w / b];
    let view = [n, c, h / b, b, w / b, b];
    match mode {
        DepthToSpaceMode::Dcr => view_permute(x, view, [0, 3, 5, 1, 2, 4], out),
        DepthToSpaceMode::Crd => view_permute(x, view, [0, 1, 3, 5, 2, 4], out),
    }
}

fn scale_dim(d: &Dim, b: usize) -> Dim {
    match d {
        Dim::Known(k) => k.checked_mul(b).map_or(Dim::Unknown, Dim::Known),
        _ if b == 1 => d.clone(),
        _ => Dim::Unknown,
    }
}

fn divide_dim(d: &Dim, b: usize, what: &str) -> Result<Dim> {
    Ok(match d {
        Dim::Known(k) => {
            ensure!(k % b == 0, "{what} {k} is not divisible by {b}");
            Dim::Known(k / b)
        }
        _ if b == 1 => d.clone(),
        _ => Dim::Unknown,
    })
}

fn four_dims<'a>(x: &'a TensorType, op: &str) -> Result<Option<&'a [Dim]>> {
    match x.shape.dims() {
        None => Ok(None),
        Some(d) if d.len() == 4 => Ok(Some(d)),
        Some(d) => bail!("{op} takes a 4-D tensor, found rank {}", d.len()),
    }
}

pub(super) fn infer_depth_to_space(b: i64, types: &[Option<&TensorType>]) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let b = blocksize(b)?;
    let Some(d) = four_dims(x, "DepthToSpace")? else {
        return Ok(TensorType::new(x.dtype, super::unknown_dims(4)));
    };
    let Some(bb) = b.checked_mul(b) else {
        bail!("blocksize {b} is too large")
    };
    let c = divide_dim(&d[1], bb, "channels")?;
    Ok(TensorType::new(
        x.dtype,
        vec![d[0].clone(), c, scale_dim(&d[2], b), scale_dim(&d[3], b)],
    ))
}

pub(super) fn infer_space_to_depth(b: i64, types: &[Option<&TensorType>]) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    let b = blocksize(b)?;
    let Some(d) = four_dims(x, "SpaceToDepth")? else {
        return Ok(TensorType::new(x.dtype, super::unknown_dims(4)));
    };
    Ok(TensorType::new(
        x.dtype,
        vec![
            d[0].clone(),
            scale_dim(&d[1], b.saturating_mul(b)),
            divide_dim(&d[2], b, "height")?,
            divide_dim(&d[3], b, "width")?,
        ],
    ))
}
