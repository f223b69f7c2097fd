//! Graph building: scopes of named values, graph inputs and initializers, topological order
//! of nodes, and the nested scopes of If/Loop/Scan bodies with their captured outer values.

use super::attrs::Attrs;
use super::functions;
use super::ops;
use super::tensor::{dtype_from_onnx, tensor_from_proto};
use kiln_ir::{Dim, Graph, IrError, NodeId, Op, Result, Shape, Tensor, TensorType, Value};
use onnx_protobuf::tensor_shape_proto::dimension;
use onnx_protobuf::type_proto;
use onnx_protobuf::{FunctionProto, GraphProto, ModelProto, NodeProto, ValueInfoProto};
use std::borrow::Cow;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::path::Path;

/// The default-domain opsets the bridge maps (definitions from opsets 1 to 6 that differ
/// from later ones are rewritten in `opset6`).
pub(crate) const MIN_OPSET: i64 = 1;
pub(crate) const MAX_OPSET: i64 = 28;

/// One graph under construction and the ONNX names visible in it.
pub(crate) struct Scope {
    pub graph: Graph,
    pub values: HashMap<String, Value>,
    /// Outer-scope names this graph reads, in the order they became extra trailing inputs.
    pub captures: Vec<(String, Value)>,
}

impl Scope {
    fn new(name: &str) -> Scope {
        Scope {
            graph: Graph::new(name),
            values: HashMap::new(),
            captures: Vec::new(),
        }
    }
}

/// A node to emit and the default-domain opset its op type is read against (the inlined
/// body of a model-local function brings its own).
pub(crate) struct Item<'m> {
    pub node: Cow<'m, NodeProto>,
    pub opset: i64,
    /// How many function calls deep this node was inlined.
    pub depth: usize,
}

pub(crate) struct Builder<'m> {
    pub base_dir: Option<&'m Path>,
    pub functions: HashMap<(String, String), &'m FunctionProto>,
    /// The graph being built is the last; earlier ones enclose it.
    pub scopes: Vec<Scope>,
    /// Makes the internal names of each inlined function call unique.
    pub inline_counter: usize,
    /// Nodes created by inlining so far (bounded).
    pub inlined_nodes: usize,
}

/// The node's name for messages and for the IR: its own, else its first output's.
pub(crate) fn node_name(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        return n.name.clone();
    }
    match n.output.iter().find(|o| !o.is_empty()) {
        Some(o) => o.clone(),
        None => n.op_type.clone(),
    }
}

/// The default-domain opset among `imports`, if any.
pub(crate) fn default_opset(imports: &[onnx_protobuf::OperatorSetIdProto]) -> Option<i64> {
    imports
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

pub(crate) fn build_model<'m>(model: &'m ModelProto, base_dir: Option<&'m Path>) -> Result<Graph> {
    // A model importing only other domains gets opset 0: its default-domain nodes, if
    // any, are refused one by one (after the domain check, which names the real problem).
    let opset = default_opset(&model.opset_import).unwrap_or(0);
    if opset != 0 {
        check_opset(opset)?;
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| IrError::msg("the model has no graph"))?;
    let mut functions = HashMap::new();
    for f in &model.functions {
        functions.insert((f.domain.clone(), f.name.clone()), f);
    }
    let mut b = Builder {
        base_dir,
        functions,
        scopes: Vec::new(),
        inline_counter: 0,
        inlined_nodes: 0,
    };
    let name = if g.name.is_empty() {
        "main"
    } else {
        g.name.as_str()
    };
    let (graph, _) = b.build_graph(g, name, opset, &[])?;
    Ok(graph)
}

pub(crate) fn check_opset(opset: i64) -> Result<()> {
    if opset < MIN_OPSET {
        return Err(IrError::msg(format!(
            "default-domain opset {opset} is not a valid opset version"
        )));
    }
    if opset > MAX_OPSET {
        return Err(IrError::msg(format!(
            "default-domain opset {opset} is newer than {MAX_OPSET}, the newest kiln reads"
        )));
    }
    Ok(())
}

