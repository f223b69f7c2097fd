//! Shape-computation folding. Models compute shapes at run time (Shape → Gather → Concat →
//! Reshape) even where the types already know them. Each int vector such a chain computes is
//! read symbolically: an element is a constant, or dim `axis` of some value (known, a
//! symbol, or unknown). A vector whose elements are all known becomes a constant; a Reshape
//! target whose unknown elements each copy the dim at their own position of the reshaped
//! input becomes a constant with 0 ("copy this dim") there, so symbolic dims stay symbolic.
//! Afterwards the types downstream are re-inferred, and `fold` finishes what is left.

use super::util::each_graph;
use kiln_ir::rewrite::{
    is_unused, is_used, reinfer, reinfer_all, remove_node, replace_uses, set_input,
};
use kiln_ir::{eval::eval_op, DType, Dim, Graph, NodeId, Op, Result, Tensor, Value};
use std::collections::HashMap;

/// `shape-fold`: folds shape computations the types already answer.
pub struct ShapeFold;

impl crate::Pass for ShapeFold {
    fn name(&self) -> &'static str {
        "shape-fold"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        each_graph(g, &mut |g| {
            if shape_fold_graph(g)? > 0 {
                reinfer_all(g);
            }
            Ok(())
        })
    }
}

/// One element of an int vector computed from shapes.
#[derive(Clone, Debug, PartialEq)]
enum Elem {
    Val(i64),
    /// Dim `axis` of `of`, whose type says `dim` (never `Known`: that is a `Val`).
    Dim {
        of: Value,
        axis: usize,
        dim: Dim,
    },
}

/// A symbolic int tensor of rank 0 or 1.
#[derive(Clone, Debug)]
struct SymVec {
    scalar: bool,
    elems: Vec<Elem>,
}

impl SymVec {
    fn known(&self) -> Option<Vec<i64>> {
        self.elems
            .iter()
            .map(|e| if let Elem::Val(v) = e { Some(*v) } else { None })
            .collect()
    }
}

/// Deep shape chains are rare; past this, the value is treated as opaque.
const MAX_DEPTH: usize = 32;

fn shape_fold_graph(g: &mut Graph) -> Result<usize> {
    let mut changed = 0;
    for n in g.topo_order()? {
        if !g.nodes.contains_node(n) {
            continue;
        }
        // Precision gained upstream in this sweep (a Reshape given a constant target) is
        // what lets a Shape further down fold.
        reinfer(g, n);
        let node = g.node(n);
        let out = Value::new(n, 0);
        match &node.op {
            Op::Size => {
                let x = g.inputs_of(n)[0];
                let Some(numel) = x.and_then(|x| g.value_type(x).shape.numel()) else {
                    continue;
                };
                let c = g.add_const(node.name.clone(), Tensor::scalar(numel as i64));
                changed += usize::from(replace_all(g, n, c));
            }
            Op::Shape { .. }
            | Op::Gather { axis: 0 }
            | Op::Slice
            | Op::Concat { axis: 0 }
            | Op::Unsqueeze
            | Op::Squeeze
            | Op::Cast { .. }
            | Op::Binary(_) => {
                let ty = &node.outputs[0];
                if !matches!(ty.dtype, DType::I64 | DType::I32) || node.outputs.len() != 1 {
                    continue;
                }
                let inputs_const = g
                    .inputs_of(n)
                    .iter()
                    .flatten()
                    .all(|&v| g.const_value(v).is_some());
                let Some(vals) = (!inputs_const)
                    .then(|| sym_vec(g, out, 0))
                    .flatten()
                    .and_then(|s| Some((s.scalar, s.known()?)))
                else {
                    continue;
                };
                let shape = if vals.0 { vec![] } else { vec![vals.1.len()] };
                let (dtype, name) = (ty.dtype, node.name.clone());
                let Ok(t) = Tensor::from_i64(dtype, shape, &vals.1) else {
                    continue;
                };
                let c = g.add_const(name, t);
                changed += usize::from(replace_all(g, n, c));
            }
            Op::Reshape { allowzero } => {
                if constant_reshape_target(g, n, *allowzero) {
                    reinfer(g, n);
                    changed += 1;
                }
            }
            _ => {}
        }
    }
    Ok(changed)
}

