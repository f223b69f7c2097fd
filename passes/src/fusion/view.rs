//! [`KernelView`]: a fused kernel's body split the way a backend lowers it.

use super::class::Class;
use kiln_ir::{Graph, IrError, NodeId, Op, Result, Tensor, Value};
use std::collections::HashSet;

/// A fused kernel's body, split into the anchor and the ops before and after it.
///
/// ```
/// use kiln_passes::fusion::{KernelView, Source};
/// use kiln_ir::Op;
/// let text = r#"graph g(%x: f32[1,2,4,4]) -> (%y: f32[1,3,4,4]) {
///   @w = f32[3,2,1,1] [1.0,2.0,3.0,4.0,5.0,6.0]
///   @b = f32[1,3,1,1] [0.5,0.5,0.5]
///   %0 = conv(%x, @w) {auto_pad=explicit, dilations=[], group=1, kernel_shape=[], pads=[0,0,0,0], strides=[1,1]} : f32[1,3,4,4] "conv"
///   %1 = add(%0, @b) : f32[1,3,4,4] "bias"
///   %2 = relu(%1) : f32[1,3,4,4] "relu"
///   return %2
/// }"#;
/// let mut g = kiln_ir::text::parse(text, None).unwrap();
/// kiln_passes::Pass::run(&kiln_passes::fusion::Fusion, &mut g).unwrap();
/// let kernel = g.nodes.node_weights().find(|n| matches!(n.op, Op::Fused { .. })).unwrap();
/// let Op::Fused { body } = &kernel.op else { unreachable!() };
/// let view = KernelView::of(body).unwrap();
/// assert_eq!(view.kind(), "conv+add+relu");
/// let anchor = view.anchor.unwrap();
/// assert!(matches!(body.node(anchor).op, Op::Conv { .. }));
/// // The conv reads kernel input 0 and a weight the backend can pack at compile time.
/// let ins = view.anchor_inputs();
/// assert!(matches!(ins[0], Some(Source::Input(0))));
/// assert!(matches!(ins[1], Some(Source::Const(w)) if w.shape() == [3, 2, 1, 1]));
/// assert!(view.prologue.is_empty());
/// let epilogue: Vec<&str> = view.epilogue.iter().map(|&n| body.node(n).op.name()).collect();
/// assert_eq!(epilogue, ["add", "relu"]);
/// ```
#[derive(Clone, Debug)]
pub struct KernelView<'a> {
    pub body: &'a Graph,
    /// The conv, matmul or reduction the kernel is built around; `None` for a kernel of
    /// elementwise and data-movement ops only.
    pub anchor: Option<NodeId>,
    /// Ops the anchor depends on (on its data input), in topological order.
    pub prologue: Vec<NodeId>,
    /// Every other op, in topological order: with an anchor, the ops computed per element of
    /// its output; without one, the kernel's whole expression DAG.
    pub epilogue: Vec<NodeId>,
    /// For each body input (kernel input), every (node, input slot) it feeds.
    pub feeds: Vec<Vec<(NodeId, usize)>>,
}

/// Where a value in a kernel body comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// The kernel's runtime input of this index.
    Input(usize),
    /// A constant inside the body (a weight, a bias, a scalar).
    Const(&'a Tensor),
    /// An op inside the body.
    Op(Value),
}

impl<'a> KernelView<'a> {
    /// Splits `body`. Errors when it holds more than one anchor or has a cycle.
    pub fn of(body: &'a Graph) -> Result<KernelView<'a>> {
        let order = body.topo_order()?;
        let ops: Vec<NodeId> = order
            .iter()
            .copied()
            .filter(|&n| !matches!(body.node(n).op, Op::Input | Op::Const { .. }))
            .collect();
        let mut anchors = ops
            .iter()
            .copied()
            .filter(|&n| Class::of(&body.node(n).op).is_anchor());
        let anchor = anchors.next();
        if let Some(second) = anchors.next() {
            return Err(IrError::at(
                body.node(second).name.clone(),
                format!("kernel {} holds a second anchor", body.name),
            ));
        }
        let mut before = HashSet::new();
        if let Some(a) = anchor {
            let mut stack: Vec<NodeId> = body
                .inputs_of(a)
                .into_iter()
                .flatten()
                .map(|v| v.node)
                .collect();
            while let Some(n) = stack.pop() {
                if before.insert(n) {
                    stack.extend(body.inputs_of(n).into_iter().flatten().map(|v| v.node));
                }
            }
        }
        let (prologue, epilogue): (Vec<NodeId>, Vec<NodeId>) = ops
            .iter()
            .copied()
            .filter(|&n| Some(n) != anchor)
            .partition(|n| before.contains(n));
        let feeds = body
            .inputs
            .iter()
            .map(|&i| body.uses_of(i.into()))
            .collect();
        Ok(KernelView {
            body,
            anchor,
            prologue,
            epilogue,
            feeds,
        })
    }

    /// The kernel kind, e.g. "conv+add+relu": the body graph's name.
    pub fn kind(&self) -> &'a str {
        &self.body.name
    }

    /// Where `v` comes from.
    pub fn source(&self, v: Value) -> Source<'a> {
        if let Some(i) = self.body.inputs.iter().position(|&n| n == v.node) {
            return Source::Input(i);
        }
        match self.body.const_value(v) {
            Some(t) => Source::Const(t),
            None => Source::Op(v),
        }
    }

    /// Where each input slot of the anchor comes from (`None`: an absent optional input).
    /// Empty without an anchor.
    pub fn anchor_inputs(&self) -> Vec<Option<Source<'a>>> {
        match self.anchor {
            Some(a) => self
                .body
                .inputs_of(a)
                .into_iter()
                .map(|v| v.map(|v| self.source(v)))
                .collect(),
            None => Vec::new(),
        }
    }
}
