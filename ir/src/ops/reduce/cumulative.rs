//! CumSum and CumProd: running sums and products along an axis given as a scalar input.

use super::common::lanes;
use crate::dtype::{DType, Element};
use crate::error::{IrError, Result};
use crate::op::Op;
use crate::ops::util::{input, input_type, norm_axis, scalar_i64};
use crate::shape::TensorType;
use crate::tensor::{Storable, Tensor};
use crate::with_data;

pub fn infer(_op: &Op, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let x = input_type(types, 0)?;
    if x.dtype == DType::Bool {
        return Err(IrError::msg("cumulative ops do not take bool tensors"));
    }
    let axis = input_type(types, 1)?;
    if !matches!(axis.dtype, DType::I32 | DType::I64) {
        return Err(IrError::msg(format!("the axis must be i32 or i64, found {}", axis.dtype)));
    }
    Ok(vec![x.clone()])
}

pub fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let (product, exclusive, reverse) = match op {
        Op::CumSum { exclusive, reverse } => (false, *exclusive, *reverse),
        Op::CumProd { exclusive, reverse } => (true, *exclusive, *reverse),
        _ => return Err(IrError::msg("not a cumulative op")),
    };
    let x = input(inputs, 0)?;
    let axis = scalar_i64(input(inputs, 1)?)?;
    Ok(vec![cumulate(x, axis, product, exclusive, reverse)?])
}

/// Runs the accumulation over each lane along `axis`. Integers accumulate in wrapping i64,
/// which equals wrapping in any narrower type or in u64 after the final cast; floats
/// accumulate in f64.
pub fn cumulate(x: &Tensor, axis: i64, product: bool, exclusive: bool, reverse: bool) -> Result<Tensor> {
    if x.dtype() == DType::Bool {
        return Err(IrError::msg("cumulative ops do not take bool tensors"));
    }
    let a = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = lanes(x.shape(), a);
    let float = x.dtype().is_float();
    let data = with_data!(x.data(), v, T => {
        let mut out: Vec<T> = vec![T::default(); v.len()];
        for o in 0..outer {
            for i in 0..inner {
                let idx = |j: usize| (o * n + j) * inner + i;
                let mut accf: f64 = if product { 1.0 } else { 0.0 };
                let mut acci: i64 = if product { 1 } else { 0 };
                for step in 0..n {
                    let j = if reverse { n - 1 - step } else { step };
                    let e = v[idx(j)];
                    if exclusive {
                        out[idx(j)] = if float { T::from_f64(accf) } else { T::from_i64(acci) };
                    }
                    if float {
                        accf = if product { accf * e.to_f64() } else { accf + e.to_f64() };
                    } else {
                        let ei = e.to_i64();
                        acci = if product { acci.wrapping_mul(ei) } else { acci.wrapping_add(ei) };
                    }
                    if !exclusive {
                        out[idx(j)] = if float { T::from_f64(accf) } else { T::from_i64(acci) };
                    }
                }
            }
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(x.shape().to_vec(), data)
}
