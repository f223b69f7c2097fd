//! MatMul (numpy semantics: 1-D operands, broadcast batch dims), Gemm, MatMulInteger and
//! QLinearMatMul. Everything goes through the blocked [`gemm`] kernel, once per batch
//! matrix.

use super::gemm::{gemm, transpose, wrapping_i64, Acc};
use super::geometry::bounded_numel;
use super::quant::{quantize_value, round_to, scale_values};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::ops::util::{
    broadcast_dims, broadcast_index_map, broadcast_shapes, broadcast_to, input, input_type,
    opt_input,
};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;
use std::num::Wrapping;

/// The output shape of numpy matmul on symbolic shapes.
fn matmul_shape(a: &Shape, b: &Shape) -> Result<Shape> {
    let (Some(a), Some(b)) = (a.dims(), b.dims()) else {
        return Ok(Shape::unknown_rank());
    };
    if a.is_empty() || b.is_empty() {
        return Err(IrError::msg("matmul operands must have rank >= 1"));
    }
    let ka = &a[a.len() - 1];
    let kb = if b.len() == 1 { &b[0] } else { &b[b.len() - 2] };
    if let (Some(x), Some(y)) = (ka.known(), kb.known()) {
        if x != y {
            return Err(IrError::msg(format!("inner dims differ: {x} and {y}")));
        }
    }
    let ab = if a.len() > 2 {
        a[..a.len() - 2].to_vec()
    } else {
        vec![]
    };
    let bb = if b.len() > 2 {
        b[..b.len() - 2].to_vec()
    } else {
        vec![]
    };
    let mut dims = broadcast_dims(&Shape(Some(ab)), &Shape(Some(bb)))?
        .0
        .unwrap_or_default();
    if a.len() >= 2 {
        dims.push(a[a.len() - 2].clone());
    }
    if b.len() >= 2 {
        dims.push(b[b.len() - 1].clone());
    }
    Ok(Shape(Some(dims)))
}

pub(crate) fn infer_matmul(types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let (a, b) = (input_type(types, 0)?, input_type(types, 1)?);
    if a.dtype != b.dtype || a.dtype == DType::Bool {
        return Err(IrError::msg(format!(
            "matmul takes two numeric tensors of one type, found {} and {}",
            a.dtype, b.dtype
        )));
    }
    Ok(vec![TensorType::new(
        a.dtype,
        matmul_shape(&a.shape, &b.shape)?,
    )])
}

pub(crate) fn infer_matmul_integer(types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let (a, b) = (input_type(types, 0)?, input_type(types, 1)?);
    Ok(vec![TensorType::new(
        DType::I32,
        matmul_shape(&a.shape, &b.shape)?,
    )])
}

pub(crate) fn infer_qlinear_matmul(types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let (a, b) = (input_type(types, 0)?, input_type(types, 3)?);
    let dt = types.get(7).copied().flatten().map_or(a.dtype, |t| t.dtype);
    Ok(vec![TensorType::new(dt, matmul_shape(&a.shape, &b.shape)?)])
}

pub(crate) fn infer_gemm(
    types: &[Option<&TensorType>],
    trans_a: bool,
    trans_b: bool,
) -> Result<Vec<TensorType>> {
    let (a, b) = (input_type(types, 0)?, input_type(types, 1)?);
    if a.dtype != b.dtype || a.dtype == DType::Bool {
        return Err(IrError::msg(format!(
            "gemm takes two numeric tensors of one type, found {} and {}",
            a.dtype, b.dtype
        )));
    }
    let pick = |s: &Shape, t: bool, name: &str| -> Result<(Dim, Dim)> {
        match s.dims() {
            None => Ok((Dim::Unknown, Dim::Unknown)),
            Some(d) if d.len() == 2 => Ok(if t {
                (d[1].clone(), d[0].clone())
            } else {
                (d[0].clone(), d[1].clone())
            }),
            Some(d) => Err(IrError::msg(format!(
                "{name} must have rank 2, found {}",
                d.len()
            ))),
        }
    };
    let (m, ka) = pick(&a.shape, trans_a, "A")?;
    let (kb, n) = pick(&b.shape, trans_b, "B")?;
    if let (Some(x), Some(y)) = (ka.known(), kb.known()) {
        if x != y {
            return Err(IrError::msg(format!("inner dims differ: {x} and {y}")));
        }
    }
    Ok(vec![TensorType::new(a.dtype, Shape(Some(vec![m, n])))])
}

/// Concrete matmul geometry: batch shape and, per batch matrix, where A's and B's start.
struct MatMulDims {
    m: usize,
    k: usize,
    n: usize,
    a_offsets: Vec<usize>,
    b_offsets: Vec<usize>,
    out_shape: Vec<usize>,
}

