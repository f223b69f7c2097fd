//! Dense, convolutions (plain, depthwise, separable, transposed) and pooling.

use super::super::model::{str_of, Ctx};
use super::super::{KErr, KResult};
use super::*;
use kiln_ir::{AutoPad, BinaryOp, Op, PoolKind, Value};
use serde_json::Value as Json;

pub(super) fn dense(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
    let units = cfg
        .get("units")
        .and_then(|u| u.as_u64())
        .ok_or_else(|| KErr::at(name, "Dense has no `units`"))? as usize;
    let bias = use_bias(cfg);
    let w = weights(ctx, name, "Dense", if bias { 2 } else { 1 })?;
    let k = &w[0];
    if k.rank() != 2 || k.shape()[1] != units {
        return Err(KErr::at(
            name,
            format!("kernel has shape {:?}, expected (in, {units})", k.shape()),
        ));
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

pub(super) fn spatial(
    name: &str,
    cfg: &Json,
    key: &str,
    n: usize,
    default: i64,
) -> KResult<Vec<i64>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(vec![default; n]),
        Some(Json::Number(k)) => Ok(vec![
            k.as_i64().ok_or_else(|| KErr::at(
                name,
                format!("bad `{key}`")
            ))?;
            n
        ]),
        other => {
            let v = int_list(name, other)?;
            if v.len() != n {
                return Err(KErr::at(
                    name,
                    format!("`{key}` has {} entries for {n} spatial axes", v.len()),
                ));
            }
            Ok(v)
        }
    }
}

pub(super) fn padding(name: &str, cfg: &Json) -> KResult<AutoPad> {
    match str_of(cfg, "padding").unwrap_or("valid") {
        "valid" => Ok(AutoPad::Valid),
        // TF puts the odd pixel of "same" padding at the end, as SAME_UPPER does.
        "same" => Ok(AutoPad::SameUpper),
        p => Err(KErr::at(name, format!("padding `{p}` is not supported"))),
    }
}

/// Conv1D/2D/3D and DepthwiseConv: Keras kernel (k..., in/groups, out) or, depthwise,
/// (k..., in, multiplier) → IR weights (out, in/groups, k...).
pub(super) fn conv(
    ctx: &mut Ctx,
    name: &str,
    cfg: &Json,
    x: Value,
    depthwise: bool,
) -> KResult<Value> {
    channels_last(name, cfg)?;
    let r = ctx.rank(name, x)?;
    if r < 3 {
        return Err(KErr::at(
            name,
            "convolution input must have a batch, spatial and channel axis",
        ));
    }
    let ns = r - 2;
    let bias = use_bias(cfg);
    let class = if depthwise {
        "DepthwiseConv2D"
    } else {
        "Conv2D"
    };
    let w = weights(ctx, name, class, if bias { 2 } else { 1 })?;
    let k = &w[0];
    if k.rank() != ns + 2 {
        return Err(KErr::at(
            name,
            format!("kernel has shape {:?}, expected rank {}", k.shape(), ns + 2),
        ));
    }
    let kshape = k.shape().to_vec();
    let cin = kshape[ns];
    let cout_k = kshape[ns + 1];
    // The graph follows the weights; a config that disagrees with them is a corrupt file.
    let filters = cfg.get("filters").and_then(|f| f.as_u64());
    if !depthwise && filters.is_some_and(|f| f != cout_k as u64) {
        return Err(KErr::at(
            name,
            format!("kernel has shape {kshape:?}, the config says {} filters", filters.unwrap_or(0)),
        ));
    }
    if cfg.get("kernel_size").is_some() && spatial(name, cfg, "kernel_size", ns, 1)? != kshape[..ns].iter().map(|&d| d as i64).collect::<Vec<_>>() {
        return Err(KErr::at(
            name,
            format!("kernel has shape {kshape:?}, the config's kernel_size is {}", cfg["kernel_size"]),
        ));
    }
    let (kernel, group, cout) = if depthwise {
        // (k..., in, mult) → (k..., in*mult, 1): output channel c*mult + m, one group per input channel.
        let mut s = kshape[..ns].to_vec();
        s.push(cin * cout_k);
        s.push(1);
        (
            k.reshape(s).map_err(|e| KErr::at(name, e.message))?,
            cin as i64,
            cin * cout_k,
        )
    } else {
        let groups = cfg.get("groups").and_then(|g| g.as_i64()).unwrap_or(1);
        (k.clone(), groups, cout_k)
    };
    // Depthwise kernels are already (k..., in*mult, 1): their out axis is the first of the two.
    let mut perm = if depthwise {
        vec![ns, ns + 1]
    } else {
        vec![ns + 1, ns]
    };
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

pub(super) fn separable(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
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
    let dker = permute(
        name,
        &dk.reshape(s).map_err(|e| KErr::at(name, e.message))?,
        &dperm,
    )?;
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
pub(super) fn conv_transpose(ctx: &mut Ctx, name: &str, cfg: &Json, x: Value) -> KResult<Value> {
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
        return Err(KErr::at(
            name,
            format!("explicit output_padding {op} is not supported"),
        ));
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

pub(super) fn pool(ctx: &mut Ctx, name: &str, class: &str, cfg: &Json, x: Value) -> KResult<Value> {
    channels_last(name, cfg)?;
    let r = ctx.rank(name, x)?;
    let ns = r.saturating_sub(2);
    let size = spatial(name, cfg, "pool_size", ns, 2)?;
    let strides = match cfg.get("strides") {
        None | Some(Json::Null) => size.clone(),
        _ => spatial(name, cfg, "strides", ns, 1)?,
    };
    let kind = if class.starts_with("Max") {
        PoolKind::Max
    } else {
        PoolKind::Average
    };
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
