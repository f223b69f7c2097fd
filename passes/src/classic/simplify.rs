//! Identity and no-op removal: ops that hand their input through unchanged (Identity,
//! inference Dropout, a Cast to the same dtype, a Reshape to the same shape, x·1, x+0, a
//! Slice that takes off exactly what a Pad added, …) are bypassed: their consumers read
//! the input directly.
//!
//! "Same shape" is judged on the types inference gives now, and only when they are fully
//! determined (no unknown dim; a symbol names one size throughout the graph). A graph
//! output produced by a bypassed node is rewired to the input when the types are equal;
//! otherwise the node stays for the output.
//!
//! It also moves an elementwise op that follows every output of a Split (the same op on
//! each, each output read only by it) before the Split: the e-graph's merge of sibling 1×1
//! convs leaves `conv → split → relu, relu, relu`, and with the relu before the split,
//! fusion makes it the conv's epilogue and the split a plain copy.

use super::util::each_graph;
use kiln_ir::rewrite::{infer_node, is_unused, is_used, remove_node, replace_uses, set_input};
use kiln_ir::{BinaryOp, Dim, Graph, NodeId, Op, Result, Tensor, TensorType, UnaryOp, Value};

/// `simplify`: removes identities and no-ops.
pub struct Simplify;

impl crate::Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        each_graph(g, &mut |g| {
            for n in g.topo_order()? {
                if let Some(x) = passes_through(g, n) {
                    replace_uses(g, Value::new(n, 0), x);
                    if is_unused(g, n) {
                        remove_node(g, n);
                    }
                }
            }
            for n in g.topo_order()? {
                if g.nodes.contains_node(n) && matches!(g.node(n).op, Op::Split { .. }) {
                    hoist_through_split(g, n);
                }
            }
            Ok(())
        })
    }
}

/// When every output of Split `s` is read only by one node, all of them the same
/// elementwise op whose other operands are the same one-element values (a relu, a clip
/// with its bounds, a scaling by one constant): applies that op once to the Split's input,
/// so that the Split cuts its result. The first consumer is reused as the hoisted node.
fn hoist_through_split(g: &mut Graph, s: NodeId) -> Option<()> {
    let x = (*g.inputs_of(s).first()?)?;
    let rank = g.value_type(x).shape.rank()?;
    let n_out = g.node(s).outputs.len();
    let mut users = Vec::with_capacity(n_out);
    for k in 0..n_out {
        let v = Value::new(s, k);
        match g.uses_of(v)[..] {
            [(u, 0)] if !g.outputs.iter().any(|(_, o)| *o == v) && !users.contains(&u) => users.push(u),
            _ => return None,
        }
    }
    let first = *users.first()?;
    let op = &g.node(first).op;
    // Batch norm's operands are per channel, which a split along channels tells apart.
    if !crate::pattern::pattern(op).is_elementwise() || matches!(op, Op::BatchNorm { .. }) || g.node(first).outputs.len() != 1 {
        return None;
    }
    let operands = g.inputs_of(first);
    // The other operands must not tell outputs apart or broadcast a split output wider.
    let one_element = |v: Value| {
        let t = g.value_type(v);
        t.shape.rank().is_some_and(|r| r <= rank) && t.shape.concrete().is_some_and(|d| d.iter().product::<usize>() == 1)
    };
    if !operands[1..].iter().all(|v| v.is_none_or(one_element)) {
        return None;
    }
    let same_operand = |a: Option<Value>, b: Option<Value>| match (a, b) {
        (Some(a), Some(b)) => a == b || matches!((g.const_value(a), g.const_value(b)), (Some(p), Some(q)) if p == q),
        (a, b) => a == b,
    };
    for &u in &users[1..] {
        let ins = g.inputs_of(u);
        let same = g.node(u).op == *op
            && g.node(u).outputs.len() == 1
            && ins.len() == operands.len()
            && ins[1..].iter().zip(&operands[1..]).all(|(&a, &b)| same_operand(a, b));
        if !same {
            return None;
        }
    }
    let hoisted = {
        let ins: Vec<Option<Value>> = std::iter::once(Some(x)).chain(operands[1..].iter().copied()).collect();
        let types: Vec<Option<&TensorType>> = ins.iter().map(|v| v.map(|v| g.value_type(v))).collect();
        let consts: Vec<Option<&Tensor>> = ins.iter().map(|v| v.and_then(|v| g.const_value(v))).collect();
        kiln_ir::infer::infer(op, &types, &consts, 1).ok()?
    };
    // The split's outputs take the consumers' types (a dtype the op may change), then
    // stand for the consumers' outputs.
    let types: Vec<TensorType> = users.iter().map(|&u| g.node(u).outputs[0].clone()).collect();
    for (k, (&u, t)) in users.iter().zip(types).enumerate() {
        g.nodes[s].outputs[k] = t;
        replace_uses(g, Value::new(u, 0), Value::new(s, k));
    }
    set_input(g, first, 0, Some(x));
    g.nodes[first].outputs = hoisted;
    set_input(g, s, 0, Some(Value::new(first, 0)));
    for &u in &users[1..] {
        remove_node(g, u);
    }
    Some(())
}

