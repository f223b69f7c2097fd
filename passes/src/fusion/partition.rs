//! Partitioning: which nodes share a kernel. One walk over the graph in topological order;
//! each node either joins the kernel of one of its producers or starts its own. The rules
//! are in [`super`]'s documentation; this file is their implementation.

use super::class::Class;
use kiln_ir::{Dim, Graph, NodeId, Op, TensorType, Value};
use std::collections::HashSet;

/// A kernel to be: its nodes in topological order and its anchor, if any.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub nodes: Vec<NodeId>,
    pub anchor: Option<NodeId>,
    /// Fuses with nothing more (an opaque op's group).
    sealed: bool,
    /// Topological position of the first node: nothing earlier can depend on the group.
    min_pos: usize,
    /// Every node moves data (views, transposes, pads): may become a conv's prologue.
    moves_only: bool,
    /// Holds a concat, gather or the like: may not become a reduction's prologue.
    has_injective: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// In a group without an anchor.
    Chain,
    /// Before the anchor, on its data input.
    Prologue,
    Anchor,
    /// After the anchor, computed per element of its output.
    Epilogue,
}

const NONE: usize = usize::MAX;

struct State<'g> {
    g: &'g Graph,
    /// Topological position by node index.
    pos: Vec<usize>,
    /// Group by node index (`NONE` for inputs and constants).
    group_of: Vec<usize>,
    role: Vec<Role>,
    groups: Vec<Group>,
    graph_outputs: HashSet<Value>,
    /// Visit marks for the dependence searches, reset by bumping `epoch`.
    seen: Vec<u32>,
    epoch: u32,
}

/// Splits the op nodes of `g` (everything but inputs and constants) into kernels.
pub(crate) fn partition(g: &Graph) -> kiln_ir::Result<Vec<Group>> {
    let order = g.topo_order()?;
    let bound = g
        .nodes
        .node_indices()
        .map(|n| n.index() + 1)
        .max()
        .unwrap_or(0);
    let mut pos = vec![NONE; bound];
    for (i, n) in order.iter().enumerate() {
        pos[n.index()] = i;
    }
    let mut s = State {
        g,
        pos,
        group_of: vec![NONE; bound],
        role: vec![Role::Chain; bound],
        groups: Vec::new(),
        graph_outputs: g.outputs.iter().map(|(_, v)| *v).collect(),
        seen: vec![0; bound],
        epoch: 0,
    };
    for &n in &order {
        let op = &g.node(n).op;
        if matches!(op, Op::Input | Op::Const { .. }) {
            continue;
        }
        let class = Class::of(op);
        let joined = match class {
            Class::Elementwise | Class::View => s.join_producer(n, class),
            Class::Movement => s.join_movement(n),
            Class::OutFusable | Class::Reduction => s.absorb_prologue(n, class),
            Class::Injective | Class::Opaque => None,
        };
        match joined {
            Some(gid) => {
                let role = match s.groups[gid].anchor {
                    None => Role::Chain,
                    Some(_) if class.is_anchor() => Role::Anchor,
                    Some(_) => Role::Epilogue,
                };
                s.add(n, gid, role, class);
            }
            None => {
                let gid = s.groups.len();
                s.groups.push(Group {
                    nodes: Vec::new(),
                    anchor: class.is_anchor().then_some(n),
                    sealed: class == Class::Opaque,
                    min_pos: s.pos[n.index()],
                    moves_only: class.moves_data(),
                    has_injective: class == Class::Injective,
                });
                let role = if class.is_anchor() {
                    Role::Anchor
                } else {
                    Role::Chain
                };
                s.add(n, gid, role, class);
            }
        }
    }
    Ok(s.groups)
}

