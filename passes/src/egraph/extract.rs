//! Extraction: one e-node per e-class, chosen by the cost model.
//!
//! Knuth's generalization of Dijkstra's algorithm: a node becomes a candidate once all its
//! children's classes are settled, and the cheapest candidate settles its class. A node is
//! only ever chosen after its children, so the result is acyclic by construction, whatever
//! cycles the e-graph holds. A class's cost is shared among the values that read it in the
//! source graph, so a value used twice (a residual connection) is not counted twice, and
//! costs stay linear in the depth of the graph. Ties go to the source graph's own node, then to the smaller node.

use super::analysis::EG;
use super::cost::CostModel;
use super::lang::ENode;
use egg::{Id, Language};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};

#[derive(PartialEq)]
struct Candidate {
    cost: f64,
    /// 0 for a node of the source graph.
    rank: u8,
    class: Id,
    index: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        self.cost.total_cmp(&o.cost).then(self.rank.cmp(&o.rank)).then(self.class.cmp(&o.class)).then(self.index.cmp(&o.index))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The chosen node of every class reachable from the roots through chosen nodes.
pub fn extract(eg: &EG, model: &CostModel, originals: &HashSet<ENode>) -> HashMap<Id, ENode> {
    let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
    ids.sort_unstable();
    // (parent class, node index) for every distinct child class of every node.
    let mut parents: HashMap<Id, Vec<(Id, usize)>> = HashMap::new();
    let mut pending: HashMap<(Id, usize), usize> = HashMap::new();
    let mut heap = BinaryHeap::new();
    let mut own: HashMap<(Id, usize), f64> = HashMap::new();
    for &id in &ids {
        let class = &eg[id];
        for (i, node) in class.nodes.iter().enumerate() {
            let c = model.node_cost(eg, node, &class.data.types);
            if !c.is_finite() {
                continue;
            }
            own.insert((id, i), c);
            let mut kids: Vec<Id> = node.children().iter().map(|&k| eg.find(k)).collect();
            kids.sort_unstable();
            kids.dedup();
            if kids.is_empty() {
                heap.push(Reverse(Candidate { cost: c, rank: rank(originals, node), class: id, index: i }));
            }
            pending.insert((id, i), kids.len());
            for k in kids {
                parents.entry(k).or_default().push((id, i));
            }
        }
    }
    // A class's cost is shared among the values that read it in the source graph (not
    // among its e-graph parents: alternative forms of one value are not separate readers).
    let uses = |id: &Id| eg[*id].data.uses.max(1) as f64;
    let mut settled: HashMap<Id, (f64, usize)> = HashMap::new();
    while let Some(Reverse(cand)) = heap.pop() {
        if settled.contains_key(&cand.class) {
            continue;
        }
        settled.insert(cand.class, (cand.cost, cand.index));
        for &(p, i) in parents.get(&cand.class).map(|v| v.as_slice()).unwrap_or(&[]) {
            let Some(left) = pending.get_mut(&(p, i)) else { continue };
            *left -= 1;
            if *left > 0 || settled.contains_key(&p) {
                continue;
            }
            let node = &eg[p].nodes[i];
            let mut kids: Vec<Id> = node.children().iter().map(|&k| eg.find(k)).collect();
            kids.sort_unstable();
            kids.dedup();
            let cost = own[&(p, i)] + kids.iter().map(|k| settled[k].0 / uses(k)).sum::<f64>();
            heap.push(Reverse(Candidate { cost, rank: rank(originals, node), class: p, index: i }));
        }
    }
    settled.into_iter().map(|(id, (_, i))| (id, eg[id].nodes[i].clone())).collect()
}

fn rank(originals: &HashSet<ENode>, node: &ENode) -> u8 {
    u8::from(!originals.contains(node))
}
