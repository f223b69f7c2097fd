//! Image, signal and normalization ops: resize, grid_sample,
//! affine_grid, conv_transpose, col2im, deform_conv, roi_align, the instance/group/
//! mean-variance norms and lrn, max_unpool, window, dft, stft, mel_weight_matrix, det.
//! One work-item per output element, each reading what it needs of its inputs, with
//! `ir::eval`'s semantics (float math in `M`).

mod conv;
mod grid;
mod norm;
mod resize;
mod sample;
mod signal;

use super::{ctype, dims, Body, Gen};
use kiln_ir::{DType, NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::Resize { .. }
            | Op::GridSample { .. }
            | Op::AffineGrid { .. }
            | Op::ConvTranspose { .. }
            | Op::Col2Im { .. }
            | Op::InstanceNorm { .. }
            | Op::GroupNorm { .. }
            | Op::MeanVarianceNormalization { .. }
            | Op::Lrn { .. }
            | Op::RoiAlign { .. }
            | Op::DeformConv { .. }
            | Op::MaxUnpool { .. }
            | Op::Window { .. }
            | Op::Dft { .. }
            | Op::Stft { .. }
            | Op::Det
            | Op::MelWeightMatrix { .. }
    )
}

pub fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    let ins = g.graph.inputs_of(n);
    Some(match op {
        Op::Resize { .. } => resize::body(g, op, &ins, shape),
        Op::GridSample { align_corners, mode, padding_mode } => grid::grid_sample(g, &ins, *align_corners, *mode, *padding_mode, g.graph.node(n).outputs[0].dtype),
        Op::AffineGrid { align_corners } => grid::affine_grid(g, &ins, *align_corners, shape),
        Op::ConvTranspose { .. } => conv::conv_transpose(g, op, &ins, shape),
        Op::Col2Im { .. } => conv::col2im(g, op, &ins, shape),
        Op::RoiAlign { .. } => sample::roi_align(g, op, &ins),
        Op::DeformConv { .. } => sample::deform_conv(g, op, &ins),
        Op::MaxUnpool { .. } => sample::max_unpool(g, op, &ins, shape),
        Op::Window { kind, periodic, output_dtype } => signal::window(*kind, *periodic, *output_dtype, shape),
        Op::Dft { inverse, onesided } => signal::dft(g, &ins, *inverse, *onesided),
        Op::Stft { .. } => signal::stft(g, &ins, shape),
        Op::Det => signal::det(g, &ins),
        Op::MelWeightMatrix { output_dtype } => signal::mel_weight_matrix(g, &ins, *output_dtype, shape),
        Op::InstanceNorm { .. } | Op::GroupNorm { .. } | Op::MeanVarianceNormalization { .. } | Op::Lrn { .. } => norm::body(g, op, &ins),
        _ => Err(format!("{} is not a spatial op", op.name())),
    }
    .map_err(|e| if k > 0 { format!("output {k}: {e}") } else { e }))
}

pub(crate) fn input(ins: &[Option<Value>], i: usize) -> Result<Value, String> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

/// A float C expression `e` (in M) stored as `d`, as eval's `from_f64_saturating` does:
/// integers round half to even and saturate, NaN becomes 0.
pub(crate) fn store(d: DType, e: &str) -> Result<String, String> {
    let ty = ctype(d).ok_or_else(|| format!("{d} tensors"))?;
    Ok(if d.is_float() {
        format!("({ty})({e})")
    } else if d == DType::Bool {
        format!("(uchar)(({e}) != 0)")
    } else {
        format!("convert_{ty}_sat_rte({e})")
    })
}

/// C array literal of `vals` (`{0}` when empty, which C does not allow).
pub(crate) fn array<T: std::fmt::Display>(vals: &[T]) -> String {
    if vals.is_empty() {
        return "{0}".into();
    }
    let v: Vec<String> = vals.iter().map(|x| x.to_string()).collect();
    format!("{{{}}}", v.join(","))
}

/// C literal of an f64 that round-trips.
pub(crate) fn lit(x: f64) -> String {
    if x.is_nan() {
        "NAN".into()
    } else if x.is_infinite() {
        if x < 0.0 { "-INFINITY".into() } else { "INFINITY".into() }
    } else {
        format!("{x:e}")
    }
}

pub(crate) fn shape_of(g: &Gen, v: Value) -> Result<Vec<usize>, String> {
    dims(g.graph, v)
}
