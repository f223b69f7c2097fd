//! Graph building: TF tensor names, function inlining (SavedModel graphs call into their
//! FunctionDefLibrary), the order nodes are converted in, graph inputs and outputs.

use super::ops;
use super::proto::{attr_value, AttrValue, FunctionDef, NodeDef};
use super::tensor::{dtype_from_tf, shape_from_tf};
use kiln_ir::{Graph, IrError, Op, Result, Tensor, TensorType, Value};
use std::collections::{HashMap, HashSet};

/// Inlining deeper than this is refused (a function calling itself).
const MAX_INLINE_DEPTH: usize = 32;
/// Alias chains longer than this are refused (a cycle of aliases).
const MAX_ALIAS_CHAIN: usize = 10_000;
/// The flat graph may not grow past this many nodes (calls nested many times over).
const MAX_NODES: usize = 1 << 22;

/// `name:idx` with the index made explicit (`name` alone is output 0).
pub fn normalize(s: &str) -> String {
    match s.rsplit_once(':') {
        Some((_, idx)) if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) => {
            s.to_string()
        }
        _ => format!("{s}:0"),
    }
}

/// Splits a normalized tensor name into node and output index.
pub fn split_tensor(s: &str) -> Result<(&str, usize)> {
    let (node, idx) = s
        .rsplit_once(':')
        .ok_or_else(|| IrError::msg(format!("bad tensor name `{s}`")))?;
    let idx = idx
        .parse()
        .map_err(|_| IrError::msg(format!("bad tensor name `{s}`")))?;
    Ok((node, idx))
}

/// Output index of `out_arg:idx` in a function body's tensor naming. Ops whose outputs are
/// several named args need the arg's position; every other op has one output list.
fn output_index(out_arg: &str, idx: usize) -> usize {
    let base = match out_arg {
        "batch_mean" => 1,
        "batch_variance" => 2,
        "reserve_space_1" => 3,
        "reserve_space_2" => 4,
        "reserve_space_3" => 5,
        _ => 0,
    };
    base + idx
}

/// Renames a tensor reference inside a function body into the flat graph's naming.
/// Control inputs (`^x`) give `None`.
fn rename_body_input(s: &str, prefix: &str) -> Option<String> {
    if s.starts_with('^') {
        return None;
    }
    let parts: Vec<&str> = s.split(':').collect();
    Some(match parts.as_slice() {
        [arg] => format!("{prefix}{arg}:0"),
        [node, out, idx] => {
            let i: usize = idx.parse().unwrap_or(0);
            format!("{prefix}{node}:{}", output_index(out, i))
        }
        [node, idx] => format!("{prefix}{node}:{idx}"),
        _ => format!("{prefix}{s}"),
    })
}

/// The flat graph: every node with inputs in `node:idx` form (control inputs dropped),
/// function calls replaced by their bodies, and aliases from call outputs and function
/// arguments to the tensors they stand for.
pub struct Flat {
    pub nodes: Vec<NodeDef>,
    pub index: HashMap<String, usize>,
    pub aliases: HashMap<String, String>,
    /// The library, for loop bodies.
    pub functions: HashMap<String, FunctionDef>,
}

pub fn func_name(n: &NodeDef) -> Option<&str> {
    if n.op == "StatefulPartitionedCall" || n.op == "PartitionedCall" {
        if let Some(AttrValue {
            value: Some(attr_value::Value::Func(f)),
        }) = n.attr.get("f")
        {
            return Some(&f.name);
        }
    }
    None
}

impl Flat {
    pub fn new(nodes: Vec<NodeDef>, lib: &HashMap<String, &FunctionDef>) -> Result<Flat> {
        let mut flat = Flat {
            nodes: Vec::new(),
            index: HashMap::new(),
            aliases: HashMap::new(),
            functions: lib.iter().map(|(k, v)| (k.clone(), (*v).clone())).collect(),
        };
        let top: Vec<NodeDef> = nodes
            .into_iter()
            .map(|mut n| {
                n.input = n
                    .input
                    .iter()
                    .filter(|s| !s.starts_with('^'))
                    .map(|s| normalize(s))
                    .collect();
                n
            })
            .collect();
        flat.add(top, lib, 0)?;
        for (i, n) in flat.nodes.iter().enumerate() {
            if flat.index.insert(n.name.clone(), i).is_some() {
                return Err(IrError::msg("two nodes have this name").in_node(n.name.clone()));
            }
        }
        Ok(flat)
    }

