//! The printer. It takes the graph as it is and never fails: a malformed graph (a cycle, a
//! dangling output) still prints, and the parser then says what is wrong with the text.

use super::{Weights, INLINE_MAX};
use crate::attr::AttrValue;
use crate::graph::{Graph, Node, NodeId, Value};
use crate::op::Op;
use crate::shape::{Dim, TensorType};
use crate::tensor::{Data, Tensor};
use half::{bf16, f16};
use std::collections::HashMap;
use std::fmt::Write;

pub(super) fn print(graph: &Graph, mut weights: Weights) -> String {
    let mut p = Printer {
        out: String::new(),
        weights: &mut weights,
    };
    p.graph(graph, 0);
    p.out.push('\n');
    p.out
}

struct Printer<'p, 'w> {
    out: String,
    weights: &'p mut Weights<'w>,
}

/// How a node is written and referred to.
enum Kind {
    /// A graph input, declared in the signature.
    Input,
    /// `@label = tensor`.
    Const { name_suffix: bool },
    /// `%id = op(...)`.
    Node { multi: bool },
}

struct Label {
    text: String,
    kind: Kind,
}

/// A constant prints as a `@` declaration when its node says no more than its tensor does.
fn is_plain_const(node: &Node) -> Option<&Tensor> {
    match &node.op {
        Op::Const { value }
            if node.arity == 0
                && node.outputs.len() == 1
                && node.outputs[0] == TensorType::known(value.dtype(), value.shape()) =>
        {
            Some(value)
        }
        _ => None,
    }
}

impl Printer<'_, '_> {
    fn graph(&mut self, g: &Graph, indent: usize) {
        // A cycle cannot be printed in order; index order still shows what is there.
        let order = g.topo_order().unwrap_or_else(|_| g.nodes.node_indices().collect());
        let mut sig_pos: HashMap<NodeId, usize> = HashMap::new();
        for (i, &n) in g.inputs.iter().enumerate() {
            sig_pos.entry(n).or_insert(i);
        }

        // Labels first, so that every reference can be written.
        let mut const_names: HashMap<&str, usize> = HashMap::new();
        for n in &order {
            let node = &g.nodes[*n];
            if !sig_pos.contains_key(n) && is_plain_const(node).is_some() {
                *const_names.entry(node.name.as_str()).or_insert(0) += 1;
            }
        }
        let mut labels: HashMap<NodeId, Label> = HashMap::new();
        let (mut next_node, mut next_const) = (0usize, 0usize);
        for &n in &order {
            let node = &g.nodes[n];
            let label = if sig_pos.contains_key(&n) {
                Label {
                    text: format!("%{}", label(&node.name)),
                    kind: Kind::Input,
                }
            } else if is_plain_const(node).is_some() {
                if !node.name.is_empty() && const_names.get(node.name.as_str()) == Some(&1) {
                    Label {
                        text: format!("@{}", label(&node.name)),
                        kind: Kind::Const { name_suffix: false },
                    }
                } else {
                    next_const += 1;
                    Label {
                        text: format!("@{}", next_const - 1),
                        kind: Kind::Const {
                            name_suffix: !node.name.is_empty(),
                        },
                    }
                }
            } else {
                next_node += 1;
                Label {
                    text: format!("%{}", next_node - 1),
                    kind: Kind::Node {
                        multi: node.outputs.len() != 1,
                    },
                }
            };
            labels.insert(n, label);
        }
        let reference = |v: &Value| -> String {
            match labels.get(&v.node) {
                Some(l) => match l.kind {
                    Kind::Node { multi: true } => format!("{}.{}", l.text, v.output),
                    _ if v.output != 0 => format!("{}.{}", l.text, v.output),
                    _ => l.text.clone(),
                },
                None => "%\"<missing node>\"".to_string(),
            }
        };

        // Signature.
        let ind = " ".repeat(indent + 2);
        let _ = write!(self.out, "graph {}(", label(&g.name));
        for (i, &n) in g.inputs.iter().enumerate() {
            let node = g.nodes.node_weight(n);
            let name = node.map_or("<missing input>", |node| node.name.as_str());
            let ty = node.and_then(|node| node.outputs.first());
            let _ = write!(
                self.out,
                "{}%{}: {}",
                sep(i),
                label(name),
                ty.map_or("?".to_string(), type_text)
            );
        }
        self.out.push_str(") -> (");
        for (i, (name, v)) in g.outputs.iter().enumerate() {
            let ty = g.nodes.node_weight(v.node).and_then(|node| node.outputs.get(v.output));
            let _ = write!(
                self.out,
                "{}%{}: {}",
                sep(i),
                label(name),
                ty.map_or("?".to_string(), type_text)
            );
        }
        self.out.push_str(") {\n");

        // Inputs that the topological order puts first, in signature order, need no line of
        // their own; any other input is placed where the order has it.
        let mut front = 0;
        let mut last: Option<usize> = None;
        for n in &order {
            match sig_pos.get(n) {
                Some(&p) if last.is_none_or(|l| p > l) => {
                    last = Some(p);
                    front += 1;
                }
                _ => break,
            }
        }

        for &n in &order[front..] {
            let node = &g.nodes[n];
            let Some(l) = labels.get(&n) else { continue };
            match l.kind {
                Kind::Input => {
                    let _ = writeln!(self.out, "{ind}input {}", l.text);
                }
                Kind::Const { name_suffix } => {
                    let _ = write!(self.out, "{ind}{} = ", l.text);
                    if let Some(t) = is_plain_const(node) {
                        self.tensor(t);
                    }
                    if name_suffix {
                        let _ = write!(self.out, " {}", quote(&node.name));
                    }
                    self.out.push('\n');
                }
                Kind::Node { .. } => {
                    let args: Vec<String> = g
                        .inputs_of(n)
                        .iter()
                        .map(|v| v.as_ref().map_or("_".to_string(), &reference))
                        .collect();
                    let _ = write!(self.out, "{ind}{} = {}({})", l.text, node.op.name(), args.join(", "));
                    self.attrs(&node.op.attrs(), indent + 2);
                    self.out.push_str(" : ");
                    if node.outputs.len() == 1 {
                        self.out.push_str(&type_text(&node.outputs[0]));
                    } else {
                        let tys: Vec<String> = node.outputs.iter().map(type_text).collect();
                        let _ = write!(self.out, "({})", tys.join(", "));
                    }
                    if !node.name.is_empty() {
                        let _ = write!(self.out, " {}", quote(&node.name));
                    }
                    self.out.push('\n');
                }
            }
        }
        let rets: Vec<String> = g.outputs.iter().map(|(_, v)| reference(v)).collect();
        if rets.is_empty() {
            let _ = writeln!(self.out, "{ind}return");
        } else {
            let _ = writeln!(self.out, "{ind}return {}", rets.join(", "));
        }
        let _ = write!(self.out, "{}}}", " ".repeat(indent));
    }

