//! Reductions over constant axes, GlobalAveragePool and GlobalMaxPool: one unit per output
//! element; the innermost reduced dim is a [`rows::reduce`] (f32x4 when it is contiguous),
//! the other reduced dims loops around it. f32 only.

use super::rows;
use super::{clif, Arg, Kernel, LowerCtx, LowerError, Operand, OutType, Result};
use crate::codegen::emit::Fx;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::Module;
use kiln_ir::{DType, Node, Op, PoolKind, ReduceKind};

pub fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    _outputs: &[OutType],
) -> Result<Option<Kernel>> {
    let (kind, axes): (ReduceKind, Vec<usize>) = match &node.op {
        Op::Reduce {
            kind,
            noop_with_empty_axes,
            ..
        } => {
            let x = data(node, inputs)?;
            let rank = x.shape.len();
            let axes = match inputs.get(1).copied().flatten() {
                None => None,
                Some(Operand { value: Some(t), .. }) => Some(t.to_i64_vec()),
                Some(_) => return Err(LowerError::unsupported(node, "the axes are not constant")),
            };
            let axes: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|&a| clif::axis(a, rank))
                    .collect::<Option<_>>()
                    .ok_or_else(|| LowerError::unsupported(node, "bad axes"))?,
                _ if *noop_with_empty_axes => vec![],
                _ => (0..rank).collect(),
            };
            (*kind, axes)
        }
        Op::GlobalPool { kind, .. } => {
            let x = data(node, inputs)?;
            let kind = match kind {
                PoolKind::Average => ReduceKind::Mean,
                PoolKind::Max => ReduceKind::Max,
                PoolKind::Lp => return Err(LowerError::unsupported(node, "Lp pooling")),
            };
            (kind, (2..x.shape.len()).collect())
        }
        _ => return Ok(None),
    };
    let x = data(node, inputs)?;
    let (init, f, combine): (f32, &dyn Fn(&mut Fx, Value) -> Value, rows::Combine) = match kind {
        ReduceKind::Sum | ReduceKind::Mean => (0.0, &|_, x| x, &|fx, a, b| fx.add(a, b)),
        ReduceKind::SumSquare | ReduceKind::L2 => {
            (0.0, &|fx, x| fx.mul(x, x), &|fx, a, b| fx.add(a, b))
        }
        ReduceKind::L1 => (0.0, &|fx, x| fx.abs(x), &|fx, a, b| fx.add(a, b)),
        ReduceKind::Prod => (1.0, &|_, x| x, &|fx, a, b| fx.mul(a, b)),
        ReduceKind::Max => (f32::NEG_INFINITY, &|_, x| x, &|fx, a, b| {
            fx.b.ins().fmax(a, b)
        }),
        ReduceKind::Min => (f32::INFINITY, &|_, x| x, &|fx, a, b| fx.b.ins().fmin(a, b)),
        k => return Err(LowerError::unsupported(node, format!("{k} reductions"))),
    };
    let strides = clif::dense_strides(x.shape);
    let kept: Vec<usize> = (0..x.shape.len()).filter(|d| !axes.contains(d)).collect();
    let kept_dims: Vec<usize> = kept.iter().map(|&d| x.shape[d]).collect();
    let kept_strides: Vec<i64> = kept.iter().map(|&d| strides[d] * 4).collect();
    // Reduced dims, neighbours that are walked as one merged.
    let mut red: Vec<(usize, i64)> = Vec::new();
    let mut sorted = axes.clone();
    sorted.sort_unstable();
    for &a in &sorted {
        let (n, s) = (x.shape[a], strides[a]);
        match red.last_mut() {
            Some(last) if last.1 == s * n as i64 => *last = (last.0 * n, s),
            _ => red.push((n, s)),
        }
    }
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    if red.is_empty() {
        red.push((1, 1));
    }
    let units: usize = kept_dims.iter().product();
    let fma = ctx.module.isa().has_native_fma();
    let func = clif::define(ctx, "reduce", |b, p| {
        let src = clif::arg(b, p, 0);
        let dst = clif::arg(b, p, 1);
        clif::for_units(b, p, &mut |b, u| {
            let off = clif::unravel_offset(b, u, &kept_dims, &kept_strides);
            let base = b.ins().iadd(src, off);
            let acc = b.declare_var(types::F32);
            let init_v = b.ins().f32const(init);
            b.def_var(acc, init_v);
            nest(b, fma, base, &red, acc, init, f, combine)?;
            let mut r = b.use_var(acc);
            match kind {
                ReduceKind::Mean => {
                    let n = b.ins().f32const(count as f32);
                    r = b.ins().fdiv(r, n);
                }
                ReduceKind::L2 => r = b.ins().sqrt(r),
                _ => {}
            }
            let a = clif::index(b, dst, u, 4);
            b.ins().store(clif::mem(), r, a, 0);
            Ok(())
        })
    })?;
    Ok(Some(Kernel {
        func,
        args: vec![Arg::Input(0), Arg::Output(0)],
        units: units as u64,
        kind: "reduce".into(),
    }))
}

/// Loops over the outer reduced dims around a row reduction of the innermost one, folding
/// each row's result into `acc`.
#[allow(clippy::too_many_arguments)]
fn nest(
    b: &mut FunctionBuilder,
    fma: bool,
    base: Value,
    dims: &[(usize, i64)],
    acc: cranelift_frontend::Variable,
    init: f32,
    f: &dyn Fn(&mut Fx, Value) -> Value,
    combine: rows::Combine,
) -> Result<()> {
    let (n, s) = dims[0];
    if dims.len() == 1 {
        let r = rows::reduce(b, fma, base, n, s as usize, init, f, combine)?;
        let cur = b.use_var(acc);
        let mut fx = Fx {
            b,
            vector: false,
            fma,
        };
        let next = combine(&mut fx, cur, r);
        b.def_var(acc, next);
        return Ok(());
    }
    clif::for_n(b, n as u64, &mut |b, i| {
        let at = clif::index(b, base, i, s * 4);
        nest(b, fma, at, &dims[1..], acc, init, f, combine)
    })
}

fn data<'a>(node: &Node, inputs: &[Option<Operand<'a>>]) -> Result<Operand<'a>> {
    let x = super::data_input(node, inputs)?;
    if x.dtype != DType::F32 {
        return Err(LowerError::unsupported(
            node,
            format!("{} tensors", x.dtype),
        ));
    }
    Ok(x)
}
