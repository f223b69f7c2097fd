//! MatMulInteger, QLinearMatMul, ConvInteger and QLinearConv: u8/i8 operands minus their
//! zero points (matmul: one, or one per row of A / column of B; conv: one for x, one or one
//! per output channel for w), accumulated in wrapping 64-bit and truncated to i32 as
//! `ir::eval` does. The QLinear forms then add QLinearConv's i32 bias (wrapping) and
//! requantize with a_scale·b_scale / y_scale computed in the scales' precision, rounding
//! half to even and saturating into the output type.

use super::nn::{attr, pad_begin};
use super::{ctype, dims, Body, Gen};
use kiln_ir::{AutoPad, DType, NodeId, Op, Value};
use std::fmt::Write;

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::MatMulInteger | Op::QLinearMatMul | Op::ConvInteger { .. } | Op::QLinearConv { .. })
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(match op {
        Op::ConvInteger { auto_pad, dilations, pads, strides, group, .. } | Op::QLinearConv { auto_pad, dilations, pads, strides, group, .. } => {
            let w = Window { auto_pad: *auto_pad, dilations, pads, strides, group: *group };
            conv(g, n, matches!(op, Op::QLinearConv { .. }), &w, shape)
        }
        _ => matmul(g, n, matches!(op, Op::QLinearMatMul), shape),
    })
}

type Ins = Vec<Option<Value>>;

fn input(ins: &Ins, i: usize) -> Result<Value, String> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

fn opt(ins: &Ins, i: usize) -> Option<Value> {
    ins.get(i).copied().flatten()
}

/// A per-tensor or per-row/column parameter `v` (one value, or `len` values) read at the
/// index `idx` (a C expression).
fn per(g: &Gen, v: Value, len: usize, idx: &str, what: &str) -> Result<String, String> {
    let s = dims(g.graph, v)?;
    let count: usize = s.iter().product();
    if count == 1 {
        return Ok(g.at(v, &vec!["0".to_string(); s.len()]));
    }
    if count != len || s.iter().filter(|&&d| d != 1).count() != 1 {
        return Err(format!("{what} must hold one value or {len}, found shape {s:?}"));
    }
    Ok(g.at(v, &s.iter().map(|&d| if d == 1 { "0".to_string() } else { idx.to_string() }).collect::<Vec<_>>()))
}

fn quant_range(d: DType) -> Result<(i64, i64), String> {
    Ok(match d {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        other => return Err(format!("{other} is not a quantized 8-bit type")),
    })
}

fn matmul(g: &Gen, n: NodeId, q: bool, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    // QLinearMatMul: (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp);
    // MatMulInteger: (a, b, a_zp, b_zp).
    let (a, b, azp, bzp) =
        if q { (input(&ins, 0)?, input(&ins, 3)?, opt(&ins, 2), opt(&ins, 5)) } else { (input(&ins, 0)?, input(&ins, 1)?, opt(&ins, 2), opt(&ins, 3)) };
    for v in [a, b] {
        quant_range(g.dtype(v))?;
    }
    let (as_, bs) = (dims(g.graph, a)?, dims(g.graph, b)?);
    let r = shape.len();
    let kk = *as_.last().ok_or("matmul of a scalar")?;
    let m = if as_.len() >= 2 { as_[as_.len() - 2] } else { 1 };
    let ncols = if bs.len() >= 2 { bs[bs.len() - 1] } else { 1 };
    let kb = if bs.len() >= 2 { bs[bs.len() - 2] } else { *bs.first().ok_or("matmul of a scalar")? };
    if kb != kk {
        return Err(format!("inner dims differ: A is {as_:?}, B is {bs:?}"));
    }
    // Output coordinates: batch dims, then M (unless A is 1-D), then N (unless B is).
    let n_dims = (as_.len() >= 2) as usize + (bs.len() >= 2) as usize;
    let batch = r.checked_sub(n_dims).ok_or("the output rank does not fit the operands")?;
    if as_.len().saturating_sub(2) > batch || bs.len().saturating_sub(2) > batch {
        return Err("the output rank does not fit the operands".into());
    }
    let bcast = |s: &[usize], keep: usize| -> Vec<String> {
        let nb = s.len() - keep;
        (0..nb).map(|j| if s[j] == 1 { "0".into() } else { format!("i{}", batch - nb + j) }).collect()
    };
    let row = if as_.len() >= 2 { format!("i{batch}") } else { "0".into() };
    let col = if bs.len() >= 2 { format!("i{}", r - 1) } else { "0".into() };
    let mut ac = if as_.len() >= 2 { bcast(&as_, 2) } else { vec![] };
    if as_.len() >= 2 {
        ac.push(row.clone());
    }
    ac.push("t".into());
    let mut bc = if bs.len() >= 2 { bcast(&bs, 2) } else { vec![] };
    bc.push("t".into());
    if bs.len() >= 2 {
        bc.push(col.clone());
    }
    let za = match azp {
        Some(z) => per(g, z, m, &row, "A's zero point")?,
        None => "0".into(),
    };
    let zb = match bzp {
        Some(z) => per(g, z, ncols, &col, "B's zero point")?,
        None => "0".into(),
    };
    let acc = format!(
        "  long za = (long){za}, zb = (long){zb}; long s = 0;\n  for (long t = 0; t < {kk}L; t++) s += ((long){} - za) * ((long){} - zb);\n  int acc = (int)s;",
        g.at(a, &ac),
        g.at(b, &bc)
    );
    if !q {
        return Ok(format!("{acc}\n  return acc;"));
    }
    requantize(g, n, &ins, &acc, ncols, &col)
}

