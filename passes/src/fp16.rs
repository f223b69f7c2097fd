//! fp16 weight compression (`kiln convert --fp16`): every f32 constant of at least
//! [`MIN_ELEMENTS`] elements is stored as f16 and followed by a `Cast` back to f32, so the
//! graph computes with the same types while its weights take half the bytes.
//!
//! Constants holding a finite value that f16 cannot hold (beyond ±65504, which would turn
//! into infinity) stay f32: a weight must not change meaning to save space. Small
//! constants stay f32 too: they are shapes, scales and epsilons, cheap and often read by
//! shape inference as constants.

use kiln_ir::half::f16;
use kiln_ir::{DType, Edge, Graph, NodeId, Op, Tensor, TensorType, Value};
use std::collections::HashMap;
use std::fmt;

/// Constants with fewer elements are left alone.
pub const MIN_ELEMENTS: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// f32 constants now stored as f16 (nested graphs included).
    pub compressed: usize,
    /// f32 constants kept because a finite value is out of f16's range.
    pub out_of_range: usize,
    /// Bytes of the compressed constants before and after.
    pub bytes_before: usize,
    pub bytes_after: usize,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} constants compressed ({} bytes -> {} bytes)",
            self.compressed, self.bytes_before, self.bytes_after
        )?;
        if self.out_of_range > 0 {
            write!(
                f,
                ", {} kept as f32 (values beyond f16's range)",
                self.out_of_range
            )?;
        }
        Ok(())
    }
}

/// Replaces large f32 constants by f16 constants followed by a cast to f32, in `graph` and
/// in every nested graph. The f16 constant keeps the constant's name; the cast is named
/// `<name>/to_f32` and takes over every use, graph outputs included.
pub fn compress_weights(graph: &mut Graph) -> Stats {
    let mut stats = Stats::default();
    compress(graph, &mut stats);
    stats
}

fn compress(g: &mut Graph, stats: &mut Stats) {
    let ids: Vec<NodeId> = g.nodes.node_indices().collect();
    let mut casts: HashMap<NodeId, NodeId> = HashMap::new();
    for n in ids {
        for sub in g.nodes[n].op.subgraphs_mut() {
            compress(sub, stats);
        }
        let node = &g.nodes[n];
        let Op::Const { value } = &node.op else {
            continue;
        };
        let Ok(vals) = value.as_slice::<f32>() else {
            continue;
        };
        if vals.len() < MIN_ELEMENTS
            || node.outputs.len() != 1
            || node.outputs[0].dtype != DType::F32
        {
            continue;
        }
        let half: Vec<f16> = vals.iter().map(|&x| f16::from_f32(x)).collect();
        if vals
            .iter()
            .zip(&half)
            .any(|(x, h)| x.is_finite() && h.is_infinite())
        {
            stats.out_of_range += 1;
            continue;
        }
        let Ok(compressed) = Tensor::new(value.shape().to_vec(), half) else {
            continue;
        };
        stats.compressed += 1;
        stats.bytes_before += vals.len() * 4;
        stats.bytes_after += vals.len() * 2;
        let f32_type = node.outputs[0].clone();
        let cast_name = format!("{}/to_f32", node.name);
        let node = &mut g.nodes[n];
        node.outputs = vec![TensorType::known(DType::F16, compressed.shape())];
        node.op = Op::Const { value: compressed };
        let cast = g.add_node_typed(
            Op::Cast { to: DType::F32 },
            cast_name,
            &[Some(n.into())],
            vec![f32_type],
        );
        casts.insert(n, cast);
    }
    if casts.is_empty() {
        return;
    }
    // Move every use of a compressed constant to its cast, in one pass over the edges.
    let moves: Vec<_> = g
        .nodes
        .edge_indices()
        .filter_map(|e| {
            let (src, dst) = g.nodes.edge_endpoints(e)?;
            let cast = *casts.get(&src)?;
            let w: Edge = *g.nodes.edge_weight(e)?;
            (dst != cast && w.output == 0).then_some((e, cast, dst, w))
        })
        .collect();
    for (e, cast, dst, w) in moves {
        g.nodes.remove_edge(e);
        g.nodes.add_edge(cast, dst, w);
    }
    for (_, v) in &mut g.outputs {
        if let Some(&cast) = casts.get(&v.node) {
            if v.output == 0 {
                *v = Value::new(cast, 0);
            }
        }
    }
}

/// How far one output moved when the weights went to f16.
#[derive(Clone, Debug, PartialEq)]
pub struct Drift {
    pub output: String,
    /// Largest |f16 − f32| over the output's elements.
    pub max_abs: f64,
    /// Largest |f16 − f32| / |f32| over elements where |f32| ≥ 1e-6 (tinier ones say
    /// nothing about relative accuracy).
    pub max_rel: f64,
    /// The f32 output's largest magnitude, to read `max_abs` against.
    pub scale: f64,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: max abs change {:.3e} (outputs up to {:.3e}), max rel change {:.3e}",
            self.output, self.max_abs, self.scale, self.max_rel
        )
    }
}

/// The accuracy change from `original` (f32 weights) to `compressed` (the same graph after
/// [`compress_weights`]) on the caller's inputs, by running both with the reference
/// semantics.
pub fn accuracy(original: &Graph, compressed: &Graph, inputs: &[Tensor]) -> kiln_ir::Result<Vec<Drift>> {
    let want = kiln_ir::eval::run_graph(original, inputs)?;
    let got = kiln_ir::eval::run_graph(compressed, inputs)?;
    Ok(original
        .outputs
        .iter()
        .zip(want.iter().zip(&got))
        .map(|((name, _), (w, g))| {
            let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
            let mut d = Drift { output: name.clone(), max_abs: 0.0, max_rel: 0.0, scale: 0.0 };
            for (a, b) in w.iter().zip(&g) {
                let diff = (a - b).abs();
                if diff.is_finite() {
                    d.max_abs = d.max_abs.max(diff);
                    if a.abs() >= 1e-6 {
                        d.max_rel = d.max_rel.max(diff / a.abs());
                    }
                }
                if a.is_finite() {
                    d.scale = d.scale.max(a.abs());
                }
            }
            d
        })
        .collect())
}
