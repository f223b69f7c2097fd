//! Ops whose ONNX form differs from the IR's by opset: attributes that later opsets moved
//! to inputs become constant inputs here, and old semantics (Softmax's flatten-to-2D,
//! Upsample, per-group GroupNormalization scales) are rewritten into the IR's newest-opset
//! ops.

use super::graph::Builder;
use super::ops::{word, NodeCx};
use kiln_ir::*;

/// A constant input made from an integer-list attribute, or `None` when it is absent.
pub(crate) fn ints_input(b: &mut Builder, n: &NodeCx, attr: &str) -> Result<Option<Value>> {
    match n.attrs.ints_opt(attr)? {
        Some(v) => Ok(Some(b.const_i64(&n.sub(attr), &v)?)),
        None => Ok(None),
    }
}

/// A scalar constant of `dtype` (the dtype of the tensor it will combine with).
pub(crate) fn scalar_of(b: &mut Builder, name: &str, dtype: DType, v: f64) -> Result<Value> {
    let t = Tensor::from_f64(dtype, vec![], &[v])?;
    Ok(b.constant(name, t))
}

/// ReduceX: `axes` is an attribute before opset 13 (ReduceSum) or 18 (the others).
pub(crate) fn reduce(b: &mut Builder, n: &NodeCx, kind: ReduceKind) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let moved_at = if kind == ReduceKind::Sum { 13 } else { 18 };
    let axes = if n.opset < moved_at {
        ints_input(b, n, "axes")?
    } else {
        n.input(1)
    };
    let op = Op::Reduce {
        kind,
        keepdims: a.bool("keepdims", true)?,
        noop_with_empty_axes: a.bool("noop_with_empty_axes", false)?,
    };
    b.emit(op, &n.name, &[Some(n.req(0)?), axes], 1)
}

/// Clip before opset 11: `min` and `max` attributes become scalar inputs.
pub(crate) fn clip(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let x = n.req(0)?;
    let dtype = b.ty(x).dtype;
    let min = match n.attrs.float_opt("min")? {
        Some(v) => Some(scalar_of(b, &n.sub("min"), dtype, v as f64)?),
        None => None,
    };
    let max = match n.attrs.float_opt("max")? {
        Some(v) => Some(scalar_of(b, &n.sub("max"), dtype, v as f64)?),
        None => None,
    };
    b.emit(Op::Clip, &n.name, &[Some(x), min, max], 1)
}

/// Sum, Mean, Max, Min of any number of inputs: a chain of binary ops (Mean divides the
/// sum by the count).
pub(crate) fn variadic(
    b: &mut Builder,
    n: &NodeCx,
    op: BinaryOp,
    mean: bool,
) -> Result<Vec<Value>> {
    let mut xs = Vec::with_capacity(n.inputs.len());
    for i in 0..n.inputs.len() {
        xs.push(n.req(i)?);
    }
    let Some((&first, rest)) = xs.split_first() else {
        return Err(IrError::msg(format!(
            "{} needs at least one input",
            n.node.op_type
        )));
    };
    if rest.is_empty() {
        return Ok(vec![b.emit1(
            Op::Unary(UnaryOp::Identity),
            &n.name,
            &[Some(first)],
        )?]);
    }
    let mut acc = first;
    for (k, &x) in rest.iter().enumerate() {
        let last = k + 1 == rest.len() && !mean;
        let name = if last {
            n.name.clone()
        } else {
            n.sub(&format!("{}{k}", op.word()))
        };
        acc = b.emit1(Op::Binary(op), &name, &[Some(acc), Some(x)])?;
    }
    if mean {
        let dtype = b.ty(acc).dtype;
        let count = scalar_of(b, &n.sub("count"), dtype, xs.len() as f64)?;
        acc = b.emit1(
            Op::Binary(BinaryOp::Div),
            &n.name,
            &[Some(acc), Some(count)],
        )?;
    }
    Ok(vec![acc])
}

