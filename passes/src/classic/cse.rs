//! Common subexpression elimination: two pure nodes with equal ops reading the same values in
//! the same slots compute the same thing, and two constants with the same dtype, shape and
//! bits hold the same thing; the later one (in topological order) goes.

use super::util::each_graph;
use kiln_ir::rewrite::{is_unused, remove_node, replace_uses};
use kiln_ir::{with_data, Element, Graph, NodeId, Op, Result, Tensor, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// `cse`: merges equal nodes and equal constants.
pub struct Cse;

impl crate::Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        each_graph(g, &mut cse_graph)
    }
}

fn cse_graph(g: &mut Graph) -> Result<()> {
    // Candidates by a cheap key; equality is then checked in full.
    let mut seen: HashMap<u64, Vec<NodeId>> = HashMap::new();
    for n in g.topo_order()? {
        let Some(key) = key(g, n) else { continue };
        let bucket = seen.entry(key).or_default();
        let Some(&same) = bucket.iter().find(|&&m| equal(g, m, n)) else {
            bucket.push(n);
            continue;
        };
        for k in 0..g.node(n).outputs.len() {
            replace_uses(g, Value::new(n, k), Value::new(same, k));
        }
        if is_unused(g, n) {
            remove_node(g, n);
        } else {
            // A graph output of another type still reads it: it stays a candidate.
            seen.entry(key).or_default().push(n);
        }
    }
    Ok(())
}

/// A hash of what equal nodes share; None for nodes never merged.
fn key(g: &Graph, n: NodeId) -> Option<u64> {
    let node = g.node(n);
    let mut h = DefaultHasher::new();
    match &node.op {
        Op::Input => return None,
        Op::Const { value } => {
            0u8.hash(&mut h);
            hash_sample(value, &mut h);
        }
        op if !op.is_pure() || !op.subgraphs().is_empty() => return None,
        op => {
            1u8.hash(&mut h);
            op.name().hash(&mut h);
            node.outputs.len().hash(&mut h);
            g.inputs_of(n).hash(&mut h);
        }
    }
    Some(h.finish())
}

fn equal(g: &Graph, a: NodeId, b: NodeId) -> bool {
    let (x, y) = (g.node(a), g.node(b));
    match (&x.op, &y.op) {
        (Op::Const { value: p }, Op::Const { value: q }) => same_bits(p, q),
        (Op::Const { .. }, _) | (_, Op::Const { .. }) => false,
        // `==` takes 0.0 and -0.0 in an attribute (an f32, ConstantOfShape's value) for the
        // same; their printed forms tell them apart.
        (p, q) => {
            p == q
                && x.outputs.len() == y.outputs.len()
                && g.inputs_of(a) == g.inputs_of(b)
                && format!("{p:?}") == format!("{q:?}")
        }
    }
}

/// Hashes dtype, shape and up to 64 evenly spaced elements: enough to tell weights apart
/// without reading all of them.
fn hash_sample(t: &Tensor, h: &mut impl Hasher) {
    t.dtype().hash(h);
    t.shape().hash(h);
    let n = t.len();
    let step = (n / 64).max(1);
    let mut bytes = Vec::new();
    with_data!(t.data(), v, T => {
        for i in (0..n).step_by(step).take(64) {
            <T as Element>::to_le_bytes_vec(&v[i..i + 1], &mut bytes);
        }
    });
    bytes.hash(h);
}

/// Same dtype, shape and bits (so 0.0 and -0.0 differ and a NaN equals itself).
fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return false;
    }
    if std::ptr::eq(a.data(), b.data()) {
        return true;
    }
    const CHUNK: usize = 4096;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    with_data!(a.data(), v, T => {
        let Some(w) = <T as kiln_ir::Storable>::slice(b.data()) else { return false };
        v.chunks(CHUNK).zip(w.chunks(CHUNK)).all(|(p, q)| {
            x.clear();
            y.clear();
            <T as Element>::to_le_bytes_vec(p, &mut x);
            <T as Element>::to_le_bytes_vec(q, &mut y);
            x == y
        })
    })
}