/// The QLinear forms' tail after `acc` (statements declaring `int acc`): the multiplier
/// (input 4's scale read per `per_len` at `per_idx`), rounding, the zero point, saturation.
fn requantize(g: &Gen, n: NodeId, ins: &Ins, acc: &str, per_len: usize, per_idx: &str) -> Body {
    let (sa, sb, sy) = (input(ins, 1)?, input(ins, 4)?, input(ins, 6)?);
    let sd = g.dtype(sa);
    let st = match sd {
        DType::F32 => "float",
        DType::F64 => "double",
        d => return Err(format!("{d} scales")),
    };
    let out_d = g.graph.node(n).outputs[0].dtype;
    let (lo, hi) = quant_range(out_d)?;
    let ty = ctype(out_d).ok_or("half tensors")?;
    let zy = match opt(ins, 7) {
        Some(z) => per(g, z, 1, "0", "y's zero point")?,
        None => "0".into(),
    };
    // The multiplier rounded to the scales' type at each step, as the reference computes it.
    let mult = format!(
        "({st})((M)({st})((M){} * (M){}) / (M){})",
        per(g, sa, 1, "0", "the input's scale")?,
        per(g, sb, per_len, per_idx, "the weight's scale")?,
        per(g, sy, 1, "0", "y_scale")?
    );
    Ok(format!(
        "{acc}\n  M r = rint((M)acc * (M){mult});\n  long v = isnan(r) ? {lo}L : (long)clamp(r, (M)-9.0e18, (M)9.0e18);\n  v += (long){zy};\n  return ({ty})(v < {lo}L ? {lo}L : (v > {hi}L ? {hi}L : v));"
    ))
}

struct Window<'a> {
    auto_pad: AutoPad,
    dilations: &'a [i64],
    pads: &'a [i64],
    strides: &'a [i64],
    group: i64,
}

/// The integer convolution, direct (as `nn.rs`'s float conv): each output element loops
/// over its group's input channels and the kernel window, skipping padding (which adds 0,
/// as eval pads the shifted input with zeros).
fn conv(g: &Gen, n: NodeId, q: bool, win: &Window, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    // QLinearConv: (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias);
    // ConvInteger: (x, w, x_zp, w_zp).
    let (x, w, xzp, wzp) =
        if q { (input(&ins, 0)?, input(&ins, 3)?, opt(&ins, 2), opt(&ins, 5)) } else { (input(&ins, 0)?, input(&ins, 1)?, opt(&ins, 2), opt(&ins, 3)) };
    for v in [x, w] {
        quant_range(g.dtype(v))?;
    }
    let (xs, ws) = (dims(g.graph, x)?, dims(g.graph, w)?);
    if xs.len() < 3 || ws.len() != xs.len() || shape.len() != xs.len() {
        return Err("an integer conv takes N, C and spatial dims".into());
    }
    let groups = win.group.max(1) as usize;
    let (cpg, m) = (ws[1], shape[1]);
    let mpg = m / groups;
    if mpg == 0 || cpg * groups != xs[1] || ws[0] != m || shape[0] != xs[0] {
        return Err(format!("x {xs:?}, w {ws:?} and the output {shape:?} do not fit {groups} groups"));
    }
    let zx = match xzp {
        Some(z) => per(g, z, 1, "0", "x's zero point")?,
        None => "0".into(),
    };
    let zw = match wzp {
        Some(z) => per(g, z, m, "i1", "w's zero point")?,
        None => "0".into(),
    };
    let mut s = format!("  long gi = i1 / {mpg}L; long zx = (long){zx}, zw = (long){zw}; long a = 0;\n  for (long c = 0; c < {cpg}L; c++) ");
    let mut xc = vec!["i0".to_string(), format!("gi * {cpg}L + c")];
    let mut wc = vec!["i1".to_string(), "c".to_string()];
    let mut guard = String::new();
    for i in 0..xs.len() - 2 {
        let (st, di) = (attr(win.strides, i, 1), attr(win.dilations, i, 1));
        let kk = ws[2 + i];
        let extent = if kk == 0 { 0 } else { (kk - 1) * di + 1 };
        let pb = pad_begin(win.auto_pad, win.pads, i, xs[2 + i], shape[2 + i], st, extent);
        let _ = write!(s, "for (long k{i} = 0; k{i} < {kk}L; k{i}++) ");
        xc.push(format!("p{i}"));
        wc.push(format!("k{i}"));
        let _ = writeln!(guard, "    long p{i} = i{} * {st}L - {pb}L + k{i} * {di}L; if (p{i} < 0 || p{i} >= {}L) continue;", 2 + i, xs[2 + i]);
    }
    let _ = write!(s, "{{\n{guard}    a += ((long){} - zx) * ((long){} - zw);\n  }}\n  int acc = (int)a;", g.at(x, &xc), g.at(w, &wc));
    if !q {
        return Ok(format!("{s}\n  return acc;"));
    }
    if let Some(b) = opt(&ins, 8) {
        if g.dtype(b) != DType::I32 {
            return Err(format!("the bias must be i32, found {}", g.dtype(b)));
        }
        // Wrapping i32 addition, done in unsigned arithmetic (signed overflow is undefined in C).
        let _ = write!(s, "\n  acc = (int)((uint)acc + (uint){});", per(g, b, m, "i1", "the bias")?);
    }
    requantize(g, n, &ins, &s, m, "i1")
}
