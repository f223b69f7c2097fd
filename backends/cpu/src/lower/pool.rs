//! MaxPool and AveragePool over NCHW (2-D windows; 1-D ones as 2-D with a height of 1),
//! f32. Where each window starts and which of its taps lie inside the input is worked out
//! here, at compile time, into small tables (first and last valid tap per output row and
//! column, and each output's divisor), so the kernel's loops need no bounds checks.

use super::{clif, Arg, Kernel, LowerCtx, LowerError, Operand, OutType, Result};
use cranelift_codegen::ir::{types, InstBuilder};
use cranelift_module::Module;
use kiln_ir::{AutoPad, DType, Node, Op, PoolKind};

pub fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    inputs: &[Option<Operand>],
    outputs: &[OutType],
) -> Result<Option<Kernel>> {
    let Op::Pool {
        kind,
        auto_pad,
        count_include_pad,
        dilations,
        kernel_shape,
        pads,
        strides,
        ..
    } = &node.op
    else {
        return Ok(None);
    };
    let bad = |why: &str| LowerError::unsupported(node, why);
    if outputs.len() != 1 {
        return Err(bad("max pooling's indices output"));
    }
    if *kind == PoolKind::Lp {
        return Err(bad("Lp pooling"));
    }
    let x = inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| bad("no input"))?;
    if x.dtype != DType::F32 {
        return Err(LowerError::unsupported(
            node,
            format!("{} tensors", x.dtype),
        ));
    }
    let sp = kernel_shape.len();
    if !(1..=2).contains(&sp) || x.shape.len() != sp + 2 || outputs[0].shape.len() != sp + 2 {
        return Err(bad("only 1-D and 2-D windows"));
    }
    let attr = |v: &[i64], default: i64| -> Vec<i64> {
        if v.is_empty() {
            vec![default; sp]
        } else {
            v.to_vec()
        }
    };
    let (k, s, d) = (kernel_shape.clone(), attr(strides, 1), attr(dilations, 1));
    if s.len() != sp || d.len() != sp || k.iter().chain(&s).chain(&d).any(|&v| v < 1) {
        return Err(bad("bad window attributes"));
    }
    let input: Vec<i64> = x.shape[2..].iter().map(|&v| v as i64).collect();
    let output: Vec<i64> = outputs[0].shape[2..].iter().map(|&v| v as i64).collect();
    // Begin and end padding per spatial dim.
    let mut begin = vec![0i64; sp];
    let mut end = vec![0i64; sp];
    for i in 0..sp {
        match auto_pad {
            AutoPad::NotSet => {
                if !pads.is_empty() {
                    if pads.len() != 2 * sp {
                        return Err(bad("pads has the wrong length"));
                    }
                    begin[i] = pads[i];
                    end[i] = pads[sp + i];
                }
            }
            AutoPad::Valid => {}
            AutoPad::SameUpper | AutoPad::SameLower => {
                let total = ((output[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - input[i]).max(0);
                begin[i] = if *auto_pad == AutoPad::SameUpper {
                    total / 2
                } else {
                    total - total / 2
                };
                end[i] = total - begin[i];
            }
        }
    }
    // As 2-D: a 1-D pool gets a leading spatial dim of 1 with a one-tap window.
    let lift = |v: &[i64], one: i64| if sp == 1 { vec![one, v[0]] } else { v.to_vec() };
    let (k, s, d, input, output, begin, end) = (
        lift(&k, 1),
        lift(&s, 1),
        lift(&d, 1),
        lift(&input, 1),
        lift(&output, 1),
        lift(&begin, 0),
        lift(&end, 0),
    );
    // Per dim and output index: the valid taps lo..hi, and the taps counted for averaging.
    let mut lo = [Vec::new(), Vec::new()];
    let mut hi = [Vec::new(), Vec::new()];
    let mut counted = [Vec::new(), Vec::new()];
    for i in 0..2 {
        for o in 0..output[i] {
            let start = o * s[i] - begin[i];
            let taps: Vec<i64> = (0..k[i])
                .filter(|t| (0..input[i]).contains(&(start + t * d[i])))
                .collect();
            let (l, h) = match (taps.first(), taps.last()) {
                (Some(&l), Some(&h)) => (l, h + 1),
                _ => (0, 0),
            };
            lo[i].push(l as i32);
            hi[i].push(h as i32);
            let c = if *count_include_pad {
                (0..k[i])
                    .filter(|t| (-begin[i]..input[i] + end[i]).contains(&(start + t * d[i])))
                    .count()
            } else {
                taps.len()
            };
            counted[i].push(c as f32);
        }
    }
    let mut table: Vec<u8> = Vec::new();
    for v in [&lo[0], &hi[0], &lo[1], &hi[1]] {
        table.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    let (oh, ow) = (output[0] as usize, output[1] as usize);
    let divisors: Vec<u8> = (0..oh * ow)
        .flat_map(|j| (counted[0][j / ow] * counted[1][j % ow]).to_le_bytes())
        .collect();
    let tables = ctx.data("pool_taps", table, 64)?;
    let mut args = vec![Arg::Input(0), Arg::Data(tables)];
    let average = *kind == PoolKind::Average;
    if average {
        args.push(Arg::Data(ctx.data("pool_divisors", divisors, 64)?));
    }
    args.push(Arg::Output(0));
    let (ih, iw) = (input[0], input[1]);
    let planes = x.shape[0] * x.shape[1];
    let func = clif::define(ctx, if average { "avgpool" } else { "maxpool" }, |b, p| {
        let src = clif::arg(b, p, 0);
        let tab = clif::arg(b, p, 1);
        let div = if average {
            Some(clif::arg(b, p, 2))
        } else {
            None
        };
        let dst = clif::arg(b, p, if average { 3 } else { 2 });
        let load_i = |b: &mut cranelift_frontend::FunctionBuilder, at: i64, i| {
            let a = clif::index(b, tab, i, 4);
            let v = b.ins().load(types::I32, clif::mem(), a, (at * 4) as i32);
            b.ins().sextend(types::I64, v)
        };
        clif::for_units(b, p, &mut |b, u| {
            let plane = b.ins().udiv_imm_s(u, oh as i64);
            let y = b.ins().urem_imm_s(u, oh as i64);
            let base = clif::index(b, src, plane, ih * iw * 4);
            let out_row = clif::index(b, dst, u, (ow * 4) as i64);
            let lh = load_i(b, 0, y);
            let hh = load_i(b, oh as i64, y);
            let y0 = b.ins().imul_imm_s(y, s[0]);
            let y0 = b.ins().iadd_imm_s(y0, -begin[0]);
            clif::for_n(b, ow as u64, &mut |b, xo| {
                let lw = load_i(b, 2 * oh as i64, xo);
                let hw = load_i(b, 2 * oh as i64 + ow as i64, xo);
                let x0 = b.ins().imul_imm_s(xo, s[1]);
                let x0 = b.ins().iadd_imm_s(x0, -begin[1]);
                let acc = b.declare_var(types::F32);
                let init = b
                    .ins()
                    .f32const(if average { 0.0 } else { f32::NEG_INFINITY });
                b.def_var(acc, init);
                clif::for_range(b, lh, hh, &mut |b, kh| {
                    let t = b.ins().imul_imm_s(kh, d[0]);
                    let row = b.ins().iadd(y0, t);
                    let row_addr = clif::index(b, base, row, iw * 4);
                    clif::for_range(b, lw, hw, &mut |b, kw| {
                        let t = b.ins().imul_imm_s(kw, d[1]);
                        let col = b.ins().iadd(x0, t);
                        let a = clif::index(b, row_addr, col, 4);
                        let v = b.ins().load(types::F32, clif::mem(), a, 0);
                        let cur = b.use_var(acc);
                        let next = if average {
                            b.ins().fadd(cur, v)
                        } else {
                            b.ins().fmax(cur, v)
                        };
                        b.def_var(acc, next);
                        Ok(())
                    })
                })?;
                let mut r = b.use_var(acc);
                if let Some(div) = div {
                    let j = b.ins().imul_imm_s(y, ow as i64);
                    let j = b.ins().iadd(j, xo);
                    let a = clif::index(b, div, j, 4);
                    let c = b.ins().load(types::F32, clif::mem(), a, 0);
                    r = b.ins().fdiv(r, c);
                }
                let a = clif::index(b, out_row, xo, 4);
                b.ins().store(clif::mem(), r, a, 0);
                Ok(())
            })
        })
    })?;
    Ok(Some(Kernel {
        func,
        args,
        units: (planes * oh) as u64,
        kind: if average { "avgpool" } else { "maxpool" }.into(),
    }))
}
