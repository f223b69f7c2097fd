//! From a kiln `Graph` (an elementwise expression DAG) to a [`Plan`]: the expressions in
//! evaluation order, the tensors the kernel reads, the loop layout, and whether the inner
//! loop runs on f32x4 vectors. Everything the code generator cannot do is refused here,
//! with the reason, so that the caller falls back to `ir::eval`.

use super::broadcast::{broadcast, Layout};
use super::Unsupported;
use kiln_ir::{BinaryOp, DType, Graph, Op, Tensor, Value};
use std::collections::HashMap;

/// A one-element constant, folded into the code as an immediate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F32(f32),
    Int(i64),
    Bool(bool),
}

impl Scalar {
    /// The value as f64 (exact for f32, and for integers up to 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::F32(v) => v as f64,
            Scalar::Int(v) => v as f64,
            Scalar::Bool(v) => v as u8 as f64,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// Reads operand `k` (a graph input or a constant tensor) at the current element.
    Load(usize),
    Scalar(Scalar),
    /// An elementwise op on earlier expressions (`None` for an absent optional input).
    Op(Op, Vec<Option<usize>>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub dtype: DType,
}

/// A tensor the kernel reads: a graph input, or a constant with more than one element
/// (the kernel keeps it alive and passes its address).
#[derive(Clone, Debug)]
pub struct Operand {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// `Some` for a constant tensor.
    pub constant: Option<Tensor>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub exprs: Vec<Expr>,
    /// Graph inputs first (in signature order, unused ones included so that the caller's
    /// argument list keeps its positions), then constant tensors.
    pub operands: Vec<Operand>,
    /// Output expressions and their dtypes, in the body's output order.
    pub outputs: Vec<usize>,
    /// The shape of every output.
    pub shape: Vec<usize>,
    /// The loop nest over `shape`, with each operand's strides.
    pub layout: Layout,
    /// True when the inner loop runs on f32x4: every tensor read or written is f32 and
    /// every intermediate is f32 or bool (a lane mask). Otherwise a scalar loop.
    pub vector: bool,
}

/// Element types the generated code handles.
pub fn supported_dtype(d: DType) -> bool {
    matches!(d, DType::F32 | DType::I32 | DType::I64 | DType::Bool)
}

/// True for the ops [`super::ops`] lowers (before dtype checks).
pub(crate) fn elementwise(op: &Op) -> bool {
    // The fusion pattern's elementwise ops, less the two this generator has no lowering for.
    kiln_passes::pattern::pattern(op).is_elementwise() && !matches!(op, Op::BitCast { .. } | Op::BatchNorm { .. })
}

impl Plan {
    pub fn new(body: &Graph, input_shapes: &[Vec<usize>]) -> Result<Plan, Unsupported> {
        if input_shapes.len() != body.inputs.len() {
            return Err(Unsupported::new(format!(
                "the body takes {} inputs, {} shapes were given",
                body.inputs.len(),
                input_shapes.len()
            )));
        }
        if body.outputs.is_empty() {
            return Err(Unsupported::new("the body has no outputs"));
        }
        let order = body
            .topo_order()
            .map_err(|e| Unsupported::new(e.to_string()))?;
        let mut operands = Vec::new();
        let mut expr_of: HashMap<Value, usize> = HashMap::new();
        let mut shapes: Vec<Vec<usize>> = Vec::new();
        let mut exprs: Vec<Expr> = Vec::new();
        for (i, &n) in body.inputs.iter().enumerate() {
            let dtype = body.node(n).outputs[0].dtype;
            check_dtype(dtype, &body.node(n).name)?;
            let shape = input_shapes[i].clone();
            if let Some(dims) = body.node(n).outputs[0].shape.dims() {
                let agrees = dims.len() == shape.len()
                    && dims
                        .iter()
                        .zip(&shape)
                        .all(|(d, &s)| d.known().is_none_or(|k| k == s));
                if !agrees {
                    return Err(Unsupported::new(format!(
                        "input {} is declared {:?}, given shape {shape:?}",
                        body.node(n).name,
                        body.node(n).outputs[0].shape
                    )));
                }
            }
            operands.push(Operand {
                dtype,
                shape: shape.clone(),
                constant: None,
            });
            expr_of.insert(n.into(), exprs.len());
            exprs.push(Expr {
                kind: ExprKind::Load(i),
                dtype,
            });
            shapes.push(shape);
        }
        for n in order {
            let node = body.node(n);
            match &node.op {
                Op::Input => continue,
                Op::Const { value } => {
                    check_dtype(value.dtype(), &node.name)?;
                    let kind = if value.len() == 1 {
                        ExprKind::Scalar(scalar(value))
                    } else {
                        operands.push(Operand {
                            dtype: value.dtype(),
                            shape: value.shape().to_vec(),
                            constant: Some(value.clone()),
                        });
                        ExprKind::Load(operands.len() - 1)
                    };
                    expr_of.insert(n.into(), exprs.len());
                    exprs.push(Expr {
                        kind,
                        dtype: value.dtype(),
                    });
                    shapes.push(value.shape().to_vec());
                }
                op if elementwise(op) => {
                    if node.outputs.len() != 1 {
                        return Err(Unsupported::at(&node.name, "has more than one output"));
                    }
                    let dtype = node.outputs[0].dtype;
                    check_dtype(dtype, &node.name)?;
                    let mut args = Vec::new();
                    let mut shape: Vec<usize> = Vec::new();
                    for v in body.inputs_of(n) {
                        let Some(v) = v else {
                            args.push(None);
                            continue;
                        };
                        let e = *expr_of.get(&v).ok_or_else(|| {
                            Unsupported::at(&node.name, "reads a value the plan has not seen")
                        })?;
                        shape = broadcast(&shape, &shapes[e]).ok_or_else(|| {
                            Unsupported::at(&node.name, "inputs do not broadcast")
                        })?;
                        args.push(Some(e));
                    }
                    expr_of.insert(n.into(), exprs.len());
                    exprs.push(Expr {
                        kind: ExprKind::Op(op.clone(), args),
                        dtype,
                    });
                    shapes.push(shape);
                }
                op => {
                    return Err(Unsupported::at(
                        &node.name,
                        format!("`{}` is not an elementwise op", op.name()),
                    ))
                }
            }
        }
        let mut outputs = Vec::new();
        for (name, v) in &body.outputs {
            let e = *expr_of
                .get(v)
                .ok_or_else(|| Unsupported::new(format!("output {name} is not computed")))?;
            outputs.push(e);
        }
        let shape = shapes[outputs[0]].clone();
        if let Some(o) = outputs.iter().find(|&&o| shapes[o] != shape) {
            return Err(Unsupported::new(format!(
                "outputs differ in shape ({:?} and {shape:?})",
                shapes[*o]
            )));
        }
        let (exprs, outputs, live_loads) = prune(exprs, outputs);
        let operand_shapes: Vec<&[usize]> = operands.iter().map(|o| o.shape.as_slice()).collect();
        for (k, s) in operand_shapes.iter().enumerate() {
            if live_loads.contains(&k) && broadcast(s, &shape).as_deref() != Some(&shape[..]) {
                return Err(Unsupported::new(format!(
                    "operand {k} of shape {s:?} does not broadcast to the output {shape:?}"
                )));
            }
        }
        // A dead operand gets all-zero strides: it is never read.
        let masked: Vec<&[usize]> = operand_shapes
            .iter()
            .enumerate()
            .map(|(k, s)| if live_loads.contains(&k) { *s } else { &[][..] })
            .collect();
        let layout = Layout::new(&shape, &masked);
        // An integer constant may stay on the vector path as Pow's exponent (x^2 with an
        // i64 2), which the lowering reads from the plan rather than as lanes.
        let exponent_only = |i: usize| {
            exprs.iter().all(|e| match &e.kind {
                ExprKind::Op(op, args) => args.iter().enumerate().all(|(slot, a)| {
                    *a != Some(i) || (*op == Op::Binary(BinaryOp::Pow) && slot == 1)
                }),
                _ => true,
            })
        };
        let vector = exprs.iter().enumerate().all(|(i, e)| match e.kind {
            ExprKind::Load(_) => e.dtype == DType::F32,
            ExprKind::Scalar(_) if e.dtype.is_int() => exponent_only(i),
            _ => matches!(e.dtype, DType::F32 | DType::Bool),
        }) && outputs.iter().all(|&o| exprs[o].dtype == DType::F32);
        Ok(Plan {
            exprs,
            operands,
            outputs,
            shape,
            layout,
            vector,
        })
    }
}

fn check_dtype(d: DType, node: &str) -> Result<(), Unsupported> {
    if supported_dtype(d) {
        Ok(())
    } else {
        Err(Unsupported::at(
            node,
            format!("no generated code for {d} tensors"),
        ))
    }
}

fn scalar(t: &Tensor) -> Scalar {
    match t.dtype() {
        DType::F32 => Scalar::F32(t.to_f64_vec()[0] as f32),
        DType::Bool => Scalar::Bool(t.to_i64_vec()[0] != 0),
        _ => Scalar::Int(t.to_i64_vec()[0]),
    }
}

/// Drops the expressions no output needs and renumbers the rest; returns the operands
/// still read.
fn prune(exprs: Vec<Expr>, outputs: Vec<usize>) -> (Vec<Expr>, Vec<usize>, Vec<usize>) {
    let mut live = vec![false; exprs.len()];
    for &o in &outputs {
        live[o] = true;
    }
    for i in (0..exprs.len()).rev() {
        if let (true, ExprKind::Op(_, args)) = (live[i], &exprs[i].kind) {
            for a in args.iter().flatten() {
                live[*a] = true;
            }
        }
    }
    let mut new_index = vec![usize::MAX; exprs.len()];
    let mut kept = Vec::new();
    let mut loads = Vec::new();
    for (i, mut e) in exprs.into_iter().enumerate() {
        if !live[i] {
            continue;
        }
        match &mut e.kind {
            ExprKind::Op(_, args) => {
                for a in args.iter_mut().flatten() {
                    *a = new_index[*a];
                }
            }
            ExprKind::Load(k) => loads.push(*k),
            ExprKind::Scalar(_) => {}
        }
        new_index[i] = kept.len();
        kept.push(e);
    }
    let outputs = outputs.iter().map(|&o| new_index[o]).collect();
    (kept, outputs, loads)
}