/// The input value `n`'s first output always equals, when `n` is a no-op.
fn passes_through(g: &Graph, n: NodeId) -> Option<Value> {
    let node = g.node(n);
    let ins = g.inputs_of(n);
    let x = (*ins.first()?)?;
    let konst = |i: usize| ins.get(i).copied().flatten().and_then(|v| g.const_value(v));
    let absent_or = |i: usize, ok: &dyn Fn(&Tensor) -> bool| match ins.get(i).copied().flatten() {
        None => true,
        Some(v) => g.const_value(v).is_some_and(ok),
    };
    let single_output = node.outputs.len() == 1;
    let same_type = || {
        let out = infer_node(g, n).ok()?.into_iter().next()?;
        Some(out == *g.value_type(x) && fully_determined(&out))
    };
    let keep = match &node.op {
        Op::Unary(UnaryOp::Identity) => true,
        Op::Dropout { .. } => {
            let mask_unused = node.outputs.len() < 2 || !is_used(g, Value::new(n, 1));
            let inference = absent_or(2, &|t| t.to_f64_vec().iter().all(|&v| v == 0.0))
                || konst(1).is_some_and(|r| r.to_f64_vec() == [0.0]);
            mask_unused && inference
        }
        Op::Cast { to } => *to == g.value_type(x).dtype && single_output,
        Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Flatten { .. } | Op::Expand => {
            same_type()?
        }
        Op::Transpose { perm } => {
            let rank = g.value_type(x).shape.rank()?;
            match perm {
                Some(p) => p.iter().enumerate().all(|(i, &a)| a == i as i64),
                None => rank <= 1,
            }
        }
        // Positive steps: a slice as big as its input takes all of it, in order.
        Op::Slice if absent_or(4, &|t| t.to_i64_vec().iter().all(|&s| s > 0)) && same_type()? => true,
        Op::Slice => return slice_of_pad(g, n, &ins),
        Op::Pad { .. } => {
            konst(1).is_some_and(|p| p.to_i64_vec().iter().all(|&p| p == 0)) && same_type()?
        }
        Op::Concat { .. } => ins.len() == 1,
        Op::Binary(b) if ins.len() == 2 => return neutral_operand(g, n, *b, &ins),
        _ => false,
    };
    keep.then_some(x)
}

