//! MatMulInteger and QLinearMatMul: numpy-batched matmul of u8/i8 operands minus their
//! zero points (one, or one per row of A / column of B), accumulated in wrapping 64-bit
//! and truncated to i32 as `ir::eval` does; QLinearMatMul then requantizes with
//! a_scale·b_scale / y_scale computed in the scales' precision, rounding half to even and
//! saturating into the output type.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{DType, NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::MatMulInteger | Op::QLinearMatMul)
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, shape))
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

fn body_inner(g: &Gen, n: NodeId, op: &Op, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let input = |i: usize| ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"));
    let opt = |i: usize| ins.get(i).copied().flatten();
    let q = matches!(op, Op::QLinearMatMul);
    // QLinearMatMul: (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp);
    // MatMulInteger: (a, b, a_zp, b_zp).
    let (a, b, azp, bzp) = if q { (input(0)?, input(3)?, opt(2), opt(5)) } else { (input(0)?, input(1)?, opt(2), opt(3)) };
    for v in [a, b] {
        quant_range(g.dtype(v))?;
    }
    let (as_, bs) = (dims(g.graph, a)?, dims(g.graph, b)?);
    let r = shape.len();
    let kk = *as_.last().ok_or("matmul of a scalar")?;
    let m = if as_.len() >= 2 { as_[as_.len() - 2] } else { 1 };
    let ncols = if bs.len() >= 2 { bs[bs.len() - 1] } else { 1 };
    // Output coordinates: batch dims, then M (unless A is 1-D), then N (unless B is).
    let n_dims = (as_.len() >= 2) as usize + (bs.len() >= 2) as usize;
    let batch = r.checked_sub(n_dims).ok_or("the output rank does not fit the operands")?;
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
    let (sa, sb, sy) = (input(1)?, input(4)?, input(6)?);
    let sd = g.dtype(sa);
    let st = match sd {
        DType::F32 => "float",
        DType::F64 => "double",
        d => return Err(format!("{d} scales")),
    };
    let out_d = g.graph.node(n).outputs[0].dtype;
    let (lo, hi) = quant_range(out_d)?;
    let ty = ctype(out_d).ok_or("half tensors")?;
    let zy = match opt(7) {
        Some(z) => per(g, z, 1, "0", "y's zero point")?,
        None => "0".into(),
    };
    // The multiplier rounded to the scales' type at each step, as the reference computes it.
    let mult = format!(
        "({st})((M)({st})((M){} * (M){}) / (M){})",
        per(g, sa, 1, "0", "a_scale")?,
        per(g, sb, ncols, &col, "b_scale")?,
        per(g, sy, 1, "0", "y_scale")?
    );
    Ok(format!(
        "{acc}\n  M r = rint((M)acc * (M){mult});\n  long v = isnan(r) ? {lo}L : (long)clamp(r, (M)-9.0e18, (M)9.0e18);\n  v += (long){zy};\n  return ({ty})(v < {lo}L ? {lo}L : (v > {hi}L ? {hi}L : v));"
    ))
}
