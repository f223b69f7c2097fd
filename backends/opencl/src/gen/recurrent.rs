//! RNN, GRU and LSTM as one kernel writing every output: one work-group per (direction,
//! batch entry), one work-item per hidden unit. A step needs the whole previous hidden
//! state, so the state lives in local memory and the group meets at a barrier between
//! steps; the cell state stays in the work-item. Semantics follow `ir::eval` (gate order,
//! activations and their alpha/beta, clip, sequence_lens, layout, input_forget,
//! linear_before_reset, peepholes), with math in `M` as the other generators.

use super::{ctype, dims, literal, PRELUDE};
use kiln_ir::{Direction, Graph, NodeId, Op, RnnKind, Value};
use std::fmt::Write;

/// The kernel: its name, the work-items (`groups * local`), the group size and the
/// (dtype, shape) of each output it writes.
pub struct RecurrentSpec {
    pub name: String,
    pub elements: usize,
    pub local: usize,
}

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::Rnn { .. })
}

/// An activation as an expression of `x` (a C expression of type M).
fn activation(name: &str, alphas: &mut impl Iterator<Item = f64>, betas: &mut impl Iterator<Item = f64>) -> Result<String, String> {
    let x = "(X)";
    Ok(match name.to_ascii_lowercase().as_str() {
        "relu" => format!("k_relu{x}"),
        "tanh" => format!("tanh{x}"),
        "sigmoid" => format!("k_sigmoid{x}"),
        "affine" => {
            let (a, b) = (alphas.next().unwrap_or(1.0), betas.next().unwrap_or(0.0));
            format!("((M){a:e} * {x} + (M){b:e})")
        }
        "leakyrelu" => {
            let a = alphas.next().unwrap_or(0.01);
            format!("({x} >= 0 ? {x} : (M){a:e} * {x})")
        }
        "thresholdedrelu" => {
            let a = alphas.next().unwrap_or(1.0);
            format!("({x} > (M){a:e} ? {x} : (M)0)")
        }
        "scaledtanh" => {
            let (a, b) = (alphas.next().unwrap_or(1.0), betas.next().unwrap_or(1.0));
            format!("((M){a:e} * tanh((M){b:e} * {x}))")
        }
        "hardsigmoid" => {
            let (a, b) = (alphas.next().unwrap_or(0.2), betas.next().unwrap_or(0.5));
            format!("k_clamp((M){a:e} * {x} + (M){b:e}, (M)0, (M)1)")
        }
        "elu" => {
            let a = alphas.next().unwrap_or(1.0);
            format!("({x} >= 0 ? {x} : (M){a:e} * (exp({x}) - 1))")
        }
        "softsign" => format!("({x} / (1 + fabs({x})))"),
        "softplus" => format!("log1p(exp({x}))"),
        other => return Err(format!("unknown activation function `{other}`")),
    })
}

