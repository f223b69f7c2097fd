//! Data movement as copy loops: the shape-only ops, Transpose, Slice, Expand, Concat and
//! Split become [`copy::Piece`]s; Gather and Pad have kernels of their own, because what
//! they read depends on an index table or on where a row lies.

use super::clif::{self, dense_strides};
use super::copy::{self, Piece};
use super::{Arg, Kernel, LowerCtx, LowerError, Operand, OutType, Result};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder};
use cranelift_module::Module;
use kiln_ir::{DType, Node, Op, PadMode};

/// `Ok(None)` when `node` is not a data-movement op.
pub fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    outputs: &[OutType],
) -> Result<Option<Kernel>> {
    let x = |i: usize| -> Result<Operand> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| LowerError::unsupported(node, format!("input {i} is missing")))
    };
    let out = outputs
        .first()
        .ok_or_else(|| LowerError::unsupported(node, "no output"))?;
    let n_out: usize = out.shape.iter().product();
    let (kind, pieces): (&str, Vec<Piece>) = match &node.op {
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Unary(kiln_ir::UnaryOp::Identity) => ("reshape", vec![Piece::dense(0, 1, n_out)]),
        Op::Transpose { perm } => {
            let x = x(0)?;
            let rank = x.shape.len();
            let perm: Vec<usize> = match perm {
                Some(p) => p
                    .iter()
                    .map(|&a| clif::axis(a, rank))
                    .collect::<Option<_>>()
                    .ok_or_else(|| LowerError::unsupported(node, "bad perm"))?,
                None => (0..rank).rev().collect(),
            };
            let st = dense_strides(x.shape);
            let piece = Piece {
                src: 0,
                src_offset: 0,
                src_strides: perm.iter().map(|&p| st[p]).collect(),
                dst: 1,
                dst_offset: 0,
                dst_strides: dense_strides(&out.shape),
                dims: out.shape.clone(),
            };
            ("transpose", vec![piece])
        }
        Op::Expand => {
            let x = x(0)?;
            let rank = out.shape.len();
            let st = dense_strides(x.shape);
            let lead = rank - x.shape.len();
            let src_strides = (0..rank)
                .map(|d| {
                    if d < lead || x.shape[d - lead] == 1 {
                        0
                    } else {
                        st[d - lead]
                    }
                })
                .collect();
            let piece = Piece {
                src: 0,
                src_offset: 0,
                src_strides,
                dst: 1,
                dst_offset: 0,
                dst_strides: dense_strides(&out.shape),
                dims: out.shape.clone(),
            };
            ("expand", vec![piece])
        }
        Op::Slice => ("slice", vec![slice(node, inputs, out)?]),
        Op::Concat { axis } => {
            let rank = out.shape.len();
            let a =
                clif::axis(*axis, rank).ok_or_else(|| LowerError::unsupported(node, "bad axis"))?;
            let dst_strides = dense_strides(&out.shape);
            let mut pieces = Vec::new();
            let mut at = 0usize;
            let present: Vec<Operand> = inputs.iter().flatten().copied().collect();
            if present.len() != inputs.len() {
                return Err(LowerError::unsupported(node, "a missing input"));
            }
            for (i, x) in present.iter().enumerate() {
                pieces.push(Piece {
                    src: i,
                    src_offset: 0,
                    src_strides: dense_strides(x.shape),
                    dst: inputs.len(),
                    dst_offset: at as i64 * dst_strides[a],
                    dst_strides: dst_strides.clone(),
                    dims: x.shape.to_vec(),
                });
                at += x.shape[a];
            }
            ("concat", pieces)
        }
        Op::Split { axis } => {
            let x = x(0)?;
            let a = clif::axis(*axis, x.shape.len())
                .ok_or_else(|| LowerError::unsupported(node, "bad axis"))?;
            let src_strides = dense_strides(x.shape);
            let mut at = 0usize;
            let mut pieces = Vec::new();
            for (o, t) in outputs.iter().enumerate() {
                pieces.push(Piece {
                    src: 0,
                    src_offset: at as i64 * src_strides[a],
                    src_strides: src_strides.clone(),
                    dst: 1 + o,
                    dst_offset: 0,
                    dst_strides: dense_strides(&t.shape),
                    dims: t.shape.clone(),
                });
                at += t.shape[a];
            }
            ("split", pieces)
        }
        Op::Gather { axis } => return gather(ctx, node, inputs, out, *axis).map(Some),
        Op::Pad { mode } => return pad(ctx, node, inputs, out, *mode).map(Some),
        _ => return Ok(None),
    };
    let x0 = x(0)?;
    let elem = x0.dtype.size();
    let (func, units) = copy::define(ctx, kind, elem, &pieces)?;
    // Arguments: the data inputs the pieces read (Concat: all of them), then the outputs.
    let n_src = pieces.iter().map(|p| p.src + 1).max().unwrap_or(1);
    let mut args: Vec<Arg> = (0..n_src).map(Arg::Input).collect();
    args.extend((0..outputs.len()).map(Arg::Output));
    Ok(Some(Kernel {
        func,
        args,
        units,
        kind: kind.to_string(),
    }))
}

