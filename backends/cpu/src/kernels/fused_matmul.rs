//! A fused kernel whose body is one MatMul or Gemm followed by what its kernel can apply
//! itself: reshapes (which do not move data), a constant scale right after the product
//! (folded into B), adds of a per-column constant (the bias), at most one add of a body
//! input (the residual), relu or clip, and an exact GELU; its A may come through
//! transposes and reshapes of a body input (one strided copy before the product). The
//! fusion pass groups a transformer's dense layers this way ("matmul+reshape+add",
//! "matmul+reshape+mul+neg+mul+erf+sub+mul+reshape"); compiled as a plan, the body ran
//! as three or four steps: the GEMM, each reshape, and a generated pass over the whole
//! output for the adds and the GELU. As one [`MatMul`] step the GEMM's epilogue takes the
//! adds and clip, and the GELU runs on each chunk of rows right after the GEMM wrote it.

use super::epilogue::Epilogue;
use super::gelu;
use super::matmul::MatMul;
use super::movement::Movement;
use crate::program::Arg;
use kiln_ir::{BinaryOp, DType, Graph, NodeId, Op, Tensor, UnaryOp, Value};
use std::collections::HashMap;

/// The kernel for `body` (a fused node whose inputs are `anchor_args`), or `None` when the
/// body is anything else (it then runs as its own plan).
pub(crate) fn of_body(body: &Graph, anchor_args: &[Arg]) -> Option<MatMul> {
    let [(_, out)] = body.outputs[..] else {
        return None;
    };
    let known: HashMap<Value, Tensor> = body
        .nodes
        .node_indices()
        .filter_map(|n| match &body.node(n).op {
            Op::Const { value } => Some((Value::new(n, 0), value.clone())),
            _ => None,
        })
        .collect();
    let computing: Vec<NodeId> = body
        .nodes
        .node_indices()
        .filter(|&n| !matches!(body.node(n).op, Op::Input | Op::Const { .. }))
        .collect();
    let mut anchors = computing
        .iter()
        .copied()
        .filter(|&n| matches!(body.node(n).op, Op::MatMul | Op::Gemm { .. }));
    let anchor = anchors.next()?;
    if anchors.next().is_some() || body.node(anchor).outputs.len() != 1 {
        return None;
    }
    // The step input behind a body input, for the anchor's operands and the residual.
    let step_arg = |v: Value| -> Option<Arg> {
        let j = body.inputs.iter().position(|&i| Value::new(i, 0) == v)?;
        anchor_args.get(j).copied()
    };
    // A reached through transposes and reshapes of a body input (attention's heads split
    // off): the kernel applies them as one strided copy before the product.
    let mut a_ins = body.inputs_of(anchor);
    let mut a_moves = None;
    let mut prefix = 0;
    if let Some(Some(a)) = a_ins.first().copied() {
        let mut start = a;
        while !matches!(body.node(start.node).op, Op::Input) && !known.contains_key(&start) {
            let node = body.node(start.node);
            let moves = matches!(
                node.op,
                Op::Transpose { .. }
                    | Op::Reshape { .. }
                    | Op::Squeeze
                    | Op::Unsqueeze
                    | Op::Flatten { .. }
            );
            if !moves || start.output != 0 || prefix > 8 {
                return None;
            }
            start = body.inputs_of(start.node).first().copied().flatten()?;
            prefix += 1;
        }
        if prefix > 0 {
            a_moves = Some(Movement::of_chain(body, start, a)?);
            a_ins[0] = Some(start);
        }
    }
    let args: Vec<Arg> = a_ins
        .into_iter()
        .map(|v| match v {
            None => Some(Arg::Absent),
            // A constant of the body: present, but not a step input (MatMul reads it from
            // `known`: B packed, Gemm's C folded into the bias).
            Some(v) if known.contains_key(&v) => Some(Arg::Cur),
            Some(v) => step_arg(v),
        })
        .collect::<Option<_>>()?;
    let reads =
        |v: Value| body.uses_of(v).len() + body.outputs.iter().filter(|(_, o)| *o == v).count();
    let first = &body.node(anchor).outputs[0];
    if first.dtype != DType::F32 {
        return None;
    }
    let n = first.shape.dims()?.last()?.known()?;

    let mut epi = Epilogue::default();
    let mut act = None;
    // A constant scale straight after the product (attention's 1/√d) goes into B.
    let mut scale = None;
    let mut covered = vec![anchor];
    let mut cur = Value::new(anchor, 0);
    while cur != out {
        // GELU reads its input twice, so it is tried before the one-reader check.
        if act.is_none() && epi.clip.is_none() {
            if let Some((g, nodes, end)) = gelu::recognise(body, cur, &known, &reads) {
                act = Some(g);
                covered.extend(nodes);
                cur = end;
                continue;
            }
        }
        if reads(cur) != 1 {
            return None;
        }
        let u = body.uses_of(cur).first()?.0;
        let node = body.node(u);
        let cur_ty = body.value_type(cur).clone();
        let ins = body.inputs_of(u);
        let same_type = node.outputs.len() == 1 && node.outputs[0] == cur_ty;
        let open = act.is_none() && epi.clip.is_none();
        match &node.op {
            Op::Reshape { .. } if ins.first() == Some(&Some(cur)) && node.outputs.len() == 1 => {}
            Op::Binary(BinaryOp::Add) if same_type && open && ins.len() == 2 => {
                let other = if ins[0] == Some(cur) { ins[1] } else { ins[0] };
                let other = other.filter(|&o| o != cur)?;
                match known.get(&other) {
                    Some(c) => {
                        let add = per_column(c, &cur_ty, n)?;
                        let b = epi.bias.get_or_insert_with(|| vec![0.0; n]);
                        b.iter_mut().zip(add).for_each(|(x, y)| *x += y);
                    }
                    None => {
                        if epi.residual.is_some() || *body.value_type(other) != cur_ty {
                            return None;
                        }
                        match step_arg(other)? {
                            Arg::Input(i) => epi.residual = Some(i),
                            _ => return None,
                        }
                    }
                }
            }
            Op::Binary(BinaryOp::Mul)
                if same_type
                    && open
                    && scale.is_none()
                    && epi.bias.is_none()
                    && epi.residual.is_none() =>
            {
                let other = if ins[0] == Some(cur) { ins[1] } else { ins[0] };
                match known.get(&other?).map(|t| t.as_slice::<f32>()) {
                    Some(Ok([c])) => scale = Some(*c),
                    _ => return None,
                }
            }
            Op::Unary(UnaryOp::Relu) if same_type && open => {
                epi.clip = Some((0.0, f32::INFINITY));
            }
            Op::Clip if same_type && open => {
                let bound = |i: usize, default: f32| match ins.get(i).copied().flatten() {
                    None => Some(default),
                    Some(v) => match known.get(&v)?.as_slice::<f32>() {
                        Ok([x]) => Some(*x),
                        _ => None,
                    },
                };
                let (lo, hi) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?);
                // NaN or crossed bounds: the op's own semantics, not the kernel's clamp.
                if lo.is_nan() || hi.is_nan() || lo > hi {
                    return None;
                }
                epi.clip = Some((lo, hi));
            }
            _ => return None,
        }
        covered.push(u);
        cur = Value::new(u, 0);
    }
    if covered.len() + prefix != computing.len() {
        return None;
    }
    let out_shape: Vec<usize> = body
        .value_type(out)
        .shape
        .dims()?
        .iter()
        .map(|d| d.known())
        .collect::<Option<_>>()?;
    let mut known = known;
    if let (Some(s), Some(Some(b))) = (scale, body.inputs_of(anchor).get(1).copied()) {
        if let Some(t) = known.get(&b) {
            let v: Vec<f32> = t.as_slice::<f32>().ok()?.iter().map(|x| x * s).collect();
            let scaled = Tensor::new(t.shape().to_vec(), v).ok()?;
            known.insert(b, scaled);
        }
    }
    let gelu = act.is_some();
    let mut m = MatMul::new(body, anchor, &args, &known, epi)?;
    m.set_tail(act, out_shape, a_moves, scale)?;
    // A GELU layer's product split by columns (see `columns`): 128×256×1024 went from
    // 0.57 to 0.51 ms (best of 8 interleaved runs); the plain dense layers and attention's
    // products measured no better split that way, and keep the driver's split.
    if gelu {
        if let Some(b) = body
            .inputs_of(anchor)
            .get(1)
            .copied()
            .flatten()
            .and_then(|b| known.get(&b))
        {
            // Declined (a B it does not cut): the product stays whole.
            let _ = m.cut_columns(b);
        }
    }
    Some(m)
}

/// A constant add that varies at most along the last axis of `ty` (of length `n`), as one
/// value per column.
fn per_column(c: &Tensor, ty: &kiln_ir::TensorType, n: usize) -> Option<Vec<f32>> {
    let dims = ty.shape.dims()?;
    let rank = dims.len();
    if c.dtype() != DType::F32 || c.rank() > rank || dims.last()?.known()? != n {
        return None;
    }
    let offset = rank - c.rank();
    let fits = c
        .shape()
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (i + offset == rank - 1 && d == n));
    if !fits {
        return None;
    }
    let v = c.as_slice::<f32>().ok()?;
    match v.len() {
        1 => Some(vec![v[0]; n]),
        l if l == n => Some(v.to_vec()),
        _ => None,
    }
}
