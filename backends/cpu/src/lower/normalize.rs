//! Softmax and LogSoftmax along one axis, LayerNormalization over the trailing axes, and
//! inference BatchNormalization (whose constant statistics fold into one scale and shift
//! per channel at compile time). f32 only.

use super::rows::{self, lanes};
use super::{clif, Arg, Kernel, LowerCtx, LowerError, Operand, OutType, Result};
use crate::codegen::math;
use cranelift_codegen::ir::{types, InstBuilder};
use cranelift_module::Module;
use kiln_ir::{DType, Node, Op};

pub fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    outputs: &[OutType],
) -> Result<Option<Kernel>> {
    match &node.op {
        Op::Softmax { axis } => softmax(ctx, node, inputs, *axis, false).map(Some),
        Op::LogSoftmax { axis } => softmax(ctx, node, inputs, *axis, true).map(Some),
        Op::LayerNorm { axis, epsilon, .. } => {
            layer_norm(ctx, node, inputs, outputs, *axis, *epsilon).map(Some)
        }
        Op::BatchNorm { epsilon } => batch_norm(ctx, node, inputs, *epsilon).map(Some),
        _ => Ok(None),
    }
}

/// Input `i`, which must be f32.
fn f32_input<'a>(node: &Node, inputs: &[Option<Operand<'a>>], i: usize) -> Result<Operand<'a>> {
    let x = inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| LowerError::unsupported(node, format!("input {i} is missing")))?;
    if x.dtype != DType::F32 {
        return Err(LowerError::unsupported(
            node,
            format!("{} tensors", x.dtype),
        ));
    }
    Ok(x)
}

fn softmax<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    axis: i64,
    log: bool,
) -> Result<Kernel> {
    let x = f32_input(node, inputs, 0)?;
    let a =
        clif::axis(axis, x.shape.len()).ok_or_else(|| LowerError::unsupported(node, "bad axis"))?;
    let outer: usize = x.shape[..a].iter().product();
    let dim = x.shape[a];
    let inner: usize = x.shape[a + 1..].iter().product();
    let fma = ctx.module.isa().has_native_fma();
    let func = clif::define(ctx, if log { "log_softmax" } else { "softmax" }, |b, p| {
        let src = clif::arg(b, p, 0);
        let dst = clif::arg(b, p, 1);
        clif::for_units(b, p, &mut |b, u| {
            let o = b.ins().udiv_imm_s(u, inner as i64);
            let i = b.ins().urem_imm_s(u, inner as i64);
            let row = b.ins().imul_imm_s(o, (dim * inner) as i64);
            let off = b.ins().iadd(row, i);
            let s = clif::index(b, src, off, 4);
            let d = clif::index(b, dst, off, 4);
            let m = rows::reduce(
                b,
                fma,
                s,
                dim,
                inner,
                f32::NEG_INFINITY,
                &|_, x| x,
                &|fx, a, b| fx.b.ins().fmax(a, b),
            )?;
            // A row of -inf (or empty) keeps its max at 0 so that no inf - inf appears.
            let finite = {
                let mut fx = crate::codegen::emit::Fx {
                    b,
                    vector: false,
                    fma,
                };
                let ok = fx.cmp_k(
                    cranelift_codegen::ir::condcodes::FloatCC::Equal,
                    m,
                    f32::NEG_INFINITY,
                );
                fx.sel_k(ok, 0.0, m)
            };
            let shifted = |fx: &mut crate::codegen::emit::Fx, x| {
                let mv = lanes(fx, finite);
                fx.sub(x, mv)
            };
            if log {
                let sum = rows::reduce(
                    b,
                    fma,
                    s,
                    dim,
                    inner,
                    0.0,
                    &|fx, x| {
                        let t = shifted(fx, x);
                        math::exp(fx, t)
                    },
                    &|fx, a, b| fx.add(a, b),
                )?;
                let mut fx = crate::codegen::emit::Fx {
                    b,
                    vector: false,
                    fma,
                };
                let ls = math::log(&mut fx, sum);
                rows::map(b, fma, s, d, dim, inner, &|fx, x| {
                    let t = shifted(fx, x);
                    let l = lanes(fx, ls);
                    fx.sub(t, l)
                })
            } else {
                rows::map(b, fma, s, d, dim, inner, &|fx, x| {
                    let t = shifted(fx, x);
                    math::exp(fx, t)
                })?;
                let sum = rows::reduce(b, fma, d, dim, inner, 0.0, &|_, x| x, &|fx, a, b| {
                    fx.add(a, b)
                })?;
                let one = b.ins().f32const(1.0);
                let r = b.ins().fdiv(one, sum);
                rows::map(b, fma, d, d, dim, inner, &|fx, x| {
                    let rv = lanes(fx, r);
                    fx.mul(x, rv)
                })
            }
        })
    })?;
    Ok(Kernel {
        func,
        args: vec![Arg::Input(0), Arg::Output(0)],
        units: (outer * inner) as u64,
        kind: if log { "log_softmax" } else { "softmax" }.into(),
    })
}