fn matmul_dims(a: &[usize], b: &[usize]) -> Result<MatMulDims> {
    if a.is_empty() || b.is_empty() {
        return Err(IrError::msg("matmul operands must have rank >= 1"));
    }
    let (m, k) = if a.len() == 1 {
        (1, a[0])
    } else {
        (a[a.len() - 2], a[a.len() - 1])
    };
    let (kb, n) = if b.len() == 1 {
        (b[0], 1)
    } else {
        (b[b.len() - 2], b[b.len() - 1])
    };
    if k != kb {
        return Err(IrError::msg(format!(
            "inner dims differ: A is {a:?}, B is {b:?}"
        )));
    }
    let ab = &a[..a.len().saturating_sub(2)];
    let bb = &b[..b.len().saturating_sub(2)];
    let batch = broadcast_shapes(ab, bb)?;
    let mut out_shape = batch.clone();
    if a.len() >= 2 {
        out_shape.push(m);
    }
    if b.len() >= 2 {
        out_shape.push(n);
    }
    bounded_numel(&out_shape)?;
    let a_offsets = broadcast_index_map(ab, &batch)
        .into_iter()
        .map(|i| i * m * k)
        .collect();
    let b_offsets = broadcast_index_map(bb, &batch)
        .into_iter()
        .map(|i| i * k * n)
        .collect();
    Ok(MatMulDims {
        m,
        k,
        n,
        a_offsets,
        b_offsets,
        out_shape,
    })
}

fn matmul_core<T: Acc>(d: &MatMulDims, a: &[T], b: &[T]) -> Vec<T> {
    let (m, k, n) = (d.m, d.k, d.n);
    let batches = d.a_offsets.len();
    let mut out = vec![T::default(); batches * m * n];
    // B shared by every batch matrix and A's matrices back to back: one tall gemm.
    let b_shared = d.b_offsets.iter().all(|&o| o == 0);
    let a_contiguous = d.a_offsets.iter().enumerate().all(|(i, &o)| o == i * m * k);
    if batches > 1 && b_shared && a_contiguous {
        gemm(batches * m, n, k, a, b, &mut out);
        return out;
    }
    for (i, (&ao, &bo)) in d.a_offsets.iter().zip(&d.b_offsets).enumerate() {
        gemm(
            m,
            n,
            k,
            &a[ao..ao + m * k],
            &b[bo..bo + k * n],
            &mut out[i * m * n..(i + 1) * m * n],
        );
    }
    out
}

pub(crate) fn eval_matmul(inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    let dt = a.dtype();
    if b.dtype() != dt || dt == DType::Bool {
        return Err(IrError::msg(format!(
            "matmul takes two numeric tensors of one type, found {dt} and {}",
            b.dtype()
        )));
    }
    let d = matmul_dims(a.shape(), b.shape())?;
    // Every float type accumulates in f64 and rounds once at the end.
    let out = if dt.is_float() {
        Tensor::from_f64(
            dt,
            d.out_shape.clone(),
            &matmul_core(&d, &a.to_f64_vec(), &b.to_f64_vec()),
        )?
    } else {
        let v: Vec<i64> = matmul_core(&d, &wrapping_i64(a), &wrapping_i64(b))
            .iter()
            .map(|x| x.0)
            .collect();
        Tensor::from_i64(dt, d.out_shape.clone(), &v)?
    };
    Ok(vec![out])
}

