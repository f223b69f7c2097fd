//! Hoisting: a transpose that sinking left below a chain of layout-agnostic ops hanging off
//! a graph input (`input → pad → transpose → conv` in an NHWC Keras model) moves up to the
//! input, so the only transpose left is the one the input's layout demands. Each step
//! turns `transpose(f(x), q)` into `f'(transpose(x, q))` by the same rules sinking uses,
//! read the other way round: `x` held in layout `q⁻¹` is `transpose(x, q)`.

use super::perm;
use super::rules::{self, Arg, Operand, Rewrite};
use super::sink::agrees;
use kiln_ir::{Edge, Graph, NodeId, Op, Result, Value};

pub(crate) fn hoist_to_inputs(g: &mut Graph) -> Result<()> {
    let transposes: Vec<NodeId> = g
        .topo_order()?
        .into_iter()
        .filter(|&n| matches!(g.node(n).op, Op::Transpose { .. }))
        .collect();
    for mut t in transposes {
        while reaches_input(g, t) {
            match step(g, t) {
                Some(up) => t = up,
                None => break,
            }
        }
    }
    Ok(())
}

/// The transpose's permutation, when its input has a known rank.
fn perm_of(g: &Graph, t: NodeId) -> Option<(Value, perm::Perm)> {
    let Op::Transpose { perm } = &g.node(t).op else {
        return None;
    };
    let x = g.inputs_of(t).first().copied().flatten()?;
    let p = perm::from_attr(perm, g.value_type(x).shape.rank()?)?;
    Some((x, p))
}

/// True when every op between the transpose and a graph input can take it, so hoisting
/// ends at the input (and not midway, where it would only move the transpose).
/// A transpose right before a graph output is where the output's layout demands it: it
/// stays.
fn reaches_input(g: &Graph, t: NodeId) -> bool {
    if g.outputs.iter().any(|(_, o)| o.node == t) {
        return false;
    }
    let Some((mut v, q)) = perm_of(g, t) else { return false };
    let mut steps = 0;
    loop {
        match g.node(v.node).op {
            Op::Input => return steps > 0,
            Op::Const { .. } => return false,
            _ => {}
        }
        match through(g, v, &q) {
            Some((_, slot, _)) => match g.inputs_of(v.node)[slot] {
                Some(x) => v = x,
                None => return false,
            },
            None => return false,
        }
        steps += 1;
    }
}

/// How `transpose(v, q)` moves above the op making `v`: the op's rewrite and the slot of
/// the input the transpose moves onto, with that input's value. `v` must have no other use.
fn through(g: &Graph, v: Value, q: &[usize]) -> Option<(Rewrite, usize, Value)> {
    let f = g.node(v.node);
    if f.outputs.len() != 1 || g.uses_of(v).len() != 1 || g.outputs.iter().any(|(_, o)| *o == v) {
        return None;
    }
    let ins = g.inputs_of(v.node);
    let data = ins
        .iter()
        .position(|i| i.is_some_and(|i| g.const_value(i).is_none() && g.value_type(i).shape.rank() == Some(q.len())))?;
    let p = perm::inverse(q);
    let operands: Vec<Option<Operand>> = ins
        .iter()
        .enumerate()
        .map(|(slot, i)| {
            i.map(|i| Operand {
                perm: (slot == data).then_some(p.as_slice()),
                ty: g.value_type(i),
                konst: g.const_value(i),
            })
        })
        .collect();
    let rw = rules::sink(&f.op, &operands, 1)?;
    if rw.out_perms != [Some(p)] || rw.args.get(data) != Some(&Some(Arg::Held)) {
        return None;
    }
    Some((rw, data, ins[data]?))
}

/// One step up; the new transpose, or `None` when inference disagrees (nothing changed).
fn step(g: &mut Graph, t: NodeId) -> Option<NodeId> {
    let (v, q) = perm_of(g, t)?;
    let (rw, data, x) = through(g, v, &q)?;
    let f = v.node;
    let ins = g.inputs_of(f);
    let (f_name, t_name) = (g.node(f).name.clone(), g.node(t).name.clone());
    let out_ty = g.node(t).outputs[0].clone();
    let up = g.add_node_typed(
        perm::transpose_op(&q),
        t_name,
        &[Some(x)],
        vec![perm::permute_type(g.value_type(x), &q)],
    );
    let mut added = vec![up];
    let mut args = Vec::with_capacity(ins.len());
    for (slot, (arg, i)) in rw.args.iter().zip(&ins).enumerate() {
        args.push(match (arg, i) {
            (Some(Arg::Held), _) if slot == data => Some(up.into()),
            (Some(Arg::Held), Some(i)) => Some(*i),
            (Some(Arg::Const(c)), _) => {
                let c = g.add_const(perm::derived(&f_name, &format!("layout{slot}")), c.clone());
                added.push(c.node);
                Some(c)
            }
            _ => None,
        });
    }
    let outputs = [out_ty];
    if !agrees(g, &rw.op, &args, &outputs) {
        for n in added {
            g.nodes.remove_node(n);
        }
        return None;
    }
    let new_f = g.add_node_typed(rw.op, f_name, &args, outputs.to_vec());
    let uses = g.uses_of(Value::new(t, 0));
    for (_, o) in g.outputs.iter_mut() {
        if *o == Value::new(t, 0) {
            *o = new_f.into();
        }
    }
    g.nodes.remove_node(t);
    g.nodes.remove_node(f);
    for (user, slot) in uses {
        g.nodes.add_edge(new_f, user, Edge { output: 0, input: slot });
    }
    Some(up)
}
