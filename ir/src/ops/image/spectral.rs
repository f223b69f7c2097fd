//! Spectral ops: DFT (opset 20), STFT, the Hann/Hamming/Blackman windows and the mel
//! filter bank. The DFT is the plain O(n^2) sum in f64.

use super::{bounded_numel, need_float, round_to, size_from};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::WindowKind;
use crate::ops::util::{const_input, input, input_type, opt_input, scalar_f64, scalar_i64};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;
use std::f64::consts::PI;

/// An optional input; an empty tensor counts as absent.
fn given(inputs: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    opt_input(inputs, i).filter(|t| !t.is_empty())
}

/// `out_len` bins of the length-`n` DFT (or inverse DFT, scaled by 1/n) of each line of
/// `len` complex samples laid out as [outer, len, inner]; lines longer than `n` are cut,
/// shorter ones read as zero-padded. Returns (re, im) laid out as [outer, out_len, inner].
#[allow(clippy::too_many_arguments)]
fn dft_lines(
    re: &[f64],
    im: &[f64],
    outer: usize,
    len: usize,
    inner: usize,
    n: usize,
    out_len: usize,
    inverse: bool,
) -> (Vec<f64>, Vec<f64>) {
    let used = len.min(n);
    // Twiddles by (k * t) mod n keep the angle exact for large k * t.
    let sign = if inverse { 1.0 } else { -1.0 };
    let tw: Vec<(f64, f64)> = (0..n)
        .map(|m| {
            let a = sign * 2.0 * PI * m as f64 / n as f64;
            (a.cos(), a.sin())
        })
        .collect();
    let scale = if inverse { 1.0 / n as f64 } else { 1.0 };
    let total = outer * out_len * inner;
    let (mut ore, mut oim) = (vec![0.0; total], vec![0.0; total]);
    for o in 0..outer {
        for k in 0..out_len {
            for i in 0..inner {
                let (mut sr, mut si) = (0.0, 0.0);
                for t in 0..used {
                    let src = (o * len + t) * inner + i;
                    let (c, s) = tw[((k as u64 * t as u64) % n as u64) as usize];
                    sr += re[src] * c - im[src] * s;
                    si += re[src] * s + im[src] * c;
                }
                let dst = (o * out_len + k) * inner + i;
                ore[dst] = sr * scale;
                oim[dst] = si * scale;
            }
        }
    }
    (ore, oim)
}

/// Splits a trailing real (1) or complex (2) dim into real and imaginary parts.
fn split_complex(x: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let c = x.shape().last().copied().unwrap_or(0);
    let v = x.to_f64_vec();
    match c {
        1 => Ok((v.clone(), vec![0.0; v.len()])),
        2 => Ok((
            v.iter().step_by(2).copied().collect(),
            v.iter().skip(1).step_by(2).copied().collect(),
        )),
        _ => Err(IrError::msg(format!(
            "the last dim must be 1 (real) or 2 (complex), found shape {:?}",
            x.shape()
        ))),
    }
}

/// Interleaves (re, im) into a trailing dim of 2.
fn interleave(re: &[f64], im: &[f64]) -> Vec<f64> {
    re.iter().zip(im).flat_map(|(&r, &i)| [r, i]).collect()
}

/// The DFT's (axis, length, output length, output channels) for an input of `rank` whose
/// transformed dim is `len`.
fn dft_plan(
    rank: usize,
    axis: i64,
    len: Option<usize>,
    dft_length: Option<i64>,
    inverse: bool,
    onesided: bool,
) -> Result<(usize, Option<usize>, Option<usize>, usize)> {
    if rank < 2 {
        return Err(IrError::msg(
            "dft input needs a signal dim and a trailing real/complex dim",
        ));
    }
    let ax = axis.rem_euclid(rank as i64) as usize;
    if ax == rank - 1 {
        return Err(IrError::msg(format!("axis {axis} is the real/complex dim")));
    }
    let irfft = inverse && onesided;
    let n = match (dft_length, len) {
        (Some(d), _) => Some(size_from(d, "dft_length")?),
        (None, Some(l)) if irfft => Some(
            2 * l
                .checked_sub(1)
                .ok_or_else(|| IrError::msg("an empty signal has no inverse one-sided dft"))?,
        ),
        (None, Some(l)) => Some(l),
        (None, None) => None,
    };
    if n == Some(0) {
        return Err(IrError::msg("dft_length must be positive"));
    }
    let out_len = n.map(|n| if onesided && !inverse { n / 2 + 1 } else { n });
    Ok((ax, n, out_len, if irfft { 1 } else { 2 }))
}

