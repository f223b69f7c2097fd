//! Definitions from opsets 1 to 6 that read differently from the later ones `ops` maps,
//! rewritten with their own semantics (checked against `onnx.defs.get_schema(op,
//! max_inclusive_version=6)`):
//!
//! - Elementwise binary ops with `broadcast`/`axis`: B's dims line up with A's starting at
//!   `axis` (suffix alignment without it), so B gets trailing 1s and then broadcasts.
//! - PRelu: a 1-D slope is per channel (axis 1), as in Caffe2, not numpy-aligned.
//! - BatchNormalization: `is_test` defaults to 0 (training); only is_test=1 maps.
//! - Cast-1 names its type (`to="FLOAT"`), Concat-1 defaults `axis` to 1, LpPool-1 and
//!   GlobalLpPool-1 take a float `p`, Pad-1 spells `paddings`, Reshape-1 takes `shape` as
//!   an attribute, Split-1 may take its sizes as a (float) input, Tile-1 repeats along one
//!   axis, Selu-1 has rounder defaults, Upsample-1 has height and width scales.
//!
//! `consumed_inputs` (a Caffe2 in-place hint) never changes a result and is ignored, and so
//! is Gemm's `broadcast` (C broadcasts the same way at opset 7, which dropped the flag).
//! Ops not handled here read the same at opsets 1 to 6 as at 7, or differ only in what
//! `ops` and `legacy` already check by opset (AveragePool's missing `count_include_pad` is
//! its default, 0; Dropout is the identity; RNNs ignore `output_sequence`).

use super::graph::Builder;
use super::legacy::{ints_input, scalar_of};
use super::ops::{auto_pad, binary as binary_op, dtype_attr, word, NodeCx};
use kiln_ir::*;

/// The old-opset form of `n`, or `None` when the op reads the same as at opset 7.
pub(crate) fn map(b: &mut Builder, n: &NodeCx) -> Option<Result<Vec<Value>>> {
    let v = n.opset;
    Some(match n.node.op_type.as_str() {
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "And" | "Or" | "Xor" | "Equal" | "Greater"
        | "Less" => binary(b, n),
        "PRelu" => prelu(b, n),
        "BatchNormalization" => batch_norm(b, n),
        "Cast" if v < 6 => cast(b, n),
        "Concat" if v < 4 => concat(b, n),
        "LpPool" | "GlobalLpPool" if v < 2 => lp_pool(b, n),
        "Pad" if v < 2 => pad(b, n),
        "Reshape" if v < 5 => reshape(b, n),
        "Split" if v < 2 => split(b, n),
        "Tile" if v < 6 => tile(b, n),
        "Selu" if v < 6 => selu(b, n),
        "Acos" | "Asin" | "Atan" | "Cos" | "Sin" | "Tan" | "Multinomial" => {
            Err(IrError::msg(format!(
                "op {} does not exist before opset 7 (the model imports opset {v})",
                n.node.op_type
            )))
        }
        _ => return None,
    })
}

fn rank(b: &mut Builder, x: Value) -> Option<usize> {
    b.ty(x).shape.rank()
}

/// `x` with `k` size-1 axes appended (its rank must be known).
fn append_ones(b: &mut Builder, n: &NodeCx, x: Value, x_rank: usize, k: usize) -> Result<Value> {
    if k == 0 {
        return Ok(x);
    }
    let axes: Vec<i64> = (x_rank..x_rank + k).map(|i| i as i64).collect();
    let axes = b.const_i64(&n.sub("align_axes"), &axes)?;
    b.emit1(Op::Unsqueeze, &n.sub("align"), &[Some(x), Some(axes)])
}

