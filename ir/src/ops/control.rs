//! Control flow: If, Loop and Scan. Their regions are closed graphs: the bridge passes
//! every outer value a region reads as an explicit captured input, after the op's own
//! inputs, and the region takes them as its last inputs. Evaluation runs the regions with
//! `eval::run_graph`.
//!
//! Loop follows onnxruntime where the ONNX text is loose: the body's condition output is
//! honoured even when the node has no condition input (which then starts true), so a loop
//! with neither a trip count nor a condition ends when the body says so. No loop may run
//! more than 2^31 iterations, and stacked scan outputs are bounded at 2^31 elements.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::eval::run_graph;
use crate::graph::Graph;
use crate::op::Op;
use crate::ops::util::{input, input_type, norm_axis, opt_input};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{checked_numel, Storable, Tensor};

/// Most iterations a Loop may run, and most elements a stacked scan output may hold.
const LIMIT: usize = 1 << 31;

pub(crate) fn infer(
    op: &Op,
    types: &[Option<&TensorType>],
    _consts: &[Option<&Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<TensorType>>> {
    match op {
        Op::If {
            then_branch,
            else_branch,
        } => Some(infer_if(then_branch, else_branch, types, n_outputs)),
        Op::Loop { body, num_captured } => Some(infer_loop(body, *num_captured, types, n_outputs)),
        Op::Scan { .. } => Some(infer_scan(op, types, n_outputs)),
        Op::Fused { body } => Some(infer_fused(body, types, n_outputs)),
        _ => None,
    }
}

pub(crate) fn eval(
    op: &Op,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Option<Result<Vec<Tensor>>> {
    match op {
        Op::If {
            then_branch,
            else_branch,
        } => Some(eval_if(then_branch, else_branch, inputs, n_outputs)),
        Op::Loop { body, num_captured } => Some(eval_loop(body, *num_captured, inputs, n_outputs)),
        Op::Scan { .. } => Some(eval_scan(op, inputs, n_outputs)),
        Op::Fused { body } => Some(required(inputs, 0).and_then(|ins| run_graph(body, &ins))),
        _ => None,
    }
}

// ── Shared helpers ─────────────────────────────────────────────────────────────────────

/// The declared types of a region's outputs.
fn output_types(g: &Graph) -> Vec<TensorType> {
    g.outputs
        .iter()
        .map(|(_, v)| g.value_type(*v).clone())
        .collect()
}

/// A shape both `a` and `b` fit: equal dims stay, others become unknown; differing ranks
/// give an unknown rank.
fn merge_shapes(a: &Shape, b: &Shape) -> Shape {
    match (a.dims(), b.dims()) {
        (Some(x), Some(y)) if x.len() == y.len() => Shape(Some(
            x.iter()
                .zip(y)
                .map(|(p, q)| if p == q { p.clone() } else { Dim::Unknown })
                .collect(),
        )),
        _ => Shape::unknown_rank(),
    }
}

fn merge_types(what: &str, a: &TensorType, b: &TensorType) -> Result<TensorType> {
    if a.dtype != b.dtype {
        return Err(IrError::msg(format!(
            "{what}: {} and {} differ in element type",
            a.dtype, b.dtype
        )));
    }
    Ok(TensorType::new(a.dtype, merge_shapes(&a.shape, &b.shape)))
}

/// A count attribute as usize.
fn count(what: &str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| IrError::msg(format!("{what} must not be negative, found {v}")))
}

/// Every input from `from` on, each of which must be present.
fn required(inputs: &[Option<Tensor>], from: usize) -> Result<Vec<Tensor>> {
    (from..inputs.len())
        .map(|i| input(inputs, i).cloned())
        .collect()
}

/// A one-element tensor as a bool (any numeric type: nonzero is true).
fn truth(t: &Tensor, what: &str) -> Result<bool> {
    if t.len() != 1 {
        return Err(IrError::msg(format!(
            "{what} must have one element, found shape {:?}",
            t.shape()
        )));
    }
    Ok(t.to_f64_vec()[0] != 0.0)
}

/// A scalar shaped like the region's declared input `i` (a scalar, or a one-element
/// vector when the region declares rank 1).
fn shaped_scalar(g: &Graph, i: usize, t: Tensor) -> Result<Tensor> {
    let rank1 = g
        .inputs
        .get(i)
        .is_some_and(|&n| g.node(n).outputs.first().and_then(|t| t.shape.rank()) == Some(1));
    if rank1 {
        t.reshape(vec![1])
    } else {
        Ok(t)
    }
}

/// `ts` stacked along a new axis `axis` (all of one shape and type).
fn stack(ts: &[Tensor], axis: usize, what: &str) -> Result<Tensor> {
    let Some(first) = ts.first() else {
        return Err(IrError::msg(format!("{what}: nothing to stack")));
    };
    let s = first.shape();
    for t in ts {
        if t.shape() != s || t.dtype() != first.dtype() {
            return Err(IrError::msg(format!(
                "{what}: iterations produced {}{:?} and {}{:?}; scan outputs must keep one shape",
                first.dtype(),
                s,
                t.dtype(),
                t.shape()
            )));
        }
    }
    if axis > s.len() {
        return Err(IrError::msg(format!(
            "{what}: axis {axis} is out of range for rank {}",
            s.len() + 1
        )));
    }
    let mut shape = s.to_vec();
    shape.insert(axis, ts.len());
    let n = checked_numel(&shape)?;
    if n > LIMIT {
        return Err(IrError::msg(format!(
            "{what}: a stacked output of shape {shape:?} is over 2^31 elements"
        )));
    }
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis..].iter().product();
    let data = crate::with_data!(first.data(), _v, T => {
        let slices: Vec<&[T]> = ts.iter().map(|t| t.as_slice::<T>()).collect::<Result<_>>()?;
        let mut out: Vec<T> = Vec::with_capacity(n);
        for o in 0..outer {
            for sl in &slices {
                out.extend_from_slice(&sl[o * inner..(o + 1) * inner]);
            }
        }
        <T as Storable>::wrap(out)
    });
    Tensor::from_data(shape, data)
}

/// Slice `idx` of `t` along `axis`, with that axis removed.
fn slice_axis(t: &Tensor, axis: usize, idx: usize) -> Result<Tensor> {
    let s = t.shape();
    let len = s[axis];
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let mut shape = s.to_vec();
    shape.remove(axis);
    let map: Vec<usize> = (0..outer)
        .flat_map(|o| (0..inner).map(move |i| (o * len + idx) * inner + i))
        .collect();
    crate::ops::util::gather_flat(t, shape, &map)
}

/// An empty stacked output (zero iterations): [0, ...] from the region's declared slice
/// type, with the new axis at `axis`; unknown slice dims count as 0 (there are no slices).
fn empty_stacked(ty: &TensorType, axis: i64) -> Result<Tensor> {
    let mut dims: Vec<usize> = match ty.shape.dims() {
        Some(d) => d.iter().map(|d| d.known().unwrap_or(0)).collect(),
        None => vec![],
    };
    let a = norm_axis(axis, dims.len() + 1)?;
    dims.insert(a, 0);
    Tensor::zeros(ty.dtype, dims)
}

// ── If ─────────────────────────────────────────────────────────────────────────────────

fn infer_if(
    then_g: &Graph,
    else_g: &Graph,
    types: &[Option<&TensorType>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let c = input_type(types, 0)?;
    if c.dtype != DType::Bool {
        return Err(IrError::msg(format!(
            "the condition must be bool, found {}",
            c.dtype
        )));
    }
    let captured = types.len().saturating_sub(1);
    for (name, g) in [("then", then_g), ("else", else_g)] {
        if g.inputs.len() != captured {
            return Err(IrError::msg(format!(
                "the {name} branch takes {} inputs, the node captures {captured}",
                g.inputs.len()
            )));
        }
        if g.outputs.len() != n_outputs {
            return Err(IrError::msg(format!(
                "the {name} branch has {} outputs, the node has {n_outputs}",
                g.outputs.len()
            )));
        }
    }
    output_types(then_g)
        .iter()
        .zip(output_types(else_g).iter())
        .enumerate()
        .map(|(i, (a, b))| merge_types(&format!("output {i} of the branches"), a, b))
        .collect()
}

fn eval_if(
    then_g: &Graph,
    else_g: &Graph,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let cond = truth(input(inputs, 0)?, "the condition")?;
    let captured = required(inputs, 1)?;
    let branch = if cond { then_g } else { else_g };
    if branch.outputs.len() != n_outputs {
        return Err(IrError::msg(format!(
            "the branch has {} outputs, the node has {n_outputs}",
            branch.outputs.len()
        )));
    }
    run_graph(branch, &captured)
}

// ── Fused kernels ──────────────────────────────────────────────────────────────────────

/// A fused kernel gives its body's declared output types, once its inputs fit the body's.
fn infer_fused(body: &Graph, types: &[Option<&TensorType>], n_outputs: usize) -> Result<Vec<TensorType>> {
    if types.len() != body.inputs.len() || body.outputs.len() != n_outputs {
        return Err(IrError::msg(format!(
            "the kernel body takes {} inputs and gives {} outputs; the node has {} and {}",
            body.inputs.len(),
            body.outputs.len(),
            types.len(),
            n_outputs
        )));
    }
    for (i, (t, &n)) in types.iter().zip(&body.inputs).enumerate() {
        let declared = body.node(n).outputs.first();
        match (t, declared) {
            (Some(t), Some(d)) if crate::verify::compatible(d, t) => {}
            _ => return Err(IrError::msg(format!("kernel input {i} does not fit the body's input {}", body.node(n).name))),
        }
    }
    Ok(output_types(body))
}

// ── Loop ───────────────────────────────────────────────────────────────────────────────

/// (carried, scan outputs) counts of a Loop node, checked against its body.
fn loop_counts(
    body: &Graph,
    num_captured: i64,
    arity: usize,
    n_outputs: usize,
) -> Result<(usize, usize)> {
    let ncap = count("num_captured", num_captured)?;
    let carried = arity.checked_sub(2 + ncap).ok_or_else(|| {
        IrError::msg(format!(
            "a loop with {ncap} captured values needs at least {} inputs, it has {arity}",
            2 + ncap
        ))
    })?;
    if body.inputs.len() != 2 + carried + ncap {
        return Err(IrError::msg(format!(
            "the body takes {} inputs, but the loop passes 2 + {carried} carried + {ncap} captured",
            body.inputs.len()
        )));
    }
    let scans = body.outputs.len().checked_sub(1 + carried).ok_or_else(|| {
        IrError::msg(format!(
            "the body has {} outputs, fewer than 1 + {carried} carried",
            body.outputs.len()
        ))
    })?;
    if n_outputs != carried + scans {
        return Err(IrError::msg(format!(
            "the loop has {n_outputs} outputs, the body gives {carried} carried + {scans} scanned"
        )));
    }
    Ok((carried, scans))
}

fn infer_loop(
    body: &Graph,
    num_captured: i64,
    types: &[Option<&TensorType>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let (carried, _) = loop_counts(body, num_captured, types.len(), n_outputs)?;
    let outs = output_types(body);
    let mut res = Vec::with_capacity(n_outputs);
    for i in 0..carried {
        let init = input_type(types, 2 + i)?;
        res.push(merge_types(
            &format!("carried value {i}"),
            init,
            &outs[1 + i],
        )?);
    }
    for t in &outs[1 + carried..] {
        let shape = match t.shape.dims() {
            Some(d) => Shape(Some(
                std::iter::once(Dim::Unknown)
                    .chain(d.iter().cloned())
                    .collect(),
            )),
            None => Shape::unknown_rank(),
        };
        res.push(TensorType::new(t.dtype, shape));
    }
    Ok(res)
}

fn eval_loop(
    body: &Graph,
    num_captured: i64,
    inputs: &[Option<Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let (carried, scans) = loop_counts(body, num_captured, inputs.len(), n_outputs)?;
    // A negative trip count runs no iterations, as in onnxruntime.
    let max_trips: Option<i64> = match opt_input(inputs, 0) {
        Some(m) => {
            if m.len() != 1 {
                return Err(IrError::msg(format!(
                    "the trip count must have one element, found shape {:?}",
                    m.shape()
                )));
            }
            Some(m.to_i64_vec()[0])
        }
        None => None,
    };
    let mut cond = match opt_input(inputs, 1) {
        Some(c) => truth(c, "the loop condition")?,
        None => true,
    };
    let mut state: Vec<Tensor> = (0..carried)
        .map(|i| input(inputs, 2 + i).cloned())
        .collect::<Result<_>>()?;
    let captured = required(inputs, 2 + carried)?;
    let mut scanned: Vec<Vec<Tensor>> = vec![Vec::new(); scans];
    let mut scanned_elems = 0usize;
    let mut it: i64 = 0;
    while cond && max_trips.is_none_or(|m| it < m) {
        if it as usize >= LIMIT {
            return Err(IrError::msg("the loop ran 2^31 iterations without ending"));
        }
        let mut args = Vec::with_capacity(body.inputs.len());
        args.push(shaped_scalar(body, 0, Tensor::scalar(it))?);
        args.push(shaped_scalar(body, 1, Tensor::scalar(cond))?);
        args.extend(state.iter().cloned());
        args.extend(captured.iter().cloned());
        let mut outs = run_graph(body, &args)?.into_iter();
        let c = outs
            .next()
            .ok_or_else(|| IrError::msg("the body gave no condition"))?;
        cond = truth(&c, "the body's condition output")?;
        for s in state.iter_mut() {
            *s = outs
                .next()
                .ok_or_else(|| IrError::msg("the body gave too few outputs"))?;
        }
        for sc in scanned.iter_mut() {
            let t = outs
                .next()
                .ok_or_else(|| IrError::msg("the body gave too few outputs"))?;
            scanned_elems = scanned_elems.saturating_add(t.len());
            if scanned_elems > LIMIT {
                return Err(IrError::msg(
                    "the loop's scan outputs grew past 2^31 elements",
                ));
            }
            sc.push(t);
        }
        it += 1;
    }
    let decl = output_types(body);
    let mut res = state;
    for (k, sc) in scanned.iter().enumerate() {
        res.push(if sc.is_empty() {
            empty_stacked(&decl[1 + carried + k], 0)?
        } else {
            stack(sc, 0, &format!("scan output {k}"))?
        });
    }
    Ok(res)
}

// ── Scan ───────────────────────────────────────────────────────────────────────────────

/// Scan's layout: counts of state values, scan inputs, captured values and scan outputs,
/// and the per-input/-output axes and directions with their defaults filled in.
struct ScanPlan {
    states: usize,
    scan_in: usize,
    scan_out: usize,
    in_axes: Vec<i64>,
    in_rev: Vec<bool>,
    out_axes: Vec<i64>,
    out_rev: Vec<bool>,
}

fn scan_plan(op: &Op, arity: usize, n_outputs: usize) -> Result<(ScanPlan, &Graph)> {
    let Op::Scan {
        body,
        num_scan_inputs,
        num_captured,
        scan_input_axes,
        scan_input_directions,
        scan_output_axes,
        scan_output_directions,
    } = op
    else {
        return Err(IrError::msg("not a scan op"));
    };
    let scan_in = count("num_scan_inputs", *num_scan_inputs)?;
    let ncap = count("num_captured", *num_captured)?;
    if scan_in == 0 {
        return Err(IrError::msg("num_scan_inputs must be at least 1"));
    }
    let states = arity.checked_sub(scan_in + ncap).ok_or_else(|| {
        IrError::msg(format!(
            "scan has {arity} inputs, fewer than {scan_in} scanned + {ncap} captured"
        ))
    })?;
    if body.inputs.len() != arity {
        return Err(IrError::msg(format!(
            "the body takes {} inputs, the scan passes {arity}",
            body.inputs.len()
        )));
    }
    let scan_out = body.outputs.len().checked_sub(states).ok_or_else(|| {
        IrError::msg(format!(
            "the body has {} outputs, fewer than its {states} states",
            body.outputs.len()
        ))
    })?;
    if n_outputs != states + scan_out {
        return Err(IrError::msg(format!(
            "scan has {n_outputs} outputs, the body gives {}",
            states + scan_out
        )));
    }
    let list = |v: &[i64], n: usize, what: &str| -> Result<Vec<i64>> {
        match v.len() {
            0 => Ok(vec![0; n]),
            l if l == n => Ok(v.to_vec()),
            l => Err(IrError::msg(format!(
                "{what} has {l} entries, expected {n}"
            ))),
        }
    };
    let dirs = |v: Vec<i64>, what: &str| -> Result<Vec<bool>> {
        v.into_iter()
            .map(|d| match d {
                0 => Ok(false),
                1 => Ok(true),
                d => Err(IrError::msg(format!(
                    "{what} entries must be 0 or 1, found {d}"
                ))),
            })
            .collect()
    };
    let plan = ScanPlan {
        states,
        scan_in,
        scan_out,
        in_axes: list(scan_input_axes, scan_in, "scan_input_axes")?,
        in_rev: dirs(
            list(scan_input_directions, scan_in, "scan_input_directions")?,
            "scan_input_directions",
        )?,
        out_axes: list(scan_output_axes, scan_out, "scan_output_axes")?,
        out_rev: dirs(
            list(scan_output_directions, scan_out, "scan_output_directions")?,
            "scan_output_directions",
        )?,
    };
    Ok((plan, body))
}

fn infer_scan(op: &Op, types: &[Option<&TensorType>], n_outputs: usize) -> Result<Vec<TensorType>> {
    let (p, body) = scan_plan(op, types.len(), n_outputs)?;
    let outs = output_types(body);
    let mut res = Vec::with_capacity(n_outputs);
    for i in 0..p.states {
        res.push(merge_types(
            &format!("state {i}"),
            input_type(types, i)?,
            &outs[i],
        )?);
    }
    // The sequence length, when the first scan input's type tells it.
    let first = input_type(types, p.states)?;
    let seq = match first.shape.dims() {
        Some(d) => d
            .get(norm_axis(p.in_axes[0], d.len())?)
            .cloned()
            .unwrap_or(Dim::Unknown),
        None => Dim::Unknown,
    };
    for (k, t) in outs[p.states..].iter().enumerate() {
        let shape = match t.shape.dims() {
            Some(d) => {
                let mut d = d.to_vec();
                d.insert(norm_axis(p.out_axes[k], d.len() + 1)?, seq.clone());
                Shape(Some(d))
            }
            None => Shape::unknown_rank(),
        };
        res.push(TensorType::new(t.dtype, shape));
    }
    Ok(res)
}

fn eval_scan(op: &Op, inputs: &[Option<Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let (p, body) = scan_plan(op, inputs.len(), n_outputs)?;
    let all = required(inputs, 0)?;
    let (state_init, rest) = all.split_at(p.states);
    let (scan_inputs, captured) = rest.split_at(p.scan_in);
    let mut axes = Vec::with_capacity(p.scan_in);
    let mut len: Option<usize> = None;
    for (i, t) in scan_inputs.iter().enumerate() {
        let a = norm_axis(p.in_axes[i], t.rank())?;
        let l = t.shape()[a];
        if len.is_some_and(|m| m != l) {
            return Err(IrError::msg(format!(
                "scan inputs differ in sequence length ({} and {l})",
                len.unwrap_or(0)
            )));
        }
        len = Some(l);
        axes.push(a);
    }
    let len = len.unwrap_or(0);
    let mut state = state_init.to_vec();
    let mut scanned: Vec<Vec<Tensor>> = vec![Vec::with_capacity(len); p.scan_out];
    let mut scanned_elems = 0usize;
    for t in 0..len {
        let mut args = state.clone();
        for (i, x) in scan_inputs.iter().enumerate() {
            let idx = if p.in_rev[i] { len - 1 - t } else { t };
            args.push(slice_axis(x, axes[i], idx)?);
        }
        args.extend(captured.iter().cloned());
        let mut outs = run_graph(body, &args)?.into_iter();
        for s in state.iter_mut() {
            *s = outs
                .next()
                .ok_or_else(|| IrError::msg("the body gave too few outputs"))?;
        }
        for sc in scanned.iter_mut() {
            let o = outs
                .next()
                .ok_or_else(|| IrError::msg("the body gave too few outputs"))?;
            scanned_elems = scanned_elems.saturating_add(o.len());
            if scanned_elems > LIMIT {
                return Err(IrError::msg("the scan outputs grew past 2^31 elements"));
            }
            sc.push(o);
        }
    }
    let decl = output_types(body);
    let mut res = state;
    for (k, mut sc) in scanned.into_iter().enumerate() {
        if sc.is_empty() {
            res.push(empty_stacked(&decl[p.states + k], p.out_axes[k])?);
            continue;
        }
        if p.out_rev[k] {
            sc.reverse();
        }
        let axis = norm_axis(p.out_axes[k], sc[0].rank() + 1)?;
        res.push(stack(&sc, axis, &format!("scan output {k}"))?);
    }
    Ok(res)
}
