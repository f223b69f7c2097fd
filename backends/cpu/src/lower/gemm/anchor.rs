//! What a GEMM kernel computes, read from a node: the anchor op (Conv, MatMul, Gemm), where
//! each of its inputs comes from, and the epilogue fused after it. A plain node is its own
//! anchor; an `Op::Fused` qualifies when its body is one anchor followed by a chain of
//! constant per-channel adds (summed into one bias), at most one add of a run-time tensor
//! of the output's shape (the residual), and last a relu or a clip with constant bounds —
//! the same chains the JIT's epilogue matcher (`kernels/epilogue.rs`) fuses.

use super::super::Operand;
use kiln_ir::{BinaryOp, DType, Graph, Node, NodeId, Op, Tensor, UnaryOp, Value};

/// One anchor input: its concrete shape, its value when constant, and the node input that
/// carries it (`None` for a constant inside a fused body, which the kernel embeds).
#[derive(Clone, Debug)]
pub(super) struct Src<'a> {
    pub shape: Vec<usize>,
    pub value: Option<&'a Tensor>,
    pub input: Option<usize>,
}

impl Src<'_> {
    pub fn f32(&self) -> Option<&[f32]> {
        self.value?.as_slice::<f32>().ok()
    }
}

/// The ops applied after the anchor: `clip(anchor + bias + residual, lo, hi)`.
#[derive(Clone, Debug, Default)]
pub(super) struct Epilogue {
    /// The constant adds summed, one value per output channel.
    pub bias: Option<Vec<f32>>,
    /// The node input holding the residual.
    pub residual: Option<usize>,
    pub clip: Option<(f32, f32)>,
    /// Op names of the chain, for the kernel's `kind`.
    pub names: Vec<&'static str>,
}

pub(super) struct Anchor<'a> {
    pub op: &'a Op,
    pub ins: Vec<Option<Src<'a>>>,
    pub epi: Epilogue,
}

fn src<'a>(inputs: &[Option<Operand<'a>>], i: usize) -> Option<Src<'a>> {
    let o = inputs.get(i).copied().flatten()?;
    Some(Src { shape: o.shape.to_vec(), value: o.value, input: Some(i) })
}

fn is_anchor(op: &Op) -> bool {
    matches!(op, Op::Conv { .. } | Op::MatMul | Op::Gemm { .. })
}

/// The output axis a bias runs along: conv's channel axis, a matmul's last.
fn channel_axis(op: &Op, rank: usize) -> usize {
    match op {
        Op::Conv { .. } => 1,
        _ => rank.saturating_sub(1),
    }
}

/// The anchor of `node`, or `None` when it is not an anchor or a fused chain this lowering
/// computes whole. Every tensor involved must be f32.
pub(super) fn read<'a>(
    node: &'a Node,
    inputs: &[Option<Operand<'a>>],
    out_shape: &[usize],
) -> Option<Anchor<'a>> {
    let f32_inputs = |n: usize| (0..n).all(|i| inputs.get(i).copied().flatten().is_none_or(|o| o.dtype == DType::F32));
    if is_anchor(&node.op) {
        if !f32_inputs(inputs.len()) {
            return None;
        }
        let ins = (0..inputs.len()).map(|i| src(inputs, i)).collect();
        return Some(Anchor { op: &node.op, ins, epi: Epilogue::default() });
    }
    let Op::Fused { body } = &node.op else {
        return None;
    };
    fused(body, inputs, out_shape)
}