/// The tensor type a value-info declares; `None` when it declares no type at all.
pub(crate) fn declared_type(vi: &ValueInfoProto) -> Result<Option<TensorType>> {
    let Some(tp) = vi.type_.as_ref() else {
        return Ok(None);
    };
    let tensor = match &tp.value {
        None => return Ok(None),
        Some(type_proto::Value::TensorType(t)) => t,
        Some(type_proto::Value::SequenceType(_)) => return Err(unsupported_type(vi, "a sequence")),
        Some(type_proto::Value::MapType(_)) => return Err(unsupported_type(vi, "a map")),
        Some(type_proto::Value::OptionalType(_)) => {
            return Err(unsupported_type(vi, "an optional"))
        }
        Some(type_proto::Value::SparseTensorType(_)) => {
            return Err(unsupported_type(vi, "a sparse tensor"))
        }
        Some(_) => return Err(unsupported_type(vi, "an unknown kind of")),
    };
    if tensor.elem_type == 0 {
        return Ok(None);
    }
    let dtype = dtype_from_onnx(tensor.elem_type)
        .map_err(|e| IrError::msg(format!("value `{}`: {}", vi.name, e.message)))?;
    let shape = match tensor.shape.as_ref() {
        None => Shape::unknown_rank(),
        Some(s) => {
            let mut dims = Vec::with_capacity(s.dim.len());
            for d in &s.dim {
                dims.push(match &d.value {
                    Some(dimension::Value::DimValue(v)) => match usize::try_from(*v) {
                        Ok(v) => Dim::Known(v),
                        Err(_) => {
                            return Err(IrError::msg(format!(
                                "value `{}` has a negative dimension {v}",
                                vi.name
                            )))
                        }
                    },
                    Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                    _ => Dim::Unknown,
                });
            }
            Shape(Some(dims))
        }
    };
    Ok(Some(TensorType { dtype, shape }))
}

fn unsupported_type(vi: &ValueInfoProto, kind: &str) -> IrError {
    IrError::msg(format!(
        "value `{}` has {kind} type; only tensors are supported",
        vi.name
    ))
}

/// Names a graph reads from enclosing scopes: used but not defined inside it (nested
/// graphs included).
pub(crate) fn free_names(g: &GraphProto, out: &mut BTreeSet<String>) {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(g.input.iter().map(|v| v.name.as_str()));
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    defined.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref())
            .map(|t| t.name.as_str()),
    );
    for n in &g.node {
        defined.extend(n.output.iter().map(|s| s.as_str()));
    }
    let mut used = BTreeSet::new();
    for n in &g.node {
        node_reads(n, &mut used);
    }
    used.extend(g.output.iter().map(|v| v.name.clone()));
    for u in used {
        if !u.is_empty() && !defined.contains(u.as_str()) {
            out.insert(u);
        }
    }
}

/// Every name a node reads: its inputs and the free names of its nested graphs.
fn node_reads(n: &NodeProto, out: &mut BTreeSet<String>) {
    out.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
    for a in &n.attribute {
        if let Some(g) = a.g.as_ref() {
            free_names(g, out);
        }
        for g in &a.graphs {
            free_names(g, out);
        }
    }
}

impl<'m> Builder<'m> {
    pub fn scope(&mut self) -> &mut Scope {
        let last = self.scopes.len().saturating_sub(1);
        &mut self.scopes[last]
    }

    /// The graph being built.
    pub fn g(&mut self) -> &mut Graph {
        &mut self.scope().graph
    }

    pub fn ty(&mut self, v: Value) -> TensorType {
        self.g().value_type(v).clone()
    }

    /// Adds an IR node and returns its outputs.
    pub fn emit(
        &mut self,
        op: Op,
        name: &str,
        inputs: &[Option<Value>],
        n_outputs: usize,
    ) -> Result<Vec<Value>> {
        let n: NodeId = self.g().add(op, name, inputs, n_outputs)?;
        Ok((0..n_outputs).map(|k| Value::new(n, k)).collect())
    }

    /// Adds a single-output IR node.
    pub fn emit1(&mut self, op: Op, name: &str, inputs: &[Option<Value>]) -> Result<Value> {
        let n = self.g().add(op, name, inputs, 1)?;
        Ok(Value::new(n, 0))
    }

    pub fn constant(&mut self, name: &str, t: Tensor) -> Value {
        self.g().add_const(name, t)
    }