/// Replaces `n`'s output by `c` wherever the types allow; true when anything changed.
fn replace_all(g: &mut Graph, n: NodeId, c: Value) -> bool {
    replace_uses(g, Value::new(n, 0), c);
    if is_unused(g, n) {
        remove_node(g, n);
    } else if !is_used(g, c) {
        remove_node(g, c.node);
        return false;
    }
    true
}

/// Gives Reshape `n` a constant target when its computed target's unknown elements each copy
/// the reshaped input's dim at their position (0 copies it, unless `allowzero` makes 0 a
/// literal size), or when one unknown element is all that is left beside positive
/// constants (it becomes -1: TensorFlow's Flatten computes `[Shape(x)[0], 2048]`).
fn constant_reshape_target(g: &mut Graph, n: NodeId, allowzero: bool) -> bool {
    let ins = g.inputs_of(n);
    let (Some(data), Some(target)) = (ins[0], ins.get(1).copied().flatten()) else {
        return false;
    };
    if g.const_value(target).is_some() {
        return false;
    }
    let Some(sym) = sym_vec(g, target, 0).filter(|s| !s.scalar) else {
        return false;
    };
    let data_dims = g.value_type(data).shape.dims().map(|d| d.to_vec());
    let mut out = Vec::with_capacity(sym.elems.len());
    let mut open = Vec::new();
    for (p, e) in sym.elems.iter().enumerate() {
        match e {
            Elem::Val(v) => out.push(*v),
            Elem::Dim { of, axis, dim } => {
                let copies = !allowzero
                    && *axis == p
                    && (*of == data
                        || (matches!(dim, Dim::Sym(_))
                            && data_dims.as_ref().and_then(|d| d.get(p)) == Some(dim)));
                if copies {
                    out.push(0);
                } else {
                    open.push(p);
                    out.push(-1);
                }
            }
        }
    }
    match open.len() {
        0 => {}
        // Exactly determined by the element count: every other element is a positive size.
        1 if out.iter().enumerate().all(|(p, &v)| p == open[0] || v > 0) => {}
        _ => return false,
    }
    let Ok(t) = Tensor::from_i64(DType::I64, vec![out.len()], &out) else {
        return false;
    };
    if g.value_type(target).dtype != DType::I64 {
        return false;
    }
    let name = match g.node(n).name.as_str() {
        "" => "shape".to_string(),
        s => format!("{s}:shape"),
    };
    let c = g.add_const(name, t);
    // Only this Reshape's slot changes: other readers of the target may need the real values.
    set_input(g, n, 1, Some(c));
    true
}

/// What the int tensor `v` holds, element by element, when it comes from shapes and
/// constants by ops this reads (Shape, Gather, Slice, Concat, Unsqueeze, Squeeze, Cast).
fn sym_vec(g: &Graph, v: Value, depth: usize) -> Option<SymVec> {
    sym_vec_memo(g, v, depth, &mut HashMap::new())
}

/// `sym_vec` remembering each value it read: a chain that reads one value many times
/// (diamonds of shape arithmetic) costs one visit per value.
fn sym_vec_memo(
    g: &Graph,
    v: Value,
    depth: usize,
    memo: &mut HashMap<Value, Option<SymVec>>,
) -> Option<SymVec> {
    if let Some(s) = memo.get(&v) {
        return s.clone();
    }
    let s = sym_vec_uncached(g, v, depth, memo);
    memo.insert(v, s.clone());
    s
}