/// Softmax, LogSoftmax and Hardmax before opset 13 work on the input flattened to 2-D at
/// `axis` (default 1): Flatten, the op on axis 1, and a Reshape back to the input's shape
/// (taken with a Shape node, so dynamic shapes work). When the axis is the last one the two
/// semantics agree and the op is used directly.
pub(crate) fn flat_softmax(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let make = |axis: i64| match n.node.op_type.as_str() {
        "Softmax" => Op::Softmax { axis },
        "LogSoftmax" => Op::LogSoftmax { axis },
        _ => Op::Hardmax { axis },
    };
    let x = n.req(0)?;
    let axis = n.attrs.int("axis", 1)?;
    if let Some(rank) = b.ty(x).shape.rank() {
        let r = rank as i64;
        let last = rank > 0 && (axis == r - 1 || axis == -1);
        if last {
            return Ok(vec![b.emit1(make(-1), &n.name, &[Some(x)])?]);
        }
    }
    let shape = b.emit1(
        Op::Shape {
            start: 0,
            end: None,
        },
        &n.sub("shape"),
        &[Some(x)],
    )?;
    let flat = b.emit1(Op::Flatten { axis }, &n.sub("flatten"), &[Some(x)])?;
    let y = b.emit1(
        make(1),
        &n.sub(&n.node.op_type.to_ascii_lowercase()),
        &[Some(flat)],
    )?;
    Ok(vec![b.emit1(
        Op::Reshape { allowzero: false },
        &n.name,
        &[Some(y), Some(shape)],
    )?])
}

/// TopK: `k` is an attribute before opset 10.
pub(crate) fn topk(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let k = if n.opset < 10 {
        let k = a.req_int("k")?;
        Some(b.const_i64(&n.sub("k"), &[k])?)
    } else {
        n.input(1)
    };
    let op = Op::TopK {
        axis: a.int("axis", -1)?,
        largest: a.bool("largest", true)?,
        sorted: a.bool("sorted", true)?,
    };
    b.emit(op, &n.name, &[Some(n.req(0)?), k], n.n_out())
}

/// Inference BatchNormalization. Training mode and its extra outputs are refused; opset
/// 7-8 `spatial=0` (per-activation statistics) is refused.
pub(crate) fn batch_norm(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    if a.bool("training_mode", false)? {
        return Err(IrError::msg(
            "BatchNormalization in training mode (training_mode=1) is not supported",
        ));
    }
    if n.opset < 9 && !a.bool("spatial", true)? {
        return Err(IrError::msg(
            "BatchNormalization with spatial=0 is not supported",
        ));
    }
    if a.has("is_test") && !a.bool("is_test", true)? {
        return Err(IrError::msg(
            "BatchNormalization in training mode (is_test=0) is not supported",
        ));
    }
    if n.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(IrError::msg(
            "BatchNormalization training-mode outputs (running or saved mean and variance) are not supported",
        ));
    }
    let op = Op::BatchNorm {
        epsilon: a.float("epsilon", 1e-5)?,
    };
    b.emit(op, &n.name, &n.first(5), 1)
}

/// GroupNormalization opsets 18-20 take scale and bias per group; the IR (opset 21) takes
/// them per channel, so each is repeated C/G times. Needs the channel count statically.
pub(crate) fn group_norm_per_group(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let g = a.req_int("num_groups")?;
    let x = n.req(0)?;
    let c = b
        .ty(x)
        .shape
        .dims()
        .and_then(|d| d.get(1))
        .and_then(|d| d.known());
    let Some(c) = c else {
        return Err(IrError::msg(
            "GroupNormalization before opset 21 needs the channel dimension of its input known statically",
        ));
    };
    let c = c as i64;
    if g <= 0 || c % g != 0 {
        return Err(IrError::msg(format!(
            "num_groups {g} does not divide the {c} channels"
        )));
    }
    let mut per_channel = Vec::with_capacity(2);
    for (i, what) in [(1usize, "scale"), (2, "bias")] {
        let v = n.req(i)?;
        let s1 = b.const_i64(&n.sub(&format!("{what}_groups")), &[g, 1])?;
        let s2 = b.const_i64(&n.sub(&format!("{what}_repeat")), &[g, c / g])?;
        let s3 = b.const_i64(&n.sub(&format!("{what}_channels")), &[c])?;
        let r = b.emit1(
            Op::Reshape { allowzero: false },
            &n.sub(&format!("{what}_reshape")),
            &[Some(v), Some(s1)],
        )?;
        let e = b.emit1(
            Op::Expand,
            &n.sub(&format!("{what}_expand")),
            &[Some(r), Some(s2)],
        )?;
        per_channel.push(b.emit1(
            Op::Reshape { allowzero: false },
            &n.sub(&what.to_string()),
            &[Some(e), Some(s3)],
        )?);
    }
    let op = Op::GroupNorm {
        epsilon: a.float("epsilon", 1e-5)?,
        num_groups: g,
        stash_type: DType::F32,
    };
    b.emit(
        op,
        &n.name,
        &[Some(x), Some(per_channel[0]), Some(per_channel[1])],
        1,
    )
}

