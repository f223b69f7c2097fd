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
    let dag = Dag::new(eg, roots, own, choice);
    let mut chosen = dag.initial.clone();
    let mut best = dag.cost(&chosen);
    for _ in 0..SWEEPS {
        let mut improved = false;
        for c in dag.reachable(&chosen) {
            let id = dag.ids[c];
            // Constant classes cost nothing whichever form they take.
            if eg[id].data.constant {
                continue;
            }
            for i in 0..dag.kids[c].len() {
                if chosen[c] == i as u32 || !dag.own[c][i].is_finite() || dag.kids[c][i].iter().any(|&k| chosen[k] == NONE) {
                    continue;
                }
                let mut moves = vec![(c, i as u32)];
                if let (Kind::Output(_), Some(&tuple)) = (eg[id].nodes[i].kind, dag.kids[c][i].first()) {
                    moves.extend(dag.tuple_readers(&chosen, tuple, c));
                }
                let old: Vec<(usize, u32)> = moves.iter().map(|&(m, _)| (m, chosen[m])).collect();
                for &(m, j) in &moves {
                    chosen[m] = j;
                }
                let cost = dag.cost(&chosen);
                if cost < best * (1.0 - 1e-9) {
                    best = cost;
                    improved = true;
                } else {
                    for (m, j) in old {
                        chosen[m] = j;
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    for (c, &i) in chosen.iter().enumerate() {
        if i != NONE {
            choice.insert(dag.ids[c], i as usize);
        }
    }
}

/// Sweeps of [`improve`] over the graph; each finds the moves the previous one enabled.
const SWEEPS: usize = 4;

const NONE: u32 = u32::MAX;

/// The e-graph as dense vectors (classes numbered 0..n in id order), for fast whole-graph
/// cost evaluation.
struct Dag {
    ids: Vec<Id>,
    /// Per class, per node: the children's class numbers.
    kids: Vec<Vec<Vec<usize>>>,
    own: Vec<Vec<f64>>,
    roots: Vec<usize>,
    initial: Vec<u32>,
}

impl Dag {
    fn new(eg: &EG, roots: &[Id], own: &HashMap<(Id, usize), f64>, choice: &HashMap<Id, usize>) -> Dag {
        let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        ids.sort_unstable();
        let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let kids = ids.iter().map(|&id| eg[id].nodes.iter().map(|n| n.children().iter().map(|c| index[&eg.find(*c)]).collect()).collect()).collect();
        let own = ids.iter().map(|&id| (0..eg[id].nodes.len()).map(|i| own.get(&(id, i)).copied().unwrap_or(f64::INFINITY)).collect()).collect();
        let initial = ids.iter().map(|id| choice.get(id).map_or(NONE, |&i| i as u32)).collect();
        let roots = roots.iter().map(|r| index[&eg.find(*r)]).collect();
        Dag { ids, kids, own, roots, initial }
    }

    /// Classes reachable from the roots through chosen nodes, in id order.
    fn reachable(&self, chosen: &[u32]) -> Vec<usize> {
        let mut seen = vec![false; self.ids.len()];
        let mut stack = self.roots.clone();
        while let Some(c) = stack.pop() {
            if std::mem::replace(&mut seen[c], true) || chosen[c] == NONE {
                continue;
            }
            stack.extend(&self.kids[c][chosen[c] as usize]);
        }
        (0..seen.len()).filter(|&c| seen[c]).collect()
    }

    /// Other reachable classes with a node reading an output of `tuple`, with that node.
    fn tuple_readers(&self, chosen: &[u32], tuple: usize, except: usize) -> Vec<(usize, u32)> {
        self.reachable(chosen)
            .into_iter()
            .filter(|&c| c != except)
            .filter_map(|c| {
                (0..self.kids[c].len()).find(|&j| self.kids[c][j].len() == 1 && self.kids[c][j][0] == tuple && self.own[c][j] == 0.0).map(|j| (c, j as u32))
            })
            .collect()
    }

    /// The cost of computing every class reachable from the roots once; infinite when the
    /// choice has a cycle or a needed class has no node.
    fn cost(&self, chosen: &[u32]) -> f64 {
        // 1: on the current path, 2: done.
        let mut state = vec![0u8; self.ids.len()];
        let mut total = 0.0;
        let mut stack: Vec<(usize, bool)> = Vec::new();
        for &r in &self.roots {
            stack.push((r, false));
            while let Some((c, done)) = stack.pop() {
                if done {
                    state[c] = 2;
                    continue;
                }
                match state[c] {
                    2 => continue,
                    1 => return f64::INFINITY,
                    _ => {}
                }
                if chosen[c] == NONE {
                    return f64::INFINITY;
                }
                let i = chosen[c] as usize;
                state[c] = 1;
                total += self.own[c][i];
                stack.push((c, true));
                for &k in &self.kids[c][i] {
                    match state[k] {
                        2 => {}
                        1 => return f64::INFINITY,
                        _ => stack.push((k, false)),
                    }
                }
            }
        }
        total
    }
}

fn rank(originals: &HashSet<ENode>, node: &ENode) -> u8 {
    u8::from(!originals.contains(node))
}
