//! Epilogues: the elementwise nodes after a convolution or matmul that the GEMM applies
//! while a tile is still in registers — `clip(acc + bias + residual, lo, hi)`.
//!
//! Matched after an anchor (conv, matmul, gemm) whose result is f32, following single-use
//! values that are not graph outputs: any number of adds of a constant that varies only
//! along the output channel (conv: axis 1; matmul: the last axis), at most one add of a
//! run-time tensor of the same shape (the residual), and last a relu or a clip with
//! constant bounds. The same matcher serves the top-level graph (before the fusion pass
//! groups nodes) and a fused kernel's body.

use kiln_ir::{BinaryOp, DType, Graph, NodeId, Op, Tensor, UnaryOp, Value};
use std::collections::{HashMap, HashSet};

/// Which axis of the anchor's output the bias runs along, and its length.
fn channel_axis(
    graph: &Graph,
    n: NodeId,
    known: &HashMap<Value, Tensor>,
) -> Option<(usize, usize, usize)> {
    let node = graph.node(n);
    let out = node.outputs.first()?;
    if out.dtype != DType::F32 || node.outputs.len() != 1 {
        return None;
    }
    let rank = out.shape.rank()?;
    let ins = graph.inputs_of(n);
    let dims = out.shape.dims()?;
    match &node.op {
        Op::Conv { .. } if rank >= 3 => {
            let m = dims[1].known().or_else(|| {
                let w = ins.get(1).copied().flatten()?;
                known.get(&w).and_then(|t| t.shape().first().copied())
            })?;
            Some((rank, 1, m))
        }
        Op::MatMul | Op::Gemm { .. } if rank >= 1 => {
            Some((rank, rank - 1, dims[rank - 1].known()?))
        }
        _ => None,
    }
}

/// `c` broadcasts onto an output of rank `rank` varying at most along `axis` (length `len`).
fn per_channel(c: &Tensor, rank: usize, axis: usize, len: usize) -> bool {
    if c.dtype() != DType::F32 || c.rank() > rank {
        return false;
    }
    let offset = rank - c.rank();
    c.shape()
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (i + offset == axis && d == len))
}

/// `c` as one value per channel.
fn expand(c: &Tensor, len: usize) -> Vec<f32> {
    let v = c.as_slice::<f32>().unwrap_or(&[]);
    if v.len() == len {
        v.to_vec()
    } else {
        vec![v.first().copied().unwrap_or(0.0); len]
    }
}

fn scalar_f32(c: &Tensor) -> Option<f32> {
    match c.as_slice::<f32>() {
        Ok([x]) => Some(*x),
        _ => None,
    }
}

/// The nodes fused after `n`, in order (empty when `n` is not an anchor or nothing fits).
pub(crate) fn match_epilogue(
    graph: &Graph,
    n: NodeId,
    known: &HashMap<Value, Tensor>,
    uses: &HashMap<Value, usize>,
    outputs: &HashSet<Value>,
) -> Vec<NodeId> {
    let mut tail = Vec::new();
    let Some((rank, axis, len)) = channel_axis(graph, n, known) else {
        return tail;
    };
    let out_ty = graph.node(n).outputs[0].clone();
    let mut cur = Value::new(n, 0);
    let mut residual = false;
    loop {
        if uses.get(&cur).copied() != Some(1) || outputs.contains(&cur) {
            break;
        }
        let Some(&(user, _)) = graph.uses_of(cur).first() else {
            break;
        };
        let unode = graph.node(user);
        if unode.outputs.len() != 1 || unode.outputs[0] != out_ty {
            break;
        }
        let ins = graph.inputs_of(user);
        let fits = match &unode.op {
            Op::Binary(BinaryOp::Add) if ins.len() == 2 => {
                let other = if ins[0] == Some(cur) { ins[1] } else { ins[0] };
                match other.map(|o| (o, known.get(&o))) {
                    Some((_, Some(c))) => per_channel(c, rank, axis, len),
                    Some((o, None))
                        if !residual && Some(o) != Some(cur) && *graph.value_type(o) == out_ty =>
                    {
                        residual = true;
                        true
                    }
                    _ => false,
                }
            }
            Op::Unary(UnaryOp::Relu) => true,
            Op::Clip => {
                let bound = |i: usize, default: f32| match ins.get(i).copied().flatten() {
                    None => Some(default),
                    Some(v) => known.get(&v).and_then(scalar_f32),
                };
                // NaN or crossed bounds keep the op's own semantics (the chain stops here).
                matches!((bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)), (Some(lo), Some(hi)) if lo <= hi)
            }
            _ => false,
        };
        if !fits {
            break;
        }
        tail.push(user);
        cur = Value::new(user, 0);
        if matches!(unode.op, Op::Unary(UnaryOp::Relu) | Op::Clip) {
            break;
        }
    }
    tail
}

/// What a matched chain asks of the GEMM, with constants resolved.
#[derive(Clone, Debug, Default)]
pub(crate) struct Epilogue {
    /// Summed constant adds, one per output channel.
    pub bias: Option<Vec<f32>>,
    /// The step input holding the residual.
    pub residual: Option<usize>,
    pub clip: Option<(f32, f32)>,
}

impl Epilogue {
    /// The epilogue of the chain `nodes` (anchor first) whose step inputs are `inputs`.
    pub fn of_chain(
        graph: &Graph,
        nodes: &[NodeId],
        inputs: &[Value],
        known: &HashMap<Value, Tensor>,
    ) -> Epilogue {
        let mut epi = Epilogue::default();
        let Some((_, _, len)) = channel_axis(graph, nodes[0], known) else {
            return epi;
        };
        let mut cur = Value::new(nodes[0], 0);
        for &m in &nodes[1..] {
            let ins = graph.inputs_of(m);
            match &graph.node(m).op {
                Op::Binary(BinaryOp::Add) => {
                    let Some(other) = (if ins[0] == Some(cur) { ins[1] } else { ins[0] }) else {
                        continue;
                    };
                    match known.get(&other) {
                        Some(c) => {
                            let add = expand(c, len);
                            let b = epi.bias.get_or_insert_with(|| vec![0.0; len]);
                            b.iter_mut().zip(add).for_each(|(x, y)| *x += y);
                        }
                        None => epi.residual = inputs.iter().position(|&v| v == other),
                    }
                }
                Op::Unary(UnaryOp::Relu) => epi.clip = Some((0.0, f32::INFINITY)),
                Op::Clip => {
                    let bound = |i: usize, default: f32| {
                        ins.get(i)
                            .copied()
                            .flatten()
                            .and_then(|v| known.get(&v))
                            .and_then(scalar_f32)
                            .unwrap_or(default)
                    };
                    epi.clip = Some((bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)));
                }
                _ => {}
            }
            cur = Value::new(m, 0);
        }
        epi
    }
}