/// RNN, LSTM, GRU. A missing `hidden_size` is read from R's shape [dirs, gates·H, H].
pub(crate) fn rnn(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let kind = match n.node.op_type.as_str() {
        "LSTM" => RnnKind::Lstm,
        "GRU" => RnnKind::Gru,
        _ => RnnKind::Rnn,
    };
    let hidden_size = match a.int_opt("hidden_size")? {
        Some(h) => h,
        None => {
            let r = n.req(2)?;
            let h = b
                .ty(r)
                .shape
                .dims()
                .and_then(|d| d.get(2))
                .and_then(|d| d.known());
            h.ok_or_else(|| IrError::msg("hidden_size is missing and R's shape does not give it"))?
                as i64
        }
    };
    let op = Op::Rnn {
        kind,
        direction: word(a, "direction", "forward", Direction::from_word)?,
        hidden_size,
        activations: a.strings_opt("activations")?.unwrap_or_default(),
        activation_alpha: a.floats_opt("activation_alpha")?.unwrap_or_default(),
        activation_beta: a.floats_opt("activation_beta")?.unwrap_or_default(),
        clip: a.float_opt("clip")?,
        layout: a.int("layout", 0)?,
        input_forget: a.bool("input_forget", false)?,
        linear_before_reset: a.bool("linear_before_reset", false)?,
    };
    let arity = if kind == RnnKind::Lstm { 8 } else { 6 };
    b.emit(op, &n.name, &n.first(arity), n.n_out())
}

/// Squeeze and Unsqueeze: `axes` is an attribute before opset 13.
pub(crate) fn squeeze(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let axes = if n.opset < 13 {
        ints_input(b, n, "axes")?
    } else {
        n.input(1)
    };
    let op = if n.node.op_type == "Squeeze" {
        Op::Squeeze
    } else {
        Op::Unsqueeze
    };
    b.emit(op, &n.name, &[Some(n.req(0)?), axes], 1)
}

/// Split: sizes are an attribute before opset 13; the output count is the node's.
pub(crate) fn split(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let sizes = if n.opset < 13 {
        ints_input(b, n, "split")?
    } else {
        n.input(1)
    };
    if let Some(k) = a.int_opt("num_outputs")? {
        if k != n.n_out() as i64 {
            return Err(IrError::msg(format!(
                "num_outputs is {k} but the node has {} outputs",
                n.n_out()
            )));
        }
    }
    b.emit(
        Op::Split {
            axis: a.int("axis", 0)?,
        },
        &n.name,
        &[Some(n.req(0)?), sizes],
        n.n_out(),
    )
}

/// Slice before opset 10: starts, ends and axes are attributes.
pub(crate) fn slice(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    if !a.has("starts") || !a.has("ends") {
        return Err(IrError::msg(
            "Slice before opset 10 needs the `starts` and `ends` attributes",
        ));
    }
    let starts = ints_input(b, n, "starts")?;
    let ends = ints_input(b, n, "ends")?;
    let axes = ints_input(b, n, "axes")?;
    b.emit(
        Op::Slice,
        &n.name,
        &[Some(n.req(0)?), starts, ends, axes, None],
        1,
    )
}