fn fused<'a>(body: &'a Graph, inputs: &[Option<Operand<'a>>], out_shape: &[usize]) -> Option<Anchor<'a>> {
    if body.outputs.len() != 1 || body.inputs.len() != inputs.len() {
        return None;
    }
    let order = body.topo_order().ok()?;
    let computed: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&n| !matches!(body.node(n).op, Op::Input | Op::Const { .. }))
        .collect();
    let anchor = *computed.first()?;
    if !is_anchor(&body.node(anchor).op) || computed[1..].iter().any(|&n| is_anchor(&body.node(n).op)) {
        return None;
    }
    // Where a body value comes from, when it is not computed in the body.
    let resolve = |v: Value| -> Option<Src<'a>> {
        let n = body.node(v.node);
        match &n.op {
            Op::Input => {
                let i = body.inputs.iter().position(|&x| x == v.node)?;
                let s = src(inputs, i)?;
                (inputs[i]?.dtype == DType::F32).then_some(s)
            }
            Op::Const { value } => {
                (value.dtype() == DType::F32).then(|| Src { shape: value.shape().to_vec(), value: Some(value), input: None })
            }
            _ => None,
        }
    };
    let mut ins = Vec::new();
    for v in body.inputs_of(anchor) {
        ins.push(match v {
            None => None,
            Some(v) => Some(resolve(v)?),
        });
    }
    let anchor_ty = body.node(anchor).outputs.first()?.clone();
    if anchor_ty.dtype != DType::F32 || body.node(anchor).outputs.len() != 1 {
        return None;
    }
    let rank = out_shape.len();
    let axis = channel_axis(&body.node(anchor).op, rank);
    let len = *out_shape.get(axis)?;
    let mut epi = Epilogue::default();
    let mut cur = Value::new(anchor, 0);
    // Walk the chain: every other computed node must be the next link.
    for &n in &computed[1..] {
        if epi.clip.is_some() || body.uses_of(cur).len() != 1 || body.uses_of(cur)[0].0 != n {
            return None;
        }
        let node = body.node(n);
        if node.outputs.len() != 1 || node.outputs[0] != anchor_ty {
            return None;
        }
        let ins_n = body.inputs_of(n);
        match &node.op {
            Op::Binary(BinaryOp::Add) if ins_n.len() == 2 => {
                let other = if ins_n[0] == Some(cur) { ins_n[1] } else { ins_n[0] };
                let other = resolve(other?)?;
                if other.input.is_some_and(|i| inputs[i].is_some_and(|o| o.value.is_none())) {
                    if epi.residual.is_some() || other.shape != out_shape {
                        return None;
                    }
                    epi.residual = other.input;
                } else {
                    let add = per_channel(&other, rank, axis, len)?;
                    let b = epi.bias.get_or_insert_with(|| vec![0.0; len]);
                    b.iter_mut().zip(add).for_each(|(x, y)| *x += y);
                }
                epi.names.push("add");
            }
            Op::Unary(UnaryOp::Relu) => {
                epi.clip = Some((0.0, f32::INFINITY));
                epi.names.push("relu");
            }
            Op::Clip => {
                let bound = |i: usize, default: f32| match ins_n.get(i).copied().flatten() {
                    None => Some(default),
                    Some(v) => match resolve(v)?.f32()? {
                        [x] => Some(*x),
                        _ => None,
                    },
                };
                let (lo, hi) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?);
                // NaN or crossed bounds keep the op's own semantics: not fused.
                if !(lo <= hi) {
                    return None;
                }
                epi.clip = Some((lo, hi));
                epi.names.push("clip");
            }
            _ => return None,
        }
        cur = Value::new(n, 0);
    }
    if body.outputs[0].1 != cur {
        return None;
    }
    Some(Anchor { op: &body.node(anchor).op, ins, epi })
}

/// A constant that broadcasts onto the output varying only along `axis`, as one value per
/// channel.
fn per_channel(c: &Src, rank: usize, axis: usize, len: usize) -> Option<Vec<f32>> {
    let v = c.f32()?;
    if c.shape.len() > rank {
        return None;
    }
    let offset = rank - c.shape.len();
    let fits = c.shape.iter().enumerate().all(|(i, &d)| d == 1 || (i + offset == axis && d == len));
    if !fits {
        return None;
    }
    Some(if v.len() == len { v.to_vec() } else { vec![*v.first()?; len] })
}
