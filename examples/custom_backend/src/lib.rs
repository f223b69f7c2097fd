//! TOY: a kiln device in plain Rust loops over f32. It runs elementwise kernels only
//! (unary and binary ops with broadcasting, and fused kernels made of nothing else); under
//! `HETERO:TOY,CPU` every other kernel goes to the CPU. It implements one trait, `Backend`.

use kiln_runtime::backends::{Backend, BackendError, CompileOptions, Executable, Kernel, KernelTiming, Program, Result};
use kiln_runtime::ir::{BinaryOp, DType, Graph, Node, Op, Tensor, UnaryOp, Value};
use std::collections::HashMap;
use std::time::Instant;

pub struct Toy;

fn unary(op: UnaryOp) -> Option<fn(f32) -> f32> {
    Some(match op {
        UnaryOp::Neg => |x| -x,
        UnaryOp::Abs => f32::abs,
        // Written as a comparison so that a NaN stays NaN, as in the reference.
        UnaryOp::Relu => |x| if x < 0.0 { 0.0 } else { x },
        UnaryOp::Sigmoid => |x| 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Tanh => f32::tanh,
        _ => return None,
    })
}

fn binary(op: BinaryOp) -> Option<fn(f32, f32) -> f32> {
    Some(match op {
        BinaryOp::Add => |a, b| a + b,
        BinaryOp::Sub => |a, b| a - b,
        BinaryOp::Mul => |a, b| a * b,
        BinaryOp::Div => |a, b| a / b,
        BinaryOp::Max => f32::max,
        BinaryOp::Min => f32::min,
        _ => return None,
    })
}

/// An f32 node TOY has a loop for; inputs and constants count when they are f32.
fn runs(node: &Node) -> bool {
    node.outputs.iter().all(|t| t.dtype == DType::F32)
        && match &node.op {
            Op::Input | Op::Const { .. } => true,
            Op::Unary(u) => unary(*u).is_some(),
            Op::Binary(b) => binary(*b).is_some(),
            Op::Fused { body } => body.nodes.node_weights().all(runs),
            _ => false,
        }
}

impl Backend for Toy {
    fn name(&self) -> &str {
        "TOY"
    }

    fn supports(&self, kernel: &Kernel) -> bool {
        !matches!(kernel.node.op, Op::Input | Op::Const { .. }) && runs(kernel.node)
    }

    fn compile(&self, program: &Program, _options: &CompileOptions) -> Result<Executable> {
        let graph = program.graph.clone();
        if let Some(n) = graph.nodes.node_weights().find(|n| !runs(n)) {
            return Err(error(n, format!("TOY has no loop for {}", n.op.name())));
        }
        Ok(Executable::new(move |inputs, profile| run(&graph, inputs, profile)))
    }
}

fn error(node: &Node, message: impl Into<String>) -> BackendError {
    BackendError { device: "TOY".into(), node: Some(node.name.clone()), message: message.into() }
}

/// Runs `graph` node by node (a fused kernel's body too), timing each kernel when asked.
fn run(graph: &Graph, inputs: &[Tensor], mut profile: Option<&mut Vec<KernelTiming>>) -> Result<Vec<Tensor>> {
    if inputs.len() != graph.inputs.len() {
        return Err(BackendError::new("TOY", format!("{} inputs for a graph of {}", inputs.len(), graph.inputs.len())));
    }
    let mut values: HashMap<Value, Tensor> = HashMap::new();
    for (&input, t) in graph.inputs.iter().zip(inputs) {
        values.insert(Value::new(input, 0), t.clone());
    }
    for id in graph.topo_order().map_err(|e| BackendError::from_ir("TOY", e))? {
        let (node, start) = (graph.node(id), Instant::now());
        let args: Vec<Tensor> = graph.inputs_of(id).into_iter().flatten().map(|v| values[&v].clone()).collect();
        let outputs = match &node.op {
            Op::Input => continue,
            Op::Const { value } => vec![value.clone()],
            Op::Fused { body } => run(body, &args, None)?,
            op => vec![elementwise(op, &args).map_err(|m| error(node, m))?],
        };
        if let (Some(p), false) = (profile.as_mut(), matches!(node.op, Op::Const { .. })) {
            let nanos = start.elapsed().as_nanos() as u64;
            p.push(KernelTiming { nodes: vec![node.name.clone()], kind: node.op.name().into(), device: "TOY".into(), nanos });
        }
        for (k, t) in outputs.into_iter().enumerate() {
            values.insert(Value::new(id, k), t);
        }
    }
    Ok(graph.outputs.iter().map(|(_, v)| values[v].clone()).collect())
}

fn f32s(t: &Tensor) -> std::result::Result<&[f32], String> {
    t.as_slice::<f32>().map_err(|e| e.to_string())
}

fn elementwise(op: &Op, args: &[Tensor]) -> std::result::Result<Tensor, String> {
    match (op, args) {
        (Op::Unary(u), [x]) => {
            let f = unary(*u).ok_or("not a TOY op")?;
            Tensor::new(x.shape().to_vec(), f32s(x)?.iter().map(|&v| f(v)).collect()).map_err(|e| e.to_string())
        }
        (Op::Binary(b), [x, y]) => broadcast(binary(*b).ok_or("not a TOY op")?, x.shape(), f32s(x)?, y.shape(), f32s(y)?),
        _ => Err(format!("TOY cannot run {} on {} inputs", op.name(), args.len())),
    }
}

/// `f` over numpy broadcasting: dims align from the right; a dim of 1 repeats.
fn broadcast(f: fn(f32, f32) -> f32, sa: &[usize], a: &[f32], sb: &[usize], b: &[f32]) -> std::result::Result<Tensor, String> {
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
    let (sa, sb) = (pad(sa), pad(sb));
    let dim = |(&x, &y): (&usize, &usize)| if x == y || y == 1 { Ok(x) } else if x == 1 { Ok(y) } else { Err(format!("{sa:?} and {sb:?} do not broadcast")) };
    let shape = sa.iter().zip(&sb).map(dim).collect::<std::result::Result<Vec<usize>, String>>()?;
    // A stride of 0 makes a broadcast dim read the same element again.
    let strides = |s: &[usize]| {
        let mut st = vec![0; rank];
        let mut step = 1;
        for d in (0..rank).rev() {
            st[d] = if s[d] == 1 { 0 } else { step };
            step *= s[d];
        }
        st
    };
    let (ta, tb) = (strides(&sa), strides(&sb));
    let n: usize = shape.iter().product();
    let (mut out, mut index, mut ia, mut ib) = (Vec::with_capacity(n), vec![0; rank], 0, 0);
    for _ in 0..n {
        out.push(f(a[ia], b[ib]));
        for d in (0..rank).rev() {
            index[d] += 1;
            (ia, ib) = (ia + ta[d], ib + tb[d]);
            if index[d] < shape[d] {
                break;
            }
            (ia, ib, index[d]) = (ia - ta[d] * shape[d], ib - tb[d] * shape[d], 0);
        }
    }
    Tensor::new(shape, out).map_err(|e| e.to_string())
}