pub(super) fn infer_dft(
    inverse: bool,
    onesided: bool,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    need_float("dft input", x.dtype)?;
    let Some(dims) = x.shape.dims() else {
        return Ok(TensorType::unknown_shape(x.dtype));
    };
    let given_type = |i: usize| types.get(i).copied().flatten().is_some();
    let axis = if given_type(2) {
        const_input(consts, 2).map(scalar_i64).transpose()?
    } else {
        Some(-2)
    };
    let dft_length = if given_type(1) {
        match const_input(consts, 1) {
            Some(t) if t.is_empty() => Some(None),
            Some(t) => Some(Some(scalar_i64(t)?)),
            None => None,
        }
    } else {
        Some(None)
    };
    let rank = dims.len();
    let mut out = dims.to_vec();
    let channels = if inverse && onesided { 1 } else { 2 };
    match (axis, dft_length) {
        (Some(axis), Some(dl)) => {
            let (ax, _, out_len, ch) = dft_plan(
                rank,
                axis,
                dims.get(axis.rem_euclid(rank.max(1) as i64) as usize)
                    .and_then(|d| d.known()),
                dl,
                inverse,
                onesided,
            )?;
            out[ax] = out_len.map_or(Dim::Unknown, Dim::Known);
            out[rank - 1] = Dim::Known(ch);
        }
        (Some(axis), None) => {
            let (ax, _, _, ch) = dft_plan(rank, axis, None, None, inverse, onesided)?;
            out[ax] = Dim::Unknown;
            out[rank - 1] = Dim::Known(ch);
        }
        (None, _) => {
            out = vec![Dim::Unknown; rank];
            if rank > 0 {
                out[rank - 1] = Dim::Known(channels);
            }
        }
    }
    Ok(TensorType::new(x.dtype, Shape(Some(out))))
}

pub(super) fn eval_dft(inverse: bool, onesided: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    need_float("dft input", x.dtype())?;
    let axis = given(inputs, 2).map(scalar_i64).transpose()?.unwrap_or(-2);
    let dft_length = given(inputs, 1).map(scalar_i64).transpose()?;
    let shape = x.shape();
    let rank = shape.len();
    let len = shape
        .get(axis.rem_euclid(rank.max(1) as i64) as usize)
        .copied();
    let (ax, n, out_len, ch) = dft_plan(rank, axis, len, dft_length, inverse, onesided)?;
    let (n, out_len) = (n.unwrap_or(0), out_len.unwrap_or(0));
    let (re, im) = split_complex(x)?;
    let mut out_shape = shape.to_vec();
    out_shape[ax] = out_len;
    out_shape[rank - 1] = ch;
    bounded_numel(&out_shape)?;
    let outer = crate::tensor::checked_numel(&shape[..ax])?;
    let inner = crate::tensor::checked_numel(&shape[ax + 1..rank - 1])?;
    let len = shape[ax];
    let vals = if ch == 1 {
        // Inverse of a one-sided spectrum (irfft): rebuild the Hermitian-symmetric full
        // spectrum from its first n/2 + 1 bins; the output is the real part.
        let half = n / 2 + 1;
        let (mut fr, mut fi) = (vec![0.0; outer * n * inner], vec![0.0; outer * n * inner]);
        for o in 0..outer {
            for k in 0..n {
                let (src_k, conj) = if k < half { (k, false) } else { (n - k, true) };
                if src_k >= len {
                    continue;
                }
                for i in 0..inner {
                    let s = (o * len + src_k) * inner + i;
                    let d = (o * n + k) * inner + i;
                    fr[d] = re[s];
                    fi[d] = if conj { -im[s] } else { im[s] };
                }
            }
        }
        dft_lines(&fr, &fi, outer, n, inner, n, n, true).0
    } else {
        let (r, i) = dft_lines(&re, &im, outer, len, inner, n, out_len, inverse);
        interleave(&r, &i)
    };
    Tensor::from_f64(x.dtype(), out_shape, &vals)
}

