//! Fusion: partitions the graph into kernels and replaces each kernel of two or more ops by
//! one [`Op::Fused`] node holding them as its body. A single op stays a plain node: it is a
//! kernel of its own.
//!
//! # Which ops share a kernel
//! One walk in topological order; each op joins the kernel of one of its producers or
//! starts its own, by its [`Pattern`](crate::Pattern):
//! - Elementwise and broadcast ops join a producer's kernel, preferring one with an anchor
//!   (so a conv or matmul takes its bias, affine, activation and residual add), else the
//!   latest. An op joins only when it computes as many elements as each value it reads from
//!   the kernel (a kernel computes each of its ops once per element of its iteration space,
//!   never an internal value broadcast wider), and only from the anchor's side, never from
//!   its prologue.
//! - Views (reshape, squeeze, unsqueeze, flatten) join their producer's kernel the same way:
//!   they move no data, so they never become kernels of their own behind a fusible op.
//! - A conv, conv-transpose, matmul or gemm (out-fusable) starts a kernel, taking as its
//!   prologue a chain of data movement on its data input that nothing else reads: the
//!   NHWC transpose of a model input, a pad.
//! - A reduction (softmax, normalizations, pooling, reduce) takes the kernel of its data
//!   input as its prologue when that kernel is elementwise and data movement leading only
//!   to it; its elementwise epilogue joins it after.
//! - Transposes, pads and slices start kernels (or continue a chain of them); other
//!   injective ops (concat, gather, split…) start kernels elementwise ops may join.
//! - Opaque ops (recurrences, control flow…) fuse with nothing.
//!
//! A value read outside its kernel (or returned by the graph) becomes one of the kernel's
//! outputs, so a kernel may have several. Nothing is ever computed twice. Joining never
//! closes a cycle between kernels: an op joins a kernel only when none of its other inputs
//! depends on that kernel. Nested graphs (If, Loop, Scan bodies) are left as they are.
//!
//! # The body of a fused kernel (backends rely on this)
//! - The body's inputs are the kernel's runtime inputs, in the node's input order, named
//!   `x0, x1, …`; its outputs are the kernel's outputs, named `y0, y1, …`.
//! - Constants the kernel uses (weights, biases, scalars) are `Const` nodes inside the body,
//!   so a backend sees them when it compiles (to pack weights); a constant used by several
//!   kernels is in each (tensor data is shared, not copied).
//! - The body holds at most one anchor (an out-fusable op or a reduction), plus
//!   elementwise, view and data-movement ops. [`KernelView::of`] splits it into anchor,
//!   prologue and epilogue.
//! - Body nodes keep their source names, so a profile can list the source ops a kernel
//!   covers. The fused node is named after the anchor (or, without one, the first op).
//! - The body graph's name is the kernel's kind: its op names joined by '+', the anchor
//!   first, then the others in topological order, e.g. `conv+add+relu`.

mod class;
mod partition;
mod rewrite;
mod view;

pub use view::{KernelView, Source};

use crate::manager::Pass;
use kiln_ir::{Graph, Op, Result};

/// The fusion pass, named "fusion".
pub struct Fusion;

impl Pass for Fusion {
    fn name(&self) -> &'static str {
        "fusion"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        for group in partition::partition(g)? {
            if group.nodes.len() >= 2 {
                rewrite::fuse(g, &group)?;
            }
        }
        Ok(())
    }
}

/// The kernels of a graph after fusion, by kind ("conv+add+relu", or a lone op's name),
/// sorted by count then kind: what `kiln dump --passes` can summarize.
pub fn kernel_kinds(g: &Graph) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for n in g.nodes.node_weights() {
        let kind = match &n.op {
            Op::Input | Op::Const { .. } => continue,
            Op::Fused { body } => body.name.clone(),
            op => op.name().to_string(),
        };
        *counts.entry(kind).or_insert(0) += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}
