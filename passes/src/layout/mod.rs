//! The layout pass: removes the transposes the TensorFlow and Keras bridges wrap around
//! every NHWC op, as tract's and OpenVINO's transpose sinking do.
//!
//! Two walks. [`sink`] pushes every transpose down through layout-agnostic ops
//! (elementwise, broadcast with constants, pad, reductions, softmax, concat, split, slice,
//! resize, squeeze…; see [`rules`]) until it meets its inverse and both vanish, or meets an
//! op that needs the model's layout (a convolution's input, a reshape, a graph output),
//! where it stays; a flatten feeding a constant-weight MatMul takes the layout into the
//! weight's rows instead ([`flatten`]). Then [`hoist`] moves the transposes left below a
//! chain hanging off a graph input up to that input. A transpose that only moves unit axes
//! becomes a reshape.
//!
//! The pass never adds transposes: if the result would have more than the graph had, the
//! graph is left as it was.

mod flatten;
mod hoist;
pub(crate) mod perm;
mod rules;
mod sink;

use crate::manager::Pass;
use kiln_ir::{Graph, Op, Result};

/// Transpose sinking and hoisting; the pass named `layout`.
pub struct Layout;

impl Pass for Layout {
    fn name(&self) -> &'static str {
        "layout"
    }

    fn run(&self, graph: &mut Graph) -> Result<()> {
        let before = transpose_count(graph);
        if before == 0 {
            return Ok(());
        }
        let mut new = sink::sink(graph)?;
        hoist::hoist_to_inputs(&mut new)?;
        new.remove_dead();
        if transpose_count(&new) <= before {
            *graph = new;
        }
        Ok(())
    }
}

/// Transpose nodes in the graph (not in nested graphs, which the pass leaves alone).
pub fn transpose_count(graph: &Graph) -> usize {
    graph
        .nodes
        .node_weights()
        .filter(|n| matches!(n.op, Op::Transpose { .. }))
        .count()
}
