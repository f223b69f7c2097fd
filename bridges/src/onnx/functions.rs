//! Model-local functions (`ModelProto.functions`) are inlined at their call sites: the body's
//! formal inputs and outputs take the call's names, its internal names get a prefix unique
//! to the call, and attribute references (`ref_attr_name`) take the call's attribute values
//! (or the function's defaults).

use super::graph::{default_opset, node_name, Builder, Item};
use kiln_ir::{IrError, Result};
use onnx_protobuf::{AttributeProto, FunctionProto, GraphProto, NodeProto};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Calls nested deeper than this are taken to be recursion.
const MAX_DEPTH: usize = 32;
/// A bound on the nodes all inlining may create, so that a small file whose functions call
/// each other twice per level cannot ask for exponentially many.
const MAX_INLINED_NODES: usize = 1 << 20;

/// Replaces every call of a model-local function by the function's body, recursively.
pub(crate) fn expand<'g>(b: &mut Builder<'_>, items: Vec<Item<'g>>) -> Result<Vec<Item<'g>>> {
    if b.functions.is_empty() {
        return Ok(items);
    }
    let mut out = Vec::with_capacity(items.len());
    let mut stack: Vec<Item<'g>> = items.into_iter().rev().collect();
    while let Some(item) = stack.pop() {
        let key = (item.node.domain.clone(), item.node.op_type.clone());
        let Some(&f) = b.functions.get(&key) else {
            out.push(item);
            continue;
        };
        if item.depth >= MAX_DEPTH {
            return Err(IrError::at(
                node_name(&item.node),
                format!(
                    "calls of function {} nest deeper than {MAX_DEPTH} (is it recursive?)",
                    f.name
                ),
            ));
        }
        b.inline_counter += 1;
        b.inlined_nodes = b.inlined_nodes.saturating_add(f.node.len());
        if b.inlined_nodes > MAX_INLINED_NODES {
            return Err(IrError::at(
                node_name(&item.node),
                format!("inlining model-local functions would create more than {MAX_INLINED_NODES} nodes"),
            ));
        }
        let body = inline(&item.node, f, item.opset, b.inline_counter)
            .map_err(|e| e.in_node(node_name(&item.node)))?;
        // Body nodes go back on the stack (in order) so that nested calls expand too.
        for n in body.into_iter().rev() {
            stack.push(Item {
                node: Cow::Owned(n.0),
                opset: n.1,
                depth: item.depth + 1,
            });
        }
    }
    Ok(out)
}

/// The body of `f` for one call, renamed, with attribute references resolved.
fn inline(
    call: &NodeProto,
    f: &FunctionProto,
    call_opset: i64,
    unique: usize,
) -> Result<Vec<(NodeProto, i64)>> {
    let opset = default_opset(&f.opset_import).unwrap_or(call_opset);
    super::graph::check_opset(opset)
        .map_err(|e| IrError::msg(format!("function {}: {}", f.name, e.message)))?;
    if call.input.len() > f.input.len() {
        return Err(IrError::msg(format!(
            "function {} takes {} inputs, the call passes {}",
            f.name,
            f.input.len(),
            call.input.len()
        )));
    }
    if call.output.len() > f.output.len() {
        return Err(IrError::msg(format!(
            "function {} has {} outputs, the call asks for {}",
            f.name,
            f.output.len(),
            call.output.len()
        )));
    }
    let call_name = node_name(call);
    let prefix = format!("{call_name}/{}#{unique}", f.name);
    let mut rename: HashMap<String, String> = HashMap::new();
    for (i, formal) in f.input.iter().enumerate() {
        rename.insert(
            formal.clone(),
            call.input.get(i).cloned().unwrap_or_default(),
        );
    }
    for (i, formal) in f.output.iter().enumerate() {
        match call.output.get(i) {
            Some(actual) if !actual.is_empty() => {
                rename.insert(formal.clone(), actual.clone());
            }
            _ => {}
        }
    }
    // Names local to the function: the only ones its nested graphs may read from it.
    let mut local: HashSet<String> = f.input.iter().chain(&f.output).cloned().collect();
    for n in &f.node {
        local.extend(n.output.iter().cloned());
    }
    let map_name = |s: &str| -> String {
        if s.is_empty() {
            return String::new();
        }
        rename
            .get(s)
            .cloned()
            .unwrap_or_else(|| format!("{prefix}/{s}"))
    };
    let mut out = Vec::with_capacity(f.node.len());
    for (k, n) in f.node.iter().enumerate() {
        let mut m = n.clone();
        m.name = format!(
            "{call_name}/{}",
            if n.name.is_empty() {
                format!("{}{k}", n.op_type)
            } else {
                n.name.clone()
            }
        );
        m.input = n.input.iter().map(|s| map_name(s)).collect();
        m.output = n.output.iter().map(|s| map_name(s)).collect();
        m.attribute = resolve_attrs(&n.attribute, call, f)?;
        for a in &mut m.attribute {
            if let Some(g) = a.g.as_mut() {
                rename_nested(g, &local, &map_name, call, f)?;
            }
            for g in &mut a.graphs {
                rename_nested(g, &local, &map_name, call, f)?;
            }
        }
        out.push((m, opset));
    }
    Ok(out)
}

/// Attributes of a body node with references to the call's attributes replaced; a
/// reference to an attribute the call does not set takes the function's default, or is
/// left out.
fn resolve_attrs(
    attrs: &[AttributeProto],
    call: &NodeProto,
    f: &FunctionProto,
) -> Result<Vec<AttributeProto>> {
    let mut out = Vec::with_capacity(attrs.len());
    for a in attrs {
        if a.ref_attr_name.is_empty() {
            out.push(a.clone());
            continue;
        }
        let src = call
            .attribute
            .iter()
            .find(|c| c.name == a.ref_attr_name)
            .or_else(|| f.attribute_proto.iter().find(|d| d.name == a.ref_attr_name));
        if let Some(src) = src {
            let mut v = src.clone();
            v.name = a.name.clone();
            v.ref_attr_name.clear();
            out.push(v);
        }
    }
    Ok(out)
}

/// Renames the function-local names a nested graph reads and resolves attribute
/// references inside it.
fn rename_nested(
    g: &mut GraphProto,
    local: &HashSet<String>,
    map_name: &dyn Fn(&str) -> String,
    call: &NodeProto,
    f: &FunctionProto,
) -> Result<()> {
    let fix = |s: &mut String| {
        if local.contains(s.as_str()) {
            *s = map_name(s);
        }
    };
    for n in &mut g.node {
        n.input.iter_mut().for_each(|s| fix(s));
        n.output.iter_mut().for_each(|s| fix(s));
        n.attribute = resolve_attrs(&n.attribute, call, f)?;
        for a in &mut n.attribute {
            if let Some(sub) = a.g.as_mut() {
                rename_nested(sub, local, map_name, call, f)?;
            }
            for sub in &mut a.graphs {
                rename_nested(sub, local, map_name, call, f)?;
            }
        }
    }
    for o in &mut g.output {
        fix(&mut o.name);
    }
    Ok(())
}