/// Binary ops before opset 7. Without `broadcast` the shapes must match (numpy
/// broadcasting gives the same result on every valid model); with `broadcast=1` and no
/// `axis`, B aligns with A's trailing dims, which is numpy's rule too; with `axis`, B's
/// dims start at A's dim `axis`, so B gets the trailing 1s that make numpy align it there.
fn binary(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let op = binary_op(&n.node.op_type)
        .ok_or_else(|| IrError::msg(format!("internal: {} is not binary", n.node.op_type)))?;
    let a = n.req(0)?;
    let mut y = n.req(1)?;
    if n.attrs.bool("broadcast", false)? {
        if let Some(axis) = n.attrs.int_opt("axis")? {
            let (Some(ra), Some(rb)) = (rank(b, a), rank(b, y)) else {
                return Err(IrError::msg(
                    "broadcast with `axis` needs the ranks of both inputs known statically",
                ));
            };
            if rb > 0 {
                let ra_i = ra as i64;
                let start = if axis < 0 { axis + ra_i } else { axis };
                let trailing = ra_i - start - rb as i64;
                if start < 0 || trailing < 0 {
                    return Err(IrError::msg(format!(
                        "broadcast axis {axis} does not fit B (rank {rb}) inside A (rank {ra})"
                    )));
                }
                y = append_ones(b, n, y, rb, trailing as usize)?;
            }
        }
    }
    b.emit(Op::Binary(op), &n.name, &[Some(a), Some(y)], 1)
}

/// PRelu before opset 7: a 1-D slope holds one value per channel (dim 1) or one shared
/// value, so it gets trailing 1s to line up with dim 1.
fn prelu(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let x = n.req(0)?;
    let mut slope = n.req(1)?;
    if let (Some(rx), Some(1)) = (rank(b, x), rank(b, slope)) {
        if rx >= 3 {
            slope = append_ones(b, n, slope, 1, rx - 2)?;
        }
    }
    b.emit(
        Op::Binary(BinaryOp::PRelu),
        &n.name,
        &[Some(x), Some(slope)],
        1,
    )
}

/// BatchNormalization before opset 7: `is_test` defaults to 0, training mode (normalizing
/// with the batch's own statistics), which kiln does not support.
fn batch_norm(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    if !n.attrs.bool("is_test", false)? {
        return Err(IrError::msg(format!(
            "BatchNormalization at opset {} without is_test=1 is in training mode (batch statistics), which is not supported",
            n.opset
        )));
    }
    super::legacy::batch_norm(b, n)
}

/// Cast-1: `to` names the type (`"FLOAT"`); some files already use the later type code.
fn cast(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let code = match a.string_opt("to") {
        Ok(Some(s)) if !s.is_empty() => type_code(&s)?,
        _ => a.req_int("to")?,
    };
    let to = dtype_attr(code, "Cast `to`")?;
    b.emit(Op::Cast { to }, &n.name, &n.first(1), 1)
}

/// The `TensorProto.DataType` code of a type name.
fn type_code(name: &str) -> Result<i64> {
    let upper = name.to_ascii_uppercase();
    match super::tensor::ONNX_TYPE_NAMES
        .iter()
        .position(|&t| t == upper)
    {
        Some(code) if code > 0 => Ok(code as i64),
        _ => Err(IrError::msg(format!(
            "Cast `to` names an unknown type `{name}`"
        ))),
    }
}

/// Concat before opset 4: `axis` defaults to 1.
fn concat(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let op = Op::Concat {
        axis: n.attrs.int("axis", 1)?,
    };
    b.emit(op, &n.name, &n.inputs, 1)
}

/// LpPool-1 and GlobalLpPool-1: `p` is a float (default 2); kiln's p is a whole number.
fn lp_pool(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let pf = a.float("p", 2.0)?;
    if !(pf >= 1.0 && pf <= 1024.0 && pf.fract() == 0.0) {
        return Err(IrError::msg(format!(
            "p = {pf} is not supported (kiln's Lp pooling takes a whole p from 1 to 1024)"
        )));
    }
    let p = pf as i64;
    let op = if n.node.op_type == "GlobalLpPool" {
        Op::GlobalPool {
            kind: PoolKind::Lp,
            p,
        }
    } else {
        Op::Pool {
            kind: PoolKind::Lp,
            auto_pad: word(a, "auto_pad", "notset", auto_pad)?,
            ceil_mode: false,
            count_include_pad: false,
            dilations: vec![],
            kernel_shape: a
                .ints_opt("kernel_shape")?
                .ok_or_else(|| IrError::msg("LpPool needs `kernel_shape`"))?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
            storage_order: 0,
            p,
        }
    };
    b.emit(op, &n.name, &n.first(1), 1)
}