fn sym_vec_uncached(
    g: &Graph,
    v: Value,
    depth: usize,
    memo: &mut HashMap<Value, Option<SymVec>>,
) -> Option<SymVec> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let Some(t) = g.const_value(v) {
        if t.rank() > 1 || !(t.dtype().is_int()) {
            return None;
        }
        return Some(SymVec {
            scalar: t.rank() == 0,
            elems: t.to_i64_vec().into_iter().map(Elem::Val).collect(),
        });
    }
    let node = g.node(v.node);
    if v.output != 0 || node.outputs.len() != 1 {
        return None;
    }
    let ins = g.inputs_of(v.node);
    let arg = |i: usize| ins.get(i).copied().flatten();
    let konst = |i: usize| arg(i).and_then(|v| g.const_value(v));
    match &node.op {
        Op::Shape { start, end } => {
            let x = arg(0)?;
            let dims = g.value_type(x).shape.dims()?;
            let r = dims.len() as i64;
            let clamp = |i: i64| (if i < 0 { i + r } else { i }).clamp(0, r) as usize;
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            let elems = (s..e.max(s))
                .map(|a| match &dims[a] {
                    Dim::Known(k) => Elem::Val(*k as i64),
                    d => Elem::Dim {
                        of: x,
                        axis: a,
                        dim: d.clone(),
                    },
                })
                .collect();
            Some(SymVec {
                scalar: false,
                elems,
            })
        }
        Op::Cast { to }
            if to.is_int() && matches!(g.value_type(arg(0)?).dtype, DType::I64 | DType::I32) =>
        {
            sym_vec_memo(g, arg(0)?, depth + 1, memo)
        }
        Op::Concat { axis: 0 } => {
            let mut elems = Vec::new();
            for v in ins.iter() {
                let s = sym_vec_memo(g, (*v)?, depth + 1, memo)?;
                if s.scalar {
                    return None;
                }
                elems.extend(s.elems);
            }
            Some(SymVec {
                scalar: false,
                elems,
            })
        }
        // Index-moving ops: run them on the element positions, then pick the elements.
        Op::Gather { axis: 0 } | Op::Slice | Op::Unsqueeze | Op::Squeeze => {
            let data = sym_vec_memo(g, arg(0)?, depth + 1, memo)?;
            let shape = if data.scalar {
                vec![]
            } else {
                vec![data.elems.len()]
            };
            let positions = Tensor::from_i64(
                DType::I64,
                shape,
                &(0..data.elems.len() as i64).collect::<Vec<_>>(),
            )
            .ok()?;
            let mut args = vec![Some(positions)];
            for i in 1..ins.len() {
                match arg(i) {
                    None => args.push(None),
                    Some(_) => args.push(Some(konst(i)?.clone())),
                }
            }
            let picked = eval_op(&node.op, &args, 1).ok()?.pop()?;
            if picked.rank() > 1 {
                return None;
            }
            let elems = picked
                .to_i64_vec()
                .into_iter()
                .map(|p| data.elems.get(usize::try_from(p).ok()?).cloned())
                .collect::<Option<_>>()?;
            Some(SymVec {
                scalar: picked.rank() == 0,
                elems,
            })
        }
        // Arithmetic on sizes (a product of two dims): evaluated when the operands are known.
        Op::Binary(_) => {
            let mut args = Vec::with_capacity(ins.len());
            for v in &ins {
                let s = sym_vec_memo(g, (*v)?, depth + 1, memo)?;
                let shape = if s.scalar {
                    vec![]
                } else {
                    vec![s.elems.len()]
                };
                args.push(Some(
                    Tensor::from_i64(g.value_type((*v)?).dtype, shape, &s.known()?).ok()?,
                ));
            }
            let t = eval_op(&node.op, &args, 1).ok()?.pop()?;
            (t.rank() <= 1 && t.dtype().is_int()).then(|| SymVec {
                scalar: t.rank() == 0,
                elems: t.to_i64_vec().into_iter().map(Elem::Val).collect(),
            })
        }
        _ => None,
    }
}
