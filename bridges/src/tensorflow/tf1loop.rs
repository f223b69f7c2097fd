//! TF1 control-flow loops (Enter/Merge/Switch/NextIteration/Exit frames), as freezing a TF2
//! model lowers its While loops. A frame is read back into a loop body (a FunctionDef whose
//! args are the loop variables, then the loop constants) and lowered like a TF2 While
//! (only Keras LSTM loops are recognised).

use super::graph::{normalize, split_tensor, Builder, Flat};
use super::lstm;
use super::proto::{ArgDef, FunctionDef, NodeDef, OpDef};
use kiln_ir::{IrError, Result, Value};
use std::collections::{HashMap, HashSet};

pub struct Frame {
    /// Per loop variable: its Switch node and initial value (the Enter's input).
    pub vars: Vec<(String, String)>,
    /// Per loop constant: its Enter node and value.
    pub consts: Vec<(String, String)>,
    /// Exit node name → loop variable index.
    pub exits: HashMap<String, usize>,
    /// Body results per loop variable (NextIteration inputs).
    pub results: Vec<String>,
}

fn node<'f>(flat: &'f Flat, tensor: &str) -> Result<&'f NodeDef> {
    let r = flat.resolve(&normalize(tensor))?;
    let (name, _) = split_tensor(&r)?;
    flat.index
        .get(name)
        .and_then(|&i| flat.nodes.get(i))
        .ok_or_else(|| IrError::msg(format!("no node `{name}`")))
}

fn frame_name(n: &NodeDef) -> Option<String> {
    match n.attr.get("frame_name").and_then(|a| a.value.as_ref()) {
        Some(super::proto::attr_value::Value::S(s)) => {
            Some(String::from_utf8_lossy(s).into_owned())
        }
        _ => None,
    }
}

/// The frame an Exit node leaves.
pub fn frame_of(flat: &Flat, exit: &NodeDef) -> Result<Frame> {
    let bad = |what: &str| IrError::msg(format!("TF1 loop structure not understood: {what}"));
    let switch = node(
        flat,
        exit.input
            .first()
            .ok_or_else(|| bad("Exit without input"))?,
    )?;
    if switch.op != "Switch" {
        return Err(bad("Exit does not read a Switch"));
    }
    let cond = normalize(
        switch
            .input
            .get(1)
            .ok_or_else(|| bad("Switch without predicate"))?,
    );
    let mut vars = Vec::new();
    let mut results = Vec::new();
    let mut enters = HashSet::new();
    let mut frame = None;
    for sw in flat
        .nodes
        .iter()
        .filter(|n| n.op == "Switch" && n.input.get(1).map(|s| normalize(s)) == Some(cond.clone()))
    {
        let merge = node(
            flat,
            sw.input
                .first()
                .ok_or_else(|| bad("Switch without input"))?,
        )?;
        if merge.op != "Merge" || merge.input.len() != 2 {
            return Err(bad("a loop Switch does not read a two-input Merge"));
        }
        let enter = node(flat, &merge.input[0])?;
        let next = node(flat, &merge.input[1])?;
        if enter.op != "Enter" || next.op != "NextIteration" {
            return Err(bad(
                "a loop Merge does not join an Enter and a NextIteration",
            ));
        }
        frame = frame_name(enter);
        enters.insert(enter.name.clone());
        vars.push((
            sw.name.clone(),
            enter
                .input
                .first()
                .cloned()
                .ok_or_else(|| bad("Enter without input"))?,
        ));
        results.push(
            next.input
                .first()
                .cloned()
                .ok_or_else(|| bad("NextIteration without input"))?,
        );
    }
    let frame = frame.ok_or_else(|| bad("no loop variables"))?;
    let consts = flat
        .nodes
        .iter()
        .filter(|n| {
            n.op == "Enter"
                && !enters.contains(&n.name)
                && frame_name(n).as_deref() == Some(frame.as_str())
        })
        .filter_map(|n| n.input.first().map(|i| (n.name.clone(), i.clone())))
        .collect();
    let mut exits = HashMap::new();
    for e in flat.nodes.iter().filter(|n| n.op == "Exit") {
        if let Some(i) = e.input.first() {
            let sw = node(flat, i)?;
            if let Some(k) = vars.iter().position(|(s, _)| *s == sw.name) {
                exits.insert(e.name.clone(), k);
            }
        }
    }
    Ok(Frame {
        vars,
        consts,
        exits,
        results,
    })
}