    /// ` {k=v, …}` on the node's line, or one attribute per line when one is a graph.
    fn attrs(&mut self, attrs: &[(&'static str, AttrValue)], indent: usize) {
        if attrs.is_empty() {
            return;
        }
        let multiline = attrs.iter().any(|(_, v)| matches!(v, AttrValue::Graph(_)));
        self.out.push_str(" {");
        for (i, (k, v)) in attrs.iter().enumerate() {
            if multiline {
                let _ = write!(
                    self.out,
                    "{}\n{}{k}=",
                    if i > 0 { "," } else { "" },
                    " ".repeat(indent + 2)
                );
                self.value(v, indent + 2);
            } else {
                let _ = write!(self.out, "{}{k}=", sep(i));
                self.value(v, indent);
            }
        }
        if multiline {
            let _ = write!(self.out, "\n{}", " ".repeat(indent));
        }
        self.out.push('}');
    }

    fn value(&mut self, v: &AttrValue, indent: usize) {
        match v {
            AttrValue::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            AttrValue::Float(f) => self.out.push_str(&f32_text(*f)),
            AttrValue::Bool(b) => {
                let _ = write!(self.out, "{b}");
            }
            AttrValue::Word(w) => self.out.push_str(w),
            AttrValue::Str(s) => self.out.push_str(&quote(s)),
            AttrValue::Ints(v) => list(&mut self.out, v.iter()),
            AttrValue::Floats(v) => list(&mut self.out, v.iter().map(|x| f32_text(*x))),
            AttrValue::Strs(v) => list(&mut self.out, v.iter().map(|s| quote(s))),
            AttrValue::Tensor(t) => self.tensor(t),
            AttrValue::Graph(g) => self.graph(g, indent),
        }
    }

    /// `type data`, with the data as the weights mode says.
    fn tensor(&mut self, t: &Tensor) {
        let ty = TensorType::known(t.dtype(), t.shape());
        self.out.push_str(&type_text(&ty));
        if t.len() <= INLINE_MAX {
            self.out.push(' ');
            data_text(&mut self.out, t.data());
            return;
        }
        match &mut *self.weights {
            Weights::Inline => {
                self.out.push(' ');
                data_text(&mut self.out, t.data());
            }
            Weights::Elided => {}
            Weights::External(bin) => {
                let aligned = bin.len().div_ceil(64) * 64;
                bin.resize(aligned, 0);
                let bytes = t.to_le_bytes();
                let _ = write!(self.out, " bin({}, {})", aligned, bytes.len());
                bin.extend_from_slice(&bytes);
            }
        }
    }
}

fn sep(i: usize) -> &'static str {
    if i > 0 {
        ", "
    } else {
        ""
    }
}

/// `[a,b,c]`, written straight into `out` (a weight can have millions of elements).
fn list<T: std::fmt::Display>(out: &mut String, items: impl Iterator<Item = T>) {
    out.push('[');
    for (i, x) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
    out.push(']');
}

pub(super) fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A name as written after `%`, `@` or `graph`: bare when it is an identifier.
fn label(s: &str) -> String {
    if is_ident(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

pub(super) fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{{{:x}}}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub(super) fn type_text(t: &TensorType) -> String {
    let mut o = t.dtype.name().to_string();
    match t.shape.dims() {
        None => o.push_str("[*]"),
        Some(dims) => {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => n.to_string(),
                    Dim::Sym(s) => label(s),
                    Dim::Unknown => "?".to_string(),
                })
                .collect();
            let _ = write!(o, "[{}]", dims.join(","));
        }
    }
    o
}

fn data_text(out: &mut String, d: &Data) {
    match d {
        Data::F32(v) => list(out, v.iter().map(|x| f32_text(*x))),
        Data::F64(v) => list(out, v.iter().map(|x| f64_text(*x))),
        Data::F16(v) => list(out, v.iter().map(|x| f16_text(*x))),
        Data::BF16(v) => list(out, v.iter().map(|x| bf16_text(*x))),
        Data::I8(v) => list(out, v.iter()),
        Data::I16(v) => list(out, v.iter()),
        Data::I32(v) => list(out, v.iter()),
        Data::I64(v) => list(out, v.iter()),
        Data::U8(v) => list(out, v.iter()),
        Data::U16(v) => list(out, v.iter()),
        Data::U32(v) => list(out, v.iter()),
        Data::U64(v) => list(out, v.iter()),
        Data::Bool(v) => list(out, v.iter()),
    }
}

/// Rust's `{:?}` is the shortest decimal that parses back to the same float; it always has
/// a `.` or an exponent, so it never reads as an integer.
pub(super) fn f32_text(x: f32) -> String {
    if x.is_finite() {
        format!("{x:?}")
    } else {
        format!("0x{:08x}", x.to_bits())
    }
}

fn f64_text(x: f64) -> String {
    if x.is_finite() {
        format!("{x:?}")
    } else {
        format!("0x{:016x}", x.to_bits())
    }
}

fn f16_text(x: f16) -> String {
    if x.is_finite() {
        shortest(x.to_f64(), |c| f16::from_f64(c).to_bits() == x.to_bits())
    } else {
        format!("0x{:04x}", x.to_bits())
    }
}

fn bf16_text(x: bf16) -> String {
    if x.is_finite() {
        shortest(x.to_f64(), |c| bf16::from_f64(c).to_bits() == x.to_bits())
    } else {
        format!("0x{:04x}", x.to_bits())
    }
}

/// The shortest decimal that the parser (which reads f16 and bf16 through f64) turns back
/// into the same half-precision value, written as Rust writes that f64.
fn shortest(v: f64, same: impl Fn(f64) -> bool) -> String {
    for digits in 0..17 {
        if let Ok(c) = format!("{v:.digits$e}").parse::<f64>() {
            if same(c) {
                return format!("{c:?}");
            }
        }
    }
    format!("{v:?}")
}
