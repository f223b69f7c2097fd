//! OpenCL C for one kernel: a region of a graph (one node, or a fused kernel's body) whose
//! shapes are all concrete.
//!
//! Every value of the region becomes an inline function from its coordinates to its element
//! (`v3(b0, b1, i0, i1)`): a kernel input reads its buffer, an elementwise op applies itself
//! to its operands at the broadcast coordinates, a data-movement op reads its input at
//! moved coordinates, and an anchor (conv, matmul, reduction, pooling) loops over what one
//! output element needs. The kernel itself is one work-item per output element calling the
//! output's function, so a fused body becomes one kernel with no intermediate buffers.

mod attention;
mod bitcast;
mod einsum;
mod elementwise;
mod indexed;
mod loss;
mod movement;
mod nn;
mod qlinear;
mod quant;
pub mod recurrent;
mod reduce;
mod remap;
mod rotary;
mod scan;
mod scatter;
mod spatial;
mod topk;

use kiln_ir::{DType, Graph, NodeId, Op, Value};
use std::collections::HashMap;
use std::fmt::Write;

pub const PRELUDE: &str = include_str!("prelude.cl");

/// A kernel to generate: `nodes` (in topological order) computed from `buffers`.
pub struct Region<'g> {
    pub graph: &'g Graph,
    pub nodes: Vec<NodeId>,
    /// The kernel's buffer arguments: run-time inputs, then constants of more than one
    /// element (the caller uploads those once).
    pub buffers: Vec<Value>,
    pub outputs: Vec<Value>,
}

/// One `__kernel` of a generated source.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub name: String,
    /// Work-items: the output's element count.
    pub elements: usize,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// Why a region cannot be generated: the node and the reason.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub node: String,
    pub message: String,
}

pub(crate) type Body = Result<String, String>;

/// The OpenCL C type values of `d` are computed as: the half types compute in float (their
/// buffers hold half or ushort, see [`storage`], and each value rounds to its type as
/// `ir::eval` rounds each op's result).
pub fn ctype(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "float",
        DType::F64 => "double",
        DType::I8 => "char",
        DType::I16 => "short",
        DType::I32 => "int",
        DType::I64 => "long",
        DType::U8 | DType::Bool => "uchar",
        DType::U16 => "ushort",
        DType::U32 => "uint",
        DType::U64 => "ulong",
        DType::F16 | DType::BF16 => "float",
    })
}

/// The OpenCL C type of a buffer of `d`: f16 is `half`, read and written with
/// vload_half/vstore_half (core OpenCL 1.2, no cl_khr_fp16); bf16 is its bits as `ushort`.
fn storage(d: DType) -> Option<&'static str> {
    match d {
        DType::F16 => Some("half"),
        DType::BF16 => Some("ushort"),
        d => ctype(d),
    }
}

/// Element `idx` of buffer `buf` of `d`, as its [`ctype`].
fn load(d: DType, buf: &str, idx: &str) -> String {
    match d {
        DType::F16 => format!("vload_half({idx}, {buf})"),
        DType::BF16 => format!("as_float(((uint){buf}[{idx}]) << 16)"),
        _ => format!("{buf}[{idx}]"),
    }
}

/// The statement storing `val` at `out[idx]` for an output of `d`.
fn store(d: DType, val: &str, idx: &str) -> String {
    match d {
        DType::F16 => format!("vstore_half_rte({val}, {idx}, out);"),
        DType::BF16 => format!("out[{idx}] = k_bf16_bits({val});"),
        _ => format!("out[{idx}] = {val};"),
    }
}

/// Rounding to the half types (round to nearest even, NaN kept), as the `half` crate does.
const HALF_HELPERS: &str = "static float k_round_f16(float x) { ushort h; vstore_half_rte(x, 0, (half*)&h); return vload_half(0, (const half*)&h); }
static ushort k_bf16_bits(float x) { uint u = as_uint(x); if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u); u += 0x7fffu + ((u >> 16) & 1u); return (ushort)(u >> 16); }
static float k_round_bf16(float x) { return as_float(((uint)k_bf16_bits(x)) << 16); }
";

