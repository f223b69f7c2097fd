//! Sinking: one walk in topological order rebuilds the graph, keeping every value *held*
//! in some layout (see `perm`). A Transpose costs nothing here: it only changes the layout
//! its input is held in, so chains of transposes merge and a transpose meeting its inverse
//! vanishes. A layout-agnostic op runs on the held tensors (per `rules`) and its results
//! stay held. Anything else — a convolution, a reshape, a graph output — gets its inputs
//! materialized in the model's layout: that is where a transpose is left, once per held
//! tensor and layout however many consumers need it.

use super::flatten;
use super::perm::{self, Perm};
use super::rules::{self, Arg, Operand, Rewrite};
use kiln_ir::{Dim, Graph, NodeId, Op, Result, Tensor, TensorType, Value};
use std::collections::HashMap;

/// Where an old value lives in the new graph: `value`, held in layout `perm`.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub value: Value,
    pub perm: Option<Perm>,
}

pub(crate) struct Sinker<'a> {
    pub old: &'a Graph,
    pub new: Graph,
    pub map: HashMap<Value, Held>,
    /// Transposes already made, by held value and layout.
    made: HashMap<(Value, Perm), Value>,
    /// MatMul and Gemm nodes of the old graph whose constant weight the flatten rule replaced.
    pub weights: HashMap<NodeId, Tensor>,
}

/// The old graph rebuilt with its transposes sunk.
pub(crate) fn sink(old: &Graph) -> Result<Graph> {
    let mut s = Sinker {
        old,
        new: Graph::new(old.name.clone()),
        map: HashMap::new(),
        made: HashMap::new(),
        weights: HashMap::new(),
    };
    for &n in &old.inputs {
        let node = old.node(n);
        let v = s.new.add_input(node.name.clone(), node.outputs[0].clone());
        s.map.insert(Value::new(n, 0), Held { value: v, perm: None });
    }
    for n in old.topo_order()? {
        match &old.node(n).op {
            Op::Input => {}
            Op::Transpose { perm } => s.transpose(n, perm)?,
            _ => s.node(n)?,
        }
    }
    for (name, v) in &old.outputs {
        let nv = s.materialize(*v)?;
        s.new.add_output(name.clone(), nv);
    }
    Ok(s.new)
}

