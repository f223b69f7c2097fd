//! The kernels a step runs, how a step's kernel is chosen, and the epilogue matcher.
//!
//! Every step has a chain (its anchor node and the nodes fused after it); replaying the
//! chain through `ir::eval` is always correct. A native kernel ([`KernelImpl`]) computes the
//! same thing faster and may decline at run time (an unexpected dtype or shape), in which
//! case the chain is replayed.

mod activation;
mod avx512f;
mod columns;
mod concat;
mod conv;
mod conv_direct;
mod conv_small_p;
mod conv_taps;
mod conv_transpose;
mod depthwise;
mod epilogue;
mod fused_matmul;
mod gelu;
mod group;
pub(crate) mod im2col;
mod layer_norm;
mod matmul;
mod movement;
mod pool;
mod recurrent;
mod reduce;
mod resize;
mod rows;
mod softmax;
mod split;
mod transpose;
mod transposed_out;

use crate::device::Ctx;
use crate::program::{compile, Arg, Plan, Step};
use kiln_ir::{Graph, IrError, NodeId, Op, Result, Tensor, Value};
use std::collections::HashMap;

pub(crate) use activation::recognise as recognise_activation;
pub(crate) use epilogue::match_epilogue;

/// Whether the kernel for anchor `n` applies an activation after its epilogue (see
/// [`activation`]): the depthwise convolution's vector rows do.
pub(crate) fn takes_activation(graph: &Graph, n: NodeId, known: &HashMap<Value, Tensor>) -> bool {
    depthwise::is_depthwise(graph, n, known)
}

/// Where the activation starts in a chain (anchor first), and which it is.
fn activation_split(
    graph: &Graph,
    nodes: &[NodeId],
    known: &HashMap<Value, Tensor>,
) -> Option<(usize, activation::Activation)> {
    let outputs: std::collections::HashSet<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();
    let reads = |v: Value| graph.uses_of(v).len() + outputs.contains(&v) as usize;
    (1..nodes.len()).find_map(|k| {
        let (act, tail) = activation::recognise(graph, Value::new(nodes[k - 1], 0), known, &reads)?;
        (tail == nodes[k..]).then_some((k, act))
    })
}
pub(crate) use group::{find_groups, subgraph};

/// The f32 exp the native kernels use, for tests of its accuracy.
pub fn exp_f32(x: f32) -> f32 {
    softmax::exp(x)
}

/// How a step computes.
pub(crate) enum KernelImpl {
    /// Replay the chain with `ir::eval`, op by op: every op, slowly.
    Eval,
    /// A fused kernel of elementwise ops only: Cranelift code generated per set of input
    /// shapes (`crate::codegen`); where the generator declines (an op or dtype it does not
    /// cover), the body's plan runs instead.
    Generated(Box<(crate::codegen::KernelCache, Plan)>),
    /// Convolution (any group; depthwise as a direct loop) with its epilogue.
    Conv(conv::Conv),
    /// Depthwise convolution with constant weights, its epilogue and optionally an
    /// activation (swish, hard swish).
    Depthwise(depthwise::Depthwise),
    /// An elementwise group that is one activation of one input (swish or hard swish
    /// after a GEMM convolution): eight lanes with FMA, where the generated code has four;
    /// an input that is not f32 goes to the generated kernel.
    Activation(Box<(activation::Activation, crate::codegen::KernelCache, Plan)>),
    /// MatMul or Gemm on the packed GEMM with its epilogue.
    MatMul(matmul::MatMul),
    /// An `Op::Fused` kernel: its body compiled like any graph, run as one step.
    Fused(Box<Plan>),
    /// A lone op with a kernel of its own (pooling, softmax, normalisation, concat…).
    Native(Box<dyn Native>),
}

/// A kernel for one op (a step without epilogue). It gets the op's inputs in order
/// (`None` for absent ones) and returns `None` for inputs it does not handle (a dtype, a
/// rank), in which case the step runs through `ir::eval`.
pub(crate) trait Native: Send + Sync {
    fn run(&self, ctx: &Ctx, inputs: &[Option<Tensor>]) -> Option<Result<Vec<Tensor>>>;
}

impl Native for recurrent::Loop {
    fn run(&self, ctx: &Ctx, inputs: &[Option<Tensor>]) -> Option<Result<Vec<Tensor>>> {
        recurrent::Loop::run(self, ctx, inputs)
    }
}

