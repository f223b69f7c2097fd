//! Dead code elimination: nodes no graph output depends on go, in nested graphs too. A node
//! stays as long as one of its outputs is read, even if its other outputs are not.

use super::util::each_graph;
use kiln_ir::{Graph, Result};

/// `dce`: removes the nodes no output depends on.
pub struct Dce;

impl crate::Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        each_graph(g, &mut |g| {
            g.remove_dead();
            Ok(())
        })
    }
}