    /// A 1-D i64 constant (axes, pads, starts…).
    pub fn const_i64(&mut self, name: &str, v: &[i64]) -> Result<Value> {
        let t = Tensor::new(vec![v.len()], v.to_vec())?;
        Ok(self.constant(name, t))
    }

    /// Looks a name up in the current scope, then outward. A value found in an enclosing
    /// scope becomes an extra trailing input of every graph in between; constants too (a
    /// pass may fold them into the body later).
    pub fn resolve(&mut self, name: &str) -> Option<Value> {
        let level = self.scopes.len().checked_sub(1)?;
        self.resolve_at(level, name)
    }

    fn resolve_at(&mut self, level: usize, name: &str) -> Option<Value> {
        if let Some(v) = self.scopes.get(level)?.values.get(name) {
            return Some(*v);
        }
        let outer_level = level.checked_sub(1)?;
        let outer = self.resolve_at(outer_level, name)?;
        let ty = self.scopes[outer_level].graph.value_type(outer).clone();
        let scope = &mut self.scopes[level];
        let v = scope.graph.add_input(name, ty);
        scope.captures.push((name.to_string(), v));
        scope.values.insert(name.to_string(), v);
        Some(v)
    }

    fn bind(&mut self, name: &str, v: Value) -> Result<()> {
        let scope = self.scope();
        if scope.values.contains_key(name) {
            return Err(IrError::msg(format!("value `{name}` is defined twice")));
        }
        scope.values.insert(name.to_string(), v);
        Ok(())
    }

    /// Builds a graph (the model's, or a nested body) in a new scope. `fallback` gives the
    /// type of each positional input that does not declare one. Returns the graph and the
    /// outer names it captured (its extra trailing inputs, in order).
    pub fn build_graph(
        &mut self,
        g: &GraphProto,
        name: &str,
        opset: i64,
        fallback: &[Option<TensorType>],
    ) -> Result<(Graph, Vec<(String, Value)>)> {
        self.scopes.push(Scope::new(name));
        let nested = self.scopes.len() > 1;
        let r = self.fill_graph(g, opset, fallback, nested);
        let scope = self
            .scopes
            .pop()
            .ok_or_else(|| IrError::msg("internal: scope stack is empty"))?;
        r?;
        Ok((scope.graph, scope.captures))
    }

    fn fill_graph(
        &mut self,
        g: &GraphProto,
        opset: i64,
        fallback: &[Option<TensorType>],
        nested: bool,
    ) -> Result<()> {
        if let Some(s) = g.sparse_initializer.first() {
            let name = s.values.as_ref().map(|t| t.name.as_str()).unwrap_or("");
            return Err(IrError::msg(format!(
                "sparse initializer `{name}` is not supported"
            )));
        }
        for t in &g.initializer {
            if t.name.is_empty() {
                return Err(IrError::msg("an initializer has no name"));
            }
            let value = tensor_from_proto(t, self.base_dir)?;
            let v = self.constant(&t.name, value);
            self.bind(&t.name, v)
                .map_err(|e| IrError::msg(format!("initializer: {}", e.message)))?;
        }
        for (i, vi) in g.input.iter().enumerate() {
            if self.scope().values.contains_key(&vi.name) {
                if nested {
                    return Err(IrError::msg(format!(
                        "body input `{}` is also an initializer",
                        vi.name
                    )));
                }
                // A graph input with an initializer is a constant (an overridable default
                // in ONNX; kiln folds it).
                continue;
            }
            if vi.name.is_empty() {
                return Err(IrError::msg(format!("graph input {i} has no name")));
            }
            let ty = match declared_type(vi)? {
                Some(t) => t,
                None => fallback.get(i).cloned().flatten().ok_or_else(|| {
                    IrError::msg(format!("graph input `{}` declares no tensor type", vi.name))
                })?,
            };
            let v = self.g().add_input(vi.name.clone(), ty);
            self.bind(&vi.name, v)?;
        }
        let items = g
            .node
            .iter()
            .map(|n| Item {
                node: Cow::Borrowed(n),
                opset,
                depth: 0,
            })
            .collect();
        self.build_nodes(items)?;
        for vi in &g.output {
            let v = self.resolve(&vi.name).ok_or_else(|| {
                IrError::msg(format!(
                    "graph output `{}` is not produced by any node, initializer or input",
                    vi.name
                ))
            })?;
            self.g().add_output(vi.name.clone(), v);
        }
        Ok(())
    }