fn layer_norm<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    outputs: &[OutType],
    axis: i64,
    eps: f32,
) -> Result<Kernel> {
    let x = f32_input(node, inputs, 0)?;
    if outputs.len() != 1 {
        return Err(LowerError::unsupported(
            node,
            "the mean and inverse deviation outputs",
        ));
    }
    let a =
        clif::axis(axis, x.shape.len()).ok_or_else(|| LowerError::unsupported(node, "bad axis"))?;
    let outer: usize = x.shape[..a].iter().product();
    let n: usize = x.shape[a..].iter().product();
    // Scale and bias are read per element of the row: each must have the row's size (a
    // broadcast one is expanded here, at compile time, when it is constant).
    let mut args = vec![Arg::Input(0)];
    for i in [1usize, 2] {
        match inputs.get(i).copied().flatten() {
            None if i == 2 => args.push(Arg::Data(ctx.data("zero_bias", vec![0u8; n * 4], 64)?)),
            None => return Err(LowerError::unsupported(node, "no scale")),
            Some(t) if t.dtype == DType::F32 && t.shape.iter().product::<usize>() == n => {
                args.push(Arg::Input(i))
            }
            Some(Operand { value: Some(t), .. }) if t.dtype() == DType::F32 && t.len() == 1 => {
                let v = t.to_f64_vec()[0] as f32;
                let bytes: Vec<u8> = std::iter::repeat_n(v.to_le_bytes(), n).flatten().collect();
                args.push(Arg::Data(ctx.data("norm_param", bytes, 64)?));
            }
            Some(_) => {
                return Err(LowerError::unsupported(
                    node,
                    "a scale or bias that is not one value per row element",
                ))
            }
        }
    }
    args.push(Arg::Output(0));
    let fma = ctx.module.isa().has_native_fma();
    let func = clif::define(ctx, "layer_norm", |b, p| {
        let src = clif::arg(b, p, 0);
        let scale = clif::arg(b, p, 1);
        let bias = clif::arg(b, p, 2);
        let dst = clif::arg(b, p, 3);
        clif::for_units(b, p, &mut |b, u| {
            let s = clif::index(b, src, u, (n * 4) as i64);
            let d = clif::index(b, dst, u, (n * 4) as i64);
            let sum = rows::reduce(b, fma, s, n, 1, 0.0, &|_, x| x, &|fx, a, b| fx.add(a, b))?;
            let inv_n = b.ins().f32const(1.0 / n as f32);
            let mean = b.ins().fmul(sum, inv_n);
            let sq = rows::reduce(
                b,
                fma,
                s,
                n,
                1,
                0.0,
                &|fx, x| {
                    let m = lanes(fx, mean);
                    let t = fx.sub(x, m);
                    fx.mul(t, t)
                },
                &|fx, a, b| fx.add(a, b),
            )?;
            let var = b.ins().fmul(sq, inv_n);
            let e = b.ins().f32const(eps);
            let ve = b.ins().fadd(var, e);
            let sd = b.ins().sqrt(ve);
            let one = b.ins().f32const(1.0);
            let inv = b.ins().fdiv(one, sd);
            // y = (x - mean)·inv·scale + bias, with scale and bias walked beside x: a map
            // over x whose closure cannot see the element index, so the row goes in two
            // passes: normalise into dst, then dst·scale + bias elementwise.
            rows::map(b, fma, s, d, n, 1, &|fx, x| {
                let m = lanes(fx, mean);
                let iv = lanes(fx, inv);
                let t = fx.sub(x, m);
                fx.mul(t, iv)
            })?;
            affine_rows(b, fma, d, scale, bias, n)
        })
    })?;
    Ok(Kernel {
        func,
        args,
        units: outer as u64,
        kind: "layer_norm".into(),
    })
}

