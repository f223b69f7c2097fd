//! The table from Keras layer classes to IR ops. Keras tensors stay in Keras's own layout
//! (channels last); ops the IR defines on NCHW are wrapped in transposes.

use super::model::{str_of, Ctx};
use super::{KErr, KResult};
use kiln_ir::{
    BinaryOp, CoordinateTransform, DType, KeepAspectRatio, NearestMode, Op, ReduceKind, ResizeMode,
    Tensor, UnaryOp, Value,
};
use serde_json::Value as Json;

mod activation;
mod attention;
mod conv;
mod norm;
mod rnn;

use activation::{activation, relu_layer};
use attention::attention;
use conv::{conv, conv_transpose, dense, pool, separable};
use norm::{batch_norm, layer_norm, normalization};

pub(crate) fn lower(
    ctx: &mut Ctx,
    class: &str,
    name: &str,
    cfg: &Json,
    ins: Vec<Value>,
    kwargs: &Json,
) -> KResult<Vec<Value>> {
    let one = |ins: &[Value]| -> KResult<Value> {
        match ins {
            [x] => Ok(*x),
            _ => Err(KErr::at(
                name,
                format!("{class} takes one input, it is called with {}", ins.len()),
            )),
        }
    };
    // Masks change what downstream layers compute (RNNs skip steps, pooling ignores them);
    // kiln has no masks, so a model that makes one is refused rather than run differently.
    if class == "Masking"
        || (class == "Embedding" && cfg.get("mask_zero").and_then(|m| m.as_bool()) == Some(true))
    {
        return Err(KErr::at(
            name,
            format!("{class} makes a mask, and masking is not supported"),
        ));
    }
    if kwargs.get("initial_state").is_some_and(|s| !s.is_null()) {
        return Err(KErr::at(name, "an initial_state argument is not supported"));
    }
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
            let alpha = num(cfg, "negative_slope")
                .or_else(|| num(cfg, "alpha"))
                .unwrap_or(0.3);
            ctx.add(
                name,
                Op::LeakyRelu {
                    alpha: alpha as f32,
                },
                &[one(&ins)?],
            )?
        }
        "ELU" => ctx.add(
            name,
            Op::Elu {
                alpha: num(cfg, "alpha").unwrap_or(1.0) as f32,
            },
            &[one(&ins)?],
        )?,
        "PReLU" => {
            let x = one(&ins)?;
            let w = single_weight(ctx, name, class, 1)?;
            let a = ctx.constant(name, w);
            ctx.add(name, Op::Binary(BinaryOp::PRelu), &[x, a])?
        }
        "Softmax" => {
            let x = one(&ins)?;
            let axis = cfg.get("axis").and_then(|a| {
                a.as_i64()
                    .or_else(|| a.as_array().and_then(|l| l.first()?.as_i64()))
            });
            ctx.add(
                name,
                Op::Softmax {
                    axis: axis.unwrap_or(-1),
                },
                &[x],
            )?
        }
        "MaxPooling1D" | "MaxPooling2D" | "MaxPooling3D" | "AveragePooling1D"
        | "AveragePooling2D" | "AveragePooling3D" => pool(ctx, name, class, cfg, one(&ins)?)?,
        "GlobalAveragePooling1D"
        | "GlobalAveragePooling2D"
        | "GlobalAveragePooling3D"
        | "GlobalMaxPooling1D"
        | "GlobalMaxPooling2D"
        | "GlobalMaxPooling3D" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let r = ctx.rank(name, x)? as i64;
            let axes: Vec<i64> = (1..r - 1).collect();
            let kind = if class.starts_with("GlobalMax") {
                ReduceKind::Max
            } else {
                ReduceKind::Mean
            };
            let keepdims = cfg
                .get("keepdims")
                .and_then(|k| k.as_bool())
                .unwrap_or(false);
            let a = ctx.const_i64(name, &axes)?;
            ctx.add(
                name,
                Op::Reduce {
                    kind,
                    keepdims,
                    noop_with_empty_axes: false,
                },
                &[x, a],
            )?
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
            ctx.add(
                name,
                Op::Pad {
                    mode: kiln_ir::PadMode::Constant,
                },
                &[x, p],
            )?
        }
        "Cropping1D" | "Cropping2D" | "Cropping3D" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let r = ctx.rank(name, x)?;
            let crops = pair_list(name, cfg.get("cropping"), r.saturating_sub(2))?;
            let dims = ctx
                .ty(x)
                .shape
                .dims()
                .map(|d| d.to_vec())
                .unwrap_or_default();
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
            let (first, rest) = ins
                .split_first()
                .ok_or_else(|| KErr::at(name, "no inputs"))?;
            let mut acc = *first;
            for v in rest {
                acc = ctx.add(name, Op::Binary(op), &[acc, *v])?;
            }
            if class == "Average" {
                let dt = ctx.ty(acc).dtype;
                let k = Tensor::from_f64(dt, vec![], &[1.0 / ins.len() as f64])
                    .map_err(|e| KErr::at(name, e.message))?;
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
            let n = cfg
                .get("n")
                .and_then(|n| n.as_i64())
                .ok_or_else(|| KErr::at(name, "RepeatVector has no `n`"))?;
            let a = ctx.const_i64(name, &[1])?;
            let u = ctx.add(name, Op::Unsqueeze, &[x, a])?;
            let reps = ctx.const_i64(name, &[1, n, 1])?;
            ctx.add(name, Op::Tile, &[u, reps])?
        }
        "Dropout"
        | "SpatialDropout1D"
        | "SpatialDropout2D"
        | "SpatialDropout3D"
        | "GaussianDropout"
        | "GaussianNoise"
        | "AlphaDropout"
        | "ActivityRegularization"
        | "Identity" => ctx.add(name, Op::Unary(UnaryOp::Identity), &[one(&ins)?])?,
        "Embedding" => {
            let x = one(&ins)?;
            let w = single_weight(ctx, name, class, 1)?;
            let w = ctx.constant(name, w);
            let idx = if ctx.ty(x).dtype.is_float() {
                ctx.add(name, Op::Cast { to: DType::I64 }, &[x])?
            } else {
                x
            };
            ctx.add(name, Op::Gather { axis: 0 }, &[w, idx])?
        }
        "Rescaling" => {
            let x = one(&ins)?;
            let scale = num(cfg, "scale")
                .ok_or_else(|| KErr::at(name, "Rescaling needs a scalar `scale`"))?;
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
                other => int_list(name, other)?
                    .into_iter()
                    .map(|v| v as f64)
                    .collect(),
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
            ctx.add_n(
                name,
                resize_op(mode, ct),
                &[Some(x), None, Some(sc), None],
                1,
            )?[0]
        }
        "Resizing" => {
            let x = one(&ins)?;
            channels_last(name, cfg)?;
            let h = cfg
                .get("height")
                .and_then(|v| v.as_i64())
                .ok_or_else(|| KErr::at(name, "Resizing needs `height`"))?;
            let w = cfg
                .get("width")
                .and_then(|v| v.as_i64())
                .ok_or_else(|| KErr::at(name, "Resizing needs `width`"))?;
            let (mode, ct) = match str_of(cfg, "interpolation").unwrap_or("bilinear") {
                "bilinear" => (ResizeMode::Linear, CoordinateTransform::HalfPixel),
                "nearest" => (ResizeMode::Nearest, CoordinateTransform::HalfPixel),
                "bicubic" => (ResizeMode::Cubic, CoordinateTransform::HalfPixel),
                other => {
                    return Err(KErr::at(
                        name,
                        format!("Resizing interpolation `{other}` is not supported"),
                    ))
                }
            };
            let shape = ctx.add(
                name,
                Op::Shape {
                    start: 0,
                    end: None,
                },
                &[x],
            )?;
            let s0 = ctx.const_i64(name, &[0])?;
            let s1 = ctx.const_i64(name, &[1])?;
            let n = ctx.add_n(name, Op::Slice, &[Some(shape), Some(s0), Some(s1)], 1)?[0];
            let st = ctx.const_i64(name, &[3])?;
            let en = ctx.const_i64(name, &[4])?;
            let c = ctx.add_n(name, Op::Slice, &[Some(shape), Some(st), Some(en)], 1)?[0];
            let hw = ctx.const_i64(name, &[h, w])?;
            let sizes = ctx.add(name, Op::Concat { axis: 0 }, &[n, hw, c])?;
            let mut op = resize_op(mode, ct);
            if let Op::Resize {
                nearest_mode,
                cubic_coeff_a,
                ..
            } = &mut op
            {
                *nearest_mode = NearestMode::RoundPreferCeil;
                *cubic_coeff_a = -0.5;
            }
            ctx.add_n(name, op, &[Some(x), None, None, Some(sizes)], 1)?[0]
        }
        "LSTM" | "GRU" | "SimpleRNN" => return rnn::recurrent(ctx, name, class, cfg, one(&ins)?),
        "Bidirectional" => return rnn::bidirectional(ctx, name, cfg, one(&ins)?),
        "MultiHeadAttention" => attention(ctx, name, cfg, &ins, kwargs)?,
        "TimeDistributed" => return time_distributed(ctx, name, cfg, one(&ins)?, kwargs),
        "InputLayer" => one(&ins)?,
        other => {
            return Err(KErr::at(
                name,
                format!("layer class `{other}` is not supported"),
            ))
        }
    };
    Ok(vec![y])
}