    /// Inlines model-local function calls, orders the nodes so that every value is defined
    /// before it is read (ONNX files may list nodes in any acyclic order), and emits them.
    pub fn build_nodes(&mut self, items: Vec<Item<'_>>) -> Result<()> {
        let items = functions::expand(self, items)?;
        let order = topo_sort(&items)?;
        for i in order {
            if let Some(item) = items.get(i) {
                self.emit_node(item)?;
            }
        }
        Ok(())
    }

    fn emit_node(&mut self, item: &Item<'_>) -> Result<()> {
        let node: &NodeProto = &item.node;
        let name = node_name(node);
        let at = |m: String| IrError::at(name.clone(), m);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(at(format!(
                "op {} of domain `{}` is not supported (only the default ONNX domain is)",
                node.op_type, node.domain
            )));
        }
        if item.opset == 0 {
            return Err(at(format!(
                "{} is a default-domain op but the model imports no default-domain opset",
                node.op_type
            )));
        }
        let mut inputs = Vec::with_capacity(node.input.len());
        for (i, input) in node.input.iter().enumerate() {
            if input.is_empty() {
                inputs.push(None);
                continue;
            }
            match self.resolve(input) {
                Some(v) => inputs.push(Some(v)),
                None => {
                    return Err(at(format!(
                        "input {i} `{input}` is not defined by any node, initializer or graph input"
                    )))
                }
            }
        }
        if node.output.is_empty() {
            return Err(at(format!("{} declares no outputs", node.op_type)));
        }
        let cx = ops::NodeCx {
            node,
            name: name.clone(),
            opset: item.opset,
            attrs: Attrs::new(&node.attribute),
            inputs,
        };
        let outs = ops::map_node(self, &cx).map_err(|e| e.in_node(name.clone()))?;
        for (k, out) in node.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            match outs.get(k) {
                Some(v) => self.bind(out, *v).map_err(|e| e.in_node(name.clone()))?,
                None => {
                    return Err(at(format!(
                        "output {k} (`{out}`) of {} is not supported",
                        node.op_type
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Kahn's algorithm over the nodes' local producers; among ready nodes the earliest in the
/// file goes first, so a file already in order keeps its order. A cycle is an error naming
/// a node on it.
fn topo_sort(items: &[Item<'_>]) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        for o in it.node.output.iter().filter(|o| !o.is_empty()) {
            if let Some(j) = producer.insert(o.as_str(), i) {
                if j != i {
                    return Err(IrError::at(
                        node_name(&it.node),
                        format!(
                            "output `{o}` is also produced by node {}",
                            node_name(&items[j].node)
                        ),
                    ));
                }
            }
        }
    }
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(items.len());
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (i, it) in items.iter().enumerate() {
        let mut reads = BTreeSet::new();
        node_reads(&it.node, &mut reads);
        let mut d: Vec<usize> = reads
            .iter()
            .filter_map(|r| producer.get(r.as_str()).copied())
            .collect();
        d.sort_unstable();
        d.dedup();
        for &j in &d {
            users[j].push(i);
        }
        deps.push(d);
    }
    let mut indeg: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = indeg
        .iter()
        .enumerate()
        .filter(|(_, &d)| d == 0)
        .map(|(i, _)| std::cmp::Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(items.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.push(std::cmp::Reverse(u));
            }
        }
    }
    if order.len() == items.len() {
        return Ok(order);
    }
    // Walk back through unfinished producers until a node repeats: it lies on a cycle.
    let mut seen = vec![false; items.len()];
    let mut cur = indeg.iter().position(|&d| d > 0).unwrap_or(0);
    while !seen[cur] {
        seen[cur] = true;
        match deps[cur].iter().find(|&&j| indeg[j] > 0) {
            Some(&j) => cur = j,
            None => break,
        }
    }
    Err(IrError::at(
        node_name(&items[cur].node),
        "the graph has a cycle through this node",
    ))
}