impl Native for split::Split {
    fn run(&self, ctx: &Ctx, inputs: &[Option<Tensor>]) -> Option<Result<Vec<Tensor>>> {
        split::Split::run(self, ctx, inputs)
    }
}

/// Wraps a single-output kernel's `run`.
struct One<K>(K);

macro_rules! one_output {
    ($($t:ty),*) => {$(
        impl Native for One<$t> {
            fn run(&self, ctx: &Ctx, inputs: &[Option<Tensor>]) -> Option<Result<Vec<Tensor>>> {
                Some(self.0.run(ctx, inputs)?.map(|t| vec![t]))
            }
        }
    )*};
}
one_output!(
    concat::Concat,
    conv_transpose::ConvTranspose,
    pool::Pool,
    pool::GlobalPool,
    resize::Resize,
    layer_norm::LayerNorm,
    reduce::Reduce,
    softmax::Softmax,
    transpose::Transpose,
    movement::Movement
);

/// An op's `axis` attribute for an input of rank `rank` (negative counts from the end);
/// `None` when out of range.
pub(crate) fn axis_of(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank)
}

/// The native kernel for a lone `op` with `n_outputs` outputs, if there is one.
fn native(op: &Op, n_outputs: usize) -> Option<Box<dyn Native>> {
    Some(match op {
        Op::Concat { .. } => Box::new(One(concat::Concat::new(op)?)),
        Op::ConvTranspose { .. } => Box::new(One(conv_transpose::ConvTranspose::new(op)?)),
        Op::Pool { .. } => Box::new(One(pool::Pool::new(op, n_outputs)?)),
        Op::Resize { .. } => Box::new(One(resize::Resize::new(op)?)),
        Op::GlobalPool { .. } => Box::new(One(pool::GlobalPool::new(op)?)),
        Op::Softmax { .. } | Op::LogSoftmax { .. } => Box::new(One(softmax::Softmax::new(op)?)),
        Op::Transpose { .. } => Box::new(One(transpose::Transpose::new(op)?)),
        Op::LayerNorm { .. } => Box::new(One(layer_norm::LayerNorm::new(op, n_outputs)?)),
        Op::Reduce { .. } => Box::new(One(reduce::Reduce::new(op)?)),
        Op::Split { .. } => Box::new(split::Split::new(op, n_outputs)?),
        _ => return None,
    })
}

impl KernelImpl {
    /// How the step runs, for profiles.
    pub fn label(&self) -> &'static str {
        match self {
            KernelImpl::Eval => "eval",
            KernelImpl::Conv(c) => c.label(),
            KernelImpl::Depthwise(_) => "direct",
            KernelImpl::Activation(_) => "native",
            KernelImpl::MatMul(_) => "gemm",
            KernelImpl::Generated(_) => "generated",
            KernelImpl::Native(_) => "native",
            KernelImpl::Fused(plan) => {
                let kinds = plan.kinds();
                if kinds.iter().any(|k| k.ends_with("(gemm)")) {
                    "gemm"
                } else if kinds.iter().any(|k| k.ends_with("(direct)")) {
                    "direct"
                } else if kinds.iter().any(|k| k.ends_with("(native)")) {
                    "native"
                } else if kinds.iter().all(|k| k.ends_with("(generated)")) {
                    "generated"
                } else {
                    "eval"
                }
            }
        }
    }
}

/// Ops that always run through `ir::eval` on this device (a convolution, matmul or gemm
/// that is not f32 does too, as does a native kernel given a dtype it does not take, and
/// an elementwise op on a dtype the code generator does not cover).
pub fn fallback_ops() -> Vec<&'static str> {
    static GENERATED: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let generated = GENERATED.get_or_init(generated_ops);
    const NATIVE: &[&str] = &[
        "input",
        "const",
        "conv",
        "matmul",
        "gemm",
        "fused",
        "concat",
        "conv_transpose",
        "pool",
        "global_pool",
        "resize",
        "softmax",
        "log_softmax",
        "split",
        "transpose",
        "loop",
    ];
    Op::all_names()
        .into_iter()
        .filter(|n| !NATIVE.contains(n) && !generated.contains(n))
        .collect()
}