impl Sinker<'_> {
    fn held(&self, v: Value) -> Result<&Held> {
        self.map.get(&v).ok_or_else(|| {
            kiln_ir::IrError::at(
                self.old.node(v.node).name.clone(),
                "layout: a value used before it was made",
            )
        })
    }

    fn transpose(&mut self, n: NodeId, attr: &Option<Vec<i64>>) -> Result<()> {
        let Some(x) = self.old.inputs_of(n).first().copied().flatten() else {
            return self.copy(n);
        };
        let held = self.held(x)?.clone();
        let Some(rank) = self.old.value_type(x).shape.rank() else {
            return self.copy(n);
        };
        let Some(t) = perm::from_attr(attr, rank) else {
            return self.copy(n);
        };
        let p = match &held.perm {
            Some(p) => perm::compose(p, &t),
            None => t,
        };
        let out = match self.new.const_value(held.value) {
            // A transposed constant is folded at once: constants are always held as is.
            Some(c) => {
                let c = perm::permute_tensor(c, &p)?;
                Held {
                    value: self.new.add_const(self.old.node(n).name.clone(), c),
                    perm: None,
                }
            }
            None => Held {
                value: held.value,
                perm: perm::normalize(p),
            },
        };
        self.map.insert(Value::new(n, 0), out);
        Ok(())
    }

    fn node(&mut self, n: NodeId) -> Result<()> {
        let ins = self.old.inputs_of(n);
        let any_held = ins
            .iter()
            .flatten()
            .any(|v| self.map.get(v).is_some_and(|h| h.perm.is_some()));
        if any_held {
            if flatten::sink_flatten(self, n)? {
                return Ok(());
            }
            if let Some(rw) = self.rule(n, &ins) {
                if self.emit(n, &ins, rw)? {
                    return Ok(());
                }
            }
        }
        self.copy(n)
    }

    fn rule(&self, n: NodeId, ins: &[Option<Value>]) -> Option<Rewrite> {
        let node = self.old.node(n);
        let mut operands = Vec::with_capacity(ins.len());
        for v in ins {
            operands.push(match v {
                None => None,
                Some(v) => {
                    let h = self.map.get(v)?;
                    Some(Operand {
                        perm: h.perm.as_deref(),
                        ty: self.old.value_type(*v),
                        konst: self.new.const_value(h.value),
                    })
                }
            });
        }
        rules::sink(&node.op, &operands, node.outputs.len())
    }

    /// Adds the rewritten op if inference agrees with the types the layouts predict;
    /// false (and nothing added that anything uses) when it does not.
    fn emit(&mut self, n: NodeId, ins: &[Option<Value>], rw: Rewrite) -> Result<bool> {
        let node = self.old.node(n);
        if rw.args.len() != ins.len() || rw.out_perms.len() != node.outputs.len() {
            return Ok(false);
        }
        let mut args = Vec::with_capacity(ins.len());
        for (k, (arg, v)) in rw.args.iter().zip(ins).enumerate() {
            args.push(match (arg, v) {
                (None, _) => None,
                (Some(Arg::Held), Some(v)) => Some(self.held(*v)?.value),
                (Some(Arg::Const(t)), _) => Some(
                    self.new
                        .add_const(perm::derived(&node.name, &format!("layout{k}")), t.clone()),
                ),
                (Some(Arg::Held), None) => return Ok(false),
            });
        }
        let outputs: Vec<TensorType> = node
            .outputs
            .iter()
            .zip(&rw.out_perms)
            .map(|(ty, p)| match p {
                Some(p) => perm::held_type(ty, p),
                None => ty.clone(),
            })
            .collect();
        if !agrees(&self.new, &rw.op, &args, &outputs) {
            return Ok(false);
        }
        let m = self.new.add_node_typed(rw.op, node.name.clone(), &args, outputs);
        for (k, p) in rw.out_perms.into_iter().enumerate() {
            self.map.insert(
                Value::new(n, k),
                Held {
                    value: Value::new(m, k),
                    perm: p,
                },
            );
        }
        Ok(true)
    }

    /// The node as it was, on its inputs in the model's layout.
    pub fn copy(&mut self, n: NodeId) -> Result<()> {
        let ins = self.old.inputs_of(n);
        let mut args = Vec::with_capacity(ins.len());
        for (slot, v) in ins.iter().enumerate() {
            args.push(match v {
                None => None,
                Some(v) => match self.weights.get(&n).filter(|_| slot == 1) {
                    Some(w) => Some(
                        self.new
                            .add_const(perm::derived(&self.old.node(n).name, "layout_weight"), w.clone()),
                    ),
                    None => Some(self.materialize(*v)?),
                },
            });
        }
        let node = self.old.node(n);
        let m = self
            .new
            .add_node_typed(node.op.clone(), node.name.clone(), &args, node.outputs.clone());
        for k in 0..node.outputs.len() {
            self.map.insert(
                Value::new(n, k),
                Held {
                    value: Value::new(m, k),
                    perm: None,
                },
            );
        }
        Ok(())
    }

    /// The old value `v` in the model's layout: its held tensor, transposed back if needed.
    pub fn materialize(&mut self, v: Value) -> Result<Value> {
        let held = self.held(v)?.clone();
        let Some(p) = held.perm else { return Ok(held.value) };
        if let Some(&t) = self.made.get(&(held.value, p.clone())) {
            return Ok(t);
        }
        let ty = self.old.value_type(v).clone();
        let name = perm::derived(&self.new.node(held.value.node).name, "layout");
        let held_dims = self.new.value_type(held.value).shape.dims().map(|d| d.to_vec());
        let t = match held_dims.and_then(|d| reshape_target(&d, &p, &ty)) {
            Some(target) => {
                let shape = self.new.add_const(perm::derived(&name, "shape"), target);
                self.new.add_node_typed(
                    Op::Reshape { allowzero: false },
                    name,
                    &[Some(held.value), Some(shape)],
                    vec![ty],
                )
            }
            None => self
                .new
                .add_node_typed(perm::transpose_op(&p), name, &[Some(held.value)], vec![ty]),
        };
        self.made.insert((held.value, p), t.into());
        Ok(t.into())
    }
}

/// The shape a Reshape needs to do what `transpose(x, p)` does, when that transpose only
/// moves unit axes: known dims as they are, a dim that stays in place copied (`0`), at most
/// one other left to be inferred (`-1`).
fn reshape_target(held: &[Dim], p: &[usize], ty: &TensorType) -> Option<Tensor> {
    if held.len() != p.len() || !perm::moves_only_unit_axes(held, p) {
        return None;
    }
    let dims = ty.shape.dims()?;
    let mut free = false;
    let mut target = Vec::with_capacity(dims.len());
    for (j, d) in dims.iter().enumerate() {
        target.push(match d {
            Dim::Known(0) => return None,
            Dim::Known(k) => *k as i64,
            _ if p[j] == j => 0,
            _ if !free => {
                free = true;
                -1
            }
            _ => return None,
        });
    }
    Tensor::new(vec![target.len()], target).ok()
}

/// True when inference on `args` gives types compatible with `outputs`.
pub(crate) fn agrees(g: &Graph, op: &Op, args: &[Option<Value>], outputs: &[TensorType]) -> bool {
    let types: Vec<Option<&TensorType>> = args.iter().map(|v| v.map(|v| g.value_type(v))).collect();
    let consts: Vec<Option<&Tensor>> = args.iter().map(|v| v.and_then(|v| g.const_value(v))).collect();
    match kiln_ir::infer::infer(op, &types, &consts, outputs.len()) {
        Ok(inferred) => inferred
            .iter()
            .zip(outputs)
            .all(|(a, b)| kiln_ir::verify::compatible(b, a)),
        Err(_) => false,
    }
}
