//! Identity and no-op removal: ops that hand their input through unchanged (Identity,
//! inference Dropout, a Cast to the same dtype, a Reshape to the same shape, x·1, x+0, …)
//! are bypassed: their consumers read the input directly.
//!
//! "Same shape" is judged on the types inference gives now, and only when they are fully
//! determined (no unknown dim; a symbol names one size throughout the graph). A graph
//! output produced by a bypassed node is rewired to the input when the types are equal;
//! otherwise the node stays for the output.

use super::util::each_graph;
use kiln_ir::rewrite::{infer_node, is_unused, is_used, remove_node, replace_uses};
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
            Ok(())
        })
    }
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
        Op::Slice => absent_or(4, &|t| t.to_i64_vec().iter().all(|&s| s > 0)) && same_type()?,
        Op::Pad { .. } => {
            konst(1).is_some_and(|p| p.to_i64_vec().iter().all(|&p| p == 0)) && same_type()?
        }
        Op::Concat { .. } => ins.len() == 1,
        Op::Binary(b) if ins.len() == 2 => return neutral_operand(g, n, *b, &ins),
        _ => false,
    };
    keep.then_some(x)
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