pub(super) fn infer_stft(
    onesided: bool,
    types: &[Option<&TensorType>],
    consts: &[Option<&Tensor>],
) -> Result<TensorType> {
    let x = input_type(types, 0)?;
    need_float("signal", x.dtype)?;
    let dims = x.shape.dims();
    let batch = dims
        .and_then(|d| d.first().cloned())
        .unwrap_or(Dim::Unknown);
    let signal_len = dims.and_then(|d| d.get(1)).and_then(|d| d.known());
    let given_type = |i: usize| types.get(i).copied().flatten().is_some();
    let frame_length: Option<usize> = if given_type(3) {
        const_input(consts, 3)
            .map(|t| scalar_i64(t).and_then(|v| size_from(v, "frame_length")))
            .transpose()?
    } else if given_type(2) {
        types[2]
            .and_then(|t| t.shape.dims())
            .and_then(|d| d.first())
            .and_then(|d| d.known())
    } else {
        signal_len
    };
    let step = const_input(consts, 1).map(scalar_i64).transpose()?;
    let frames = match (signal_len, frame_length, step) {
        (Some(l), Some(fl), Some(s)) if s > 0 && l >= fl => Dim::Known((l - fl) / s as usize + 1),
        _ => Dim::Unknown,
    };
    let bins = frame_length.map_or(Dim::Unknown, |fl| {
        Dim::Known(if onesided { fl / 2 + 1 } else { fl })
    });
    Ok(TensorType::new(
        x.dtype,
        vec![batch, frames, bins, Dim::Known(2)],
    ))
}

pub(super) fn eval_stft(onesided: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = input(inputs, 0)?;
    need_float("signal", x.dtype())?;
    let xs = x.shape();
    if xs.len() != 3 {
        return Err(IrError::msg(format!(
            "signal must be [batch, length, 1 or 2], found {xs:?}"
        )));
    }
    let (batch, len) = (xs[0], xs[1]);
    let step = scalar_i64(input(inputs, 1)?)?;
    if step < 1 {
        return Err(IrError::msg(format!(
            "frame_step must be positive, found {step}"
        )));
    }
    let window = given(inputs, 2)
        .map(|w| {
            if w.rank() != 1 {
                return Err(IrError::msg(format!(
                    "window must be 1-D, found {:?}",
                    w.shape()
                )));
            }
            Ok(w.to_f64_vec())
        })
        .transpose()?;
    let fl = match given(inputs, 3) {
        Some(t) => size_from(scalar_i64(t)?, "frame_length")?,
        None => window.as_ref().map_or(len, |w| w.len()),
    };
    if fl == 0 || fl > len {
        return Err(IrError::msg(format!(
            "frame_length {fl} must be in [1, signal length {len}]"
        )));
    }
    let window = window.unwrap_or_else(|| vec![1.0; fl]);
    let ws = window.len();
    let frames = (len - fl) / step as usize + 1;
    let bins = if onesided { fl / 2 + 1 } else { fl };
    let out_shape = vec![batch, frames, bins, 2];
    bounded_numel(&out_shape)?;
    let (re, im) = split_complex(x)?;
    // Windowed frames as [batch * frames, ws, 1] lines, zero where a frame runs past the end.
    let lines = batch * frames;
    let (mut fr, mut fi) = (vec![0.0; lines * ws], vec![0.0; lines * ws]);
    for b in 0..batch {
        for f in 0..frames {
            for t in 0..ws {
                let src = f * step as usize + t;
                if src < len {
                    let d = (b * frames + f) * ws + t;
                    fr[d] = re[b * len + src] * window[t];
                    fi[d] = im[b * len + src] * window[t];
                }
            }
        }
    }
    let (r, i) = dft_lines(&fr, &fi, lines, ws, 1, fl, bins, false);
    Tensor::from_f64(x.dtype(), out_shape, &interleave(&r, &i))
}

pub(super) fn infer_window(output_dtype: DType, consts: &[Option<&Tensor>]) -> Result<TensorType> {
    let n = match const_input(consts, 0) {
        Some(t) => Dim::Known(size_from(scalar_i64(t)?, "window size")?),
        None => Dim::Unknown,
    };
    Ok(TensorType::new(output_dtype, vec![n]))
}

