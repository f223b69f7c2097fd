//! Sliding-window geometry shared by convolution and pooling: attribute defaults, and the
//! output size and begin/end padding of one spatial dim under each `auto_pad` mode.

use crate::error::{IrError, Result};
use crate::op::AutoPad;
use crate::shape::Dim;

/// Attribute values above this are refused, so that products of a few of them (kernel
/// extent, window positions) can never overflow.
const MAX_ATTR: i64 = 1 << 31;

/// The window attributes of an op with `n` spatial dims, with ONNX defaults filled in.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Explicit pads, begin values then end values (zeros when absent).
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
}

fn positive(name: &str, v: &[i64], n: usize) -> Result<Vec<usize>> {
    if v.is_empty() {
        return Ok(vec![1; n]);
    }
    if v.len() != n {
        return Err(IrError::msg(format!(
            "{name} has {} values, expected {n} (one per spatial dim)",
            v.len()
        )));
    }
    v.iter()
        .map(|&x| {
            if !(1..=MAX_ATTR).contains(&x) {
                Err(IrError::msg(format!(
                    "{name} values must be in 1..=2^31, found {x}"
                )))
            } else {
                Ok(x as usize)
            }
        })
        .collect()
}

/// Explicit pads: empty means zeros; otherwise 2·n non-negative values.
pub(crate) fn parse_pads(v: &[i64], n: usize) -> Result<Vec<usize>> {
    if v.is_empty() {
        return Ok(vec![0; 2 * n]);
    }
    if v.len() != 2 * n {
        return Err(IrError::msg(format!(
            "pads has {} values, expected {}",
            v.len(),
            2 * n
        )));
    }
    v.iter()
        .map(|&x| {
            if !(0..=MAX_ATTR).contains(&x) {
                Err(IrError::msg(format!("pads must be in 0..=2^31, found {x}")))
            } else {
                Ok(x as usize)
            }
        })
        .collect()
}

impl Window {
    /// `kernel` is the attribute if given, else taken from the weights (`from_weights`).
    pub fn new(
        n: usize,
        kernel_attr: &[i64],
        from_weights: Option<Vec<usize>>,
        strides: &[i64],
        dilations: &[i64],
        pads: &[i64],
        auto_pad: AutoPad,
    ) -> Result<Window> {
        let kernel = if !kernel_attr.is_empty() {
            positive("kernel_shape", kernel_attr, n)?
        } else {
            match from_weights {
                Some(k) if k.len() == n => k,
                Some(k) => {
                    return Err(IrError::msg(format!(
                        "weights have kernel dims {k:?}, expected {n} spatial dims"
                    )))
                }
                None => return Err(IrError::msg("kernel_shape is required")),
            }
        };
        if kernel.iter().any(|&k| k as i64 > MAX_ATTR) {
            return Err(IrError::msg(format!("kernel {kernel:?} is too large")));
        }
        Ok(Window {
            kernel,
            strides: positive("strides", strides, n)?,
            dilations: positive("dilations", dilations, n)?,
            pads: parse_pads(pads, n)?,
            auto_pad,
        })
    }

    pub fn rank(&self) -> usize {
        self.kernel.len()
    }

    /// Kernel extent with dilation: (k - 1)·d + 1 (0 for an empty kernel).
    pub fn extent(&self, i: usize) -> usize {
        if self.kernel[i] == 0 {
            0
        } else {
            (self.kernel[i] - 1) * self.dilations[i] + 1
        }
    }

    /// Output size and (begin, end) padding of spatial dim `i` for input size `input`.
    /// `ceil_mode` is pooling's; convolution passes false.
    pub fn dim(&self, i: usize, input: usize, ceil_mode: bool) -> Result<(usize, usize, usize)> {
        let (s, eff) = (self.strides[i], self.extent(i));
        match self.auto_pad {
            AutoPad::NotSet => {
                let (pb, pe) = (self.pads[i], self.pads[i + self.rank()]);
                let padded = input.saturating_add(pb + pe);
                if padded < eff {
                    return Err(IrError::msg(format!(
                        "spatial dim {i}: the window ({eff}) is larger than the padded input ({padded})"
                    )));
                }
                let span = padded - eff;
                let mut out = if ceil_mode {
                    span.div_ceil(s) + 1
                } else {
                    span / s + 1
                };
                // ceil mode may not start a window in the end padding.
                if ceil_mode && (out - 1) * s >= input + pb {
                    out -= 1;
                }
                Ok((out, pb, pe))
            }
            AutoPad::Valid => {
                if input < eff {
                    return Err(IrError::msg(format!(
                        "spatial dim {i}: the window ({eff}) is larger than the input ({input})"
                    )));
                }
                Ok(((input - eff) / s + 1, 0, 0))
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = input.div_ceil(s);
                let total = ((out.max(1) - 1) * s)
                    .saturating_add(eff)
                    .saturating_sub(input);
                let pb = if self.auto_pad == AutoPad::SameUpper {
                    total / 2
                } else {
                    total - total / 2
                };
                Ok((out, pb, total - pb))
            }
        }
    }

    /// Output dims for symbolic input dims: exact where the input dim is known.
    pub fn out_dims(&self, input: &[Dim], ceil_mode: bool) -> Result<Vec<Dim>> {
        input
            .iter()
            .enumerate()
            .map(|(i, d)| match d.known() {
                Some(n) => Ok(Dim::Known(self.dim(i, n, ceil_mode)?.0)),
                None => Ok(Dim::Unknown),
            })
            .collect()
    }
}

/// Advances a row-major multi-index over `dims`; false once it wraps back to all zeros.
pub(crate) fn next_index(idx: &mut [usize], dims: &[usize]) -> bool {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < dims[d] {
            return true;
        }
        idx[d] = 0;
    }
    false
}

/// The range of output positions `o` in `0..out` whose input coordinate
/// `o·stride + offset` lies in `0..input`.
pub(crate) fn valid_range(
    out: usize,
    stride: usize,
    offset: isize,
    input: usize,
) -> (usize, usize) {
    let s = stride as isize;
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset) + s - 1) / s
    };
    let room = input as isize - offset;
    let hi = if room <= 0 { 0 } else { (room + s - 1) / s };
    let lo = (lo as usize).min(out);
    (lo, (hi as usize).clamp(lo, out))
}

/// Sizes that attributes or broadcasting can blow up from small inputs are refused above
/// this many elements.
const MAX_ELEMENTS: usize = 1 << 31;

/// The element count of `shape`, refusing more than 2^31.
pub(crate) fn bounded_numel(shape: &[usize]) -> Result<usize> {
    let n = crate::tensor::checked_numel(shape)?;
    if n > MAX_ELEMENTS {
        return Err(IrError::msg(format!(
            "shape {shape:?} has more than 2^31 elements"
        )));
    }
    Ok(n)
}
