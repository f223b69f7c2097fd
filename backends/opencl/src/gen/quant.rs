//! QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear, elementwise with the scale
//! and zero point read per tensor, per axis or per block, rounding where `ir::eval` rounds
//! (x / scale in x's precision, dequantization's subtraction in f32, round half to even,
//! NaN saturating low). DynamicQuantizeLinear's every element first walks the whole input
//! for its range (O(n) per element, so it suits the small tensors it is used on).

use super::{ctype, dims, Body, Gen};
use kiln_ir::{DType, NodeId, Op, Value};

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } | Op::DynamicQuantizeLinear)
}

pub fn body(g: &Gen, n: NodeId, k: usize, shape: &[usize]) -> Option<Body> {
    let op = &g.graph.node(n).op;
    if !handles(op) {
        return None;
    }
    Some(body_inner(g, n, op, k, shape))
}

fn range(d: DType) -> Result<(i64, i64), String> {
    Ok(match d {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        other => return Err(format!("{other} is not a quantized type (u8, i8, u16, i16, i32)")),
    })
}

/// The coordinates at which element `i0..` of x reads a scale (or zero point) of shape
/// `s`: per tensor (one value), per axis, or blocked along the axis.
fn param_coords(xs: &[usize], s: &[usize], axis: i64, block: i64) -> Result<Vec<String>, String> {
    let count: usize = s.iter().product();
    if count == 1 && block <= 0 {
        return Ok(vec!["0".into(); s.len()]);
    }
    let r = xs.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let a = a as usize;
    if block <= 0 {
        if s != [xs[a]] {
            return Err(format!("a per-axis scale must have shape [{}], found {s:?}", xs[a]));
        }
        return Ok(vec![format!("i{a}")]);
    }
    let mut want = xs.to_vec();
    want[a] = xs[a].div_ceil(block as usize);
    if s != want {
        return Err(format!("a blocked scale must have shape {want:?}, found {s:?}"));
    }
    Ok((0..xs.len()).map(|j| if j == a { format!("(i{j} / {block}L)") } else { format!("i{j}") }).collect())
}

/// The expression of a scale or zero point `v` for element `i0..`, read as `param_coords`
/// for `scale_shape` (a one-value zero point beside a one-value scale is read at 0).
fn param(g: &Gen, v: Value, scale_shape: &[usize], coords: &[String]) -> Result<String, String> {
    let s = dims(g.graph, v)?;
    if s == scale_shape {
        return Ok(g.at(v, coords));
    }
    if s.iter().product::<usize>() == 1 && scale_shape.iter().product::<usize>() == 1 {
        return Ok(g.at(v, &vec!["0".to_string(); s.len()]));
    }
    Err(format!("zero point shape {s:?} differs from the scale's {scale_shape:?}"))
}

/// `q` (a double or float C expression, already rounded to x's precision) rounded half to
/// even, plus the zero point `zp`, saturated into [lo, hi].
fn saturate(q: &str, zp: &str, lo: i64, hi: i64) -> String {
    format!(
        "  M r = rint((M)({q}));\n  long v = isnan(r) ? {lo}L : (long)clamp(r, (M)-9.0e18, (M)9.0e18);\n  v += (long){zp};\n  return v < {lo}L ? {lo}L : (v > {hi}L ? {hi}L : v);"
    )
}

fn body_inner(g: &Gen, n: NodeId, op: &Op, k: usize, shape: &[usize]) -> Body {
    let ins = g.graph.inputs_of(n);
    let x = ins.first().copied().flatten().ok_or("input 0 is missing")?;
    let xd = g.dtype(x);
    let xs = dims(g.graph, x)?;
    let out: Vec<String> = (0..shape.len()).map(|j| format!("i{j}")).collect();
    let out_d = g.graph.node(n).outputs[k].dtype;
    let out_ty = ctype(out_d).ok_or("half tensors")?;
    match op {
        Op::QuantizeLinear { axis, block_size, .. } | Op::DequantizeLinear { axis, block_size, .. } => {
            let scale = ins.get(1).copied().flatten().ok_or("the scale is missing")?;
            let ss = dims(g.graph, scale)?;
            let pc = param_coords(&xs, &ss, *axis, *block_size)?;
            let s = g.at(scale, &pc);
            let zp = match ins.get(2).copied().flatten() {
                Some(z) => param(g, z, &ss, &pc)?,
                None => "0".into(),
            };
            let xv = g.at(x, &out);
            if matches!(op, Op::QuantizeLinear { .. }) {
                let (lo, hi) = range(out_d)?;
                // x / scale in x's precision, as the reference computes it.
                let q = match xd {
                    DType::F32 => format!("(float)((M){xv} / (M){s})"),
                    DType::F64 => format!("((double){xv} / (double){s})"),
                    d if d.is_float() => return Err(format!("{d} tensors")),
                    _ => format!("((M){xv} / (M){s})"),
                };
                return Ok(saturate(&q, &zp, lo, hi));
            }
            range(xd)?;
            if !out_d.is_float() {
                return Err(format!("dequantize_linear's output must be a float type, found {out_d}"));
            }
            // The reference subtracts in f32, multiplies in f32 (f64 for an f64 scale).
            let prod = if g.dtype(scale) == DType::F64 { "double" } else { "float" };
            Ok(format!("  float dx = (float){xv} - (float){zp};\n  return ({out_ty})({prod})((M)dx * (M){s});"))
        }
        Op::DynamicQuantizeLinear => {
            if !xd.is_float() {
                return Err(format!("x must be a float type, found {xd}"));
            }
            let count: usize = xs.iter().product();
            // The range always includes 0; all in f32 as the ONNX formula is written.
            let walk = format!(
                "  float mx = 0, mn = 0;\n  for (long q = 0; q < {count}L; q++) {{ {split} float e = (float){at}; mx = fmax(mx, e); mn = fmin(mn, e); }}\n  float scale = mx == mn ? 1.0f / 255.0f : (mx - mn) / 255.0f;\n  float zp = rint(clamp(0.0f - mn / scale, 0.0f, 255.0f));",
                split = super::delinearize(&xs, "q", "x"),
                at = g.at(x, &(0..xs.len()).map(|j| format!("x{j}")).collect::<Vec<_>>()),
            );
            let result = match k {
                0 => format!("(uchar)clamp(rint((float){} / scale) + zp, 0.0f, 255.0f)", g.at(x, &out)),
                1 => format!("({out_ty})scale"),
                _ => "(uchar)zp".into(),
            };
            Ok(format!("{walk}\n  return {result};"))
        }
        _ => Err("not a quantization op".into()),
    }
}
