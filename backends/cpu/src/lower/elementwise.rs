//! Elementwise ops, and fused kernels whose body is only elementwise ops, through the JIT's
//! own code generator ([`crate::codegen`]): one node becomes a one-node body, the plan's
//! constant tensors become data objects, and its loop over output elements is the kernel's
//! unit range.

use super::{Arg, Kernel, LowerCtx, LowerError, Operand, OutType, Result};
use crate::codegen::{define_kernel, Plan};
use cranelift_module::{Linkage, Module};
use kiln_ir::{Graph, Node, Op, TensorType};

/// `Ok(None)` when `node` is neither an elementwise op nor a fused body of them.
pub fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    outputs: &[OutType],
) -> Result<Option<Kernel>> {
    let (body, args) = match &node.op {
        Op::Fused { body } => {
            if !body
                .nodes
                .node_weights()
                .all(|n| matches!(n.op, Op::Input | Op::Const { .. }) || is_elementwise(&n.op))
            {
                return Ok(None);
            }
            let args: Vec<Arg> = (0..body.inputs.len()).map(Arg::Input).collect();
            ((**body).clone(), args)
        }
        op if is_elementwise(op) => one_node_body(node, inputs)?,
        _ => return Ok(None),
    };
    let shapes: Vec<Vec<usize>> = body
        .inputs
        .iter()
        .map(|&n| body.node(n).outputs[0].shape.concrete())
        .collect::<Option<_>>()
        .ok_or_else(|| LowerError::unsupported(node, "a body input's shape is not concrete"))?;
    let plan = Plan::new(&body, &shapes).map_err(|e| LowerError::unsupported(node, e.reason))?;
    if plan.shape != outputs[0].shape || plan.outputs.len() != outputs.len() {
        return Err(LowerError::unsupported(
            node,
            "the body's outputs do not match the node's",
        ));
    }
    let mut args = args;
    for operand in &plan.operands {
        if let Some(t) = &operand.constant {
            args.push(Arg::Data(ctx.data("const", t.to_le_bytes(), 64)?));
        }
    }
    args.extend((0..outputs.len()).map(Arg::Output));
    let name = ctx.fresh_name("elementwise");
    let func = define_kernel(ctx.module, &name, Linkage::Local, &plan)
        .map_err(|e| LowerError::unsupported(node, e.reason))?;
    Ok(Some(Kernel {
        func,
        args,
        units: plan.layout.len() as u64,
        kind: "elementwise".into(),
    }))
}

/// The ops the code generator covers (it still refuses dtypes it lacks).
pub fn is_elementwise(op: &Op) -> bool {
    crate::codegen::plan::elementwise(op)
}

/// `node` alone as a body: a one-element constant input becomes a constant of the body (an
/// immediate in the code), every other present input a body input.
fn one_node_body(node: &Node, inputs: &[Option<Operand>]) -> Result<(Graph, Vec<Arg>)> {
    let mut g = Graph::new(node.name.clone());
    let mut args = Vec::new();
    let mut values = Vec::new();
    for (i, x) in inputs.iter().enumerate() {
        let v = match x {
            None => None,
            Some(Operand { value: Some(t), .. }) if t.len() == 1 => {
                Some(g.add_const(format!("c{i}"), (*t).clone()))
            }
            Some(x) => {
                args.push(Arg::Input(i));
                Some(g.add_input(format!("x{i}"), TensorType::known(x.dtype, x.shape)))
            }
        };
        values.push(v);
    }
    let n = g
        .add(
            node.op.clone(),
            node.name.clone(),
            &values,
            node.outputs.len(),
        )
        .map_err(|e| LowerError::unsupported(node, e))?;
    for o in 0..node.outputs.len() {
        g.add_output(format!("y{o}"), kiln_ir::Value::new(n, o));
    }
    Ok((g, args))
}
