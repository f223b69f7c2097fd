//! If, Loop and Scan: their bodies become closed graphs. Outer values a body reads become
//! extra trailing inputs, both of the body graph and of the IR node (after the op's own
//! inputs); `Builder::resolve` threads them through every level in between.

use super::graph::Builder;
use super::ops::NodeCx;
use kiln_ir::*;

fn scalar(dtype: DType) -> TensorType {
    TensorType::known(dtype, &[])
}

/// The outer values for a body's captured names, in order.
fn captured_values(b: &mut Builder, names: &[String]) -> Result<Vec<Option<Value>>> {
    names
        .iter()
        .map(|name| {
            b.resolve(name).map(Some).ok_or_else(|| {
                IrError::msg(format!(
                    "captured value `{name}` is not defined in the enclosing graph"
                ))
            })
        })
        .collect()
}

/// If: both branches take the same captured values in the same order (the union of what
/// each reads); a branch that does not read one gets an unused input for it.
pub(crate) fn if_(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let cond = n.req(0)?;
    let mut branches = Vec::with_capacity(2);
    for attr in ["then_branch", "else_branch"] {
        let g = a.graph(attr)?;
        if !g.input.is_empty() {
            return Err(IrError::msg(format!(
                "{attr} declares inputs; If branches take none"
            )));
        }
        let (graph, caps) = b
            .build_graph(g, &n.sub(attr), n.opset, &[])
            .map_err(|e| IrError {
                node: e.node,
                message: format!("{} (in {attr} of If {})", e.message, n.name),
            })?;
        branches.push((graph, caps));
    }
    let mut names: Vec<String> = Vec::new();
    for (_, caps) in &branches {
        for (name, _) in caps {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let outer = captured_values(b, &names)?;
    let mut graphs = Vec::with_capacity(2);
    for (mut graph, caps) in branches {
        let mut inputs = Vec::with_capacity(names.len());
        for (name, outer_v) in names.iter().zip(&outer) {
            let v = match caps.iter().find(|(c, _)| c == name) {
                Some((_, v)) => *v,
                None => {
                    let ty = match outer_v {
                        Some(o) => b.ty(*o),
                        None => {
                            return Err(IrError::msg(format!("captured value `{name}` is missing")))
                        }
                    };
                    graph.add_input(name.clone(), ty)
                }
            };
            inputs.push(v.node);
        }
        graph.inputs = inputs;
        graphs.push(Box::new(graph));
    }
    let (Some(else_branch), Some(then_branch)) = (graphs.pop(), graphs.pop()) else {
        return Err(IrError::msg("internal: If lost a branch"));
    };
    let mut ins = vec![Some(cond)];
    ins.extend(outer);
    b.emit(
        Op::If {
            then_branch,
            else_branch,
        },
        &n.name,
        &ins,
        n.n_out(),
    )
}

/// Loop: (M?, cond?, carried…, captured…); the body takes (iteration, cond, carried…,
/// captured…). Body inputs without a declared type get i64 and bool scalars and the
/// carried values' dtypes.
pub(crate) fn loop_(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let body = n.attrs.graph("body")?;
    let mut fallback = vec![Some(scalar(DType::I64)), Some(scalar(DType::Bool))];
    for i in 2..n.inputs.len() {
        let v = n.req(i)?;
        let ty = b.ty(v);
        let rank = ty.shape.rank();
        let shape = rank.map_or(Shape::unknown_rank(), Shape::of_rank);
        fallback.push(Some(TensorType {
            dtype: ty.dtype,
            shape,
        }));
    }
    let (graph, caps) = b
        .build_graph(body, &n.sub("body"), n.opset, &fallback)
        .map_err(|e| IrError {
            node: e.node,
            message: format!("{} (in the body of Loop {})", e.message, n.name),
        })?;
    let names: Vec<String> = caps.into_iter().map(|(name, _)| name).collect();
    let mut ins: Vec<Option<Value>> = n.inputs.clone();
    while ins.len() < 2 {
        ins.push(None);
    }
    ins.extend(captured_values(b, &names)?);
    let op = Op::Loop {
        body: Box::new(graph),
        num_captured: names.len() as i64,
    };
    b.emit(op, &n.name, &ins, n.n_out())
}

/// Scan (opset 9+): (state…, scan inputs…, captured…).
pub(crate) fn scan(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    if n.opset < 9 {
        return Err(IrError::msg(
            "Scan-8 (with sequence_lens and a batch axis) is not supported",
        ));
    }
    let body = a.graph("body")?;
    let m = a.req_int("num_scan_inputs")?;
    let n_in = n.inputs.len();
    let m_usize = usize::try_from(m)
        .ok()
        .filter(|&m| m >= 1 && m <= n_in)
        .ok_or_else(|| {
            IrError::msg(format!(
                "num_scan_inputs {m} does not fit the node's {n_in} inputs"
            ))
        })?;
    let n_state = n_in - m_usize;
    let n_scan_out = body.output.len().checked_sub(n_state).ok_or_else(|| {
        IrError::msg(format!(
            "the body has {} outputs, fewer than the {n_state} state values",
            body.output.len()
        ))
    })?;
    let mut fallback = Vec::with_capacity(n_in);
    for i in 0..n_in {
        let ty = b.ty(n.req(i)?);
        // State keeps its type; a scan input loses its scanned axis.
        let shape = if i < n_state {
            ty.shape
        } else {
            ty.shape.rank().map_or(Shape::unknown_rank(), |r| {
                Shape::of_rank(r.saturating_sub(1))
            })
        };
        fallback.push(Some(TensorType {
            dtype: ty.dtype,
            shape,
        }));
    }
    let (graph, caps) = b
        .build_graph(body, &n.sub("body"), n.opset, &fallback)
        .map_err(|e| IrError {
            node: e.node,
            message: format!("{} (in the body of Scan {})", e.message, n.name),
        })?;
    let names: Vec<String> = caps.into_iter().map(|(name, _)| name).collect();
    let or_zeros = |attr: &str, len: usize| -> Result<Vec<i64>> {
        Ok(a.ints_opt(attr)?.unwrap_or_else(|| vec![0; len]))
    };
    let op = Op::Scan {
        body: Box::new(graph),
        num_scan_inputs: m,
        num_captured: names.len() as i64,
        scan_input_axes: or_zeros("scan_input_axes", m_usize)?,
        scan_input_directions: or_zeros("scan_input_directions", m_usize)?,
        scan_output_axes: or_zeros("scan_output_axes", n_scan_out)?,
        scan_output_directions: or_zeros("scan_output_directions", n_scan_out)?,
    };
    let mut ins = n.inputs.clone();
    ins.extend(captured_values(b, &names)?);
    b.emit(op, &n.name, &ins, n.n_out())
}