    fn add(
        &mut self,
        nodes: Vec<NodeDef>,
        lib: &HashMap<String, &FunctionDef>,
        depth: usize,
    ) -> Result<()> {
        for n in nodes {
            if self.nodes.len() > MAX_NODES {
                return Err(IrError::msg(format!(
                    "inlining function calls makes more than {MAX_NODES} nodes"
                )));
            }
            let fname = func_name(&n)
                .map(str::to_string)
                .or_else(|| lib.contains_key(&n.op).then(|| n.op.clone()));
            let Some(fname) = fname else {
                self.nodes.push(n);
                continue;
            };
            if depth >= MAX_INLINE_DEPTH {
                return Err(IrError::msg(format!(
                    "function calls nest deeper than {MAX_INLINE_DEPTH}"
                ))
                .in_node(n.name));
            }
            let f = lib.get(&fname).ok_or_else(|| {
                IrError::msg(format!(
                    "calls function `{fname}`, which the library does not define"
                ))
                .in_node(n.name.clone())
            })?;
            let sig = f
                .signature
                .as_ref()
                .ok_or_else(|| IrError::msg(format!("function `{fname}` has no signature")))?;
            let prefix = format!("{}/", n.name);
            if n.input.len() < sig.input_arg.len() {
                return Err(IrError::msg(format!(
                    "calls `{fname}` with {} inputs; it takes {}",
                    n.input.len(),
                    sig.input_arg.len()
                ))
                .in_node(n.name.clone()));
            }
            for (arg, input) in sig.input_arg.iter().zip(&n.input) {
                self.aliases
                    .insert(format!("{prefix}{}:0", arg.name), input.clone());
            }
            for (k, arg) in sig.output_arg.iter().enumerate() {
                if let Some(ret) = f
                    .ret
                    .get(&arg.name)
                    .and_then(|r| rename_body_input(r, &prefix))
                {
                    self.aliases.insert(format!("{}:{k}", n.name), ret);
                }
            }
            let body: Vec<NodeDef> = f
                .node_def
                .iter()
                .map(|b| {
                    let mut b = b.clone();
                    b.name = format!("{prefix}{}", b.name);
                    b.input = b
                        .input
                        .iter()
                        .filter_map(|s| rename_body_input(s, &prefix))
                        .collect();
                    b
                })
                .collect();
            self.add(body, lib, depth + 1)?;
        }
        Ok(())
    }

    /// The tensor `s` (normalized) stands for, following aliases.
    pub fn resolve(&self, s: &str) -> Result<String> {
        let mut cur = s.to_string();
        for _ in 0..MAX_ALIAS_CHAIN {
            match self.aliases.get(&cur) {
                Some(next) => cur = next.clone(),
                None => return Ok(cur),
            }
        }
        Err(IrError::msg(format!("tensor `{s}` is defined in a cycle")))
    }
}

/// What to build: which placeholders are inputs (node name → input name, in order) and
/// which tensors are outputs (output name → tensor name).
pub struct Io {
    /// `None`: every Placeholder the outputs need, named as its node, in graph order.
    pub inputs: Option<Vec<(String, String)>>,
    pub outputs: Vec<(String, String)>,
}

pub struct Builder<'f> {
    pub flat: &'f Flat,
    pub g: Graph,
    pub values: HashMap<String, Vec<Option<Value>>>,
    /// Loads a resource variable (VarHandleOp node name) as a constant.
    pub variable: &'f dyn Fn(&NodeDef) -> Result<Tensor>,
    /// Constants decoded while the file was streamed, by node name.
    pub preloaded: HashMap<String, Tensor>,
}