pub(crate) struct Gen<'g> {
    pub graph: &'g Graph,
    ids: HashMap<Value, usize>,
    params: String,
    pass: String,
}

/// `v`'s shape, which must be concrete here.
pub(crate) fn dims(graph: &Graph, v: Value) -> Result<Vec<usize>, String> {
    graph
        .value_type(v)
        .shape
        .concrete()
        .ok_or_else(|| format!("shape {} is not concrete", graph.value_type(v).shape))
}

impl<'g> Gen<'g> {
    /// `fname(PASS, coords…)`: the element of `v` at `coords`.
    pub fn at(&self, v: Value, coords: &[String]) -> String {
        let id = self.ids[&v];
        let mut args: Vec<&str> = Vec::new();
        if !self.pass.is_empty() {
            args.push(&self.pass);
        }
        args.extend(coords.iter().map(|s| s.as_str()));
        format!("v{id}({})", args.join(", "))
    }

    /// `v` read at the output coordinates `i0..` of a result of rank `out_rank`, with
    /// numpy broadcasting.
    pub fn at_broadcast(&self, v: Value, out_rank: usize) -> Result<String, String> {
        let s = dims(self.graph, v)?;
        let off = out_rank.checked_sub(s.len()).ok_or("operand rank above the result's")?;
        let coords: Vec<String> =
            s.iter().enumerate().map(|(j, &d)| if d == 1 { "0".into() } else { format!("i{}", j + off) }).collect();
        Ok(self.at(v, &coords))
    }

    pub fn dtype(&self, v: Value) -> DType {
        self.graph.value_type(v).dtype
    }

    /// The math type for float `d`: f64 stays double; f32 computes in `M`.
    pub fn math(&self, d: DType) -> &'static str {
        if d == DType::F64 {
            "double"
        } else {
            "M"
        }
    }

    fn signature(&self, id: usize, ty: &str, rank: usize) -> String {
        let mut ps: Vec<String> = Vec::new();
        if !self.params.is_empty() {
            ps.push(self.params.clone());
        }
        ps.extend((0..rank).map(|j| format!("long i{j}")));
        format!("static {ty} v{id}({})", ps.join(", "))
    }
}

/// Row-major linear index of `coords` in `shape`.
pub(crate) fn linear(shape: &[usize], coords: &[String]) -> String {
    if shape.is_empty() {
        return "0".into();
    }
    let mut stride = 1usize;
    let mut terms = Vec::new();
    for (d, c) in shape.iter().zip(coords).rev() {
        if *d != 1 {
            terms.push(if stride == 1 { format!("({c})") } else { format!("({c})*{stride}L") });
        }
        stride *= d;
    }
    if terms.is_empty() {
        "0".into()
    } else {
        terms.reverse();
        terms.join("+")
    }
}

/// Statements that split a linear index `lin` (a C expression) into `{prefix}0..` over
/// `shape`.
pub(crate) fn delinearize(shape: &[usize], lin: &str, prefix: &str) -> String {
    let mut s = format!("long {prefix}r = {lin};");
    for (j, d) in shape.iter().enumerate().rev() {
        let _ = write!(s, " long {prefix}{j} = {prefix}r % {d}L; {prefix}r /= {d}L;");
    }
    s
}

pub(crate) fn literal(t: &kiln_ir::Tensor) -> Result<String, String> {
    let d = t.dtype();
    let ty = ctype(d).ok_or_else(|| format!("{d} tensors"))?;
    if d.is_float() {
        let x = t.to_f64_vec()[0];
        return Ok(if x.is_nan() {
            format!("(({ty})NAN)")
        } else if x.is_infinite() {
            format!("(({ty}){}INFINITY)", if x < 0.0 { "-" } else { "" })
        } else {
            format!("(({ty}){x:e})")
        });
    }
    if d == DType::U64 {
        let v: &[u64] = t.as_slice().map_err(|e| e.message)?;
        return Ok(format!("(({ty}){}UL)", v[0]));
    }
    let v = t.to_i64_vec()[0];
    Ok(if v == i64::MIN { format!("(({ty})(-9223372036854775807L-1))") } else { format!("(({ty}){v}L)") })
}

