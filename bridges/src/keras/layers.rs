//! The table from Keras layer classes to IR ops. Keras tensors stay in Keras's own layout
//! (channels last); ops the IR defines on NCHW are wrapped in transposes.

use super::model::{str_of, Ctx};
use super::{KErr, KResult};
use kiln_ir::{
    AutoPad, BinaryOp, CoordinateTransform, DType, GeluApproximation, KeepAspectRatio, NearestMode, Op, PoolKind,
    ReduceKind, ResizeMode, Tensor, UnaryOp, Value,
};
use serde_json::Value as Json;

mod rnn;

pub(crate) fn lower(ctx: &mut Ctx, class: &str, name: &str, cfg: &Json, ins: Vec<Value>, kwargs: &Json) -> KResult<Vec<Value>> {
    let one = |ins: &[Value]| -> KResult<Value> {
        match ins {
            [x] => Ok(*x),
            _ => Err(KErr::at(name, format!("{class} takes one input, it is called with {}", ins.len()))),
        }
    };
    let y = match class {
        "Dense" => {
            let x = one(&ins)?;
            let y = dense(ctx, name, cfg, x)?;
            activation(ctx, name, cfg.get("activation"), y)?
        }
        "Conv1D" | "Conv2D" | "Conv3D" => {
            let x = one(&ins)?;
            let y = conv(ctx, name, cfg, x, false)?;
            activation(ctx, name, cfg.get("activation"), y)?
        }
        "DepthwiseConv2D" | "DepthwiseConv1D" => {
            let x = one(&ins)?;
            let y = conv(ctx, name, cfg, x, true)?;
            activation(ctx, name, cfg.get("activation"), y)?
        }
        "SeparableConv2D" | "SeparableConv1D" => {
            let x = one(&ins)?;
            let y = separable(ctx, name, cfg, x)?;
            activation(ctx, name, cfg.get("activation"), y)?
        }
        "Conv2DTranspose" | "Conv1DTranspose" => {
            let x = one(&ins)?;
            let y = conv_transpose(ctx, name, cfg, x)?;
            activation(ctx, name, cfg.get("activation"), y)?
        }
        "BatchNormalization" => batch_norm(ctx, name, cfg, one(&ins)?)?,
        "LayerNormalization" => layer_norm(ctx, name, cfg, one(&ins)?)?,
        "Activation" => activation(ctx, name, cfg.get("activation"), one(&ins)?)?,
        "ReLU" => relu_layer(ctx, name, cfg, one(&ins)?)?,
        "LeakyReLU" => {
            let alpha = num(cfg, "negative_slope").or_else(|| num(cfg, "alpha")).unwrap_or(0.3);
            ctx.add(name, Op::LeakyRelu { alpha: alpha as f32 }, &[one(&ins)?])?
        }
        "ELU" => ctx.add(name, Op::Elu { alpha: num(cfg, "alpha").unwrap_or(1.0) as f32 }, &[one(&ins)?])?,
        "PReLU" => {
            let x = one(&ins)?;
            let w = single_weight(ctx, name, class, 1)?;
            let a = ctx.constant(name, w);
            ctx.add(name, Op::Binary(BinaryOp::PRelu), &[x, a])?
        }
        "Softmax" => {
            let x = one(&ins)?;
            let axis = cfg.get("axis").and_then(|a| a.as_i64().or_else(|| a.as_array().and_then(|l| l.first()?.as_i64())));
            ctx.add(name, Op::Softmax { axis: axis.unwrap_or(-1) }, &[x])?
        }
        "MaxPooling1D" | "MaxPooling2D" | "MaxPooling3D" | "AveragePooling1D" | "AveragePooling2D" | "AveragePooling3D" => {
            pool(ctx, name, class, cfg, one(&ins)?)?
        }
        "GlobalAveragePooling1D" | "GlobalAveragePooling2D" | "GlobalAveragePooling3D" | "GlobalMaxPooling1D"
        | "GlobalMaxPooling2D" | "GlobalMaxPooling3D" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let r = ctx.rank(name, x)? as i64;
            let axes: Vec<i64> = (1..r - 1).collect();
            let kind = if class.starts_with("GlobalMax") { ReduceKind::Max } else { ReduceKind::Mean };
            let keepdims = cfg.get("keepdims").and_then(|k| k.as_bool()).unwrap_or(false);
            let a = ctx.const_i64(name, &axes)?;
            ctx.add(name, Op::Reduce { kind, keepdims, noop_with_empty_axes: false }, &[x, a])?
        }
        "ZeroPadding1D" | "ZeroPadding2D" | "ZeroPadding3D" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let r = ctx.rank(name, x)?;
            let pads = pair_list(name, cfg.get("padding"), r.saturating_sub(2))?;
            let mut v = vec![0i64; 2 * r];
            for (i, (b, e)) in pads.iter().enumerate() {
                v[1 + i] = *b;
                v[r + 1 + i] = *e;
            }
            let p = ctx.const_i64(name, &v)?;
            ctx.add(name, Op::Pad { mode: kiln_ir::PadMode::Constant }, &[x, p])?
        }
        "Cropping1D" | "Cropping2D" | "Cropping3D" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let r = ctx.rank(name, x)?;
            let crops = pair_list(name, cfg.get("cropping"), r.saturating_sub(2))?;
            let dims = ctx.ty(x).shape.dims().map(|d| d.to_vec()).unwrap_or_default();
            let mut starts = Vec::new();
            let mut ends = Vec::new();
            let mut axes = Vec::new();
            for (i, (b, e)) in crops.iter().enumerate() {
                starts.push(*b);
                // A negative end counts from the back, which needs no static size.
                ends.push(if *e == 0 { i64::MAX } else { -*e });
                axes.push(1 + i as i64);
                let _ = &dims;
            }
            let s = ctx.const_i64(name, &starts)?;
            let e = ctx.const_i64(name, &ends)?;
            let a = ctx.const_i64(name, &axes)?;
            ctx.add(name, Op::Slice, &[x, s, e, a])?
        }
        "Add" | "Subtract" | "Multiply" | "Maximum" | "Minimum" | "Average" => {
            if ins.len() < 2 && class != "Add" && class != "Multiply" {
                return Err(KErr::at(name, format!("{class} needs at least two inputs")));
            }
            let op = match class {
                "Add" | "Average" => BinaryOp::Add,
                "Subtract" => BinaryOp::Sub,
                "Multiply" => BinaryOp::Mul,
                "Maximum" => BinaryOp::Max,
                _ => BinaryOp::Min,
            };
            let (first, rest) = ins.split_first().ok_or_else(|| KErr::at(name, "no inputs"))?;
            let mut acc = *first;
            for v in rest {
                acc = ctx.add(name, Op::Binary(op), &[acc, *v])?;
            }
            if class == "Average" {
                let dt = ctx.ty(acc).dtype;
                let k = Tensor::from_f64(dt, vec![], &[1.0 / ins.len() as f64]).map_err(|e| KErr::at(name, e.message))?;
                let k = ctx.constant(name, k);
                acc = ctx.add(name, Op::Binary(BinaryOp::Mul), &[acc, k])?;
            }
            acc
        }
        "Concatenate" => {
            let axis = cfg.get("axis").and_then(|a| a.as_i64()).unwrap_or(-1);
            ctx.add(name, Op::Concat { axis }, &ins)?
        }
        "Flatten" => {
            channels_last(name, cfg)?;
            ctx.add(name, Op::Flatten { axis: 1 }, &[one(&ins)?])?
        }
        "Reshape" => {
            let x = one(&ins)?;
            let target = int_list(name, cfg.get("target_shape"))?;
            let mut shape = vec![0i64];
            shape.extend(target);
            let s = ctx.const_i64(name, &shape)?;
            ctx.add(name, Op::Reshape { allowzero: false }, &[x, s])?
        }
        "Permute" => {
            let dims = int_list(name, cfg.get("dims"))?;
            let mut perm = vec![0i64];
            perm.extend(dims);
            ctx.add(name, Op::Transpose { perm: Some(perm) }, &[one(&ins)?])?
        }
        "RepeatVector" => {
            let x = one(&ins)?;
            let n = cfg.get("n").and_then(|n| n.as_i64()).ok_or_else(|| KErr::at(name, "RepeatVector has no `n`"))?;
            let a = ctx.const_i64(name, &[1])?;
            let u = ctx.add(name, Op::Unsqueeze, &[x, a])?;
            let reps = ctx.const_i64(name, &[1, n, 1])?;
            ctx.add(name, Op::Tile, &[u, reps])?
        }
        "Dropout" | "SpatialDropout1D" | "SpatialDropout2D" | "SpatialDropout3D" | "GaussianDropout" | "GaussianNoise"
        | "AlphaDropout" | "ActivityRegularization" | "Identity" | "Masking" => {
            ctx.add(name, Op::Unary(UnaryOp::Identity), &[one(&ins)?])?
        }
        "Embedding" => {
            let x = one(&ins)?;
            let w = single_weight(ctx, name, class, 1)?;
            let w = ctx.constant(name, w);
            let idx = if ctx.ty(x).dtype.is_float() { ctx.add(name, Op::Cast { to: DType::I64 }, &[x])? } else { x };
            ctx.add(name, Op::Gather { axis: 0 }, &[w, idx])?
        }
        "Rescaling" => {
            let x = one(&ins)?;
            let scale = num(cfg, "scale").ok_or_else(|| KErr::at(name, "Rescaling needs a scalar `scale`"))?;
            let offset = num(cfg, "offset").unwrap_or(0.0);
            let s = ctx.const_f32(name, vec![], vec![scale as f32])?;
            let o = ctx.const_f32(name, vec![], vec![offset as f32])?;
            let y = ctx.add(name, Op::Binary(BinaryOp::Mul), &[x, s])?;
            ctx.add(name, Op::Binary(BinaryOp::Add), &[y, o])?
        }
        "Normalization" => normalization(ctx, name, cfg, one(&ins)?)?,
        "UpSampling1D" | "UpSampling2D" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let r = ctx.rank(name, x)?;
            let size = match cfg.get("size") {
                Some(Json::Number(n)) => vec![n.as_f64().unwrap_or(2.0); r - 2],
                other => int_list(name, other)?.into_iter().map(|v| v as f64).collect(),
            };
            let bilinear = str_of(cfg, "interpolation") == Some("bilinear");
            let mut scales = vec![1.0f32];
            scales.extend(size.iter().map(|&s| s as f32));
            scales.push(1.0);
            let sc = ctx.const_f32(name, vec![scales.len()], scales)?;
            let (mode, ct) = if bilinear {
                (ResizeMode::Linear, CoordinateTransform::HalfPixel)
            } else {
                (ResizeMode::Nearest, CoordinateTransform::Asymmetric)
            };
            ctx.add_n(name, resize_op(mode, ct), &[Some(x), None, Some(sc), None], 1)?[0]
        }
        "Resizing" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let h = cfg.get("height").and_then(|v| v.as_i64()).ok_or_else(|| KErr::at(name, "Resizing needs `height`"))?;
            let w = cfg.get("width").and_then(|v| v.as_i64()).ok_or_else(|| KErr::at(name, "Resizing needs `width`"))?;
            let (mode, ct) = match str_of(cfg, "interpolation").unwrap_or("bilinear") {
                "bilinear" => (ResizeMode::Linear, CoordinateTransform::HalfPixel),
                "nearest" => (ResizeMode::Nearest, CoordinateTransform::HalfPixel),
                "bicubic" => (ResizeMode::Cubic, CoordinateTransform::HalfPixel),
                other => return Err(KErr::at(name, format!("Resizing interpolation `{other}` is not supported"))),
            };
            let shape = ctx.add(name, Op::Shape { start: 0, end: None }, &[x])?;
            let s0 = ctx.const_i64(name, &[0])?;
            let s1 = ctx.const_i64(name, &[1])?;
            let n = ctx.add_n(name, Op::Slice, &[Some(shape), Some(s0), Some(s1)], 1)?[0];
            let st = ctx.const_i64(name, &[3])?;
            let en = ctx.const_i64(name, &[4])?;
            let c = ctx.add_n(name, Op::Slice, &[Some(shape), Some(st), Some(en)], 1)?[0];
            let hw = ctx.const_i64(name, &[h, w])?;
            let sizes = ctx.add(name, Op::Concat { axis: 0 }, &[n, hw, c])?;
            let mut op = resize_op(mode, ct);
            if let Op::Resize { nearest_mode, cubic_coeff_a, .. } = &mut op {
                *nearest_mode = NearestMode::RoundPreferCeil;
                *cubic_coeff_a = -0.5;
            }
            ctx.add_n(name, op, &[Some(x), None, None, Some(sizes)], 1)?[0]
        }
        "LSTM" | "GRU" | "SimpleRNN" => return rnn::recurrent(ctx, name, class, cfg, one(&ins)?),
        "Bidirectional" => return rnn::bidirectional(ctx, name, cfg, one(&ins)?),
        "MultiHeadAttention" => super::layers::attention(ctx, name, cfg, &ins, kwargs)?,
        "TimeDistributed" => {
            let inner = cfg.get("layer").ok_or_else(|| KErr::at(name, "TimeDistributed has no inner `layer`"))?;
            let iclass = str_of(inner, "class_name").unwrap_or("");
            let icfg = inner.get("config").unwrap_or(&Json::Null);
            let x = one(&ins)?;
            match iclass {
                // These act on the last axis only, so the time axis needs no folding.
                "Dense" => {
                    let y = dense_with(ctx, name, "TimeDistributed", icfg, x)?;
                    activation(ctx, name, icfg.get("activation"), y)?
                }
                "Activation" | "Dropout" => return lower(ctx, iclass, name, icfg, vec![x], kwargs),
                other => return Err(KErr::at(name, format!("TimeDistributed over {other} is not supported"))),
            }
        }
        "InputLayer" => one(&ins)?,
        other => return Err(KErr::at(name, format!("layer class `{other}` is not supported"))),
    };
    Ok(vec![y])
}