impl<'f> Builder<'f> {
    fn node_of(&self, tensor: &str) -> Result<&'f NodeDef> {
        let flat: &'f Flat = self.flat;
        let (name, _) = split_tensor(tensor)?;
        let i = flat
            .index
            .get(name)
            .ok_or_else(|| IrError::msg(format!("tensor `{tensor}`: no node `{name}`")))?;
        flat.nodes
            .get(*i)
            .ok_or_else(|| IrError::msg(format!("no node `{name}`")))
    }

    /// The nodes the outputs need, inputs first.
    fn order(&self, outputs: &[String]) -> Result<Vec<&'f NodeDef>> {
        let mut done: HashSet<&str> = HashSet::new();
        let mut on_stack: HashSet<&str> = HashSet::new();
        let mut order = Vec::new();
        let mut stack: Vec<(&'f NodeDef, bool)> = Vec::new();
        for o in outputs {
            let r = self.flat.resolve(o)?;
            stack.push((self.node_of(&r)?, false));
        }
        while let Some((n, expanded)) = stack.pop() {
            if expanded {
                on_stack.remove(n.name.as_str());
                if done.insert(n.name.as_str()) {
                    order.push(n);
                }
                continue;
            }
            if done.contains(n.name.as_str()) {
                continue;
            }
            if !on_stack.insert(n.name.as_str()) {
                return Err(IrError::msg(
                    "the node depends on itself (a cycle; TF1 while loops are not supported)",
                )
                .in_node(n.name.clone()));
            }
            stack.push((n, true));
            // An Exit reads its loop's initial values and constants; the loop's cycle
            // through NextIteration is lowered as a whole.
            let deps = if n.op == "Exit" {
                super::tf1loop::frame_of(self.flat, n)
                    .map(|f| super::tf1loop::frame_inputs(&f))
                    .map_err(|e| e.in_node(n.name.clone()))?
            } else {
                n.input.clone()
            };
            for i in &deps {
                let r = self.flat.resolve(&normalize(i))?;
                let dep = self.node_of(&r).map_err(|e| e.in_node(n.name.clone()))?;
                if !done.contains(dep.name.as_str()) {
                    if on_stack.contains(dep.name.as_str()) {
                        return Err(IrError::msg("the node depends on itself (a cycle; TF1 while loops are not supported)").in_node(n.name.clone()));
                    }
                    stack.push((dep, false));
                }
            }
        }
        Ok(order)
    }

    pub fn value_of(&self, tensor: &str) -> Result<Value> {
        self.value(tensor)
    }

    fn value(&self, tensor: &str) -> Result<Value> {
        let r = self.flat.resolve(tensor)?;
        let (name, idx) = split_tensor(&r)?;
        self.values
            .get(name)
            .and_then(|v| v.get(idx).copied().flatten())
            .ok_or_else(|| IrError::msg(format!("input `{tensor}` has no value (node `{name}` has no output {idx} kiln can use)")))
    }

    pub fn build(mut self, io: &Io) -> Result<Graph> {
        let outs: Vec<String> = io.outputs.iter().map(|(_, t)| normalize(t)).collect();
        let order = self.order(&outs)?;
        let needed: HashSet<&str> = order.iter().map(|n| n.name.as_str()).collect();
        let inputs: Vec<(String, String)> = match &io.inputs {
            Some(i) => i.clone(),
            None => self
                .flat
                .nodes
                .iter()
                .filter(|n| n.op == "Placeholder" && needed.contains(n.name.as_str()))
                .map(|n| (n.name.clone(), n.name.clone()))
                .collect(),
        };
        for (node, input_name) in &inputs {
            let n = self
                .flat
                .index
                .get(node)
                .and_then(|&i| self.flat.nodes.get(i));
            let n = n.ok_or_else(|| IrError::msg(format!("no input node `{node}`")))?;
            if n.op != "Placeholder" && n.op != "PlaceholderWithDefault" {
                return Err(
                    IrError::msg(format!("an input must be a Placeholder, not {}", n.op))
                        .in_node(node.clone()),
                );
            }
            let dtype =
                dtype_from_tf(ops::attr_type(n, "dtype")?).map_err(|e| e.in_node(node.clone()))?;
            let shape = match n.attr.get("shape") {
                Some(AttrValue {
                    value: Some(attr_value::Value::Shape(s)),
                }) => shape_from_tf(Some(s), true),
                _ => shape_from_tf(None, true),
            };
            let v = self
                .g
                .add_input(input_name.clone(), TensorType::new(dtype, shape));
            self.values.insert(n.name.clone(), vec![Some(v)]);
        }
        for n in order {
            if self.values.contains_key(&n.name) {
                continue;
            }
            if n.op == "Exit" {
                let exits =
                    super::tf1loop::lower(&mut self, n).map_err(|e| e.in_node(n.name.clone()))?;
                for (e, v) in exits {
                    self.values.insert(e, vec![Some(v)]);
                }
                if !self.values.contains_key(&n.name) {
                    self.values.insert(n.name.clone(), vec![None]);
                }
                continue;
            }
            let mut ins = Vec::with_capacity(n.input.len());
            for i in &n.input {
                ins.push(self.value(i).map_err(|e| e.in_node(n.name.clone()))?);
            }
            let outs = if n.op == "While" || n.op == "StatelessWhile" {
                super::lstm::convert_while(&mut self, n, &ins)
            } else {
                ops::convert(&mut self, n, &ins).map(|o| o.into_iter().map(Some).collect())
            };
            let outs = outs.map_err(|e| e.in_node(n.name.clone()))?;
            self.values.insert(n.name.clone(), outs);
        }
        for ((name, _), t) in io.outputs.iter().zip(&outs) {
            let v = self.value(t)?;
            self.g.add_output(name.clone(), v);
        }
        self.g.remove_dead();
        Ok(self.g)
    }

    /// Adds an op, folding it to constants when every input is one.
    pub fn add(
        &mut self,
        op: Op,
        name: &str,
        ins: &[Option<Value>],
        n: usize,
    ) -> Result<Vec<Value>> {
        let consts: Option<Vec<Option<Tensor>>> = ins
            .iter()
            .map(|v| match v {
                None => Some(None),
                Some(v) => self.g.const_value(*v).map(|t| Some(t.clone())),
            })
            .collect();
        if let Some(consts) = consts {
            if op.is_pure() && !ins.is_empty() {
                let outs = kiln_ir::eval::eval_op(&op, &consts, n)?;
                return Ok(outs
                    .into_iter()
                    .map(|t| self.g.add_const(name, t))
                    .collect());
            }
        }
        let idx = self.g.add(op, name, ins, n)?;
        Ok((0..n).map(|i| Value::new(idx, i)).collect())
    }

    pub fn add1(&mut self, op: Op, name: &str, ins: &[Value]) -> Result<Value> {
        let ins: Vec<Option<Value>> = ins.iter().map(|&v| Some(v)).collect();
        let mut out = self.add(op, name, &ins, 1)?;
        out.pop()
            .ok_or_else(|| IrError::msg("an op produced no output"))
    }

    pub fn konst(&mut self, name: &str, t: Tensor) -> Value {
        self.g.add_const(name, t)
    }
}
