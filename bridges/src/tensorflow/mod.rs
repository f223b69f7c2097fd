//! The TensorFlow bridge: frozen GraphDef `.pb` files and TF2 SavedModel directories into a
//! `kiln_ir::Graph`.
//!
//! - `proto`: the protobuf messages, declared with prost.
//! - `tensor`: data types, shapes, `TensorProto` decoding.
//! - `bundle`: the variables checkpoint (tensor bundle: SSTable index + data shards).
//! - `graph`: tensor naming, function inlining, node order, inputs and outputs.
//! - `stream`: frozen GraphDefs read field by field, large constants decoded from the file
//!   straight into their tensors.
//! - `ops`: the table from TF op types to IR ops (one file per op family).
//! - `lstm`: Keras LSTM/GRU `While` loops (TensorList structure) lowered to `Rnn`.
//! - `simple_rnn`: the same for Keras SimpleRNN loops.
//! - `tf1loop`: TF1 loop frames of frozen graphs read back into a loop body for `lstm`.
//!
//! Files are untrusted: every failure is a `BridgeError` naming the file, the node and what
//! is wrong. Weights are decoded straight from the file buffer into their tensors.

mod bundle;
mod graph;
mod lstm;
mod ops;
mod proto;
mod simple_rnn;
mod stream;
mod tensor;
mod tf1loop;

use crate::error::BridgeError;
use graph::{normalize, split_tensor, Builder, Flat, Io};
use kiln_ir::{Graph, IrError, Tensor};
use prost::bytes::Bytes;
use prost::Message;
use proto::{attr_value, FunctionDef, GraphDef, NodeDef, SavedModel};
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn err(file: &str, e: IrError) -> BridgeError {
    BridgeError::new(file, e.node, e.message)
}

fn read(path: &Path) -> Result<Bytes, BridgeError> {
    std::fs::read(path).map(Bytes::from).map_err(|e| {
        BridgeError::new(
            path.display().to_string(),
            None,
            format!("cannot read the file: {e}"),
        )
    })
}

fn library(g: &GraphDef) -> HashMap<String, &FunctionDef> {
    let mut lib = HashMap::new();
    if let Some(l) = &g.library {
        for f in &l.function {
            if let Some(s) = &f.signature {
                lib.insert(s.name.clone(), f);
            }
        }
    }
    lib
}

/// Loads a frozen GraphDef: inputs are its Placeholders, outputs the tensors nothing consumes.
pub fn load_frozen(path: &Path) -> Result<Graph, BridgeError> {
    load_frozen_with(path, &[], &[])
}

