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
use super::lang::{ENode, Kind};
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
pub fn extract(eg: &EG, model: &CostModel, originals: &HashSet<ENode>, roots: &[Id]) -> HashMap<Id, ENode> {
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
    let mut choice: HashMap<Id, usize> = settled.into_iter().map(|(id, (_, i))| (id, i)).collect();
    improve(eg, roots, &own, &mut choice);
    choice.into_iter().map(|(id, i)| (id, eg[id].nodes[i].clone())).collect()
}

/// Improves a choice by its true cost over the DAG: each class reachable from the roots
/// counted once. Tries switching each reachable class to each of its other nodes (and
/// every reader of a tuple to its outputs at once, so a merged kernel is judged with all
/// its readers), keeping a switch only when it lowers the total. Sharing that the
/// per-class estimate cannot see (a value computed once serving two layouts, one merged
/// matmul serving three) shows up here.
fn improve(eg: &EG, roots: &[Id], own: &HashMap<(Id, usize), f64>, choice: &mut HashMap<Id, usize>) {
    let mut best = dag_cost(eg, roots, own, choice);
    for _ in 0..SWEEPS {
        let mut improved = false;
        for id in reachable(eg, roots, choice) {
            // Constant classes cost nothing whichever form they take.
            if eg[id].data.constant {
                continue;
            }
            for i in 0..eg[id].nodes.len() {
                if choice.get(&id) == Some(&i) || !own.contains_key(&(id, i)) {
                    continue;
                }
                let node = &eg[id].nodes[i];
                if node.children().iter().any(|c| !choice.contains_key(&eg.find(*c))) {
                    continue;
                }
                let mut moves = vec![(id, i)];
                if let (Kind::Output(_), Some(&tuple)) = (node.kind, node.children().first()) {
                    moves.extend(tuple_readers(eg, roots, choice, eg.find(tuple), id));
                }
                let old: Vec<(Id, usize)> = moves.iter().map(|&(c, _)| (c, choice[&c])).collect();
                for &(c, j) in &moves {
                    choice.insert(c, j);
                }
                let cost = dag_cost(eg, roots, own, choice);
                if cost < best * (1.0 - 1e-9) {
                    best = cost;
                    improved = true;
                } else {
                    for (c, j) in old {
                        choice.insert(c, j);
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
}

/// Sweeps of [`improve`] over the graph; each finds the moves the previous one enabled.
const SWEEPS: usize = 4;

/// Other reachable classes that have a node reading output of `tuple`, with that node.
fn tuple_readers(eg: &EG, roots: &[Id], choice: &HashMap<Id, usize>, tuple: Id, except: Id) -> Vec<(Id, usize)> {
    let mut v = Vec::new();
    for id in reachable(eg, roots, choice) {
        if id == except {
            continue;
        }
        if let Some(j) = eg[id].nodes.iter().position(|n| matches!(n.kind, Kind::Output(_)) && eg.find(n.children[0]) == tuple) {
            v.push((id, j));
        }
    }
    v
}

/// Classes reachable from the roots through chosen nodes, in id order.
fn reachable(eg: &EG, roots: &[Id], choice: &HashMap<Id, usize>) -> Vec<Id> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(&i) = choice.get(&id) {
            stack.extend(eg[id].nodes[i].children().iter().map(|&c| eg.find(c)));
        }
    }
    let mut v: Vec<Id> = seen.into_iter().collect();
    v.sort_unstable();
    v
}

/// The cost of computing every class reachable from the roots once; infinite when the
/// choice has a cycle or a class without a node.
fn dag_cost(eg: &EG, roots: &[Id], own: &HashMap<(Id, usize), f64>, choice: &HashMap<Id, usize>) -> f64 {
    // 1: on the current path, 2: done.
    let mut state: HashMap<Id, u8> = HashMap::new();
    let mut total = 0.0;
    for &r in roots {
        let mut stack = vec![(eg.find(r), false)];
        while let Some((id, done)) = stack.pop() {
            if done {
                state.insert(id, 2);
                continue;
            }
            match state.get(&id) {
                Some(2) => continue,
                Some(_) => return f64::INFINITY,
                None => {}
            }
            let Some(&i) = choice.get(&id) else { return f64::INFINITY };
            state.insert(id, 1);
            total += own.get(&(id, i)).copied().unwrap_or(f64::INFINITY);
            stack.push((id, true));
            for &c in eg[id].nodes[i].children() {
                let c = eg.find(c);
                match state.get(&c) {
                    Some(2) => {}
                    Some(_) => return f64::INFINITY,
                    None => stack.push((c, false)),
                }
            }
        }
    }
    total
}

fn rank(originals: &HashSet<ENode>, node: &ENode) -> u8 {
    u8::from(!originals.contains(node))
}