/// The OpenCL C source of recurrent node `n` whose kernel arguments are `buffers` (inputs
/// that are not one-element constants, in order) then one output buffer per node output.
pub fn generate(graph: &Graph, n: NodeId, buffers: &[Value], prefix: &str, fp64: bool, max_group: usize) -> Result<(String, RecurrentSpec), String> {
    let node = graph.node(n);
    let Op::Rnn { kind, direction, activations, activation_alpha, activation_beta, clip, layout, input_forget, linear_before_reset, .. } =
        &node.op
    else {
        return Err("not a recurrent op".into());
    };
    let ins = graph.inputs_of(n);
    let x = ins.first().copied().flatten().ok_or("x is missing")?;
    let r = ins.get(2).copied().flatten().ok_or("r is missing")?;
    let dtype = graph.value_type(x).dtype;
    let ty = ctype(dtype).filter(|_| dtype.is_float()).ok_or(format!("{dtype} tensors"))?;
    let (xs, rs) = (dims(graph, x)?, dims(graph, r)?);
    if xs.len() != 3 || rs.len() != 3 {
        return Err("x and r must have rank 3".into());
    }
    let lay = *layout == 1;
    let (seq, batch, isz) = if lay { (xs[1], xs[0], xs[2]) } else { (xs[0], xs[1], xs[2]) };
    let hid = rs[2];
    let dirs = if *direction == Direction::Bidirectional { 2 } else { 1 };
    let gates = match kind {
        RnnKind::Rnn => 1,
        RnnKind::Gru => 3,
        RnnKind::Lstm => 4,
    };
    if hid == 0 || hid > max_group {
        return Err(format!("hidden size {hid}: one work-group holds one state, and this device's groups hold 1 to {max_group}"));
    }
    // Activations per direction: RNN one, GRU two (gates, candidate), LSTM three.
    let per_dir = match kind {
        RnnKind::Rnn => 1,
        RnnKind::Gru => 2,
        RnnKind::Lstm => 3,
    };
    let names: Vec<String> = if activations.is_empty() {
        let d: &[&str] = match kind {
            RnnKind::Rnn => &["Tanh"],
            RnnKind::Gru => &["Sigmoid", "Tanh"],
            RnnKind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        };
        d.iter().cycle().take(per_dir * dirs).map(|s| s.to_string()).collect()
    } else if activations.len() == per_dir && dirs == 2 {
        activations.iter().chain(activations.iter()).cloned().collect()
    } else if activations.len() == per_dir * dirs {
        activations.clone()
    } else {
        return Err(format!("{} activations for {dirs} direction(s)", activations.len()));
    };
    let mut alphas = activation_alpha.iter().map(|&a| a as f64);
    let mut betas = activation_beta.iter().map(|&b| b as f64);
    let acts: Vec<String> = names.iter().map(|a| activation(a, &mut alphas, &mut betas)).collect::<Result<_, _>>()?;

    let mut src = String::from(if fp64 { "#define KILN_FP64\n" } else { "" });
    src.push_str(PRELUDE);
    // in{i}(idx): input i's element at linear index idx (0 when the input is absent).
    let mut params = Vec::new();
    for (k, &b) in buffers.iter().enumerate() {
        let t = ctype(graph.value_type(b).dtype).ok_or("half tensors")?;
        params.push(format!("__global const {t}* restrict b{k}"));
    }
    for i in 0..8 {
        let v = ins.get(i).copied().flatten();
        let read = match v {
            None => "0".to_string(),
            Some(v) => match buffers.iter().position(|&b| b == v) {
                Some(k) => format!("b{k}[idx]"),
                None => literal(graph.const_value(v).ok_or("an input is neither a buffer nor a constant")?)?,
            },
        };
        let ret = if i == 4 { "long" } else { "M" };
        let _ = writeln!(src, "#define in{i}(idx) (({ret}){read})");
        let _ = writeln!(src, "#define has{i} {}", v.is_some() as u8);
    }
    let outs = node.outputs.len();
    for k in 0..outs {
        params.push(format!("__global {ty}* restrict out{k}"));
    }
    for (d, chunk) in acts.chunks(per_dir).enumerate() {
        for (j, a) in chunk.iter().enumerate() {
            let _ = writeln!(src, "#define ACT{d}_{j}(X) ({a})");
        }
    }
    let clamp = match clip {
        Some(c) => format!("k_clamp(v, (M)-{c:e}, (M){c:e})", c = *c as f64),
        None => "v".into(),
    };
    let _ = writeln!(src, "static inline M clip(M v) {{ return {clamp}; }}");
    let name = format!("{prefix}_rnn");
    let gh = gates * hid;
    let xo = if lay { format!("(b * {seq}L + t) * {isz}L") } else { format!("(t * {batch}L + b) * {isz}L") };
    let yo = if lay { format!("((b * {seq}L + t) * {dirs}L + d) * {hid}L + j") } else { format!("((t * {dirs}L + d) * {batch}L + b) * {hid}L + j") };
    let so = if lay { format!("(b * {dirs}L + d) * {hid}L + j") } else { format!("(d * {batch}L + b) * {hid}L + j") };
    let reverse = if *direction == Direction::Reverse { "1".to_string() } else { "(d == 1)".to_string() };
    let mut s = String::new();
    let _ = writeln!(s, "__kernel void {name}({}) {{", params.join(", "));
    let _ = writeln!(s, "  __local M h[{hid}]; __local M aux[{hid}];");
    let _ = writeln!(s, "  long j = get_local_id(0); long grp = get_group_id(0); long d = grp / {batch}L; long b = grp % {batch}L;");
    let _ = writeln!(s, "  long len = has4 ? in4(b) : {seq}L; int rev = {reverse};");
    let _ = writeln!(s, "  M c = has6 ? in6({so}) : 0; h[j] = has5 ? in5({so}) : 0;");
    if outs > 0 {
        let _ = writeln!(s, "  for (long t = len; t < {seq}L; t++) out0[{yo}] = 0;");
    }
    let _ = writeln!(s, "  barrier(CLK_LOCAL_MEM_FENCE);");
    // XW(dst, G) / HR(dst, G, V): unit j's row of gate G times x_t / times V (in k).
    let _ = writeln!(s, "#define XW(dst, G) {{ M a_ = 0; for (long k = 0; k < {isz}L; k++) a_ += in1((d * {gh}L + (G) * {hid}L + j) * {isz}L + k) * in0(xo + k); dst = a_; }}");
    let _ = writeln!(s, "#define HR(dst, G, V) {{ M a_ = 0; for (long k = 0; k < {hid}L; k++) a_ += in2((d * {gh}L + (G) * {hid}L + j) * {hid}L + k) * (V); dst = a_; }}");
    let _ = writeln!(s, "#define WB(G) (has3 ? in3(d * {}L + (G) * {hid}L + j) : (M)0)", 2 * gh);
    let _ = writeln!(s, "#define RB(G) (has3 ? in3(d * {}L + {gh}L + (G) * {hid}L + j) : (M)0)", 2 * gh);
    let _ = writeln!(s, "#define P(G) (has7 ? in7(d * {}L + (G) * {hid}L + j) : (M)0)", 3 * hid);
    let _ = writeln!(s, "  for (long step = 0; step < len; step++) {{");
    let _ = writeln!(s, "    long t = rev ? len - 1 - step : step; long xo = {xo};");
    let _ = writeln!(s, "    M x0, x1, x2, x3, r0, r1, r2, r3;");
    for gi in 0..gates {
        let _ = writeln!(s, "    XW(x{gi}, {gi}); HR(r{gi}, {gi}, h[k]);");
    }
    let act = |j: usize, v: &str| {
        let one = |d: usize| format!("ACT{d}_{j}({v})");
        if dirs == 1 { one(0) } else { format!("(d == 0 ? {} : {})", one(0), one(1)) }
    };
    let pre = |gi: usize| format!("x{gi} + r{gi} + WB({gi}) + RB({gi})");
    match kind {
        RnnKind::Rnn => {
            let _ = writeln!(s, "    M hn = {};", act(0, &format!("clip({})", pre(0))));
        }
        RnnKind::Gru => {
            let _ = writeln!(s, "    M z = {};", act(0, &format!("clip({})", pre(0))));
            let _ = writeln!(s, "    M rg = {};", act(0, &format!("clip({})", pre(1))));
            if *linear_before_reset {
                let _ = writeln!(s, "    M cand = x2 + WB(2) + rg * (r2 + RB(2));");
            } else {
                // The reset gate scales the whole state before R: every unit's gate first.
                let _ = writeln!(s, "    aux[j] = rg * h[j]; barrier(CLK_LOCAL_MEM_FENCE);");
                let _ = writeln!(s, "    HR(r2, 2, aux[k]); M cand = x2 + WB(2) + r2 + RB(2);");
            }
            let _ = writeln!(s, "    M hh = {}; M hn = (1 - z) * hh + z * h[j];", act(1, "clip(cand)"));
        }
        RnnKind::Lstm => {
            let _ = writeln!(s, "    M i = {};", act(0, &format!("clip({} + P(0) * c)", pre(0))));
            if *input_forget {
                let _ = writeln!(s, "    M f = 1 - i;");
            } else {
                let _ = writeln!(s, "    M f = {};", act(0, &format!("clip({} + P(2) * c)", pre(2))));
            }
            let _ = writeln!(s, "    M cc = {};", act(1, &format!("clip({})", pre(3))));
            let _ = writeln!(s, "    c = f * c + i * cc;");
            let _ = writeln!(s, "    M o = {};", act(0, &format!("clip({} + P(1) * c)", pre(1))));
            let _ = writeln!(s, "    M hn = o * {};", act(2, "clip(c)"));
        }
    }
    let _ = writeln!(s, "    barrier(CLK_LOCAL_MEM_FENCE); h[j] = hn; barrier(CLK_LOCAL_MEM_FENCE);");
    if outs > 0 {
        let _ = writeln!(s, "    out0[{yo}] = ({ty})hn;");
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  if (len == 0) {{ h[j] = 0; c = 0; }}");
    if outs > 1 {
        let _ = writeln!(s, "  out1[{so}] = ({ty})h[j];");
    }
    if outs > 2 {
        let _ = writeln!(s, "  out2[{so}] = ({ty})c;");
    }
    s.push_str("}\n");
    src.push_str(&s);
    Ok((src, RecurrentSpec { name, elements: dirs * batch * hid, local: hid }))
}