/// Elementwise ops (by name, with default attributes) the code generator compiles, found
/// by compiling each on f32, bool and i64 operands of four elements.
fn generated_ops() -> Vec<&'static str> {
    use kiln_ir::{DType, TensorType};
    let compiles = |op: &Op, dtype: DType| {
        let arity = match op {
            Op::Binary(_) => 2,
            _ => 1,
        };
        let mut g = Graph::new("probe");
        let ins: Vec<Option<Value>> = (0..arity)
            .map(|i| Some(g.add_input(format!("x{i}"), TensorType::known(dtype, &[4]))))
            .collect();
        let Ok(n) = g.add(op.clone(), "op", &ins, 1) else {
            return false;
        };
        g.add_output("y", Value::new(n, 0));
        crate::codegen::ElementwiseKernel::compile(&g, &vec![vec![4]; arity]).is_ok()
    };
    Op::all_names()
        .into_iter()
        .filter(|name| match Op::from_parts(name, Vec::new()) {
            Ok(op) => {
                crate::codegen::covers_op(&op)
                    && [DType::F32, DType::Bool, DType::I64]
                        .iter()
                        .any(|&d| compiles(&op, d))
            }
            Err(_) => false,
        })
        .collect()
}

/// "conv+add+relu": the ops of a step, or of a fused kernel's body.
pub(crate) fn kind_name(graph: &Graph, nodes: &[NodeId]) -> String {
    let names: Vec<&str> = match &graph.node(nodes[0]).op {
        Op::Fused { body } => body
            .topo_order()
            .unwrap_or_default()
            .into_iter()
            .map(|n| &body.node(n).op)
            .filter(|op| !matches!(op, Op::Input | Op::Const { .. }))
            .map(|op| op.name())
            .collect(),
        _ => nodes.iter().map(|&n| graph.node(n).op.name()).collect(),
    };
    if names.is_empty() {
        return "fused".into();
    }
    names.join("+")
}

/// Picks the kernel for the step covering `nodes` (anchor first) whose inputs are
/// `inputs`, with `known` the constant values.
pub(crate) fn select(
    graph: &Graph,
    nodes: &[NodeId],
    inputs: &[Value],
    anchor_args: &[Arg],
    known: &HashMap<Value, Tensor>,
) -> Result<KernelImpl> {
    let anchor = graph.node(nodes[0]);
    let split = match anchor.op {
        Op::Conv { .. } if takes_activation(graph, nodes[0], known) => {
            activation_split(graph, nodes, known)
        }
        _ => None,
    };
    let epi_len = split.as_ref().map_or(nodes.len(), |(k, _)| *k);
    let epi = epilogue::Epilogue::of_chain(graph, &nodes[..epi_len], inputs, known);
    if matches!(anchor.op, Op::Conv { .. }) && depthwise::is_depthwise(graph, nodes[0], known) {
        let act = split.map(|(_, act)| act);
        return Ok(
            match depthwise::Depthwise::new(graph, nodes[0], anchor_args, epi, act) {
                Some(d) => KernelImpl::Depthwise(d),
                None => KernelImpl::Eval,
            },
        );
    }
    let compile_body = |body: &Graph| {
        compile(body).map_err(|e| IrError {
            node: e.node.or(Some(anchor.name.clone())),
            message: format!("in fused kernel {}: {}", anchor.name, e.message),
        })
    };
    Ok(match &anchor.op {
        Op::Fused { body } if elementwise_only(body) => {
            // Its fallback runs node by node: grouping the body again would only nest
            // another generated kernel inside this one.
            let plan = crate::program::compile_with(body, false).map_err(|e| IrError {
                node: e.node.or(Some(anchor.name.clone())),
                message: format!("in fused kernel {}: {}", anchor.name, e.message),
            })?;
            // A swish or hard swish the fusion pass grouped alone runs as the native
            // activation, as the CPU's own groups do (generated, on 4 lanes, a swish over
            // 32×112² took 320 µs against onnxruntime's 73).
            group_kernel((**body).clone(), plan)
        }
        Op::Fused { body } => match movement::Movement::new(body) {
            Some(m) => KernelImpl::Native(Box::new(One(m))),
            None => match fused_matmul::of_body(body, anchor_args) {
                Some(m) => KernelImpl::MatMul(m),
                None => KernelImpl::Fused(Box::new(compile_body(body)?)),
            },
        },
        Op::Conv { .. } => match conv::Conv::new(graph, nodes[0], anchor_args, known, epi) {
            Some(c) => KernelImpl::Conv(c),
            None => KernelImpl::Eval,
        },
        Op::MatMul | Op::Gemm { .. } => {
            match matmul::MatMul::new(graph, nodes[0], anchor_args, known, epi) {
                Some(m) => KernelImpl::MatMul(m),
                None => KernelImpl::Eval,
            }
        }
        Op::Loop { .. } if nodes.len() == 1 => match recurrent::Loop::new(graph, nodes[0], known) {
            Some(l) => KernelImpl::Native(Box::new(l)),
            None => KernelImpl::Eval,
        },
        op if nodes.len() == 1 => match native(op, anchor.outputs.len()) {
            Some(k) => KernelImpl::Native(k),
            None => KernelImpl::Eval,
        },
        _ => KernelImpl::Eval,
    })
}

