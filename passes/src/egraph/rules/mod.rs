//! Rewrite rules. A rule looks at one e-node of one e-class (read-only) and proposes terms
//! equal to that class; the runner adds them and unions. Rules check every condition they
//! rely on (constant operands, known shapes, dtypes); the runner also refuses a term whose
//! inferred type disagrees with the class it is claimed equal to.

mod activation;
mod algebra;
mod linear;
mod merge;
mod movement;
mod norm;
mod pad;
mod pool;

use super::analysis::{Data, EG};
use super::lang::{ENode, Kind};
use egg::Id;
use kiln_ir::{DType, Op, Tensor, TensorType};

/// An expression to add to the e-graph: existing classes, ops over terms, new constants.
#[derive(Clone, Debug)]
pub enum Term {
    Class(Id),
    Op(Op, Vec<Term>),
    /// A multi-output op with its output count; read through `Output`.
    Multi(Op, usize, Vec<Term>),
    Output(usize, Box<Term>),
    Const(Tensor),
    None,
}

impl Term {
    pub fn op(op: Op, kids: Vec<Term>) -> Term {
        Term::Op(op, kids)
    }
    pub fn i64s(v: &[i64]) -> Term {
        Term::Const(Tensor::new(vec![v.len()], v.to_vec()).expect("a vector's length matches its shape"))
    }
}

impl From<Id> for Term {
    fn from(id: Id) -> Term {
        Term::Class(id)
    }
}

/// A proposed equality: `class` equals `term`.
pub type Found = Vec<(Id, Term)>;

pub struct Rule {
    pub name: &'static str,
    pub apply: fn(&EG, Id, &ENode, &mut Found),
}

/// Every rule, in the order they are tried.
pub fn all() -> Vec<Rule> {
    let mut v = Vec::new();
    v.extend(algebra::rules());
    v.extend(activation::rules());
    v.extend(movement::rules());
    v.extend(linear::rules());
    v.extend(pad::rules());
    v.extend(pool::rules());
    v.extend(merge::rules());
    v.extend(norm::rules());
    v
}

/// Adds `term` to the e-graph; new classes are named after `hint`. `None` when some op of
/// the term does not type-check (nothing is unioned then).
pub fn add_term(eg: &mut EG, term: &Term, hint: &str) -> Option<Id> {
    let id = match term {
        Term::Class(id) => return Some(eg.find(*id)),
        Term::None => eg.add(ENode::leaf(Kind::None)),
        Term::Const(t) => {
            let c = eg.analysis.intern_const(t.clone(), None);
            eg.add(ENode::leaf(Kind::Const(c)))
        }
        Term::Output(k, t) => {
            let m = add_term(eg, t, hint)?;
            eg.add(ENode { kind: Kind::Output(*k as u32), children: vec![m] })
        }
        Term::Op(op, kids) | Term::Multi(op, _, kids) => {
            let mut children = Vec::with_capacity(kids.len());
            for k in kids {
                children.push(add_term(eg, k, hint)?);
            }
            let (kind, n) = match term {
                Term::Multi(_, n, _) => (Kind::Multi(eg.analysis.intern_op(op.clone(), *n, None)), *n),
                _ => (Kind::Op(eg.analysis.intern_op(op.clone(), 1, None)), 1),
            };
            let id = eg.add(ENode { kind, children });
            if eg[id].data.types.len() != n {
                return None;
            }
            if matches!(term, Term::Multi(..)) {
                // A tuple's cost is shared by its outputs.
                let d = &mut eg[id].data;
                d.uses = d.uses.max(n);
            }
            id
        }
    };
    let what = match term {
        Term::Op(op, _) | Term::Multi(op, _, _) => op.name(),
        _ => "const",
    };
    let d = &mut eg[id].data;
    if d.origin.is_none() && d.hint.is_none() {
        d.hint = Some(format!("{hint}/{what}"));
    }
    Some(id)
}

// ── Reading the e-graph ─────────────────────────────────────────────────────────────────

pub fn data(eg: &EG, id: Id) -> &Data {
    &eg[id].data
}

pub fn ty(eg: &EG, id: Id) -> Option<&TensorType> {
    eg[id].data.ty()
}

/// The shape of `id` when every dim is known.
pub fn dims(eg: &EG, id: Id) -> Option<Vec<usize>> {
    ty(eg, id)?.shape.concrete()
}

pub fn rank(eg: &EG, id: Id) -> Option<usize> {
    ty(eg, id)?.shape.rank()
}

pub fn dtype(eg: &EG, id: Id) -> Option<DType> {
    ty(eg, id).map(|t| t.dtype)
}

pub fn value(eg: &EG, id: Id) -> Option<&Tensor> {
    eg[id].data.value.as_ref()
}

pub fn is_const(eg: &EG, id: Id) -> bool {
    eg[id].data.constant
}

pub fn is_absent(eg: &EG, id: Id) -> bool {
    eg[id].nodes.iter().any(|n| n.kind == Kind::None)
}

/// The op of a single-output e-node.
pub fn op_of<'a>(eg: &'a EG, node: &ENode) -> Option<&'a Op> {
    match node.kind {
        Kind::Op(o) => Some(eg.analysis.op(o)),
        _ => None,
    }
}

/// The single-output ops in class `id`, with their children.
pub fn ops_in(eg: &EG, id: Id) -> impl Iterator<Item = (&Op, &[Id])> {
    eg[id].nodes.iter().filter_map(move |n| op_of(eg, n).map(|op| (op, n.children.as_slice())))
}

/// The elements of a small integer constant.
pub fn ints(eg: &EG, id: Id) -> Option<Vec<i64>> {
    let t = value(eg, id)?;
    match t.data() {
        kiln_ir::Data::I64(v) => Some(v.clone()),
        kiln_ir::Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
        _ => None,
    }
}

/// The one scalar of a one-element constant.
pub fn scalar(eg: &EG, id: Id) -> Option<f64> {
    value(eg, id).and_then(super::analysis::scalar_f64)
}

/// Every element of the small constant `id` equals `x`.
pub fn all_equal(eg: &EG, id: Id, x: f64) -> bool {
    use kiln_ir::{with_data, Element};
    let Some(t) = value(eg, id) else { return false };
    !t.is_empty() && with_data!(t.data(), v, T => v.iter().all(|e| e.to_f64() == x))
}

/// Child `i` of `node`, when present.
pub fn child(node: &ENode, i: usize) -> Option<Id> {
    node.children.get(i).copied()
}

/// Same type as `id` (used to check that dropping an op does not drop a broadcast).
pub fn same_type(eg: &EG, a: Id, b: Id) -> bool {
    match (ty(eg, a), ty(eg, b)) {
        (Some(x), Some(y)) => {
            x.dtype == y.dtype && x.shape == y.shape && x.shape.dims().is_some_and(|d| !d.contains(&kiln_ir::Dim::Unknown))
        }
        _ => false,
    }
}

/// The perm a Transpose applies (its `perm`, or reversal) for input rank `r`.
pub fn perm_of(perm: &Option<Vec<i64>>, r: usize) -> Option<Vec<usize>> {
    let p: Vec<usize> = match perm {
        Some(p) => p.iter().map(|&x| usize::try_from(x).ok()).collect::<Option<_>>()?,
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    if p.len() != r || p.iter().any(|&x| x >= r || std::mem::replace(&mut seen[x], true)) {
        return None;
    }
    Some(p)
}