/// Loads a frozen GraphDef with the given input nodes (Placeholders, by node name or as `x:0`) and output
/// tensors (`node` or `node:index`); empty lists take the defaults of `load_frozen`.
pub fn load_frozen_with(
    path: &Path,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<Graph, BridgeError> {
    let label = path.display().to_string();
    let streamed = stream::read_graph_def(path).map_err(|e| err(&label, e))?;
    build_frozen(streamed, &label, inputs, outputs)
}

/// Loads a serialized frozen GraphDef held in memory (as TensorFlow's
/// `convert_variables_to_constants_v2(...).graph.as_graph_def().SerializeToString()` gives
/// it); `label` names it in messages. Inputs and outputs as in [`load_frozen_with`].
pub fn load_frozen_bytes(
    bytes: &[u8],
    label: &str,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<Graph, BridgeError> {
    let streamed = stream::read_graph_def_from(bytes, bytes.len() as u64).map_err(|e| err(label, e))?;
    build_frozen(streamed, label, inputs, outputs)
}

fn build_frozen(
    streamed: stream::StreamedGraph,
    label: &str,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<Graph, BridgeError> {
    let gd = GraphDef {
        node: streamed.nodes,
        library: streamed.library,
    };
    let outputs: Vec<(String, String)> = if outputs.is_empty() {
        let ops_of: HashMap<&str, &str> = gd
            .node
            .iter()
            .map(|n| (n.name.as_str(), n.op.as_str()))
            .collect();
        let mut consumed: HashSet<&str> = HashSet::new();
        for n in &gd.node {
            for i in &n.input {
                if !i.starts_with('^') {
                    consumed.insert(i.rsplit_once(':').map_or(i.as_str(), |(a, b)| {
                        if b.bytes().all(|c| c.is_ascii_digit()) {
                            a
                        } else {
                            i.as_str()
                        }
                    }));
                }
            }
        }
        gd.node
            .iter()
            .filter(|n| !consumed.contains(n.name.as_str()))
            // Loop plumbing left dangling by freezing (Exits, controls on a Switch) is no output.
            // Nor is a view of a constant (frozen variable reads left behind).
            .filter(|n| {
                !(n.op == "Identity"
                    && n.input
                        .iter()
                        .filter(|i| !i.starts_with('^'))
                        .all(|i| ops_of.get(i.split(':').next().unwrap_or("")) == Some(&"Const")))
            })
            .filter(|n| {
                n.op != "Exit"
                    && !n.input.iter().any(|i| {
                        ops_of.get(i.trim_start_matches('^').split(':').next().unwrap_or(""))
                            == Some(&"Switch")
                    })
            })
            .filter(|n| {
                !matches!(
                    n.op.as_str(),
                    "NoOp"
                        | "Const"
                        | "Placeholder"
                        | "VarHandleOp"
                        | "Assert"
                        | "SaveV2"
                        | "RestoreV2"
                )
            })
            .map(|n| (n.name.clone(), format!("{}:0", n.name)))
            .collect()
    } else {
        outputs
            .iter()
            .map(|o| {
                let t = normalize(o);
                let name = match split_tensor(&t) {
                    Ok((node, 0)) => node.to_string(),
                    _ => t.clone(),
                };
                (name, t)
            })
            .collect()
    };
    if outputs.is_empty() {
        return Err(BridgeError::new(
            label,
            None,
            "the graph has no outputs (every node's result is consumed)",
        ));
    }
    let lib: HashMap<String, FunctionDef> = library(&gd)
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let lib_refs: HashMap<String, &FunctionDef> = lib.iter().map(|(k, v)| (k.clone(), v)).collect();
    let flat = Flat::new(gd.node, &lib_refs).map_err(|e| err(&label, e))?;
    let io = Io {
        inputs: if inputs.is_empty() {
            None
        } else {
            Some(
                inputs
                    .iter()
                    // `x:0` names the Placeholder `x`'s tensor; the input is the node.
                    .map(|s| {
                        let node = match s.rsplit_once(':') {
                            Some((n, "0")) => n,
                            _ => s,
                        };
                        (node.to_string(), node.to_string())
                    })
                    .collect(),
            )
        },
        outputs,
    };
    let no_vars = |n: &NodeDef| -> kiln_ir::Result<Tensor> {
        Err(IrError::msg(
            "a frozen graph reads a resource variable; freeze the variables into constants",
        )
        .in_node(n.name.clone()))
    };
    let b = Builder {
        flat: &flat,
        g: Graph::new("main"),
        values: HashMap::new(),
        variable: &no_vars,
        preloaded: streamed.tensors,
    };
    b.build(&io).map_err(|e| err(&label, e))
}

/// For each VarHandleOp node of the top-level graph, its checkpoint key, read from the
/// restore function the SavedModel carries (RestoreV2 of named keys, AssignVariableOp into
/// the function's resource arguments, which the caller binds to the VarHandleOps).
fn checkpoint_keys(g: &GraphDef, lib: &HashMap<String, &FunctionDef>) -> HashMap<String, String> {
    let mut keys = HashMap::new();
    for call in &g.node {
        let Some(fname) = graph::func_name(call) else {
            continue;
        };
        let Some(f) = lib.get(fname) else { continue };
        let Some(restore) = f.node_def.iter().find(|n| n.op == "RestoreV2") else {
            continue;
        };
        let Some(sig) = &f.signature else { continue };
        let body: HashMap<&str, &NodeDef> =
            f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
        let names: Vec<String> = restore
            .input
            .get(1)
            .and_then(|t| body.get(t.split(':').next().unwrap_or("")))
            .and_then(
                |c| match c.attr.get("value").and_then(|a| a.value.as_ref()) {
                    Some(attr_value::Value::Tensor(t)) => Some(
                        t.string_val
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect(),
                    ),
                    _ => None,
                },
            )
            .unwrap_or_default();
        let call_inputs: Vec<&String> = call.input.iter().filter(|s| !s.starts_with('^')).collect();
        for assign in f.node_def.iter().filter(|n| n.op == "AssignVariableOp") {
            let (Some(var), Some(val)) = (assign.input.first(), assign.input.get(1)) else {
                continue;
            };
            // Follow Identity nodes back to `RestoreV2:tensors:k`.
            let mut cur = val.clone();
            let mut k = None;
            for _ in 0..16 {
                let parts: Vec<&str> = cur.split(':').collect();
                let Some(node) = body.get(parts[0]) else {
                    break;
                };
                if node.op == "RestoreV2" {
                    k = parts.last().and_then(|i| i.parse::<usize>().ok());
                    break;
                }
                match node.input.first() {
                    Some(next) if node.op == "Identity" => cur = next.clone(),
                    _ => break,
                }
            }
            let Some(key) = k.and_then(|k| names.get(k)) else {
                continue;
            };
            let Some(arg_pos) = sig.input_arg.iter().position(|a| &a.name == var) else {
                continue;
            };
            if let Some(outer) = call_inputs.get(arg_pos) {
                let node = outer.split(':').next().unwrap_or("").to_string();
                keys.insert(node, key.clone());
            }
        }
    }
    keys
}

/// The signatures a user can choose, for error messages: TF's own `__saved_model_init_op`
/// (variable initialisation) is not one.
fn signatures<V>(defs: &HashMap<String, V>) -> String {
    let mut have: Vec<String> = defs.keys().filter(|k| !k.starts_with("__")).map(|k| format!("`{k}`")).collect();
    have.sort();
    if have.is_empty() {
        "no signatures".to_string()
    } else {
        have.join(", ")
    }
}

/// Loads a TF2 SavedModel directory (`saved_model.pb` + `variables/`). The signature is
/// `signature` if given, else `serving_default`, else `serve`. Inputs and outputs are named
/// by the signature's keys.
pub fn load_saved_model(dir: &Path, signature: Option<&str>) -> Result<Graph, BridgeError> {
    let pb = dir.join("saved_model.pb");
    let label = pb.display().to_string();
    let bytes = read(&pb)?;
    let sm = SavedModel::decode(bytes).map_err(|e| {
        BridgeError::new(
            &label,
            None,
            format!("not a valid SavedModel (protobuf decoding failed: {e})"),
        )
    })?;
    let mg = sm
        .meta_graphs
        .into_iter()
        .next()
        .ok_or_else(|| BridgeError::new(&label, None, "the SavedModel has no meta graph"))?;
    let sig_name = match signature {
        Some(s) => s.to_string(),
        None => ["serving_default", "serve"]
            .iter()
            .find(|s| mg.signature_def.contains_key(**s))
            .map(|s| s.to_string())
            .ok_or_else(|| {
                BridgeError::new(
                    &label,
                    None,
                    format!("no `serving_default` or `serve` signature; the model has {}", signatures(&mg.signature_def)),
                )
            })?,
    };
    let sig = mg.signature_def.get(&sig_name).ok_or_else(|| {
        BridgeError::new(
            &label,
            None,
            format!("no signature `{sig_name}`; the model has {}", signatures(&mg.signature_def)),
        )
    })?;
    let inputs: Vec<(String, String)> = sig
        .inputs
        .iter()
        .map(|(k, t)| {
            (
                t.name.split(':').next().unwrap_or("").to_string(),
                k.clone(),
            )
        })
        .collect();
    let outputs: Vec<(String, String)> = sig
        .outputs
        .iter()
        .map(|(k, t)| (k.clone(), t.name.clone()))
        .collect();
    let gd = mg.graph_def.clone().unwrap_or_default();
    let lib = library(&gd);
    let keys = checkpoint_keys(&gd, &lib);
    let flat = Flat::new(gd.node.clone(), &lib).map_err(|e| err(&label, e))?;
    let prefix = dir.join("variables").join("variables");
    let bundle = bundle::Bundle::open(&prefix);
    let variable = |n: &NodeDef| -> kiln_ir::Result<Tensor> {
        let b = bundle.as_ref().map_err(|e| e.clone())?;
        let shared = match n.attr.get("shared_name").and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::S(s)) if !s.is_empty() => {
                String::from_utf8_lossy(s).into_owned()
            }
            _ => n.name.clone(),
        };
        let key = keys.get(&n.name).cloned().unwrap_or(shared);
        b.tensor(&key)
    };
    let b = Builder {
        flat: &flat,
        g: Graph::new("main"),
        values: HashMap::new(),
        variable: &variable,
        preloaded: HashMap::new(),
    };
    let io = Io {
        inputs: Some(inputs),
        outputs,
    };
    b.build(&io).map_err(|e| err(&label, e))
}