/// A constant integer input as i64 values.
fn const_ints(
    node: &Node,
    inputs: &[Option<Operand>],
    i: usize,
    what: &str,
) -> Result<Option<Vec<i64>>> {
    match inputs.get(i).copied().flatten() {
        None => Ok(None),
        Some(Operand { value: Some(t), .. }) => Ok(Some(t.to_i64_vec())),
        Some(_) => Err(LowerError::unsupported(
            node,
            format!("{what} is not a constant"),
        )),
    }
}

fn slice(node: &Node, inputs: &[Option<Operand>], out: &OutType) -> Result<Piece> {
    let x = super::data_input(node, inputs)?;
    let rank = x.shape.len();
    let starts = const_ints(node, inputs, 1, "starts")?
        .ok_or_else(|| LowerError::unsupported(node, "no starts"))?;
    let axes =
        const_ints(node, inputs, 3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = const_ints(node, inputs, 4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(LowerError::unsupported(
            node,
            "starts, axes and steps differ in length",
        ));
    }
    let st = dense_strides(x.shape);
    let mut offset = 0i64;
    let mut strides = st.clone();
    for k in 0..starts.len() {
        let a =
            clif::axis(axes[k], rank).ok_or_else(|| LowerError::unsupported(node, "bad axis"))?;
        let (dim, step) = (x.shape[a] as i64, steps[k]);
        if step == 0 {
            return Err(LowerError::unsupported(node, "step 0"));
        }
        let s = if starts[k] < 0 {
            starts[k].saturating_add(dim)
        } else {
            starts[k]
        };
        let s = if step > 0 {
            s.clamp(0, dim)
        } else {
            s.clamp(0, (dim - 1).max(0))
        };
        offset += s * st[a];
        strides[a] = st[a] * step;
    }
    Ok(Piece {
        src: 0,
        src_offset: offset,
        src_strides: strides,
        dst: 1,
        dst_offset: 0,
        dst_strides: dense_strides(&out.shape),
        dims: out.shape.clone(),
    })
}

/// `out[o, j, i] = data[o, idx[j], i]`: one unit per (o, j), a negative index counts from
/// the end and an index out of range is clamped to the nearest row (the artifact has no
/// way to fail mid-run; the reference errors there instead).
fn gather<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    _out: &OutType,
    axis: i64,
) -> Result<Kernel> {
    let (Some(data), Some(idx)) = (
        inputs.first().copied().flatten(),
        inputs.get(1).copied().flatten(),
    ) else {
        return Err(LowerError::unsupported(node, "missing inputs"));
    };
    let a = clif::axis(axis, data.shape.len())
        .ok_or_else(|| LowerError::unsupported(node, "bad axis"))?;
    let idx_ty = match idx.dtype {
        DType::I32 => types::I32,
        DType::I64 => types::I64,
        d => return Err(LowerError::unsupported(node, format!("{d} indices"))),
    };
    let elem = data.dtype.size() as i64;
    let outer: usize = data.shape[..a].iter().product();
    let rows = data.shape[a] as i64;
    let inner: usize = data.shape[a + 1..].iter().product();
    let n_idx: usize = idx.shape.iter().product();
    if rows == 0 && n_idx > 0 {
        return Err(LowerError::unsupported(node, "gathers from an empty axis"));
    }
    let row_bytes = inner as i64 * elem;
    let idx_size = idx.dtype.size() as i64;
    let units = (outer * n_idx) as u64;
    let func = clif::define(ctx, "gather", |b, p| {
        let src = clif::arg(b, p, 0);
        let ind = clif::arg(b, p, 1);
        let dst = clif::arg(b, p, 2);
        clif::for_units(b, p, &mut |b, u| {
            let j = b.ins().urem_imm_s(u, n_idx.max(1) as i64);
            let o = b.ins().udiv_imm_s(u, n_idx.max(1) as i64);
            let ia = clif::index(b, ind, j, idx_size);
            let mut i = b.ins().load(idx_ty, clif::mem(), ia, 0);
            if idx_ty == types::I32 {
                i = b.ins().sextend(types::I64, i);
            }
            let wrapped = b.ins().iadd_imm_s(i, rows);
            let neg = b.ins().icmp_imm_s(IntCC::SignedLessThan, i, 0);
            let i = b.ins().select(neg, wrapped, i);
            let zero = b.ins().iconst(types::I64, 0);
            let i = b.ins().smax(i, zero);
            let last = b.ins().iconst(types::I64, rows - 1);
            let i = b.ins().smin(i, last);
            let row = b.ins().imul_imm_s(o, rows);
            let row = b.ins().iadd(row, i);
            let s = clif::index(b, src, row, row_bytes);
            let d = clif::index(b, dst, u, row_bytes);
            copy::copy_bytes(b, s, d, row_bytes)
        })
    })?;
    Ok(Kernel {
        func,
        args: vec![Arg::Input(0), Arg::Input(1), Arg::Output(0)],
        units,
        kind: "gather".into(),
    })
}