/// Applies the wrapped layer to every time step: layers acting on the last axis take the
/// (N, T, ...) tensor as it is; others see the time axis folded into the batch.
fn time_distributed(
    ctx: &mut Ctx,
    name: &str,
    cfg: &Json,
    x: Value,
    kwargs: &Json,
) -> KResult<Vec<Value>> {
    let inner = cfg
        .get("layer")
        .ok_or_else(|| KErr::at(name, "TimeDistributed has no inner `layer`"))?;
    let iclass = str_of(inner, "class_name").unwrap_or("");
    let icfg = inner.get("config").unwrap_or(&Json::Null);
    if ctx.wrapper.is_some() {
        return Err(KErr::at(
            name,
            "nested TimeDistributed layers are not supported",
        ));
    }
    let last_axis_only = matches!(
        iclass,
        "Dense" | "Activation" | "Dropout" | "ReLU" | "LeakyReLU" | "ELU" | "Softmax" | "Rescaling"
    ) || (iclass == "LayerNormalization"
        && matches!(icfg.get("axis"), Some(Json::Number(a)) if a.as_i64() == Some(-1)));
    let dims: Option<Vec<usize>> = ctx
        .ty(x)
        .shape
        .dims()
        .and_then(|d| d.iter().skip(1).map(|d| d.known()).collect());
    ctx.wrapper = Some("layer");
    let result = if last_axis_only {
        lower(ctx, iclass, name, icfg, vec![x], kwargs)
    } else {
        let dims = dims.ok_or_else(|| {
            KErr::at(
                name,
                "TimeDistributed needs the time and feature sizes to be known",
            )
        });
        dims.and_then(|dims| {
            let mut folded = vec![-1i64];
            folded.extend(dims.iter().skip(1).map(|&d| d as i64));
            let s = ctx.const_i64(name, &folded)?;
            let xf = ctx.add(name, Op::Reshape { allowzero: false }, &[x, s])?;
            let ys = lower(ctx, iclass, name, icfg, vec![xf], kwargs)?;
            let mut out = Vec::with_capacity(ys.len());
            for y in ys {
                let ydims: Option<Vec<usize>> = ctx
                    .ty(y)
                    .shape
                    .dims()
                    .and_then(|d| d.iter().skip(1).map(|d| d.known()).collect());
                let ydims = ydims
                    .ok_or_else(|| KErr::at(name, "the wrapped layer's output size is unknown"))?;
                let mut unfolded = vec![-1i64, dims[0] as i64];
                unfolded.extend(ydims.iter().map(|&d| d as i64));
                let s = ctx.const_i64(name, &unfolded)?;
                out.push(ctx.add(name, Op::Reshape { allowzero: false }, &[y, s])?);
            }
            Ok(out)
        })
    };
    ctx.wrapper = None;
    result
}

