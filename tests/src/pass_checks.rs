//! Structural checks on what -O2 makes of a model in each of its formats (issue 4's bar):
//! the same number of kernels from every format, no transpose left between two ops, every
//! batch norm after a convolution folded into it, and, for convolutional models, no more
//! kernels than convolutions + pools + 2.

use kiln_ir::{Graph, NodeId, Op};
use kiln_passes::{op_count, Level, Options};

/// Named check results for a model whose formats were optimized into `graphs`.
/// The kernel budget is issue 4's bar for the zoo's convolutional models; other suites hold
/// architectures (fully connected heads, channel shuffles, concat-heavy blocks) it was not
/// written for, so callers choose whether to apply it.
pub fn check(graphs: &[(String, Graph)], with_budget: bool) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    if graphs.is_empty() {
        return out;
    }
    let counts: Vec<(String, usize)> = graphs.iter().map(|(f, g)| (f.clone(), op_count(g))).collect();
    let listing = counts.iter().map(|(f, c)| format!("{f} {c}")).collect::<Vec<_>>().join(", ");
    out.push((
        "passes/same-kernels".to_string(),
        if counts.iter().all(|(_, c)| *c == counts[0].1) { Ok(format!("{} kernels from every format", counts[0].1)) } else { Err(format!("kernels per format: {listing}")) },
    ));
    let transposes: Vec<String> = graphs.iter().filter_map(|(f, g)| {
        let n = inner_transposes(g);
        (n > 0).then(|| format!("{f} {n}"))
    }).collect();
    out.push((
        "passes/no-transposes".to_string(),
        if transposes.is_empty() { Ok("none between two ops in any format".into()) } else { Err(format!("transposes between ops: {}", transposes.join(", "))) },
    ));
    let unfolded: Vec<String> = graphs.iter().filter_map(|(f, g)| {
        let n = unfolded_batch_norms(g);
        (n > 0).then(|| format!("{f} {n}"))
    }).collect();
    out.push((
        "passes/bn-folded".to_string(),
        if unfolded.is_empty() { Ok("no batch norm or scale left after a convolution".into()) } else { Err(format!("unfolded batch norms or scales after a conv: {}", unfolded.join(", "))) },
    ));
    let (convs, pools) = census(&graphs[0].1);
    if with_budget && convs > 0 {
        let budget = convs + pools + 2;
        let worst = counts.iter().map(|(_, c)| *c).max().unwrap_or(0);
        out.push((
            "passes/kernel-budget".to_string(),
            if worst <= budget { Ok(format!("{worst} kernels <= {convs} convs + {pools} pools + 2")) } else { Err(format!("{worst} kernels > {convs} convs + {pools} pools + 2 ({listing})")) },
        ));
    }
    out
}

/// The graph after the -O2 pipeline, verified after every pass.
pub fn optimized(g: &Graph) -> Result<Graph, String> {
    let mut g = g.clone();
    kiln_passes::optimize(&mut g, &Options { level: Level::O2, verify: true, stop_after: None }).map_err(|e| e.to_string())?;
    Ok(g)
}

/// Nodes of `g` and of its fused bodies, as (graph, node) pairs.
fn all_nodes(g: &Graph) -> Vec<(&Graph, NodeId)> {
    let mut v = Vec::new();
    for n in g.nodes.node_indices() {
        v.push((g, n));
        if let Op::Fused { body } = &g.node(n).op {
            v.extend(all_nodes(body));
        }
    }
    v
}

/// Transposes that neither read a model input nor write a model output. Inside a fused
/// kernel, a body input that the kernel takes straight from a model input counts as one.
fn inner_transposes(g: &Graph) -> usize {
    fn walk(g: &Graph, at_edge_in: &dyn Fn(usize) -> bool, at_edge_out: &dyn Fn(usize) -> bool) -> usize {
        let mut n = 0;
        for id in g.nodes.node_indices() {
            match &g.node(id).op {
                Op::Transpose { .. } => {
                    let reads_input = g.inputs_of(id).first().copied().flatten().is_some_and(|v| {
                        g.inputs.iter().position(|&i| i == v.node).is_some_and(|k| at_edge_in(k))
                    });
                    let writes_output = g.outputs.iter().enumerate().any(|(k, (_, v))| v.node == id && at_edge_out(k));
                    if !reads_input && !writes_output {
                        n += 1;
                    }
                }
                Op::Fused { body } => {
                    let ins = g.inputs_of(id);
                    let from_input = |k: usize| ins.get(k).copied().flatten().is_some_and(|v| matches!(g.node(v.node).op, Op::Input) && at_edge_in(g.inputs.iter().position(|&i| i == v.node).unwrap_or(usize::MAX)));
                    let to_output = |k: usize| g.outputs.iter().enumerate().any(|(j, (_, v))| v.node == id && v.output == k && at_edge_out(j));
                    n += walk(body, &from_input, &to_output);
                }
                _ => {}
            }
        }
        n
    }
    walk(g, &|_| true, &|_| true)
}

/// Batch norms, and multiplications by a constant, of a convolution's output that nothing
/// else reads.
fn unfolded_batch_norms(g: &Graph) -> usize {
    all_nodes(g)
        .into_iter()
        .filter(|&(h, n)| match &h.node(n).op {
            // A scale is a constant (a product of two run-time values, as in swish or a
            // squeeze-and-excite gate, is not a batch norm), and only a conv read by the
            // norm alone can take it into its weights (DenseNet's convs also feed concats).
            Op::BatchNorm { .. } | Op::Binary(kiln_ir::BinaryOp::Mul) => {
                let ins: Vec<_> = h.inputs_of(n).into_iter().flatten().collect();
                let foldable_conv = |v: &kiln_ir::Value| matches!(h.node(v.node).op, Op::Conv { .. }) && h.uses_of(*v).len() == 1 && !h.outputs.iter().any(|(_, o)| o == v);
                let scale = matches!(h.node(n).op, Op::BatchNorm { .. }) || ins.iter().any(|v| h.const_value(*v).is_some());
                ins.iter().any(foldable_conv) && scale
            }
            _ => false,
        })
        .count()
}

/// (convolutions, pools) in `g` and its fused bodies.
fn census(g: &Graph) -> (usize, usize) {
    let nodes = all_nodes(g);
    let convs = nodes.iter().filter(|(h, n)| matches!(h.node(*n).op, Op::Conv { .. })).count();
    let pools = nodes.iter().filter(|(h, n)| matches!(h.node(*n).op, Op::Pool { .. } | Op::GlobalPool { .. })).count();
    (convs, pools)
}
