//! Constant folding: a pure op whose inputs are all constants becomes constants for its
//! outputs, computed by the reference semantics (`kiln_ir::eval::eval_op`).

use super::util::each_graph;
use kiln_ir::rewrite::{is_unused, is_used, reinfer_all, remove_node, replace_uses};
use kiln_ir::{eval::eval_op, verify::compatible, Graph, Op, Result, Tensor, TensorType, Value};

/// Outputs larger than this stay computed: a big tensor made from small constants (Expand,
/// ConstantOfShape, Tile) would only grow the model file.
pub const MAX_FOLDED_ELEMENTS: usize = 16 << 20;

/// `fold`: evaluates ops whose inputs are all constants.
pub struct Fold;

impl crate::Pass for Fold {
    fn name(&self) -> &'static str {
        "fold"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        each_graph(g, &mut |g| {
            if fold_graph(g)? > 0 {
                reinfer_all(g);
            }
            Ok(())
        })
    }
}

/// Folds every foldable node of `g` (not nested graphs); returns how many were folded.
pub(crate) fn fold_graph(g: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    for n in g.topo_order()? {
        let node = g.node(n);
        if !foldable(&node.op) {
            continue;
        }
        let ins = g.inputs_of(n);
        let Some(args) = ins
            .iter()
            .map(|v| match v {
                None => Some(None),
                Some(v) => g.const_value(*v).cloned().map(Some),
            })
            .collect::<Option<Vec<Option<Tensor>>>>()
        else {
            continue;
        };
        if node
            .outputs
            .iter()
            .any(|t| t.shape.numel().is_some_and(|k| k > MAX_FOLDED_ELEMENTS))
            || widens_weights(&node.op, &args, &node.outputs)
        {
            continue;
        }
        // An error here is the run-time's to report, with the model's inputs at hand.
        let Ok(outs) = eval_op(&node.op, &args, node.outputs.len()) else {
            continue;
        };
        let fits = |(t, ty): (&Tensor, &TensorType)| {
            t.len() <= MAX_FOLDED_ELEMENTS
                && compatible(ty, &TensorType::known(t.dtype(), t.shape()))
        };
        if !outs.iter().zip(&node.outputs).all(fits) {
            continue;
        }
        let name = node.name.clone();
        let multi = outs.len() > 1;
        for (k, t) in outs.into_iter().enumerate() {
            let v = Value::new(n, k);
            if !is_used(g, v) {
                continue;
            }
            let c = g.add_const(
                if multi {
                    format!("{name}:{k}")
                } else {
                    name.clone()
                },
                t,
            );
            replace_uses(g, v, c);
        }
        if is_unused(g, n) {
            remove_node(g, n);
        }
        folded += 1;
    }
    Ok(folded)
}

/// Ops folding may evaluate: pure ones with bounded work. Loop and Scan run their body an
/// input-dependent number of times, so they stay.
fn foldable(op: &Op) -> bool {
    op.is_pure()
        && !matches!(
            op,
            Op::Input | Op::Const { .. } | Op::Loop { .. } | Op::Scan { .. }
        )
}

/// Decompression of stored weights: f16 weights cast to f32 (`kiln convert --fp16`), int8
/// weights dequantized. Folding would undo the compression the model was saved with.
fn widens_weights(op: &Op, args: &[Option<Tensor>], outputs: &[TensorType]) -> bool {
    let Some(Some(x)) = args.first() else {
        return false;
    };
    let decompresses = matches!(op, Op::Cast { .. } | Op::DequantizeLinear { .. });
    decompresses
        && x.len() >= crate::fp16::MIN_ELEMENTS
        && outputs
            .first()
            .is_some_and(|o| o.dtype.size() > x.dtype().size())
}
