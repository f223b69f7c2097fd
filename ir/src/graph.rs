//! The graph: a petgraph `StableDiGraph` of nodes (op, output types, source name) and edges
//! (which output feeds which input). Inputs are `Op::Input` nodes listed in order; outputs
//! are values with names.

use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

pub use petgraph::stable_graph::NodeIndex as NodeId;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    /// The name the node had in the source model; errors and profiles use it.
    pub name: String,
    /// The type of each output.
    pub outputs: Vec<TensorType>,
    /// Number of input slots, including absent optional ones.
    pub arity: usize,
}

/// Output `output` of node `node` feeds input slot `input` of the edge's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub output: usize,
    pub input: usize,
}

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeIndex,
    pub output: usize,
}

impl Value {
    pub fn new(node: NodeIndex, output: usize) -> Value {
        Value { node, output }
    }
}

impl From<NodeIndex> for Value {
    fn from(node: NodeIndex) -> Value {
        Value { node, output: 0 }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: StableDiGraph<Node, Edge>,
    /// `Op::Input` nodes, in signature order.
    pub inputs: Vec<NodeIndex>,
    /// Named results, in signature order.
    pub outputs: Vec<(String, Value)>,
}

impl PartialEq for Graph {
    /// Structural equality: same nodes in the same topological order, same edges, same signature.
    fn eq(&self, other: &Graph) -> bool {
        let (Ok(a), Ok(b)) = (self.topo_order(), other.topo_order()) else { return false };
        if a.len() != b.len() || self.name != other.name || self.inputs.len() != other.inputs.len() {
            return false;
        }
        let pos = |order: &[NodeIndex], n: NodeIndex| order.iter().position(|&m| m == n);
        for (&x, &y) in a.iter().zip(&b) {
            if self.nodes[x] != other.nodes[y] {
                return false;
            }
            let ix: Vec<_> = self.inputs_of(x).iter().map(|v| v.map(|v| (pos(&a, v.node), v.output))).collect();
            let iy: Vec<_> = other.inputs_of(y).iter().map(|v| v.map(|v| (pos(&b, v.node), v.output))).collect();
            if ix != iy {
                return false;
            }
        }
        let sig = |g: &Graph, order: &[NodeIndex]| {
            (
                g.inputs.iter().map(|&n| pos(order, n)).collect::<Vec<_>>(),
                g.outputs.iter().map(|(s, v)| (s.clone(), pos(order, v.node), v.output)).collect::<Vec<_>>(),
            )
        };
        sig(self, &a) == sig(other, &b)
    }
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Default::default() }
    }

    /// Adds a graph input of the given type.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> Value {
        let n = self.nodes.add_node(Node { op: Op::Input, name: name.into(), outputs: vec![ty], arity: 0 });
        self.inputs.push(n);
        n.into()
    }

    /// Adds a constant.
    pub fn add_const(&mut self, name: impl Into<String>, value: Tensor) -> Value {
        let ty = TensorType::known(value.dtype(), value.shape());
        self.nodes.add_node(Node { op: Op::Const { value }, name: name.into(), outputs: vec![ty], arity: 0 }).into()
    }

    /// Adds a node with the given inputs (`None` for an absent optional input) and output
    /// types. Use [`Graph::add`] to have the types inferred.
    pub fn add_node_typed(
        &mut self,
        op: Op,
        name: impl Into<String>,
        inputs: &[Option<Value>],
        outputs: Vec<TensorType>,
    ) -> NodeIndex {
        let n = self.nodes.add_node(Node { op, name: name.into(), outputs, arity: inputs.len() });
        for (i, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.nodes.add_edge(v.node, n, Edge { output: v.output, input: i });
            }
        }
        n
    }

    /// Adds a node with `n_outputs` outputs whose types are inferred from its inputs.
    pub fn add(&mut self, op: Op, name: impl Into<String>, inputs: &[Option<Value>], n_outputs: usize) -> Result<NodeIndex> {
        let name = name.into();
        let types: Vec<Option<&TensorType>> = inputs.iter().map(|v| v.map(|v| self.value_type(v))).collect();
        let consts: Vec<Option<&Tensor>> = inputs.iter().map(|v| v.and_then(|v| self.const_value(v))).collect();
        let outputs = crate::infer::infer(&op, &types, &consts, n_outputs).map_err(|e| e.in_node(name.clone()))?;
        Ok(self.add_node_typed(op, name, inputs, outputs))
    }

    /// `add` for the common single-output case, returning the value.
    pub fn add1(&mut self, op: Op, name: impl Into<String>, inputs: &[Value]) -> Result<Value> {
        let ins: Vec<Option<Value>> = inputs.iter().map(|&v| Some(v)).collect();
        Ok(self.add(op, name, &ins, 1)?.into())
    }

    pub fn add_output(&mut self, name: impl Into<String>, v: Value) {
        self.outputs.push((name.into(), v));
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.nodes[n]
    }

    pub fn value_type(&self, v: Value) -> &TensorType {
        &self.nodes[v.node].outputs[v.output]
    }

    /// The constant behind `v`, when its node is a `Const`.
    pub fn const_value(&self, v: Value) -> Option<&Tensor> {
        match &self.nodes[v.node].op {
            Op::Const { value } if v.output == 0 => Some(value),
            _ => None,
        }
    }

    /// The values feeding each input slot of `n`, `None` for absent optional inputs.
    pub fn inputs_of(&self, n: NodeIndex) -> Vec<Option<Value>> {
        let mut ins = vec![None; self.nodes[n].arity];
        for e in self.nodes.edges_directed(n, Direction::Incoming) {
            let w = e.weight();
            if w.input < ins.len() {
                ins[w.input] = Some(Value { node: e.source(), output: w.output });
            }
        }
        ins
    }

    /// (consumer, input slot) for every use of `v`.
    pub fn uses_of(&self, v: Value) -> Vec<(NodeIndex, usize)> {
        let mut uses: Vec<_> = self
            .nodes
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().output == v.output)
            .map(|e| (e.target(), e.weight().input))
            .collect();
        uses.sort();
        uses
    }

    /// Nodes in a deterministic topological order (inputs first, then by insertion order
    /// among ready nodes). Errors on a cycle, naming a node on it.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut indeg: HashMap<NodeIndex, usize> = HashMap::with_capacity(self.nodes.node_count());
        let mut ready = BinaryHeap::new();
        for n in self.nodes.node_indices() {
            let d = self.nodes.edges_directed(n, Direction::Incoming).count();
            indeg.insert(n, d);
            if d == 0 {
                ready.push(Reverse(n));
            }
        }
        let mut order = Vec::with_capacity(self.nodes.node_count());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.nodes.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        if order.len() != self.nodes.node_count() {
            let stuck = self.nodes.node_indices().find(|n| indeg[n] > 0).expect("some node is left");
            return Err(IrError::at(self.nodes[stuck].name.clone(), "the graph has a cycle through this node"));
        }
        Ok(order)
    }

    /// Removes nodes that no output depends on (inputs are kept).
    pub fn remove_dead(&mut self) {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|(_, v)| v.node).collect();
        stack.extend(self.inputs.iter().copied());
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.nodes.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<_> = self.nodes.node_indices().filter(|n| !live.contains(n)).collect();
        for n in dead {
            self.nodes.remove_node(n);
        }
    }

    /// Number of elements and bytes held in constants (parameters), this graph and nested ones.
    pub fn parameter_stats(&self) -> (usize, usize) {
        let mut count = 0;
        let mut bytes = 0;
        for n in self.nodes.node_weights() {
            if let Op::Const { value } = &n.op {
                count += value.len();
                bytes += value.len() * value.dtype().size();
            }
            for g in n.op.subgraphs() {
                let (c, b) = g.parameter_stats();
                count += c;
                bytes += b;
            }
        }
        (count, bytes)
    }

    /// Op name → count, over this graph and nested graphs, sorted by name.
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut h = std::collections::BTreeMap::new();
        fn walk(g: &Graph, h: &mut std::collections::BTreeMap<&'static str, usize>) {
            for n in g.nodes.node_weights() {
                *h.entry(n.op.name()).or_insert(0) += 1;
                for s in n.op.subgraphs() {
                    walk(s, h);
                }
            }
        }
        walk(self, &mut h);
        h.into_iter().collect()
    }
}
