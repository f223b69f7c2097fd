//! Col2Im: sums sliding blocks (columns, as Im2Col lays them out) back into an image.

use super::{bounded_numel, from_f64_saturating, size_from, MAX_ELEMENTS};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::ops::util::{const_input, input, input_type};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;

/// Image and block shapes from their inputs.
fn shapes(image: &Tensor, block: &Tensor) -> Result<(Vec<usize>, Vec<usize>)> {
    let im: Vec<usize> = image
        .to_i64_vec()
        .iter()
        .map(|&v| size_from(v, "an image_shape dim"))
        .collect::<Result<_>>()?;
    let bl: Vec<usize> = block
        .to_i64_vec()
        .iter()
        .map(|&v| size_from(v, "a block_shape dim"))
        .collect::<Result<_>>()?;
    if im.is_empty() || im.len() != bl.len() {
        return Err(IrError::msg(format!(
            "image_shape {im:?} and block_shape {bl:?} must have the same, non-zero length"
        )));
    }
    if bl.contains(&0) {
        return Err(IrError::msg(format!("block_shape {bl:?} has a zero dim")));
    }
    Ok((im, bl))
}

pub(super) fn infer(
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    input_type(types, 1)?;
    input_type(types, 2)?;
    let xd = x.shape.dims();
    let n = xd.and_then(|d| d.first().cloned()).unwrap_or(Dim::Unknown);
    match (const_input(consts, 1), const_input(consts, 2)) {
        (Some(im), Some(bl)) => {
            let (im, bl) = shapes(im, bl)?;
            let bsize = crate::tensor::checked_numel(&bl)?;
            let c = match xd.and_then(|d| d.get(1)).and_then(|d| d.known()) {
                Some(k) => Dim::Known(k / bsize),
                None => Dim::Unknown,
            };
            let mut out = vec![n, c];
            out.extend(im.iter().map(|&d| Dim::Known(d)));
            Ok(TensorType::new(x.dtype, Shape(Some(out))))
        }
        _ => {
            let r = types
                .get(1)
                .copied()
                .flatten()
                .and_then(|t| t.shape.dims())
                .and_then(|d| d.first())
                .and_then(|d| d.known());
            match r {
                Some(r) => {
                    let mut out = vec![n, Dim::Unknown];
                    out.extend(std::iter::repeat(Dim::Unknown).take(r));
                    Ok(TensorType::new(x.dtype, Shape(Some(out))))
                }
                None => Ok(TensorType::unknown_shape(x.dtype)),
            }
        }
    }
}

/// An attribute list of `r` values, or `default` repeated when it is empty.
fn per_dim(v: &[i64], r: usize, default: i64, what: &str) -> Result<Vec<i64>> {
    if v.is_empty() {
        return Ok(vec![default; r]);
    }
    if v.len() != r {
        return Err(IrError::msg(format!("{what} {v:?} must have {r} values")));
    }
    Ok(v.to_vec())
}

pub(super) fn eval(
    dilations: &[i64],
    pads: &[i64],
    strides: &[i64],
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    if x.dtype() == DType::Bool {
        return Err(IrError::msg("col2im does not take bool tensors"));
    }
    let (im, bl) = shapes(input(inputs, 1)?, input(inputs, 2)?)?;
    let r = im.len();
    let dil = per_dim(dilations, r, 1, "dilations")?;
    let st = per_dim(strides, r, 1, "strides")?;
    let pd = per_dim(pads, 2 * r, 0, "pads")?;
    if dil.iter().chain(&st).any(|&v| v < 1) || pd.iter().any(|&v| v < 0) {
        return Err(IrError::msg(format!(
            "dilations {dil:?} and strides {st:?} must be positive, pads {pd:?} non-negative"
        )));
    }
    let xs = x.shape();
    if xs.len() != 3 {
        return Err(IrError::msg(format!(
            "input must be [N, C * prod(block_shape), L], found {xs:?}"
        )));
    }
    let bsize = crate::tensor::checked_numel(&bl)?;
    if xs[1] % bsize != 0 {
        return Err(IrError::msg(format!(
            "input dim 1 ({}) is not a multiple of the block size {bsize}",
            xs[1]
        )));
    }
    let (n, c) = (xs[0], xs[1] / bsize);
    // Number of block positions along each image dim.
    let mut blocks = Vec::with_capacity(r);
    for i in 0..r {
        // i128: attribute values are untrusted and must not overflow.
        let span = im[i] as i128 + pd[i] as i128 + pd[r + i] as i128
            - dil[i] as i128 * (bl[i] as i128 - 1)
            - 1;
        let nb = span.div_euclid(st[i] as i128) + 1;
        if span < 0 || nb < 1 || nb > MAX_ELEMENTS as i128 {
            return Err(IrError::msg(format!(
                "no block of size {} fits image dim {i} of {}",
                bl[i], im[i]
            )));
        }
        blocks.push(nb as usize);
    }
    let n_cols = crate::tensor::checked_numel(&blocks)?;
    if xs[2] != n_cols {
        return Err(IrError::msg(format!(
            "input has {} columns; the shapes give {blocks:?} = {n_cols}",
            xs[2]
        )));
    }
    let mut out_shape = vec![n, c];
    out_shape.extend_from_slice(&im);
    let total = bounded_numel(&out_shape)?;
    let plane = crate::tensor::checked_numel(&im)?;
    let xv = x.to_f64_vec();
    let mut out = vec![0.0f64; total];
    let unravel = |mut i: usize, dims: &[usize]| -> Vec<usize> {
        let mut idx = vec![0; dims.len()];
        for d in (0..dims.len()).rev() {
            idx[d] = i % dims[d];
            i /= dims[d];
        }
        idx
    };
    for k in 0..bsize {
        let off = unravel(k, &bl);
        for col in 0..n_cols {
            let pos = unravel(col, &blocks);
            let mut flat = 0usize;
            let mut inside = true;
            for i in 0..r {
                let p = pos[i] as i128 * st[i] as i128 - pd[i] as i128
                    + off[i] as i128 * dil[i] as i128;
                if p < 0 || p >= im[i] as i128 {
                    inside = false;
                    break;
                }
                flat = flat * im[i] + p as usize;
            }
            if !inside {
                continue;
            }
            for b in 0..n {
                for ch in 0..c {
                    out[(b * c + ch) * plane + flat] +=
                        xv[(b * xs[1] + ch * bsize + k) * n_cols + col];
                }
            }
        }
    }
    from_f64_saturating(x.dtype(), out_shape, &out)
}