/// Constant-mode Pad with non-negative constant pads: one unit per output row, which is
/// filled with the pad value and then, if it lies inside the input, gets the input row.
fn pad<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    out: &OutType,
    mode: PadMode,
) -> Result<Kernel> {
    if mode != PadMode::Constant {
        return Err(LowerError::unsupported(node, format!("{mode} padding")));
    }
    let x = super::data_input(node, inputs)?;
    let rank = x.shape.len();
    let pads = const_ints(node, inputs, 1, "pads")?
        .ok_or_else(|| LowerError::unsupported(node, "no pads"))?;
    let axes: Vec<usize> = match const_ints(node, inputs, 3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&a| clif::axis(a, rank))
            .collect::<Option<_>>()
            .ok_or_else(|| LowerError::unsupported(node, "bad axes"))?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
        return Err(LowerError::unsupported(
            node,
            "pads must be constant, non-negative, two per axis",
        ));
    }
    let mut lo = vec![0i64; rank];
    for (k, &a) in axes.iter().enumerate() {
        lo[a] = pads[k];
    }
    let value: Vec<u8> = match inputs.get(2).copied().flatten() {
        None => vec![0; x.dtype.size()],
        Some(Operand { value: Some(t), .. }) if t.len() == 1 && t.dtype() == x.dtype => {
            t.to_le_bytes()
        }
        Some(_) => {
            return Err(LowerError::unsupported(
                node,
                "the pad value is not a constant scalar",
            ))
        }
    };
    let ty = clif::bits_type(x.dtype)
        .ok_or_else(|| LowerError::unsupported(node, format!("{} elements", x.dtype)))?;
    let mut word = [0u8; 8];
    word[..value.len()].copy_from_slice(&value);
    let fill = i64::from_le_bytes(word);
    let elem = x.dtype.size() as i64;
    let (rows_dims, inner_out, inner_in) = if rank == 0 {
        (vec![], 1usize, 1usize)
    } else {
        (
            out.shape[..rank - 1].to_vec(),
            out.shape[rank - 1],
            x.shape[rank - 1],
        )
    };
    let in_strides = dense_strides(x.shape);
    let units: u64 = rows_dims.iter().product::<usize>() as u64;
    let inner_lo = if rank == 0 { 0 } else { lo[rank - 1] };
    let func = clif::define(ctx, "pad", |b, p| {
        let src = clif::arg(b, p, 0);
        let dst = clif::arg(b, p, 1);
        clif::for_units(b, p, &mut |b, u| {
            let d = clif::index(b, dst, u, inner_out as i64 * elem);
            let v = b.ins().iconst(ty, fill);
            clif::for_n(b, inner_out as u64, &mut |b, j| {
                let a = clif::index(b, d, j, elem);
                b.ins().store(clif::mem(), v, a, 0);
                Ok(())
            })?;
            // The input row this output row shows, if any: each outer index minus its
            // begin pad must lie in 0..dim.
            let mut inside = b.ins().iconst(types::I8, 1);
            let mut src_off = b.ins().iconst(types::I64, 0);
            let mut rest = u;
            for dd in (0..rows_dims.len()).rev() {
                let i = b.ins().urem_imm_s(rest, out.shape[dd] as i64);
                rest = b.ins().udiv_imm_s(rest, out.shape[dd] as i64);
                let k = b.ins().iadd_imm_s(i, -lo[dd]);
                let ok = b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, k, x.shape[dd] as i64);
                inside = b.ins().band(inside, ok);
                let t = b.ins().imul_imm_s(k, in_strides[dd] * elem);
                src_off = b.ins().iadd(src_off, t);
            }
            let copy_block = b.create_block();
            let done = b.create_block();
            b.ins().brif(inside, copy_block, &[], done, &[]);
            b.switch_to_block(copy_block);
            let s = b.ins().iadd(src, src_off);
            let d2 = b.ins().iadd_imm_s(d, inner_lo * elem);
            copy::copy_bytes(b, s, d2, inner_in as i64 * elem)?;
            b.ins().jump(done, &[]);
            b.switch_to_block(done);
            Ok(())
        })
    })?;
    Ok(Kernel {
        func,
        args: vec![Arg::Input(0), Arg::Output(0)],
        units: if rank == 0 { 1 } else { units },
        kind: "pad".into(),
    })
}
