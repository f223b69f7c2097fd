//! What the e-graph knows about each e-class: its type (dtype and shape, one per output),
//! its value when it is a small constant, whether it is computed from constants only (then
//! `fold` computes it and it costs nothing at run time), whether it is known non-negative,
//! and the source name it carries back to the graph.
//!
//! The analysis also owns the op and constant tables that e-nodes index into.

use super::lang::{ENode, Kind};
use egg::{Analysis, DidMerge, EGraph, Id};
use kiln_ir::{with_data, BinaryOp, Op, PadMode, PoolKind, ReduceKind, Tensor, TensorType, UnaryOp};
use std::collections::HashMap;

pub type EG = EGraph<ENode, KilnAnalysis>;

/// Constants up to this many elements carry their value in the analysis (rules read them:
/// "is this per-channel", "is this all ones"), and new small constant expressions are
/// evaluated so later rules can read theirs.
pub const SMALL: usize = 4096;

/// Graph constants up to this many elements are identified by content, so equal small
/// constants are one e-class; bigger ones (weights) by identity, which is cheaper to hash.
const KEY_BY_CONTENT: usize = 64;

#[derive(Default)]
pub struct KilnAnalysis {
    ops: Vec<(Op, usize)>,
    op_keys: HashMap<String, u32>,
    consts: Vec<Tensor>,
    const_keys: HashMap<String, u32>,
    /// Types of the graph's inputs, by position.
    pub inputs: Vec<TensorType>,
}

impl KilnAnalysis {
    /// The index of `op` with `n_outputs` outputs. `identity` keys it by a graph node
    /// instead of by its printed form (ops holding graphs, impure ops): such a node equals
    /// no other.
    pub fn intern_op(&mut self, op: Op, n_outputs: usize, identity: Option<usize>) -> u32 {
        let key = match identity {
            Some(n) => format!("#{n}"),
            None => format!("{op:?}/{n_outputs}"),
        };
        if let Some(&i) = self.op_keys.get(&key) {
            return i;
        }
        let i = self.ops.len() as u32;
        self.ops.push((op, n_outputs));
        self.op_keys.insert(key, i);
        i
    }

    /// The index of constant `t`; `identity` keys a big graph constant by its node.
    pub fn intern_const(&mut self, t: Tensor, identity: Option<usize>) -> u32 {
        let key = match identity {
            Some(n) if t.len() > KEY_BY_CONTENT => format!("#{n}"),
            _ => format!("{t:?}"),
        };
        if let Some(&i) = self.const_keys.get(&key) {
            return i;
        }
        let i = self.consts.len() as u32;
        self.consts.push(t);
        self.const_keys.insert(key, i);
        i
    }

    pub fn op(&self, o: u32) -> &Op {
        &self.ops[o as usize].0
    }

    pub fn n_outputs(&self, o: u32) -> usize {
        self.ops[o as usize].1
    }

    pub fn constant(&self, c: u32) -> &Tensor {
        &self.consts[c as usize]
    }
}

#[derive(Clone, Debug, Default)]
pub struct Data {
    /// One type per output: one for a value, several for a `Multi` tuple, none for the
    /// `None` leaf or when inference failed (such a node is never extracted).
    pub types: Vec<TensorType>,
    /// The types came from the source graph (they win over inferred ones).
    pub from_graph: bool,
    /// The value, for small constants and small constant expressions.
    pub value: Option<Tensor>,
    /// Computed from constants only.
    pub constant: bool,
    /// Every element is ≥ 0.
    pub nonneg: bool,
    /// (position in the source graph's topological order, name) of the source node this
    /// class came from; the lowest position wins when two source nodes merge.
    pub origin: Option<(usize, String)>,
    /// A name for a class rules made: derived from the class it was made for.
    pub hint: Option<String>,
    /// How many values read this one in the source graph (a tuple: its output count), so
    /// extraction can share its cost among them; 0 for classes rules made (read once).
    pub uses: usize,
}

impl Data {
    pub fn ty(&self) -> Option<&TensorType> {
        match self.types.as_slice() {
            [t] => Some(t),
            _ => None,
        }
    }
}

impl Analysis<ENode> for KilnAnalysis {
    type Data = Data;