/// The OpenCL C source of `region`: one `__kernel` per output, named `{prefix}_{k}`.
pub fn generate(region: &Region, prefix: &str, fp64: bool) -> Result<(String, Vec<KernelSpec>), Refusal> {
    let graph = region.graph;
    let refuse = |node: &str, message: String| Refusal { node: node.to_string(), message };
    let first = region.nodes.first().map(|&n| graph.node(n).name.clone()).unwrap_or_default();
    let mut gen = Gen { graph, ids: HashMap::new(), params: String::new(), pass: String::new() };
    let mut params = Vec::new();
    let mut pass = Vec::new();
    for (k, &b) in region.buffers.iter().enumerate() {
        let ty = storage(gen.dtype(b)).ok_or_else(|| refuse(&first, format!("{} tensors", gen.dtype(b))))?;
        params.push(format!("__global const {ty}* restrict b{k}"));
        pass.push(format!("b{k}"));
    }
    gen.params = params.join(", ");
    gen.pass = pass.join(", ");

    let mut src = String::new();
    let mut next = 0usize;
    for (k, &b) in region.buffers.iter().enumerate() {
        gen.ids.insert(b, next);
        let shape = dims(graph, b).map_err(|m| refuse(&first, m))?;
        let coords: Vec<String> = (0..shape.len()).map(|j| format!("i{j}")).collect();
        let ty = ctype(gen.dtype(b)).unwrap_or("float");
        let read = load(gen.dtype(b), &format!("b{k}"), &linear(&shape, &coords));
        let _ = writeln!(src, "{} {{ return {read}; }}", gen.signature(next, ty, shape.len()));
        next += 1;
    }
    for &n in &region.nodes {
        let node = graph.node(n);
        let ins = graph.inputs_of(n);
        // Scalar constants the node reads become literals.
        for v in ins.iter().flatten() {
            if gen.ids.contains_key(v) {
                continue;
            }
            let Some(t) = graph.const_value(*v) else {
                return Err(refuse(&node.name, "an input is neither computed here nor a kernel argument".into()));
            };
            if t.len() != 1 {
                return Err(refuse(&node.name, "a constant of several elements is not a kernel argument".into()));
            }
            let lit = literal(t).map_err(|m| refuse(&node.name, m))?;
            let ty = ctype(t.dtype()).unwrap_or("float");
            gen.ids.insert(*v, next);
            let _ = writeln!(src, "{} {{ return {lit}; }}", gen.signature(next, ty, t.rank()));
            next += 1;
        }
        for k in 0..node.outputs.len() {
            let v = Value::new(n, k);
            let ty = ctype(node.outputs[k].dtype).ok_or_else(|| refuse(&node.name, format!("{} tensors", node.outputs[k].dtype)))?;
            let shape = dims(graph, v).map_err(|m| refuse(&node.name, m))?;
            let body = body(&gen, n, k, &shape).map_err(|m| refuse(&node.name, m))?;
            let round = match node.outputs[k].dtype {
                DType::F16 => Some("k_round_f16"),
                DType::BF16 => Some("k_round_bf16"),
                _ => None,
            };
            if let Some(round) = round {
                // The body computes in float; the value is its result rounded to the type.
                let _ = writeln!(src, "{} {{\n{body}\n}}", gen.signature(next, ty, shape.len()).replacen(&format!(" v{next}("), &format!(" v{next}_full("), 1));
                let mut args: Vec<String> = Vec::new();
                if !gen.pass.is_empty() {
                    args.push(gen.pass.clone());
                }
                args.extend((0..shape.len()).map(|j| format!("i{j}")));
                let _ = writeln!(src, "{} {{ return {round}(v{next}_full({})); }}", gen.signature(next, ty, shape.len()), args.join(", "));
            } else {
                let _ = writeln!(src, "{} {{\n{body}\n}}", gen.signature(next, ty, shape.len()));
            }
            gen.ids.insert(v, next);
            next += 1;
        }
    }
    let mut kernels = Vec::new();
    for (k, &o) in region.outputs.iter().enumerate() {
        if !gen.ids.contains_key(&o) {
            // Specializing can fold a fused kernel's output into a constant of the body.
            return Err(refuse(&first, "an output is a constant folded inside the kernel, which is not generated".into()));
        }
        let dtype = gen.dtype(o);
        let ty = storage(dtype).ok_or_else(|| refuse(&first, format!("{dtype} tensors")))?;
        let shape = dims(graph, o).map_err(|m| refuse(&first, m))?;
        let elements: usize = shape.iter().product();
        let name = format!("{prefix}_{k}");
        let mut ps = Vec::new();
        if !gen.params.is_empty() {
            ps.push(gen.params.clone());
        }
        ps.push(format!("__global {ty}* restrict out"));
        let coords: Vec<String> = (0..shape.len()).map(|j| format!("i{j}")).collect();
        let _ = writeln!(
            src,
            "__kernel void {name}({}) {{\n  long g = get_global_id(0); if (g >= {elements}L) return;\n  {}\n  {}\n}}",
            ps.join(", "),
            delinearize(&shape, "g", "i"),
            store(dtype, &gen.at(o, &coords), "g")
        );
        kernels.push(KernelSpec { name, elements, dtype, shape });
    }
    let mut text = String::from(if fp64 { "#define KILN_FP64\n" } else { "" });
    text.push_str(PRELUDE);
    text.push_str(HALF_HELPERS);
    text.push_str(&src);
    Ok((text, kernels))
}