/// Pad before opset 11: pads, mode and the fill value are attributes.
pub(crate) fn pad(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let x = n.req(0)?;
    let pads = a
        .ints_opt("pads")?
        .ok_or_else(|| IrError::msg("Pad before opset 11 needs the `pads` attribute"))?;
    let pads = b.const_i64(&n.sub("pads"), &pads)?;
    let mode = word(a, "mode", "constant", PadMode::from_word)?;
    let dtype = b.ty(x).dtype;
    let value = scalar_of(b, &n.sub("value"), dtype, a.float("value", 0.0)? as f64)?;
    b.emit(
        Op::Pad { mode },
        &n.name,
        &[Some(x), Some(pads), Some(value), None],
        1,
    )
}

/// Upsample (opsets 1-9) and Resize-10: nearest (rounding down) or linear interpolation
/// with asymmetric coordinates, scales from an attribute (opsets 7-8) or the second input.
pub(crate) fn upsample(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let mode = match a.string("mode", "nearest")?.to_ascii_lowercase().as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        other => {
            return Err(IrError::msg(format!(
                "attribute `mode` has unsupported value `{other}`"
            )))
        }
    };
    let scales = if n.opset < 7 {
        // Upsample-1: a 4-D [N, C, H, W] input and one scale per spatial axis.
        let h = a
            .float_opt("height_scale")?
            .ok_or_else(|| IrError::msg("Upsample before opset 7 needs `height_scale`"))?;
        let w = a
            .float_opt("width_scale")?
            .ok_or_else(|| IrError::msg("Upsample before opset 7 needs `width_scale`"))?;
        let x = n.req(0)?;
        if let Some(r) = b.ty(x).shape.rank() {
            if r != 4 {
                return Err(IrError::msg(format!(
                    "Upsample before opset 7 takes a 4-D input, got rank {r}"
                )));
            }
        }
        let t = Tensor::new(vec![4], vec![1f32, 1.0, h, w])?;
        b.constant(&n.sub("scales"), t)
    } else if n.opset < 9 {
        let s = a
            .floats_opt("scales")?
            .ok_or_else(|| IrError::msg("Upsample before opset 9 needs the `scales` attribute"))?;
        let t = Tensor::new(vec![s.len()], s)?;
        b.constant(&n.sub("scales"), t)
    } else {
        n.req(1)?
    };
    let op = Op::Resize {
        antialias: false,
        axes: vec![],
        coordinate_transformation_mode: CoordinateTransform::Asymmetric,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        keep_aspect_ratio_policy: KeepAspectRatio::Stretch,
        mode,
        nearest_mode: NearestMode::Floor,
    };
    b.emit(op, &n.name, &[Some(n.req(0)?), None, Some(scales), None], 1)
}

/// DFT-17: `axis` is an attribute (default 1); later it is a scalar input.
pub(crate) fn dft(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let axis = b.constant(&n.sub("axis"), Tensor::scalar(a.int("axis", 1)?));
    let op = Op::Dft {
        inverse: a.bool("inverse", false)?,
        onesided: a.bool("onesided", false)?,
    };
    b.emit(op, &n.name, &[Some(n.req(0)?), n.input(1), Some(axis)], 1)
}

/// Dropout is the identity at inference. Before opset 12 the ratio is an attribute (not
/// needed); before opset 10 the mask has the input's type, not bool.
pub(crate) fn dropout(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let op = Op::Dropout {
        seed: n.attrs.int_opt("seed")?,
    };
    let ins = if n.opset < 12 { n.first(1) } else { n.first(3) };
    let outs = b.emit(op, &n.name, &ins, n.n_out())?;
    if n.opset < 10 {
        if let (Some(&y), Some(&mask)) = (outs.first(), outs.get(1)) {
            let to = b.ty(y).dtype;
            let mask = b.emit1(Op::Cast { to }, &n.sub("mask"), &[Some(mask)])?;
            return Ok(vec![y, mask]);
        }
    }
    Ok(outs)
}