impl State<'_> {
    fn add(&mut self, n: NodeId, gid: usize, role: Role, class: Class) {
        let grp = &mut self.groups[gid];
        grp.nodes.push(n);
        grp.moves_only &= class.moves_data();
        grp.has_injective |= class == Class::Injective;
        self.group_of[n.index()] = gid;
        self.role[n.index()] = role;
    }

    /// The group of the op node behind `v`, if it is one.
    fn group(&self, v: Value) -> Option<usize> {
        Some(self.group_of[v.node.index()]).filter(|&g| g != NONE)
    }

    /// An elementwise op or a view joins the kernel of one of its producers: the one with an
    /// anchor if any, else the latest. It reads only the anchor's or the epilogue's values
    /// (never the prologue's), each with as many elements as it computes (so the kernel
    /// computes one element of each of its ops per element of its output), and joining must
    /// not close a cycle through another kernel.
    fn join_producer(&mut self, n: NodeId, class: Class) -> Option<usize> {
        let node = self.g.node(n);
        if node.outputs.len() != 1 {
            return None;
        }
        let ins = self.g.inputs_of(n);
        // A view links to its producer through its data only.
        let linked = if class == Class::View {
            1.min(ins.len())
        } else {
            ins.len()
        };
        let mut candidates: Vec<usize> = ins[..linked]
            .iter()
            .flatten()
            .filter_map(|&v| self.group(v))
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut best: Option<usize> = None;
        for gid in candidates {
            if !self.may_join(n, &ins, linked, gid) {
                continue;
            }
            let key = |s: &State, g: usize| {
                let grp = &s.groups[g];
                (
                    grp.anchor.is_some(),
                    grp.nodes.last().map_or(0, |l| s.pos[l.index()]),
                )
            };
            if best.map_or(true, |b| key(self, gid) > key(self, b)) {
                best = Some(gid);
            }
        }
        best
    }

    fn may_join(&mut self, n: NodeId, ins: &[Option<Value>], linked: usize, gid: usize) -> bool {
        if self.groups[gid].sealed {
            return false;
        }
        let out = &self.g.node(n).outputs[0];
        for (slot, v) in ins.iter().enumerate() {
            let Some(v) = *v else { continue };
            if self.group(v) != Some(gid) {
                continue;
            }
            if slot >= linked
                || self.role[v.node.index()] == Role::Prologue
                || !(same_elements(self.g.value_type(v), out) || self.keeps_shape(n, ins, slot))
            {
                return false;
            }
        }
        self.others_independent(ins, gid)
    }

    /// Elementwise op `n` computes exactly the shape of its input `slot`, even where dims are
    /// unknown: batch norm always does, other ops when every other input broadcasts into
    /// that one (a scalar, a bias).
    fn keeps_shape(&self, n: NodeId, ins: &[Option<Value>], slot: usize) -> bool {
        let op = &self.g.node(n).op;
        if Class::of(op) != Class::Elementwise {
            return false;
        }
        if matches!(op, Op::BatchNorm { .. }) {
            return slot == 0;
        }
        let Some(v) = ins[slot] else { return false };
        let target = self.g.value_type(v);
        ins.iter().enumerate().all(|(i, u)| match u {
            Some(u) if i != slot => broadcasts_into(self.g.value_type(*u), target),
            _ => true,
        })
    }

    /// A transpose, pad or slice continues a chain of data movement that nothing else reads.
    fn join_movement(&mut self, n: NodeId) -> Option<usize> {
        let ins = self.g.inputs_of(n);
        let p = (*ins.first()?)?;
        let gid = self.group(p)?;
        let grp = &self.groups[gid];
        if grp.sealed || grp.anchor.is_some() || !grp.moves_only {
            return None;
        }
        if !self.only_read_by(p.node, &[n]) {
            return None;
        }
        self.others_independent(&ins[1..], gid).then_some(gid)
    }

    /// An anchor takes the kernel of its data input's producer as its prologue: a reduction
    /// any elementwise or data-movement kernel, a conv or matmul only pure data movement
    /// that nothing else reads (a transpose or pad in front of it). Every node of that
    /// kernel must lead to the anchor's data input, and the anchor's other inputs must not
    /// come from it.
    fn absorb_prologue(&mut self, n: NodeId, class: Class) -> Option<usize> {
        let ins = self.g.inputs_of(n);
        let p = (*ins.first()?)?;
        let gid = self.group(p)?;
        let grp = &self.groups[gid];
        if grp.sealed || grp.anchor.is_some() {
            return None;
        }
        let ok = match class {
            Class::OutFusable => {
                grp.moves_only && grp.nodes.iter().all(|&m| self.only_read_by(m, &[n]))
            }
            _ => !grp.has_injective,
        };
        if !ok || !self.leads_only_to(p.node, gid) {
            return None;
        }
        if ins[1..]
            .iter()
            .flatten()
            .any(|&v| self.group(v) == Some(gid))
        {
            return None;
        }
        if !self.others_independent(&ins[1..], gid) {
            return None;
        }
        self.groups[gid].anchor = Some(n);
        for m in self.groups[gid].nodes.clone() {
            self.role[m.index()] = Role::Prologue;
        }
        Some(gid)
    }

    /// Every output of `m` is read only by the nodes `readers` (and is no graph output).
    fn only_read_by(&self, m: NodeId, readers: &[NodeId]) -> bool {
        let outs = self.g.node(m).outputs.len();
        (0..outs).all(|k| !self.graph_outputs.contains(&Value::new(m, k)))
            && self.g.nodes.neighbors(m).all(|c| {
                readers.contains(&c) || self.group_of[c.index()] == self.group_of[m.index()]
            })
    }

    /// Every node of group `gid` is `last` or one of its ancestors inside the group.
    fn leads_only_to(&mut self, last: NodeId, gid: usize) -> bool {
        self.epoch += 1;
        let mut stack = vec![last];
        let mut count = 0;
        while let Some(m) = stack.pop() {
            if self.seen[m.index()] == self.epoch || self.group_of[m.index()] != gid {
                continue;
            }
            self.seen[m.index()] = self.epoch;
            count += 1;
            stack.extend(producers(self.g, m));
        }
        count == self.groups[gid].nodes.len()
    }

    /// None of the values `ins` (from outside group `gid`) depends on the group: fusing
    /// their consumer into the group would otherwise close a cycle between two kernels.
    fn others_independent(&mut self, ins: &[Option<Value>], gid: usize) -> bool {
        let min_pos = self.groups[gid].min_pos;
        self.epoch += 1;
        let mut stack: Vec<NodeId> = ins
            .iter()
            .flatten()
            .filter(|v| self.group(**v) != Some(gid))
            .map(|v| v.node)
            .collect();
        while let Some(m) = stack.pop() {
            let i = m.index();
            if self.seen[i] == self.epoch || self.pos[i] < min_pos {
                continue;
            }
            self.seen[i] = self.epoch;
            if self.group_of[i] == gid {
                return false;
            }
            stack.extend(producers(self.g, m));
        }
        true
    }
}