/// The frame's body as a function of (loop variables..., loop constants...).
fn body_function(flat: &Flat, fr: &Frame) -> Result<FunctionDef> {
    let mut arg_of: HashMap<String, String> = HashMap::new();
    for (k, (sw, _)) in fr.vars.iter().enumerate() {
        arg_of.insert(format!("{sw}:1"), format!("arg_{k}"));
    }
    for (j, (enter, _)) in fr.consts.iter().enumerate() {
        arg_of.insert(format!("{enter}:0"), format!("carg_{j}"));
    }
    // A body reference, through Identity nodes, to an argument or a body node's output.
    let rename = |s: &str| -> Result<String> {
        let mut cur = flat.resolve(&normalize(s))?;
        for _ in 0..64 {
            if let Some(a) = arg_of.get(&cur) {
                return Ok(a.clone());
            }
            let n = node(flat, &cur)?;
            match (n.op.as_str(), n.input.first()) {
                ("Identity", Some(i)) => cur = flat.resolve(&normalize(i))?,
                _ => return Ok(cur),
            }
        }
        Err(IrError::msg("an Identity chain in a loop body is too long"))
    };
    let mut body = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<String> = fr
        .results
        .iter()
        .map(|r| rename(r))
        .collect::<Result<_>>()?;
    while let Some(t) = stack.pop() {
        if arg_of.values().any(|a| *a == t) {
            continue;
        }
        let n = node(flat, &t)?;
        if !seen.insert(n.name.clone()) {
            continue;
        }
        if body.len() > flat.nodes.len() {
            return Err(IrError::msg("a loop body is larger than its graph"));
        }
        let mut b = n.clone();
        b.input = n.input.iter().map(|i| rename(i)).collect::<Result<_>>()?;
        stack.extend(b.input.iter().cloned());
        body.push(b);
    }
    let args = (0..fr.vars.len())
        .map(|k| format!("arg_{k}"))
        .chain((0..fr.consts.len()).map(|j| format!("carg_{j}")));
    Ok(FunctionDef {
        signature: Some(OpDef {
            name: "tf1_loop_body".into(),
            input_arg: args.map(|name| ArgDef { name, r#type: 0 }).collect(),
            output_arg: vec![],
        }),
        node_def: body,
        ret: HashMap::new(),
    })
}

/// The tensors a frame's lowering reads from outside it.
pub fn frame_inputs(fr: &Frame) -> Vec<String> {
    fr.vars
        .iter()
        .map(|(_, i)| i.clone())
        .chain(fr.consts.iter().map(|(_, i)| i.clone()))
        .collect()
}

/// Lowers the frame and gives the value of each of its Exit nodes.
pub fn lower(b: &mut Builder, exit: &NodeDef) -> Result<HashMap<String, Value>> {
    let fr = frame_of(b.flat, exit)?;
    let f = body_function(b.flat, &fr)?;
    let inits = frame_inputs(&fr);
    let mut ins = Vec::new();
    for t in &inits {
        ins.push(b.value_of(&normalize(t))?);
    }
    let outs = lstm::lower(b, &exit.name, &f, &ins, &inits)?;
    let mut res = HashMap::new();
    for (e, &k) in &fr.exits {
        if let Some(Some(v)) = outs.get(k) {
            res.insert(e.clone(), *v);
        }
    }
    Ok(res)
}