pub(crate) fn num(cfg: &Json, key: &str) -> Option<f64> {
    cfg.get(key).and_then(|v| v.as_f64())
}

fn channels_last(name: &str, cfg: &Json) -> KResult<()> {
    match str_of(cfg, "data_format") {
        None | Some("channels_last") => Ok(()),
        Some(f) => Err(KErr::at(name, format!("data_format `{f}` is not supported (only channels_last)"))),
    }
}

fn int_list(name: &str, j: Option<&Json>) -> KResult<Vec<i64>> {
    let a = j.and_then(|j| j.as_array()).ok_or_else(|| KErr::at(name, "expected a list of integers in the config"))?;
    a.iter()
        .map(|v| v.as_i64().ok_or_else(|| KErr::at(name, format!("`{v}` is not an integer"))))
        .collect()
}

/// An int, a list of ints, or a list of (before, after) pairs → one pair per spatial axis.
fn pair_list(name: &str, j: Option<&Json>, n: usize) -> KResult<Vec<(i64, i64)>> {
    let bad = || KErr::at(name, "padding/cropping is not an int, a list of ints or a list of pairs");
    match j {
        Some(Json::Number(k)) => {
            let k = k.as_i64().ok_or_else(bad)?;
            Ok(vec![(k, k); n])
        }
        Some(Json::Array(a)) if n == 1 && a.len() == 2 && a.iter().all(|v| v.is_i64()) => {
            Ok(vec![(a[0].as_i64().ok_or_else(bad)?, a[1].as_i64().ok_or_else(bad)?)])
        }
        Some(Json::Array(a)) if a.len() == n => a
            .iter()
            .map(|v| match v {
                Json::Number(k) => {
                    let k = k.as_i64().ok_or_else(bad)?;
                    Ok((k, k))
                }
                Json::Array(p) if p.len() == 2 => Ok((p[0].as_i64().ok_or_else(bad)?, p[1].as_i64().ok_or_else(bad)?)),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// Weights of the layer; `n` of them exactly.
fn weights(ctx: &Ctx, name: &str, class: &str, n: usize) -> KResult<Vec<Tensor>> {
    let w = ctx.store.layer_weights(name, class)?;
    if w.len() != n {
        return Err(KErr::at(name, format!("expected {n} weights for this {class}, the file has {}", w.len())));
    }
    Ok(w)
}

fn single_weight(ctx: &Ctx, name: &str, class: &str, n: usize) -> KResult<Tensor> {
    let mut w = weights(ctx, name, class, n)?;
    Ok(w.swap_remove(0))
}

fn check_shape(name: &str, what: &str, t: &Tensor, want: &[usize]) -> KResult<()> {
    if t.shape() != want {
        return Err(KErr::at(name, format!("{what} has shape {:?}, expected {want:?}", t.shape())));
    }
    Ok(())
}

fn use_bias(cfg: &Json) -> bool {
    cfg.get("use_bias").and_then(|b| b.as_bool()).unwrap_or(true)
}

/// Permutes a tensor's axes (host side, for weights).
pub(crate) fn permute(name: &str, t: &Tensor, perm: &[usize]) -> KResult<Tensor> {
    let shape = t.shape();
    if perm.len() != shape.len() {
        return Err(KErr::at(name, "weight rank mismatch"));
    }
    let new_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let src = t.as_slice::<f32>().map_err(|e| KErr::at(name, e.message))?;
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let mut out = Vec::with_capacity(src.len());
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..src.len() {
        let off: usize = idx.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
        out.push(src[off]);
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < new_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Tensor::new(new_shape, out).map_err(|e| KErr::at(name, e.message))
}

fn dense(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    dense_with(ctx, name, "Dense", cfg, x)
}

fn dense_with(ctx: &mut Ctx, name: &str, class: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let units = cfg.get("units").and_then(|u| u.as_u64()).ok_or_else(|| KErr::at(name, "Dense has no `units`"))? as usize;
    let bias = use_bias(cfg);
    let w = weights(ctx, name, class, if bias { 2 } else { 1 })?;
    let k = &w[0];
    if k.rank() != 2 || k.shape()[1] != units {
        return Err(KErr::at(name, format!("kernel has shape {:?}, expected (in, {units})", k.shape())));
    }
    let kv = ctx.constant(name, k.clone());
    let mut y = ctx.add(name, Op::MatMul, &[x, kv])?;
    if bias {
        check_shape(name, "bias", &w[1], &[units])?;
        let b = ctx.constant(name, w[1].clone());
        y = ctx.add(name, Op::Binary(BinaryOp::Add), &[y, b])?;
    }
    Ok(y)
}

pub(crate) fn to_nchw(ctx: &mut Ctx, name: &str, x: Value) -> KResult<Value> {
    let r = ctx.rank(name, x)? as i64;
    let mut perm = vec![0, r - 1];
    perm.extend(1..r - 1);
    ctx.add(name, Op::Transpose { perm: Some(perm) }, &[x])
}

pub(crate) fn from_nchw(ctx: &mut Ctx, name: &str, x: Value) -> KResult<Value> {
    let r = ctx.rank(name, x)? as i64;
    let mut perm = vec![0];
    perm.extend(2..r);
    perm.push(1);
    ctx.add(name, Op::Transpose { perm: Some(perm) }, &[x])
}

fn spatial(name: &str, cfg: &Json, key: &str, n: usize, default: i64) -> KResult<Vec<i64>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(vec![default; n]),
        Some(Json::Number(k)) => Ok(vec![k.as_i64().ok_or_else(|| KErr::at(name, format!("bad `{key}`")))?; n]),
        other => {
            let v = int_list(name, other)?;
            if v.len() != n {
                return Err(KErr::at(name, format!("`{key}` has {} entries for {n} spatial axes", v.len())));
            }
            Ok(v)
        }
    }
}

fn padding(name: &str, cfg: &Json) -> KResult<AutoPad> {
    match str_of(cfg, "padding").unwrap_or("valid") {
        "valid" => Ok(AutoPad::Valid),
        // TF puts the odd pixel of "same" padding at the end, as SAME_UPPER does.
        "same" => Ok(AutoPad::SameUpper),
        p => Err(KErr::at(name, format!("padding `{p}` is not supported"))),
    }
}

/// Conv1D/2D/3D and DepthwiseConv: Keras kernel (k..., in/groups, out) or, depthwise,
/// (k..., in, multiplier) → IR weights (out, in/groups, k...).
fn conv(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value, depthwise: bool) -> KResult<Value> {
    channels_last(name, cfg)?;
    let r = ctx.rank(name, x)?;
    if r < 3 {
        return Err(KErr::at(name, "convolution input must have a batch, spatial and channel axis"));
    }
    let ns = r - 2;
    let bias = use_bias(cfg);
    let class = if depthwise { "DepthwiseConv2D" } else { "Conv2D" };
    let w = weights(ctx, name, class, if bias { 2 } else { 1 })?;
    let k = &w[0];
    if k.rank() != ns + 2 {
        return Err(KErr::at(name, format!("kernel has shape {:?}, expected rank {}", k.shape(), ns + 2)));
    }
    let kshape = k.shape().to_vec();
    let cin = kshape[ns];
    let cout_k = kshape[ns + 1];
    let (kernel, group, cout) = if depthwise {
        // (k..., in, mult) → (k..., in*mult, 1): output channel c*mult + m, one group per input channel.
        let mut s = kshape[..ns].to_vec();
        s.push(cin * cout_k);
        s.push(1);
        (k.reshape(s).map_err(|e| KErr::at(name, e.message))?, cin as i64, cin * cout_k)
    } else {
        let groups = cfg.get("groups").and_then(|g| g.as_i64()).unwrap_or(1);
        (k.clone(), groups, cout_k)
    };
    // Depthwise kernels are already (k..., in*mult, 1): their out axis is the first of the two.
    let mut perm = if depthwise { vec![ns, ns + 1] } else { vec![ns + 1, ns] };
    perm.extend(0..ns);
    let kernel = permute(name, &kernel, &perm)?;
    let strides = spatial(name, cfg, "strides", ns, 1)?;
    let dilations = spatial(name, cfg, "dilation_rate", ns, 1)?;
    let mut xin = x;
    let (auto_pad, pads) = if str_of(cfg, "padding") == Some("causal") {
        // Causal: pad the front of the time axis by the dilated kernel extent.
        let front = (kshape[0] as i64 - 1) * dilations[0];
        (AutoPad::NotSet, vec![front, 0])
    } else {
        (padding(name, cfg)?, vec![])
    };
    let _ = &mut xin;
    let xt = to_nchw(ctx, name, xin)?;
    let kv = ctx.constant(name, kernel);
    let mut ins = vec![Some(xt), Some(kv)];
    if bias {
        check_shape(name, "bias", &w[1], &[cout])?;
        ins.push(Some(ctx.constant(name, w[1].clone())));
    }
    let op = Op::Conv {
        auto_pad,
        dilations,
        group,
        kernel_shape: kshape[..ns].iter().map(|&d| d as i64).collect(),
        pads,
        strides,
    };
    let y = ctx.add_n(name, op, &ins, 1)?[0];
    from_nchw(ctx, name, y)
}

fn separable(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    channels_last(name, cfg)?;
    let r = ctx.rank(name, x)?;
    let ns = r.saturating_sub(2);
    let bias = use_bias(cfg);
    let w = weights(ctx, name, "SeparableConv2D", if bias { 3 } else { 2 })?;
    let (dk, pk) = (&w[0], &w[1]);
    if dk.rank() != ns + 2 || pk.rank() != ns + 2 {
        return Err(KErr::at(name, "separable kernels have the wrong rank"));
    }
    let ds = dk.shape().to_vec();
    let (cin, mult) = (ds[ns], ds[ns + 1]);
    let mut s = ds[..ns].to_vec();
    s.push(cin * mult);
    s.push(1);
    let mut perm = vec![ns + 1, ns];
    perm.extend(0..ns);
    let mut dperm = vec![ns, ns + 1];
    dperm.extend(0..ns);
    let dker = permute(name, &dk.reshape(s).map_err(|e| KErr::at(name, e.message))?, &dperm)?;
    let pker = permute(name, pk, &perm)?;
    let cout = pk.shape()[ns + 1];
    let xt = to_nchw(ctx, name, x)?;
    let dv = ctx.constant(name, dker);
    let op = Op::Conv {
        auto_pad: padding(name, cfg)?,
        dilations: spatial(name, cfg, "dilation_rate", ns, 1)?,
        group: cin as i64,
        kernel_shape: ds[..ns].iter().map(|&d| d as i64).collect(),
        pads: vec![],
        strides: spatial(name, cfg, "strides", ns, 1)?,
    };
    let y = ctx.add(name, op, &[xt, dv])?;
    let pv = ctx.constant(name, pker);
    let mut ins = vec![Some(y), Some(pv)];
    if bias {
        check_shape(name, "bias", &w[2], &[cout])?;
        ins.push(Some(ctx.constant(name, w[2].clone())));
    }
    let op = Op::Conv {
        auto_pad: AutoPad::Valid,
        dilations: vec![],
        group: 1,
        kernel_shape: vec![1; ns],
        pads: vec![],
        strides: vec![],
    };
    let y = ctx.add_n(name, op, &ins, 1)?[0];
    from_nchw(ctx, name, y)
}

/// Keras kernel (k..., out, in) → IR (in, out, k...). "same" crops the
/// `k - s` extra outputs with the smaller half in front, as TF does.
fn conv_transpose(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    channels_last(name, cfg)?;
    let r = ctx.rank(name, x)?;
    let ns = r.saturating_sub(2);
    let bias = use_bias(cfg);
    let w = weights(ctx, name, "Conv2DTranspose", if bias { 2 } else { 1 })?;
    let k = &w[0];
    if k.rank() != ns + 2 {
        return Err(KErr::at(name, "kernel has the wrong rank"));
    }
    let ks = k.shape().to_vec();
    let mut perm = vec![ns + 1, ns];
    perm.extend(0..ns);
    let kernel = permute(name, k, &perm)?;
    let strides = spatial(name, cfg, "strides", ns, 1)?;
    let dilations = spatial(name, cfg, "dilation_rate", ns, 1)?;
    let same = match str_of(cfg, "padding").unwrap_or("valid") {
        "same" => true,
        "valid" => false,
        p => return Err(KErr::at(name, format!("padding `{p}` is not supported"))),
    };
    let mut pads = vec![0i64; 2 * ns];
    let mut output_padding = vec![0i64; ns];
    for i in 0..ns {
        let keff = (ks[i] as i64 - 1) * dilations[i] + 1;
        if same {
            let total = keff - strides[i];
            if total >= 0 {
                pads[i] = total / 2;
                pads[ns + i] = total - total / 2;
            } else {
                output_padding[i] = -total;
            }
        } else if strides[i] > keff {
            output_padding[i] = strides[i] - keff;
        }
    }
    if let Some(op) = cfg.get("output_padding").filter(|v| !v.is_null()) {
        return Err(KErr::at(name, format!("explicit output_padding {op} is not supported")));
    }
    let xt = to_nchw(ctx, name, x)?;
    let kv = ctx.constant(name, kernel);
    let mut ins = vec![Some(xt), Some(kv)];
    if bias {
        check_shape(name, "bias", &w[1], &[ks[ns]])?;
        ins.push(Some(ctx.constant(name, w[1].clone())));
    }
    let op = Op::ConvTranspose {
        auto_pad: AutoPad::NotSet,
        dilations,
        group: 1,
        kernel_shape: ks[..ns].iter().map(|&d| d as i64).collect(),
        output_padding,
        output_shape: vec![],
        pads,
        strides,
    };
    let y = ctx.add_n(name, op, &ins, 1)?[0];
    from_nchw(ctx, name, y)
}

fn pool(ctx: &mut Ctx, name: &str, class: &str, cfg: &Json, x: Value) -> KResult<Value> {
    channels_last(name, cfg)?;
    let r = ctx.rank(name, x)?;
    let ns = r.saturating_sub(2);
    let size = spatial(name, cfg, "pool_size", ns, 2)?;
    let strides = match cfg.get("strides") {
        None | Some(Json::Null) => size.clone(),
        _ => spatial(name, cfg, "strides", ns, 1)?,
    };
    let kind = if class.starts_with("Max") { PoolKind::Max } else { PoolKind::Average };
    let xt = to_nchw(ctx, name, x)?;
    let op = Op::Pool {
        kind,
        auto_pad: padding(name, cfg)?,
        ceil_mode: false,
        // TF averages over the valid pixels only.
        count_include_pad: false,
        dilations: vec![],
        kernel_shape: size,
        pads: vec![],
        strides,
        storage_order: 0,
        p: 2,
    };
    let y = ctx.add_n(name, op, &[Some(xt)], 1)?[0];
    from_nchw(ctx, name, y)
}

/// Per-channel affine constants shaped to broadcast along `axis` of a rank-`r` input.
fn channel_shape(name: &str, axis: i64, r: usize, c: usize) -> KResult<Vec<usize>> {
    let a = if axis < 0 { axis + r as i64 } else { axis };
    if a < 0 || a as usize >= r {
        return Err(KErr::at(name, format!("axis {axis} is out of range for rank {r}")));
    }
    let mut s = vec![1; r - a as usize];
    s[0] = c;
    Ok(s)
}

fn batch_norm(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let scale = cfg.get("scale").and_then(|b| b.as_bool()).unwrap_or(true);
    let center = cfg.get("center").and_then(|b| b.as_bool()).unwrap_or(true);
    let eps = num(cfg, "epsilon").unwrap_or(1e-3);
    let n = 2 + scale as usize + center as usize;
    let w = weights(ctx, name, "BatchNormalization", n)?;
    let c = w[0].len();
    for t in &w {
        check_shape(name, "a batch-norm weight", t, &[c])?;
    }
    let mut i = 0;
    let gamma = if scale {
        i += 1;
        w[0].to_f64_vec()
    } else {
        vec![1.0; c]
    };
    let beta = if center {
        i += 1;
        w[i - 1].to_f64_vec()
    } else {
        vec![0.0; c]
    };
    let mean = w[i].to_f64_vec();
    let var = w[i + 1].to_f64_vec();
    // Folded into one multiply-add along the channel axis, which broadcasts in NHWC.
    let mut mul = Vec::with_capacity(c);
    let mut add = Vec::with_capacity(c);
    for j in 0..c {
        let s = gamma[j] / (var[j] + eps).sqrt();
        mul.push(s as f32);
        add.push((beta[j] - mean[j] * s) as f32);
    }
    let r = ctx.rank(name, x)?;
    let axis = cfg.get("axis").and_then(|a| a.as_i64().or_else(|| a.as_array().and_then(|l| l.first()?.as_i64()))).unwrap_or(-1);
    let shape = channel_shape(name, axis, r, c)?;
    let m = ctx.const_f32(name, shape.clone(), mul)?;
    let a = ctx.const_f32(name, shape, add)?;
    let y = ctx.add(name, Op::Binary(BinaryOp::Mul), &[x, m])?;
    ctx.add(name, Op::Binary(BinaryOp::Add), &[y, a])
}

fn layer_norm(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let r = ctx.rank(name, x)? as i64;
    let axes: Vec<i64> = match cfg.get("axis") {
        Some(Json::Number(a)) => vec![a.as_i64().unwrap_or(-1)],
        Some(Json::Array(a)) => a.iter().filter_map(|v| v.as_i64()).collect(),
        _ => vec![-1],
    };
    let mut axes: Vec<i64> = axes.into_iter().map(|a| if a < 0 { a + r } else { a }).collect();
    axes.sort();
    let first = *axes.first().ok_or_else(|| KErr::at(name, "LayerNormalization has no axis"))?;
    if axes.iter().enumerate().any(|(i, &a)| a != first + i as i64) || *axes.last().unwrap_or(&first) != r - 1 {
        return Err(KErr::at(name, format!("normalizing over axes {axes:?} is not supported (only trailing axes)")));
    }
    let scale = cfg.get("scale").and_then(|b| b.as_bool()).unwrap_or(true);
    let center = cfg.get("center").and_then(|b| b.as_bool()).unwrap_or(true);
    if cfg.get("rms_scaling").and_then(|b| b.as_bool()).unwrap_or(false) {
        return Err(KErr::at(name, "rms_scaling is not supported"));
    }
    let eps = num(cfg, "epsilon").unwrap_or(1e-3);
    let w = weights(ctx, name, "LayerNormalization", scale as usize + center as usize)?;
    let dims = ctx.ty(x).shape.dims().map(|d| d[first as usize..].to_vec()).unwrap_or_default();
    let norm_shape: Option<Vec<usize>> = dims.iter().map(|d| d.known()).collect();
    let norm_shape = match (norm_shape, w.first()) {
        (Some(s), _) => s,
        (None, Some(t)) => t.shape().to_vec(),
        (None, None) => return Err(KErr::at(name, "the normalized axes have unknown sizes")),
    };
    let numel: usize = norm_shape.iter().product();
    let mut i = 0;
    let gamma = if scale {
        i += 1;
        w[0].reshape(norm_shape.clone()).map_err(|e| KErr::at(name, format!("gamma: {}", e.message)))?
    } else {
        Tensor::new(norm_shape.clone(), vec![1f32; numel]).map_err(|e| KErr::at(name, e.message))?
    };
    let beta = if center {
        w[i].reshape(norm_shape.clone()).map_err(|e| KErr::at(name, format!("beta: {}", e.message)))?
    } else {
        Tensor::new(norm_shape, vec![0f32; numel]).map_err(|e| KErr::at(name, e.message))?
    };
    let g = ctx.constant(name, gamma);
    let b = ctx.constant(name, beta);
    let op = Op::LayerNorm { axis: first, epsilon: eps as f32, stash_type: DType::F32 };
    Ok(ctx.add_n(name, op, &[Some(x), Some(g), Some(b)], 1)?[0])
}

fn normalization(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    if cfg.get("invert").and_then(|b| b.as_bool()).unwrap_or(false) {
        return Err(KErr::at(name, "Normalization with invert=True is not supported"));
    }
    let w = ctx.store.layer_weights(name, "Normalization")?;
    let (mean, var) = match w.as_slice() {
        [m, v, ..] => (m.clone(), v.clone()),
        _ => return Err(KErr::at(name, format!("expected mean and variance weights, the file has {}", w.len()))),
    };
    if mean.shape() != var.shape() {
        return Err(KErr::at(name, "mean and variance have different shapes"));
    }
    // Keras: (x - mean) / max(sqrt(var), epsilon), epsilon = 1e-7; weights are kept with
    // broadcastable (1, ..., C) shapes.
    let inv: Vec<f32> = var.to_f64_vec().iter().map(|v| (1.0 / v.sqrt().max(1e-7)) as f32).collect();
    let shape = mean.shape().to_vec();
    let m = ctx.constant(name, mean);
    let s = ctx.const_f32(name, shape, inv)?;
    let y = ctx.add(name, Op::Binary(BinaryOp::Sub), &[x, m])?;
    ctx.add(name, Op::Binary(BinaryOp::Mul), &[y, s])
}

fn resize_op(mode: ResizeMode, ct: CoordinateTransform) -> Op {
    Op::Resize {
        antialias: false,
        axes: vec![],
        coordinate_transformation_mode: ct,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        keep_aspect_ratio_policy: KeepAspectRatio::Stretch,
        mode,
        nearest_mode: NearestMode::Floor,
    }
}

fn relu_layer(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let max = num(cfg, "max_value");
    let slope = num(cfg, "negative_slope").unwrap_or(0.0);
    let threshold = num(cfg, "threshold").unwrap_or(0.0);
    if threshold != 0.0 {
        return Err(KErr::at(name, "ReLU with a nonzero threshold is not supported"));
    }
    let mut y = if slope != 0.0 {
        ctx.add(name, Op::LeakyRelu { alpha: slope as f32 }, &[x])?
    } else {
        ctx.add(name, Op::Unary(UnaryOp::Relu), &[x])?
    };
    if let Some(m) = max {
        let dt = ctx.ty(y).dtype;
        let t = Tensor::from_f64(dt, vec![], &[m]).map_err(|e| KErr::at(name, e.message))?;
        let mv = ctx.constant(name, t);
        y = ctx.add(name, Op::Binary(BinaryOp::Min), &[y, mv])?;
    }
    Ok(y)
}

/// A Keras activation, given by name (or a serialized activation object).
pub(crate) fn activation(ctx: &mut Ctx, name: &str, act: Option<&Json>, x: Value) -> KResult<Value> {
    let a = match act {
        None | Some(Json::Null) => return Ok(x),
        Some(Json::String(s)) => s.as_str(),
        Some(o) => o
            .get("config")
            .and_then(|c| str_of(c, "name"))
            .or_else(|| str_of(o, "class_name"))
            .ok_or_else(|| KErr::at(name, format!("activation {o} is not understood")))?,
    };
    let unary = |u| Op::Unary(u);
    let op = match a {
        "linear" => return Ok(x),
        "relu" => unary(UnaryOp::Relu),
        "sigmoid" => unary(UnaryOp::Sigmoid),
        "tanh" => unary(UnaryOp::Tanh),
        "softplus" => unary(UnaryOp::Softplus),
        "softsign" => unary(UnaryOp::Softsign),
        "exponential" => unary(UnaryOp::Exp),
        "mish" => unary(UnaryOp::Mish),
        "softmax" => Op::Softmax { axis: -1 },
        "log_softmax" => Op::LogSoftmax { axis: -1 },
        "elu" => Op::Elu { alpha: 1.0 },
        "selu" => Op::Selu { alpha: 1.673_263_2, gamma: 1.050_701 },
        "celu" => Op::Celu { alpha: 1.0 },
        "swish" | "silu" => Op::Swish { alpha: 1.0 },
        "gelu" => Op::Gelu { approximate: GeluApproximation::None },
        // Keras 3: relu6(x + 3) / 6.
        "hard_sigmoid" => Op::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 },
        "hard_silu" | "hard_swish" => unary(UnaryOp::HardSwish),
        "leaky_relu" => Op::LeakyRelu { alpha: 0.2 },
        "relu6" => {
            let y = ctx.add(name, unary(UnaryOp::Relu), &[x])?;
            let dt = ctx.ty(y).dtype;
            let six = Tensor::from_f64(dt, vec![], &[6.0]).map_err(|e| KErr::at(name, e.message))?;
            let six = ctx.constant(name, six);
            return ctx.add(name, Op::Binary(BinaryOp::Min), &[y, six]);
        }
        "tanh_shrink" => {
            let t = ctx.add(name, unary(UnaryOp::Tanh), &[x])?;
            return ctx.add(name, Op::Binary(BinaryOp::Sub), &[x, t]);
        }
        "log_sigmoid" => {
            let s = ctx.add(name, unary(UnaryOp::Sigmoid), &[x])?;
            return ctx.add(name, unary(UnaryOp::Log), &[s]);
        }
        other => return Err(KErr::at(name, format!("activation `{other}` is not supported"))),
    };
    ctx.add(name, op, &[x])
}

/// MultiHeadAttention over the last axis (attention_axes = the sequence axis), with the
/// query scaled by 1/sqrt(key_dim) as Keras does.
pub(crate) fn attention(ctx: &mut Ctx, name: &str, cfg: &Json, ins: &[Value], kwargs: &Json) -> KResult<Value> {
    if kwargs.get("attention_mask").is_some_and(|m| !m.is_null()) {
        return Err(KErr::at(name, "MultiHeadAttention with an attention_mask is not supported"));
    }
    if kwargs.get("use_causal_mask").and_then(|m| m.as_bool()).unwrap_or(false) {
        return Err(KErr::at(name, "MultiHeadAttention with use_causal_mask is not supported"));
    }
    let (q, v, k) = match ins {
        [q, v] => (*q, *v, *v),
        [q, v, k] => (*q, *v, *k),
        _ => return Err(KErr::at(name, format!("MultiHeadAttention takes query, value and key, it got {} inputs", ins.len()))),
    };
    let r = ctx.rank(name, q)?;
    if r != 3 {
        return Err(KErr::at(name, "only rank-3 (batch, sequence, features) attention is supported"));
    }
    let heads = cfg.get("num_heads").and_then(|h| h.as_u64()).ok_or_else(|| KErr::at(name, "no `num_heads`"))? as usize;
    let kd = cfg.get("key_dim").and_then(|h| h.as_u64()).ok_or_else(|| KErr::at(name, "no `key_dim`"))? as usize;
    let bias = use_bias(cfg);
    let w = weights(ctx, name, "MultiHeadAttention", if bias { 8 } else { 4 })?;
    let step = if bias { 2 } else { 1 };
    // Projects (N, T, D) by a (D, H, K) kernel into (N, H, T, K).
    let project = |ctx: &mut Ctx, x: Value, i: usize| -> KResult<Value> {
        let kern = &w[i * step];
        let s = kern.shape().to_vec();
        if s.len() != 3 || s[1] != heads {
            return Err(KErr::at(name, format!("projection kernel has shape {s:?}, expected (dim, {heads}, head_dim)")));
        }
        let flat = kern.reshape(vec![s[0], s[1] * s[2]]).map_err(|e| KErr::at(name, e.message))?;
        let kv = ctx.constant(name, flat);
        let mut y = ctx.add(name, Op::MatMul, &[x, kv])?;
        if bias {
            let b = w[i * step + 1].reshape(vec![s[1] * s[2]]).map_err(|e| KErr::at(name, format!("bias: {}", e.message)))?;
            let bv = ctx.constant(name, b);
            y = ctx.add(name, Op::Binary(BinaryOp::Add), &[y, bv])?;
        }
        let shape = ctx.const_i64(name, &[0, 0, heads as i64, s[2] as i64])?;
        let y = ctx.add(name, Op::Reshape { allowzero: false }, &[y, shape])?;
        ctx.add(name, Op::Transpose { perm: Some(vec![0, 2, 1, 3]) }, &[y])
    };
    let qh = project(ctx, q, 0)?;
    let kh = project(ctx, k, 1)?;
    let vh = project(ctx, v, 2)?;
    let scale = ctx.const_f32(name, vec![], vec![(1.0 / (kd as f64).sqrt()) as f32])?;
    let qh = ctx.add(name, Op::Binary(BinaryOp::Mul), &[qh, scale])?;
    let kt = ctx.add(name, Op::Transpose { perm: Some(vec![0, 1, 3, 2]) }, &[kh])?;
    let scores = ctx.add(name, Op::MatMul, &[qh, kt])?;
    let probs = ctx.add(name, Op::Softmax { axis: -1 }, &[scores])?;
    let ctxv = ctx.add(name, Op::MatMul, &[probs, vh])?;
    let ctxv = ctx.add(name, Op::Transpose { perm: Some(vec![0, 2, 1, 3]) }, &[ctxv])?;
    let ok = &w[3 * step];
    let os = ok.shape().to_vec();
    if os.len() != 3 || os[0] != heads {
        return Err(KErr::at(name, format!("output kernel has shape {os:?}, expected ({heads}, head_dim, dim)")));
    }
    let shape = ctx.const_i64(name, &[0, 0, (os[0] * os[1]) as i64])?;
    let flat = ctx.add(name, Op::Reshape { allowzero: false }, &[ctxv, shape])?;
    let okf = ok.reshape(vec![os[0] * os[1], os[2]]).map_err(|e| KErr::at(name, e.message))?;
    let okv = ctx.constant(name, okf);
    let mut y = ctx.add(name, Op::MatMul, &[flat, okv])?;
    if bias {
        let bv = ctx.constant(name, w[3 * step + 1].clone());
        y = ctx.add(name, Op::Binary(BinaryOp::Add), &[y, bv])?;
    }
    Ok(y)
}