    fn make(egraph: &mut EG, enode: &ENode, _id: Id) -> Data {
        let eg: &EG = egraph;
        let a = &eg.analysis;
        match enode.kind {
            Kind::Input(i) => Data { types: a.inputs.get(i as usize).cloned().into_iter().collect(), ..Data::default() },
            Kind::Const(c) => {
                let t = a.constant(c);
                let value = (t.len() <= SMALL).then(|| t.clone());
                let nonneg = value.as_ref().is_some_and(all_nonneg);
                Data { types: vec![TensorType::known(t.dtype(), t.shape())], value, constant: true, nonneg, ..Data::default() }
            }
            Kind::None => Data { constant: true, ..Data::default() },
            Kind::Output(k) => {
                let d = &eg[enode.children[0]].data;
                Data { types: d.types.get(k as usize).cloned().into_iter().collect(), constant: d.constant, ..Data::default() }
            }
            Kind::Op(o) | Kind::Multi(o) => {
                let (op, n) = (a.op(o), a.n_outputs(o));
                let kids: Vec<&Data> = enode.children.iter().map(|&c| &eg[c].data).collect();
                let is_none = |c: &Id| matches!(eg[*c].nodes.first(), Some(ENode { kind: Kind::None, .. }));
                let absent: Vec<bool> = enode.children.iter().map(is_none).collect();
                let constant = kids.iter().all(|d| d.constant) && op.is_pure();
                let mut types: Vec<Option<&TensorType>> = Vec::with_capacity(kids.len());
                let mut well_typed = true;
                for (d, &absent) in kids.iter().zip(&absent) {
                    match (absent, d.ty()) {
                        (true, _) => types.push(None),
                        (false, Some(t)) => types.push(Some(t)),
                        (false, None) => well_typed = false,
                    }
                }
                let consts: Vec<Option<&Tensor>> = kids.iter().map(|d| d.value.as_ref()).collect();
                let types = if well_typed { kiln_ir::infer::infer(op, &types, &consts, n).unwrap_or_default() } else { vec![] };
                let small_out = types.len() == 1 && types[0].shape.numel().is_some_and(|k| k <= SMALL);
                let value = if matches!(enode.kind, Kind::Op(_))
                    && constant
                    && small_out
                    && kids.iter().zip(&absent).all(|(d, &absent)| absent || d.value.is_some())
                {
                    let args: Vec<Option<Tensor>> = kids.iter().map(|d| d.value.clone()).collect();
                    kiln_ir::eval::eval_op(op, &args, 1).ok().and_then(|mut v| v.pop())
                } else {
                    None
                };
                let nonneg = match &value {
                    Some(v) => all_nonneg(v),
                    None => types.len() == 1 && op_nonneg(op, &kids, &absent),
                };
                Data { types, value, constant, nonneg, ..Data::default() }
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut to_a = false;
        let mut to_b = false;
        if (b.from_graph && !a.from_graph) || (a.types.is_empty() && !b.types.is_empty()) {
            to_a |= a.types != b.types;
            a.types = b.types;
            a.from_graph |= b.from_graph;
        } else {
            to_b |= a.types != b.types;
        }
        match (&a.value, b.value) {
            (None, Some(v)) => {
                a.value = Some(v);
                to_a = true;
            }
            (Some(_), None) => to_b = true,
            _ => {}
        }
        to_a |= b.constant && !a.constant;
        to_b |= a.constant && !b.constant;
        a.constant |= b.constant;
        to_a |= b.nonneg && !a.nonneg;
        to_b |= a.nonneg && !b.nonneg;
        a.nonneg |= b.nonneg;
        a.origin = match (a.origin.take(), b.origin) {
            (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
            (x, y) => x.or(y),
        };
        if a.hint.is_none() {
            a.hint = b.hint;
        }
        a.uses = a.uses.max(b.uses);
        DidMerge(to_a, to_b)
    }
}

fn all_nonneg(t: &Tensor) -> bool {
    use kiln_ir::Data as D;
    match t.data() {
        D::F32(v) => v.iter().all(|x| *x >= 0.0),
        D::F64(v) => v.iter().all(|x| *x >= 0.0),
        D::F16(v) => v.iter().all(|x| x.to_f32() >= 0.0),
        D::BF16(v) => v.iter().all(|x| x.to_f32() >= 0.0),
        D::I8(v) => v.iter().all(|x| *x >= 0),
        D::I16(v) => v.iter().all(|x| *x >= 0),
        D::I32(v) => v.iter().all(|x| *x >= 0),
        D::I64(v) => v.iter().all(|x| *x >= 0),
        D::U8(_) | D::U16(_) | D::U32(_) | D::U64(_) | D::Bool(_) => true,
    }
}

/// The scalar a one-element constant holds, as f64.
pub fn scalar_f64(t: &Tensor) -> Option<f64> {
    if t.len() != 1 {
        return None;
    }
    use kiln_ir::Element;
    Some(with_data!(t.data(), v, T => v[0].to_f64()))
}

/// Whether `op` gives non-negative results from inputs with these facts.
fn op_nonneg(op: &Op, kids: &[&Data], absent: &[bool]) -> bool {
    let nn = |i: usize| kids.get(i).is_some_and(|d| d.nonneg);
    let min_nonneg = |i: usize| kids.get(i).and_then(|d| d.value.as_ref()).and_then(scalar_f64).is_some_and(|m| m >= 0.0);
    match op {
        Op::Unary(u) => match u {
            UnaryOp::Relu | UnaryOp::Sigmoid | UnaryOp::Exp | UnaryOp::Abs | UnaryOp::Sqrt | UnaryOp::Softplus => true,
            UnaryOp::Identity | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => nn(0),
            _ => false,
        },
        Op::Clip => nn(0) || (!absent.get(1).copied().unwrap_or(true) && min_nonneg(1)),
        Op::Binary(BinaryOp::Max) => nn(0) || nn(1),
        Op::Binary(BinaryOp::Add | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Min) => nn(0) && nn(1),
        Op::Softmax { .. } => true,
        Op::Pool { kind: PoolKind::Max | PoolKind::Average, .. } | Op::GlobalPool { kind: PoolKind::Max | PoolKind::Average, .. } => nn(0),
        Op::Reduce { kind: ReduceKind::Mean | ReduceKind::Max | ReduceKind::Min | ReduceKind::Sum, .. } => nn(0),
        Op::Reduce { kind: ReduceKind::L1 | ReduceKind::L2 | ReduceKind::SumSquare, .. } => true,
        Op::Transpose { .. }
        | Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Slice
        | Op::Gather { .. }
        | Op::Expand
        | Op::Tile
        | Op::DepthToSpace { .. }
        | Op::SpaceToDepth { .. } => nn(0),
        Op::Concat { .. } => kids.iter().zip(absent).all(|(d, &a)| a || d.nonneg),
        Op::Pad { mode } => nn(0) && (*mode != PadMode::Constant || absent.get(2).copied().unwrap_or(true) || min_nonneg(2)),
        _ => false,
    }
}