pub(crate) fn num(cfg: &Json, key: &str) -> Option<f64> {
    cfg.get(key).and_then(|v| v.as_f64())
}

fn channels_last(name: &str, cfg: &Json) -> KResult<()> {
    match str_of(cfg, "data_format") {
        None | Some("channels_last") => Ok(()),
        Some(f) => Err(KErr::at(
            name,
            format!("data_format `{f}` is not supported (only channels_last)"),
        )),
    }
}

fn int_list(name: &str, j: Option<&Json>) -> KResult<Vec<i64>> {
    let a = j
        .and_then(|j| j.as_array())
        .ok_or_else(|| KErr::at(name, "expected a list of integers in the config"))?;
    a.iter()
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| KErr::at(name, format!("`{v}` is not an integer")))
        })
        .collect()
}

/// An int, a list of ints, or a list of (before, after) pairs → one pair per spatial axis.
fn pair_list(name: &str, j: Option<&Json>, n: usize) -> KResult<Vec<(i64, i64)>> {
    let bad = || {
        KErr::at(
            name,
            "padding/cropping is not an int, a list of ints or a list of pairs",
        )
    };
    match j {
        Some(Json::Number(k)) => {
            let k = k.as_i64().ok_or_else(bad)?;
            Ok(vec![(k, k); n])
        }
        Some(Json::Array(a)) if n == 1 && a.len() == 2 && a.iter().all(|v| v.is_i64()) => {
            Ok(vec![(
                a[0].as_i64().ok_or_else(bad)?,
                a[1].as_i64().ok_or_else(bad)?,
            )])
        }
        Some(Json::Array(a)) if a.len() == n => a
            .iter()
            .map(|v| match v {
                Json::Number(k) => {
                    let k = k.as_i64().ok_or_else(bad)?;
                    Ok((k, k))
                }
                Json::Array(p) if p.len() == 2 => Ok((
                    p[0].as_i64().ok_or_else(bad)?,
                    p[1].as_i64().ok_or_else(bad)?,
                )),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// Weights of the layer; `n` of them exactly.
fn weights(ctx: &Ctx, name: &str, class: &str, n: usize) -> KResult<Vec<Tensor>> {
    let w = ctx.layer_weights(name, class)?;
    if w.len() != n {
        return Err(KErr::at(
            name,
            format!(
                "expected {n} weights for this {class}, the file has {}",
                w.len()
            ),
        ));
    }
    Ok(w)
}

fn single_weight(ctx: &Ctx, name: &str, class: &str, n: usize) -> KResult<Tensor> {
    let mut w = weights(ctx, name, class, n)?;
    Ok(w.swap_remove(0))
}

fn check_shape(name: &str, what: &str, t: &Tensor, want: &[usize]) -> KResult<()> {
    if t.shape() != want {
        return Err(KErr::at(
            name,
            format!("{what} has shape {:?}, expected {want:?}", t.shape()),
        ));
    }
    Ok(())
}

fn use_bias(cfg: &Json) -> bool {
    cfg.get("use_bias")
        .and_then(|b| b.as_bool())
        .unwrap_or(true)
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