/// A body whose every op is elementwise (the generator's domain).
fn elementwise_only(body: &Graph) -> bool {
    body.nodes.node_weights().all(|n| {
        matches!(n.op, Op::Input | Op::Const { .. }) || kiln_passes::pattern(&n.op).is_elementwise()
    })
}

/// Runs one step on its inputs.
pub(crate) fn run(step: &Step, ctx: &Ctx, args: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let native = match &step.kernel {
        KernelImpl::Eval => None,
        KernelImpl::Native(k) => {
            let ins: Vec<Option<Tensor>> = step.chain[0]
                .args
                .iter()
                .map(|a| match a {
                    Arg::Input(i) => args.get(*i).cloned().flatten(),
                    Arg::Cur | Arg::Link(_) | Arg::Absent => None,
                })
                .collect();
            if let Some(r) = k.run(ctx, &ins) {
                return r;
            }
            return replay(step, args);
        }
        KernelImpl::Conv(c) => c.run(ctx, args),
        KernelImpl::Depthwise(d) => d.run(ctx, args),
        KernelImpl::MatMul(m) => m.run(ctx, args),
        KernelImpl::Generated(g) => {
            let (cache, plan) = &**g;
            return generated(ctx, cache, plan, args);
        }
        KernelImpl::Activation(a) => {
            let (act, cache, plan) = &**a;
            if let [Some(x)] = args {
                if let Ok(xv) = x.as_slice::<f32>() {
                    let y = activation::run(ctx, act, xv);
                    return Ok(vec![Tensor::new(x.shape().to_vec(), y)?]);
                }
            }
            return generated(ctx, cache, plan, args);
        }
        KernelImpl::Fused(plan) => {
            let ins = args
                .iter()
                .map(|a| {
                    a.clone()
                        .ok_or_else(|| IrError::msg("a fused kernel's input is absent"))
                })
                .collect::<Result<Vec<_>>>()?;
            return plan.run(ctx, &ins, None);
        }
    };
    match native {
        Some(r) => r.map(|t| vec![t]),
        None => replay(step, args),
    }
}

/// The kernel for an elementwise group `sub` (its fallback plan `plan`).
pub(crate) fn group_kernel(sub: Graph, plan: Plan) -> KernelImpl {
    let cache = crate::codegen::KernelCache::new(sub);
    match activation::of_group(cache.body()) {
        Some(act) => KernelImpl::Activation(Box::new((act, cache, plan))),
        None => KernelImpl::Generated(Box::new((cache, plan))),
    }
}

/// A generated kernel on `args`, or its plan where the generator declines.
fn generated(
    ctx: &Ctx,
    cache: &crate::codegen::KernelCache,
    plan: &Plan,
    args: &[Option<Tensor>],
) -> Result<Vec<Tensor>> {
    let ins = args
        .iter()
        .map(|a| {
            a.clone()
                .ok_or_else(|| IrError::msg("a fused kernel's input is absent"))
        })
        .collect::<Result<Vec<_>>>()?;
    let shapes: Vec<Vec<usize>> = ins.iter().map(|t| t.shape().to_vec()).collect();
    match cache.get(&shapes) {
        Ok(kernel) => kernel.run_on(ctx.pool, &ins.iter().collect::<Vec<_>>()),
        Err(_) => plan.run(ctx, &ins, None),
    }
}

/// The chain through `ir::eval`, link by link.
fn replay(step: &Step, args: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let mut cur: Vec<Tensor> = Vec::new();
    let mut links: Vec<Option<Tensor>> = Vec::with_capacity(step.chain.len());
    for link in &step.chain {
        let ins: Vec<Option<Tensor>> = link
            .args
            .iter()
            .map(|a| match a {
                Arg::Cur => cur.first().cloned(),
                Arg::Link(k) => links.get(*k).cloned().flatten(),
                Arg::Input(i) => args.get(*i).cloned().flatten(),
                Arg::Absent => None,
            })
            .collect();
        cur = kiln_ir::eval::eval_op(&link.op, &ins, link.n_outputs)?;
        links.push(cur.first().cloned());
    }
    Ok(cur)
}
