//! ConvTranspose and Col2Im as gathers: eval scatters each input position to
//! `pos · stride + k · dilation - pad_begin`; here each output element loops over the kernel
//! offsets and reads the input position that lands on it, when the division is exact and the
//! position exists. Sums in M (eval accumulates in f64).

use super::{input, shape_of, store, Gen};
use kiln_ir::{AutoPad, Op, Value};
use std::fmt::Write;

fn per_dim(v: &[i64], i: usize, default: i64) -> i64 {
    v.get(i).copied().unwrap_or(default)
}

/// The loops over kernel offsets `k{i}` (extent `kernel[i]`) that find, for output
/// coordinate `i{first+i}`, the input position `p{i}` with `p·st + k·dil - pb = o`.
fn gather_loops(kernel: &[usize], st: &[i64], dil: &[i64], pb: &[i64], input: &[usize], first: usize) -> (String, String) {
    let mut head = String::new();
    let mut close = String::new();
    for i in 0..kernel.len() {
        let _ = writeln!(
            head,
            "  for (long k{i} = 0; k{i} < {kk}L; k{i}++) {{ long u{i} = i{o} + {pb}L - k{i} * {di}L; if (u{i} < 0 || u{i} % {s}L != 0) continue; long p{i} = u{i} / {s}L; if (p{i} >= {n}L) continue;",
            kk = kernel[i],
            o = first + i,
            pb = pb[i],
            di = dil[i],
            s = st[i],
            n = input[i]
        );
        close.push_str(" }");
    }
    (head, close)
}

pub fn conv_transpose(g: &Gen, op: &Op, ins: &[Option<Value>], shape: &[usize]) -> Result<String, String> {
    let Op::ConvTranspose { auto_pad, dilations, group, kernel_shape: _, output_padding, output_shape, pads, strides } = op else {
        return Err("not a conv_transpose".into());
    };
    let (x, w) = (input(ins, 0)?, input(ins, 1)?);
    let (xs, ws) = (shape_of(g, x)?, shape_of(g, w)?);
    let out_ty = g.dtype(x);
    if xs.len() < 3 || ws.len() != xs.len() || !out_ty.is_float() {
        return Err(format!("conv_transpose of x {xs:?} and w {ws:?} on {out_ty}"));
    }
    let n = xs.len() - 2;
    let groups = (*group).max(1) as usize;
    if shape.len() != xs.len() || ws[0] != xs[1] || xs[1] % groups != 0 {
        return Err(format!("conv_transpose of x {xs:?} and w {ws:?} in {groups} groups"));
    }
    let (cg, mg) = (xs[1] / groups, ws[1].max(1));
    let st: Vec<i64> = (0..n).map(|i| per_dim(strides, i, 1).max(1)).collect();
    let dil: Vec<i64> = (0..n).map(|i| per_dim(dilations, i, 1).max(1)).collect();
    // Begin padding per dim, as eval's conv_transpose geometry derives it.
    let mut pb = Vec::with_capacity(n);
    for i in 0..n {
        let extent = (ws[2 + i] as i64 - 1) * dil[i] + 1;
        let full = st[i] * (xs[2 + i] as i64 - 1) + per_dim(output_padding, i, 0) + extent;
        let same = |target: i64| {
            let total = full - target;
            let half = total.div_euclid(2);
            if *auto_pad == AutoPad::SameUpper {
                half
            } else {
                total - half
            }
        };
        pb.push(if !output_shape.is_empty() {
            same(shape[2 + i] as i64)
        } else {
            match auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => same(xs[2 + i] as i64 * st[i]),
                AutoPad::Valid => 0,
                AutoPad::NotSet => per_dim(pads, i, 0),
            }
        });
    }
    let (head, close) = gather_loops(&ws[2..], &st, &dil, &pb, &xs[2..], 2);
    let channel = format!("gi * {cg}L + c");
    let mut xc = vec!["i0".to_string(), channel.clone()];
    let mut wc = vec![channel, format!("i1 % {mg}L")];
    for i in 0..n {
        xc.push(format!("p{i}"));
        wc.push(format!("k{i}"));
    }
    let bias = match ins.get(2).copied().flatten() {
        Some(b) => format!("(M){}", g.at(b, &["i1".into()])),
        None => "0".into(),
    };
    Ok(format!(
        "  long gi = i1 / {mg}L; M acc = 0;\n  for (long c = 0; c < {cg}L; c++) {{\n{head}    acc += (M){} * (M){};\n {close} }}\n  return {};",
        g.at(x, &xc),
        g.at(w, &wc),
        store(out_ty, &format!("acc + {bias}"))?
    ))
}

pub fn col2im(g: &Gen, op: &Op, ins: &[Option<Value>], shape: &[usize]) -> Result<String, String> {
    let Op::Col2Im { dilations, pads, strides } = op else {
        return Err("not a col2im".into());
    };
    let x = input(ins, 0)?;
    let xs = shape_of(g, x)?;
    let block = g.graph.const_value(input(ins, 2)?).ok_or("block_shape must be a constant")?.to_i64_vec();
    let r = block.len();
    if xs.len() != 3 || shape.len() != r + 2 || block.iter().any(|&b| b < 1) {
        return Err(format!("col2im of {xs:?} with block_shape {block:?}"));
    }
    let bl: Vec<usize> = block.iter().map(|&b| b as usize).collect();
    let st: Vec<i64> = (0..r).map(|i| per_dim(strides, i, 1)).collect();
    let dil: Vec<i64> = (0..r).map(|i| per_dim(dilations, i, 1)).collect();
    let pd: Vec<i64> = (0..2 * r).map(|i| per_dim(pads, i, 0)).collect();
    if st.iter().chain(&dil).any(|&v| v < 1) {
        return Err("strides and dilations must be positive".into());
    }
    let mut blocks = Vec::with_capacity(r);
    for i in 0..r {
        let span = shape[2 + i] as i64 + pd[i] + pd[r + i] - dil[i] * (bl[i] as i64 - 1) - 1;
        if span < 0 {
            return Err(format!("no block fits image dim {i}"));
        }
        blocks.push((span / st[i] + 1) as usize);
    }
    let (head, close) = gather_loops(&bl, &st, &dil, &pd[..r], &blocks, 2);
    let bsize: usize = bl.iter().product();
    let row = super::super::linear(&bl, &(0..r).map(|i| format!("k{i}")).collect::<Vec<_>>());
    let col = super::super::linear(&blocks, &(0..r).map(|i| format!("p{i}")).collect::<Vec<_>>());
    Ok(format!(
        "  M acc = 0;\n{head}    acc += (M){};\n {close}\n  return {};",
        g.at(x, &["i0".into(), format!("i1 * {bsize}L + {row}"), col]),
        store(g.dtype(x), "acc")?
    ))
}