pub(super) fn eval_window(
    kind: WindowKind,
    periodic: bool,
    output_dtype: DType,
    inputs: &[Option<Tensor>],
) -> Result<Tensor> {
    let size = size_from(scalar_i64(input(inputs, 0)?)?, "window size")?;
    // A periodic window is one period of a window one sample longer.
    let denom = if periodic {
        size as f64
    } else {
        size as f64 - 1.0
    };
    let vals: Vec<f64> = (0..size)
        .map(|i| {
            let n = i as f64;
            match kind {
                WindowKind::Hann => (PI * n / denom).sin().powi(2),
                WindowKind::Hamming => {
                    let alpha = 25.0 / 46.0;
                    alpha - (2.0 * PI * n / denom).cos() * (1.0 - alpha)
                }
                WindowKind::Blackman => {
                    0.42 - 0.5 * (2.0 * PI * n / denom).cos() + 0.08 * (4.0 * PI * n / denom).cos()
                }
            }
        })
        .collect();
    Tensor::from_f64(output_dtype, vec![size], &vals)
}

pub(super) fn infer_mel(output_dtype: DType, consts: &[Option<&Tensor>]) -> Result<TensorType> {
    let dim = |i: usize, f: fn(usize) -> usize| -> Result<Dim> {
        Ok(match const_input(consts, i) {
            Some(t) => Dim::Known(f(size_from(scalar_i64(t)?, "a mel_weight_matrix size")?)),
            None => Dim::Unknown,
        })
    };
    Ok(TensorType::new(
        output_dtype,
        vec![dim(1, |d| d / 2 + 1)?, dim(0, |m| m)?],
    ))
}

pub(super) fn eval_mel(output_dtype: DType, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let int_in = |i: usize| -> Result<i64> {
        let t = input(inputs, i)?;
        if t.dtype().is_float() {
            return Err(IrError::msg(format!(
                "input {i} must be an integer, found {}",
                t.dtype()
            )));
        }
        scalar_i64(t)
    };
    let mel_bins = size_from(int_in(0)?, "num_mel_bins")?;
    let dft_length = size_from(int_in(1)?, "dft_length")?;
    let sample_rate = int_in(2)?;
    if sample_rate <= 0 {
        return Err(IrError::msg(format!(
            "sample_rate must be positive, found {sample_rate}"
        )));
    }
    let lo_t = input(inputs, 3)?;
    let hi_t = input(inputs, 4)?;
    need_float("lower_edge_hertz", lo_t.dtype())?;
    let spectrogram_bins = dft_length / 2 + 1;
    let out_shape = vec![spectrogram_bins, mel_bins];
    let total = bounded_numel(&out_shape)?;
    // As ONNX's reference: log1p and the factor 2595 in the edges' own type, the rest in f64.
    let to_mel = |t: &Tensor| -> Result<f64> {
        let d = t.dtype();
        let hz = scalar_f64(t)?;
        let l = round_to(d, round_to(d, hz / 700.0).ln_1p());
        Ok(round_to(d, 2595.0 * l) / std::f64::consts::LN_10)
    };
    let (lo_mel, hi_mel) = (to_mel(lo_t)?, to_mel(hi_t)?);
    let mel_step = (hi_mel - lo_mel) / (mel_bins + 2) as f64;
    let mut edges: Vec<i64> = Vec::with_capacity(mel_bins + 2);
    for i in 0..mel_bins + 2 {
        let mel = i as f64 * mel_step + lo_mel;
        let hz = 700.0 * (mel / 2595.0 * std::f64::consts::LN_10).exp_m1();
        let bin = ((dft_length as f64 + 1.0) * hz / sample_rate as f64).floor();
        if !(bin >= 0.0 && bin < spectrogram_bins as f64) {
            return Err(IrError::msg(format!(
                "mel band edge {hz} Hz falls outside the {spectrogram_bins} spectrogram bins"
            )));
        }
        edges.push(bin as i64);
    }
    let mut out = vec![0.0f64; total];
    let at = |j: i64, i: usize| j as usize * mel_bins + i;
    for i in 0..mel_bins {
        let (lower, center, higher) = (edges[i], edges[i + 1], edges[i + 2]);
        let up = center - lower;
        if up == 0 {
            out[at(center, i)] = 1.0;
        } else {
            for j in lower..=center {
                out[at(j, i)] = (j - lower) as f64 / up as f64;
            }
        }
        let down = higher - center;
        if down > 0 {
            for j in center..higher {
                out[at(j, i)] = (higher - j) as f64 / down as f64;
            }
        }
    }
    Tensor::from_f64(output_dtype, out_shape, &out)
}