pub(crate) fn eval_gemm(
    inputs: &[Option<Tensor>],
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Result<Vec<Tensor>> {
    let (a, b, c) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
    let dt = a.dtype();
    if b.dtype() != dt || dt == DType::Bool || c.is_some_and(|c| c.dtype() != dt) {
        return Err(IrError::msg(format!(
            "gemm takes numeric A, B and C of one type, found {dt} and {}",
            b.dtype()
        )));
    }
    if a.rank() != 2 || b.rank() != 2 {
        return Err(IrError::msg(format!(
            "A and B must be matrices, found {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let (m, k) = if trans_a {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let (kb, n) = if trans_b {
        (b.shape()[1], b.shape()[0])
    } else {
        (b.shape()[0], b.shape()[1])
    };
    if k != kb {
        return Err(IrError::msg(format!(
            "inner dims differ: A' is {m}x{k}, B' is {kb}x{n}"
        )));
    }
    bounded_numel(&[m, n])?;
    let c_vals = match c {
        Some(c) => Some(broadcast_to(c, &[m, n])?.to_f64_vec()),
        None => None,
    };
    fn product<T: Acc>(
        a: &[T],
        b: &[T],
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
    ) -> Vec<T> {
        let at = if ta { transpose(k, m, a) } else { a.to_vec() };
        let bt = if tb { transpose(n, k, b) } else { b.to_vec() };
        let mut out = vec![T::default(); m * n];
        gemm(m, n, k, &at, &bt, &mut out);
        out
    }
    let ab: Vec<f64> = if dt.is_float() {
        product(&a.to_f64_vec(), &b.to_f64_vec(), m, n, k, trans_a, trans_b)
    } else {
        product(
            &wrapping_i64(a),
            &wrapping_i64(b),
            m,
            n,
            k,
            trans_a,
            trans_b,
        )
        .into_iter()
        .map(|x| x.0 as f64)
        .collect()
    };
    let (alpha, beta) = (alpha as f64, beta as f64);
    let y: Vec<f64> = match &c_vals {
        Some(cv) => ab
            .iter()
            .zip(cv)
            .map(|(&p, &q)| alpha * p + beta * q)
            .collect(),
        None => ab.iter().map(|&p| alpha * p).collect(),
    };
    Ok(vec![Tensor::from_f64(dt, vec![m, n], &y)?])
}

fn is_8bit(d: DType) -> bool {
    matches!(d, DType::U8 | DType::I8)
}

/// A's elements minus their zero point (one, or one per row of A), as wrapping i64.
fn shift_rows(a: &Tensor, zp: Option<&Tensor>, m: usize, k: usize) -> Result<Vec<Wrapping<i64>>> {
    let mut v = wrapping_i64(a);
    if let Some(z) = zp {
        if z.dtype() != a.dtype() || (z.len() != 1 && z.len() != m) {
            return Err(IrError::msg(format!(
                "A's zero point must be one or {m} {} values, found {} {:?}",
                a.dtype(),
                z.dtype(),
                z.shape()
            )));
        }
        let zs = z.to_i64_vec();
        for (i, x) in v.iter_mut().enumerate() {
            let row = (i / k.max(1)) % m.max(1);
            *x -= Wrapping(if zs.len() == 1 { zs[0] } else { zs[row] });
        }
    }
    Ok(v)
}

/// B's elements minus their zero point (one, or one per column of B), as wrapping i64.
fn shift_cols(b: &Tensor, zp: Option<&Tensor>, n: usize) -> Result<Vec<Wrapping<i64>>> {
    let mut v = wrapping_i64(b);
    if let Some(z) = zp {
        if z.dtype() != b.dtype() || (z.len() != 1 && z.len() != n) {
            return Err(IrError::msg(format!(
                "B's zero point must be one or {n} {} values, found {} {:?}",
                b.dtype(),
                z.dtype(),
                z.shape()
            )));
        }
        let zs = z.to_i64_vec();
        for (i, x) in v.iter_mut().enumerate() {
            *x -= Wrapping(if zs.len() == 1 {
                zs[0]
            } else {
                zs[i % n.max(1)]
            });
        }
    }
    Ok(v)
}

/// The int32 product (A - a_zp)(B - b_zp), wrapping as int32 arithmetic does.
fn integer_product(
    a: &Tensor,
    b: &Tensor,
    azp: Option<&Tensor>,
    bzp: Option<&Tensor>,
) -> Result<(MatMulDims, Vec<i32>)> {
    if !is_8bit(a.dtype()) || !is_8bit(b.dtype()) {
        return Err(IrError::msg(format!(
            "A and B must be u8 or i8, found {} and {}",
            a.dtype(),
            b.dtype()
        )));
    }
    let d = matmul_dims(a.shape(), b.shape())?;
    let av = shift_rows(a, azp, d.m, d.k)?;
    let bv = shift_cols(b, bzp, d.n)?;
    let out = matmul_core(&d, &av, &bv)
        .iter()
        .map(|x| x.0 as i32)
        .collect();
    Ok((d, out))
}

pub(crate) fn eval_matmul_integer(inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
    let (d, out) = integer_product(a, b, opt_input(inputs, 2), opt_input(inputs, 3))?;
    Ok(vec![Tensor::new(d.out_shape, out)?])
}

pub(crate) fn eval_qlinear_matmul(inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let (a, a_scale, azp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
    let (b, b_scale, bzp) = (input(inputs, 3)?, input(inputs, 4)?, opt_input(inputs, 5));
    let (y_scale, yzp) = (input(inputs, 6)?, opt_input(inputs, 7));
    let (d, acc) = integer_product(a, b, azp, bzp)?;
    // The requantization multiplier, in the scales' own precision as the reference computes
    // it: a_scale · b_scale / y_scale (per column when b_scale is).
    let sd = a_scale.dtype();
    let asv = scale_values(a_scale, 1, "a_scale")?[0];
    let ysv = scale_values(y_scale, 1, "y_scale")?[0];
    let bsv = scale_values(b_scale, d.n, "b_scale")?;
    let mult: Vec<f64> = bsv
        .iter()
        .map(|&s| round_to(sd, round_to(sd, asv * s) / ysv))
        .collect();
    let (dt, zp) = match yzp {
        Some(z) if z.len() == 1 => (z.dtype(), z.to_i64_vec()[0]),
        Some(z) => {
            return Err(IrError::msg(format!(
                "y zero point must be one value, found shape {:?}",
                z.shape()
            )))
        }
        None => (a.dtype(), 0),
    };
    let q: Vec<i64> = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let mv = if mult.len() == 1 {
                mult[0]
            } else {
                mult[i % d.n.max(1)]
            };
            quantize_value(v as f64 * mv, zp, dt)
        })
        .collect::<Result<_>>()?;
    Ok(vec![Tensor::from_i64(dt, d.out_shape, &q)?])
}
