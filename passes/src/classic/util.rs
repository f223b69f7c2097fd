//! Helpers the classic passes share.

use kiln_ir::{Graph, Result};

/// Runs `f` on `g` and on every graph nested in it, innermost first.
pub(crate) fn each_graph(g: &mut Graph, f: &mut dyn FnMut(&mut Graph) -> Result<()>) -> Result<()> {
    let nested: Vec<_> = g
        .nodes
        .node_indices()
        .filter(|&n| !g.nodes[n].op.subgraphs().is_empty())
        .collect();
    for n in nested {
        let name = g.nodes[n].name.clone();
        for sub in g.nodes[n].op.subgraphs_mut() {
            each_graph(sub, f).map_err(|e| e.in_node(name.clone()))?;
        }
    }
    f(g)
}