/// The statements computing output `k` of node `n` at coordinates `i0..`.
fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Body {
    let node = g.graph.node(n);
    let ins = g.graph.inputs_of(n);
    if let Some(e) = elementwise::expr(g, &node.op, &ins, node.outputs[0].dtype, shape.len()) {
        return Ok(format!("  return {};", e?));
    }
    if let Some(b) = movement::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = reduce::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = nn::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = einsum::body(g, n, shape) {
        return b;
    }
    if let Some(b) = indexed::body(g, n, shape) {
        return b;
    }
    if let Some(b) = scan::body(g, n, shape) {
        return b;
    }
    if let Some(b) = attention::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = rotary::body(g, n, shape) {
        return b;
    }
    if let Some(b) = spatial::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = loss::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = scatter::body(g, n, shape) {
        return b;
    }
    if let Some(b) = remap::body(g, n, shape) {
        return b;
    }
    if let Some(b) = topk::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = bitcast::body(g, n, shape) {
        return b;
    }
    if let Some(b) = quant::body(g, n, k, shape) {
        return b;
    }
    if let Some(b) = qlinear::body(g, n, shape) {
        return b;
    }
    if recurrent::handles(&node.op) {
        return Err("a recurrent op is a kernel of its own, not part of a fused one".into());
    }
    Err(format!("the OpenCL device does not generate `{}`", node.op.name()))
}

/// Whether the generator has a kernel for `op` at all (dtypes and attributes are checked
/// when generating).
pub fn generates(op: &Op) -> bool {
    elementwise::handles(op) || movement::handles(op) || reduce::handles(op) || nn::handles(op) || einsum::handles(op) || recurrent::handles(op) || indexed::handles(op) || scan::handles(op) || attention::handles(op) || rotary::handles(op) || spatial::handles(op)
        || loss::handles(op)
        || scatter::handles(op)
        || remap::handles(op)
        || topk::handles(op)
        || bitcast::handles(op)
        || quant::handles(op)
        || qlinear::handles(op)
}

/// Elementwise ops (for refuse lists).
pub fn elementwise_op(op: &Op) -> bool {
    elementwise::handles(op) || bitcast::handles(op) || matches!(op, Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. })
}

/// Data-movement ops, and ops made of their coordinates (for refuse lists).
pub fn movement_op(op: &Op) -> bool {
    movement::handles(op) || indexed::handles(op) || scatter::handles(op) || remap::handles(op)
}

/// A constant input's values as integers (Slice starts, Pad pads…), or an error naming it.
pub(crate) fn const_ints(g: &Gen, v: Option<Value>, what: &str) -> Result<Option<Vec<i64>>, String> {
    match v {
        None => Ok(None),
        Some(v) => match g.graph.const_value(v) {
            Some(t) => Ok(Some(t.to_i64_vec())),
            None => Err(format!("{what} must be a constant")),
        },
    }
}