/// Broadcasting `u` against `v` gives `v`'s shape: `u` has no more dims, and each of its
/// (right-aligned) dims is 1 or provably equal to `v`'s.
fn broadcasts_into(u: &TensorType, v: &TensorType) -> bool {
    let (Some(us), Some(vs)) = (u.shape.dims(), v.shape.dims()) else {
        return false;
    };
    us.len() <= vs.len()
        && us
            .iter()
            .rev()
            .zip(vs.iter().rev())
            .all(|(a, b)| match (a, b) {
                (Dim::Known(1), _) => true,
                (Dim::Known(x), Dim::Known(y)) => x == y,
                (Dim::Sym(x), Dim::Sym(y)) => x == y,
                _ => false,
            })
}

/// Both types hold the same number of elements, provably: equal known-dim products and the
/// same symbolic dims. Unknown dims prove nothing.
fn same_elements(a: &TensorType, b: &TensorType) -> bool {
    fn count(t: &TensorType) -> Option<(usize, Vec<&str>)> {
        let mut known = 1usize;
        let mut syms = Vec::new();
        for d in t.shape.dims()? {
            match d {
                Dim::Known(k) => known = known.checked_mul(*k)?,
                Dim::Sym(s) => syms.push(s.as_str()),
                Dim::Unknown => return None,
            }
        }
        syms.sort_unstable();
        Some((known, syms))
    }
    match (count(a), count(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The nodes feeding `n`.
fn producers(g: &Graph, n: NodeId) -> impl Iterator<Item = NodeId> {
    g.inputs_of(n).into_iter().flatten().map(|v| v.node)
}
