//! Shape and type inference: the types of a node's outputs from its op and inputs.

use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::TensorType;
use crate::tensor::Tensor;

/// Output types of `op` applied to inputs of `types` (`None` for an absent optional input).
/// `consts` holds the value of each input that is a constant, so that value-dependent
/// shapes (Reshape, Slice, Expand…) come out exact when they can.
pub fn infer(op: &Op, types: &[Option<&TensorType>], consts: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<TensorType>> {
    match op {
        Op::Input => return Err(IrError::msg("an input node's type is given, not inferred")),
        Op::Const { value } => return Ok(vec![TensorType::known(value.dtype(), value.shape())]),
        _ => {}
    }
    for (infer, _) in crate::ops::GROUPS {
        if let Some(r) = infer(op, types, consts, n_outputs) {
            let out = r.map_err(|e| IrError::msg(format!("{}: {}", op.name(), e.message)))?;
            if out.len() != n_outputs {
                return Err(IrError::msg(format!("{} gives {} outputs, the node has {}", op.name(), out.len(), n_outputs)));
            }
            return Ok(out);
        }
    }
    Err(IrError::msg(format!("no shape inference for op `{}`", op.name())))
}

/// Re-infers the output types of every node of `graph` in topological order, after its
/// input types changed (a symbolic batch fixed to 1, say). A dim the node declared known
/// and inference cannot tell stays known (a bridge may know more than inference), but
/// two known dims that disagree are an error naming the node. Nested graphs (Loop, If,
/// Scan bodies) keep their own types.
pub fn reinfer(graph: &mut crate::graph::Graph) -> Result<()> {
    for n in graph.topo_order()? {
        if matches!(graph.node(n).op, Op::Input | Op::Const { .. }) {
            continue;
        }
        let ins = graph.inputs_of(n);
        let node = graph.node(n);
        let types: Vec<Option<&TensorType>> = ins.iter().map(|v| v.map(|v| graph.value_type(v))).collect();
        let consts: Vec<Option<&Tensor>> = ins.iter().map(|v| v.and_then(|v| graph.const_value(v))).collect();
        let inferred = infer(&node.op, &types, &consts, node.outputs.len()).map_err(|e| e.in_node(node.name.clone()))?;
        let mut merged = Vec::with_capacity(inferred.len());
        for (k, (declared, inferred)) in node.outputs.iter().zip(inferred).enumerate() {
            let ty = refine(declared, inferred.clone())
                .ok_or_else(|| IrError::at(node.name.clone(), format!("output {k} was {declared} but the new input shapes give {inferred}")))?;
            merged.push(ty);
        }
        graph.nodes[n].outputs = merged;
    }
    Ok(())
}

/// `inferred`, with the known dims of `declared` filled in where inference gives none;
/// `None` when the two disagree on the dtype, the rank or a known dim.
fn refine(declared: &TensorType, inferred: TensorType) -> Option<TensorType> {
    use crate::shape::{Dim, Shape};
    if declared.dtype != inferred.dtype {
        return None;
    }
    let shape = match (declared.shape.dims(), inferred.shape.dims()) {
        (Some(_), None) => declared.shape.clone(),
        (None, _) => inferred.shape,
        (Some(d), Some(i)) => {
            if d.len() != i.len() {
                return None;
            }
            let mut dims = Vec::with_capacity(d.len());
            for (d, i) in d.iter().zip(i) {
                dims.push(match (d, i) {
                    (Dim::Known(a), Dim::Known(b)) if a != b => return None,
                    (Dim::Known(_), Dim::Sym(_) | Dim::Unknown) => d.clone(),
                    _ => i.clone(),
                });
            }
            Shape(Some(dims))
        }
    };
    Some(TensorType { dtype: declared.dtype, shape })
}

#[cfg(test)]
mod reinfer_tests {
    use super::reinfer;
    use crate::shape::{Dim, Shape, TensorType};
    use crate::{BinaryOp, DType, Graph, Op, Tensor, UnaryOp};

    fn batch_graph() -> Graph {
        // x: f32[N,3] → relu → + bias[3] → reshape to [-1]
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::new(DType::F32, Shape(Some(vec![Dim::Sym("N".into()), Dim::Known(3)]))));
        let r = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[x]).unwrap();
        let bias = g.add_const("bias", Tensor::new(vec![3], vec![1f32, 2., 3.]).unwrap());
        let y = g.add1(Op::Binary(BinaryOp::Add), "add", &[r, bias]).unwrap();
        let shape = g.add_const("shape", Tensor::new(vec![1], vec![-1i64]).unwrap());
        let z = g.add1(Op::Reshape { allowzero: false }, "flat", &[y, shape]).unwrap();
        g.add_output("z", z);
        g
    }

    #[test]
    fn a_fixed_batch_reaches_every_node() {
        let mut g = batch_graph();
        assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[?]");
        g.nodes[g.inputs[0]].outputs[0] = TensorType::known(DType::F32, &[2, 3]);
        reinfer(&mut g).unwrap();
        crate::verify(&g).unwrap();
        assert_eq!(g.value_type(g.outputs[0].1), &TensorType::known(DType::F32, &[6]));
        let x = Tensor::new(vec![2, 3], vec![-1f32, 0., 1., 2., -3., 4.]).unwrap();
        let out = crate::eval::run_graph(&g, &[x]).unwrap();
        assert_eq!(out[0].shape(), &[6]);
        assert_eq!(out[0].to_f64_vec(), vec![1., 2., 4., 3., 2., 7.]);
    }

    #[test]
    fn a_declared_known_dim_inference_cannot_see_is_kept() {
        let mut g = batch_graph();
        let relu = g.nodes.node_indices().find(|&n| g.node(n).name == "relu").unwrap();
        // as a bridge that read the dims from the model file would have declared them
        g.nodes[relu].outputs[0] = TensorType::new(DType::F32, Shape(Some(vec![Dim::Known(4), Dim::Known(3)])));
        reinfer(&mut g).unwrap();
        assert_eq!(g.node(relu).outputs[0], TensorType::known(DType::F32, &[4, 3]));
    }

    #[test]
    fn conflicting_known_dims_name_the_node() {
        let mut g = batch_graph();
        let relu = g.nodes.node_indices().find(|&n| g.node(n).name == "relu").unwrap();
        g.nodes[relu].outputs[0] = TensorType::known(DType::F32, &[4, 3]);
        g.nodes[g.inputs[0]].outputs[0] = TensorType::known(DType::F32, &[2, 3]);
        let e = reinfer(&mut g).unwrap_err();
        assert_eq!(e.node.as_deref(), Some("relu"));
        assert!(e.message.contains("f32[2,3]"), "{}", e.message);
    }
}