/// A Slice with unit steps that takes off exactly the borders a Pad added (Keras'
/// ZeroPadding2D then Cropping2D, as unet_mix has them): the Pad's input. Any pad mode,
/// since what the pad wrote is all cut away; only non-negative pads (a negative one crops).
fn slice_of_pad(g: &Graph, n: NodeId, ins: &[Option<Value>]) -> Option<Value> {
    let konst = |v: Option<Value>| v.and_then(|v| g.const_value(v)).map(|t| t.to_i64_vec());
    let padded = (*ins.first()?)?;
    let pad = padded.node;
    if !matches!(g.node(pad).op, Op::Pad { .. }) || padded.output != 0 {
        return None;
    }
    let pad_ins = g.inputs_of(pad);
    let x = (*pad_ins.first()?)?;
    let dims: Vec<i64> = g
        .value_type(x)
        .shape
        .dims()?
        .iter()
        .map(|d| d.known().and_then(|d| i64::try_from(d).ok()))
        .collect::<Option<_>>()?;
    let r = dims.len() as i64;
    let axis = |a: i64| usize::try_from(if a < 0 { a + r } else { a }).ok().filter(|&a| a < dims.len());
    // Pads per axis (begin, end): the pads input over `axes` (all axes when absent).
    let pads = konst(*pad_ins.get(1)?)?;
    let pad_axes: Vec<usize> = match pad_ins.get(3).copied().flatten() {
        Some(v) => konst(Some(v))?.into_iter().map(axis).collect::<Option<_>>()?,
        None => (0..dims.len()).collect(),
    };
    if pads.len() != 2 * pad_axes.len() || pads.iter().any(|&p| p < 0) {
        return None;
    }
    let mut border = vec![(0i64, 0i64); dims.len()];
    for (i, &a) in pad_axes.iter().enumerate() {
        border[a].0 += pads[i];
        border[a].1 += pads[i + pad_axes.len()];
    }
    // The slice's (start, end) per axis, normalised as ONNX does for positive steps.
    let (starts, ends) = (konst(*ins.get(1)?)?, konst(*ins.get(2)?)?);
    let slice_axes: Vec<usize> = match ins.get(3).copied().flatten() {
        Some(v) => konst(Some(v))?.into_iter().map(axis).collect::<Option<_>>()?,
        None => (0..starts.len()).map(|a| (a < dims.len()).then_some(a)).collect::<Option<_>>()?,
    };
    if let Some(steps) = ins.get(4).copied().flatten() {
        if konst(Some(steps))?.iter().any(|&s| s != 1) {
            return None;
        }
    }
    if starts.len() != slice_axes.len() || ends.len() != slice_axes.len() {
        return None;
    }
    let mut kept = vec![None; dims.len()];
    for ((&a, &s), &e) in slice_axes.iter().zip(&starts).zip(&ends) {
        let full = dims[a].checked_add(border[a].0)?.checked_add(border[a].1)?;
        let clamp = |v: i64| (if v < 0 { v.saturating_add(full) } else { v }).clamp(0, full);
        if kept[a].replace((clamp(s), clamp(e))).is_some() {
            return None;
        }
    }
    let exact = (0..dims.len()).all(|a| match kept[a] {
        Some(range) => range == (border[a].0, border[a].0 + dims[a]),
        None => border[a] == (0, 0),
    });
    let out = infer_node(g, n).ok()?.into_iter().next()?;
    (exact && out == *g.value_type(x) && fully_determined(&out)).then_some(x)
}

/// x+0, 0+x, x-0, x·1, 1·x, x/1: the other operand, when the constant does not broadcast it
/// to a bigger shape or another dtype.
fn neutral_operand(g: &Graph, n: NodeId, b: BinaryOp, ins: &[Option<Value>]) -> Option<Value> {
    let (l, r) = (ins[0]?, ins[1]?);
    let all = |v: Value, want: f64| {
        g.const_value(v)
            .is_some_and(|t| !t.is_empty() && t.to_f64_vec().iter().all(|&e| e == want))
    };
    let x = match b {
        BinaryOp::Add if all(r, 0.0) => l,
        BinaryOp::Add if all(l, 0.0) => r,
        BinaryOp::Sub if all(r, 0.0) => l,
        BinaryOp::Mul if all(r, 1.0) => l,
        BinaryOp::Mul if all(l, 1.0) => r,
        BinaryOp::Div if all(r, 1.0) => l,
        _ => return None,
    };
    let out = infer_node(g, n).ok()?.into_iter().next()?;
    (out == *g.value_type(x) && fully_determined(&out)).then_some(x)
}

fn fully_determined(t: &TensorType) -> bool {
    t.shape
        .dims()
        .is_some_and(|d| d.iter().all(|d| !matches!(d, Dim::Unknown)))
}