/// Pad-1: the pads attribute is spelled `paddings`.
fn pad(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let x = n.req(0)?;
    let pads = a
        .ints_opt("paddings")?
        .ok_or_else(|| IrError::msg("Pad-1 needs the `paddings` attribute"))?;
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

/// Reshape before opset 5: the target shape is the `shape` attribute (0 copies a dim).
fn reshape(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let shape = ints_input(b, n, "shape")?
        .ok_or_else(|| IrError::msg("Reshape before opset 5 needs the `shape` attribute"))?;
    b.emit(
        Op::Reshape { allowzero: false },
        &n.name,
        &[Some(n.req(0)?), Some(shape)],
        1,
    )
}

/// Split-1: sizes from the optional second input (a float tensor in that opset) or the
/// `split` attribute. The spec gives `axis` no default, so a missing one is refused rather
/// than guessed.
fn split(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let axis = n.attrs.int_opt("axis")?.ok_or_else(|| {
        IrError::msg("Split-1 without `axis` is ambiguous (the spec gives no default)")
    })?;
    let sizes = match n.input(1) {
        Some(s) if b.ty(s).dtype == DType::I64 => Some(s),
        Some(s) => Some(b.emit1(Op::Cast { to: DType::I64 }, &n.sub("split_i64"), &[Some(s)])?),
        None => ints_input(b, n, "split")?,
    };
    b.emit(
        Op::Split { axis },
        &n.name,
        &[Some(n.req(0)?), sizes],
        n.n_out(),
    )
}

/// Tile-1: `tiles` copies along the one axis `axis`, both single-element inputs. They must
/// be constants (the repeats vector is built from them) and the input's rank known.
fn tile(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let x = n.req(0)?;
    let mut scalars = [0i64; 2];
    for (k, what) in [(1usize, "tiles"), (2, "axis")] {
        let v = n.req(k)?;
        let t = b
            .g()
            .const_value(v)
            .cloned()
            .ok_or_else(|| IrError::msg(format!("Tile-1 needs `{what}` to be a constant")))?;
        let vals = t.to_f64_vec();
        let [val] = vals.as_slice() else {
            return Err(IrError::msg(format!(
                "Tile-1 `{what}` must hold one value, it holds {}",
                vals.len()
            )));
        };
        if val.fract() != 0.0 || val.abs() > (1u64 << 31) as f64 {
            return Err(IrError::msg(format!(
                "Tile-1 `{what}` = {val} is not a whole number in range"
            )));
        }
        scalars[k - 1] = *val as i64;
    }
    let [tiles, axis] = scalars;
    let r = rank(b, x)
        .ok_or_else(|| IrError::msg("Tile-1 needs the rank of its input known statically"))?;
    let ri = r as i64;
    let ax = if axis < 0 { axis + ri } else { axis };
    if ax < 0 || ax >= ri {
        return Err(IrError::msg(format!(
            "Tile-1 axis {axis} is out of range for rank {r}"
        )));
    }
    if tiles < 0 {
        return Err(IrError::msg(format!("Tile-1 tiles = {tiles} is negative")));
    }
    let mut repeats = vec![1i64; r];
    repeats[ax as usize] = tiles;
    let repeats = b.const_i64(&n.sub("repeats"), &repeats)?;
    b.emit(Op::Tile, &n.name, &[Some(x), Some(repeats)], 1)
}

/// Selu-1: its defaults are the 4-digit roundings of opset 6's.
fn selu(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let op = Op::Selu {
        alpha: n.attrs.float("alpha", 1.6732)?,
        gamma: n.attrs.float("gamma", 1.0507)?,
    };
    b.emit(op, &n.name, &n.first(1), 1)
}
