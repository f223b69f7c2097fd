//! E-graph rewriting with `egg` (equality saturation, after TENSAT): the graph goes into an
//! e-graph, rules add equal forms of its values without losing any, and extraction picks
//! the cheapest form of each by the cost model.
//!
//! - [`lang`]: kiln ops as an egg `Language`; [`analysis`]: types, small constant values,
//!   non-negativity, source names; [`rules`]: the rewrites; [`cost`] and [`extract`]: the
//!   choice; [`convert`]: graph to e-graph and back.
//! - Limits (iterations, e-nodes, time) keep large graphs fast. The iteration and node
//!   limits stop real models long before the time limit, which is only a safety net, so
//!   the result does not depend on the machine: the same model gives the same graph.
//! - Rules are tried on classes in id order and nodes in their (sorted) order, and nothing
//!   that builds output iterates a hash map, so a run is deterministic.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod rules;

use crate::manager::Pass;
use egg::{Id, Language};
use kiln_ir::{Graph, Result};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The e-graph pass (`egraph`).
#[derive(Clone, Debug)]
pub struct EGraph {
    /// Rounds of "apply every rule everywhere, then rebuild".
    pub iter_limit: usize,
    /// Stop growing past this many e-nodes (or this many times the graph's node count).
    pub node_limit: usize,
    pub node_factor: usize,
    /// A safety net only (see the module comment).
    pub time_limit: Duration,
    /// Graphs with more operation nodes than this are left alone: extraction's whole-DAG
    /// improvement is quadratic in the graph's size (a 100,000-node chain would take
    /// minutes), and no real model comes near.
    pub max_graph_nodes: usize,
    pub cost: cost::CostModel,
}

impl Default for EGraph {
    fn default() -> EGraph {
        EGraph { iter_limit: 40, node_limit: 200_000, node_factor: 12, time_limit: Duration::from_secs(5), max_graph_nodes: 20_000, cost: cost::CostModel::default() }
    }
}

/// What one run did, for tests and `--passes`-style reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    pub iterations: usize,
    pub enodes: usize,
    pub classes: usize,
    /// Why rewriting stopped: "saturated", "iterations", "nodes" or "time".
    pub stop: &'static str,
    /// Rewrites that merged two classes, by rule name, in rule order.
    pub applied: Vec<(&'static str, usize)>,
}

impl Pass for EGraph {
    fn name(&self) -> &'static str {
        "egraph"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        self.run_with_stats(g).map(|_| ())
    }

    fn skip(&self, g: &Graph) -> Option<String> {
        let n = crate::manager::op_count(g);
        (n > self.max_graph_nodes).then(|| format!("{n} nodes, more than the e-graph's limit of {}", self.max_graph_nodes))
    }
}

impl EGraph {
    pub fn run_with_stats(&self, g: &mut Graph) -> Result<RunStats> {
        let start = Instant::now();
        let convert::Converted { egraph: mut eg, roots, originals } = convert::to_egraph(g)?;
        eg.rebuild();
        let limit = self.node_limit.min(self.node_factor.saturating_mul(eg.total_number_of_nodes()).max(1000));
        let rules = rules::all();
        let mut applied: Vec<(&'static str, usize)> = rules.iter().map(|r| (r.name, 0)).collect();
        let mut stats = RunStats { stop: "iterations", ..RunStats::default() };
        'rounds: for _ in 0..self.iter_limit {
            stats.iterations += 1;
            let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
            ids.sort_unstable();
            let mut found: Vec<(usize, Id, rules::Term)> = Vec::new();
            for &id in &ids {
                for node in &eg[id].nodes {
                    for (r, rule) in rules.iter().enumerate() {
                        let mut out = Vec::new();
                        (rule.apply)(&eg, id, node, &mut out);
                        found.extend(out.into_iter().map(|(c, t)| (r, c, t)));
                    }
                }
            }
            let nodes_before = eg.total_number_of_nodes();
            let mut merged = false;
            for (r, class, term) in found {
                let hint = eg[class].data.origin.as_ref().map(|o| o.1.clone()).or_else(|| eg[class].data.hint.clone()).unwrap_or_default();
                let Some(new) = rules::add_term(&mut eg, &term, &hint) else { continue };
                if agrees(&eg[class].data.types, &eg[new].data.types) && eg.union(class, new) {
                    merged = true;
                    applied[r].1 += 1;
                }
                if eg.total_number_of_nodes() > limit {
                    eg.rebuild();
                    stats.stop = "nodes";
                    break 'rounds;
                }
            }
            eg.rebuild();
            if !merged && eg.total_number_of_nodes() == nodes_before {
                stats.stop = "saturated";
                break;
            }
            if start.elapsed() > self.time_limit {
                stats.stop = "time";
                break;
            }
        }
        let originals: HashSet<_> = originals.into_iter().map(|n| n.map_children(|c| eg.find(c))).collect();
        let choice = extract::extract(&eg, &self.cost, &originals, &roots);
        let out = convert::to_graph(&eg, g, &roots, &choice, &originals)?;
        stats.enodes = eg.total_number_of_nodes();
        stats.classes = eg.number_of_classes();
        stats.applied = applied.into_iter().filter(|a| a.1 > 0).collect();
        *g = out;
        Ok(stats)
    }
}

/// A rewrite may only claim equality with a value of the same types.
fn agrees(a: &[kiln_ir::TensorType], b: &[kiln_ir::TensorType]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| kiln_ir::verify::compatible(x, y))
}