/// `row[i] = row[i]·scale[i] + bias[i]` over `n` f32 elements.
fn affine_rows(
    b: &mut cranelift_frontend::FunctionBuilder,
    fma: bool,
    row: cranelift_codegen::ir::Value,
    scale: cranelift_codegen::ir::Value,
    bias: cranelift_codegen::ir::Value,
    n: usize,
) -> Result<()> {
    let vec_n = n / 4;
    let step = |b: &mut cranelift_frontend::FunctionBuilder, i, ty, size: i64| -> Result<()> {
        let ra = clif::index(b, row, i, size);
        let sa = clif::index(b, scale, i, size);
        let ba = clif::index(b, bias, i, size);
        let x = b.ins().load(ty, clif::mem(), ra, 0);
        let sc = b.ins().load(ty, clif::mem(), sa, 0);
        let bi = b.ins().load(ty, clif::mem(), ba, 0);
        let mut fx = crate::codegen::emit::Fx {
            b,
            vector: ty == types::F32X4,
            fma,
        };
        let y = fx.mul_add(x, sc, bi);
        b.ins().store(clif::mem(), y, ra, 0);
        Ok(())
    };
    if vec_n > 0 {
        clif::for_n(b, vec_n as u64, &mut |b, i| step(b, i, types::F32X4, 16))?;
    }
    for k in vec_n * 4..n {
        let i = b.ins().iconst(types::I64, k as i64);
        step(b, i, types::F32, 4)?;
    }
    Ok(())
}

/// y = x·a[c] + b[c] with a = scale/√(var+ε), b = bias − mean·a, computed here from the
/// constant parameters (in f64, as the reference does).
fn batch_norm<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    eps: f32,
) -> Result<Kernel> {
    let x = f32_input(node, inputs, 0)?;
    if x.shape.len() < 2 {
        return Err(LowerError::unsupported(node, "x needs a channel dim"));
    }
    let mut params = Vec::new();
    for i in 1..5 {
        match inputs.get(i).copied().flatten() {
            Some(Operand { value: Some(t), .. }) if t.len() == x.shape[1] => {
                params.push(t.to_f64_vec())
            }
            _ => {
                return Err(LowerError::unsupported(
                    node,
                    "scale, bias, mean and variance must be constants, one per channel",
                ))
            }
        }
    }
    let c = x.shape[1];
    let a: Vec<f32> = (0..c)
        .map(|k| (params[0][k] / (params[3][k] + eps as f64).sqrt()) as f32)
        .collect();
    let sh: Vec<f32> = (0..c)
        .map(|k| {
            (params[1][k] - params[2][k] * params[0][k] / (params[3][k] + eps as f64).sqrt()) as f32
        })
        .collect();
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let da = ctx.data("bn_scale", bytes(&a), 64)?;
    let db = ctx.data("bn_shift", bytes(&sh), 64)?;
    let plane: usize = x.shape[2..].iter().product();
    let units = (x.shape[0] * c) as u64;
    let fma = ctx.module.isa().has_native_fma();
    let func = clif::define(ctx, "batch_norm", |b, p| {
        let src = clif::arg(b, p, 0);
        let sa = clif::arg(b, p, 1);
        let sb = clif::arg(b, p, 2);
        let dst = clif::arg(b, p, 3);
        clif::for_units(b, p, &mut |b, u| {
            let ch = b.ins().urem_imm_s(u, c as i64);
            let aa = clif::index(b, sa, ch, 4);
            let av = b.ins().load(types::F32, clif::mem(), aa, 0);
            let ba = clif::index(b, sb, ch, 4);
            let bv = b.ins().load(types::F32, clif::mem(), ba, 0);
            let s = clif::index(b, src, u, (plane * 4) as i64);
            let d = clif::index(b, dst, u, (plane * 4) as i64);
            rows::map(b, fma, s, d, plane, 1, &|fx, x| {
                let a = lanes(fx, av);
                let bb = lanes(fx, bv);
                fx.mul_add(x, a, bb)
            })
        })
    })?;
    Ok(Kernel {
        func,
        args: vec![Arg::Input(0), Arg::Data(da), Arg::Data(db), Arg::Output(0)],
        units,
        kind: "batch_norm".into(),
    })
}
