//! Resize: the interpolation taps of each resized axis (input positions and weights per
//! output position) come from `kiln_ir::resize_taps`, the function `ir::eval` runs on, and become
//! constant tables of the kernel; each output element sums the product of its axes' taps.
//! Eval resizes one axis at a time; the product of the separable weights is the same sum.

use super::{array, input, lit, shape_of, store, Gen};
use kiln_ir::{Op, Value};
use std::fmt::Write;

/// Table entries one kernel may carry (the source grows with them).
const MAX_TAPS: usize = 1 << 20;

fn constant(g: &Gen, ins: &[Option<Value>], i: usize, name: &str) -> Result<Option<kiln_ir::Tensor>, String> {
    match ins.get(i).copied().flatten() {
        None => Ok(None),
        Some(v) => g.graph.const_value(v).cloned().map(Some).ok_or_else(|| format!("{name} must be a constant")),
    }
}

pub fn body(g: &Gen, op: &Op, ins: &[Option<Value>], shape: &[usize]) -> Result<String, String> {
    let Op::Resize { extrapolation_value, .. } = op else {
        return Err("not a resize".into());
    };
    let x = input(ins, 0)?;
    let xs = shape_of(g, x)?;
    let r = xs.len();
    let roi = constant(g, ins, 1, "roi")?;
    let scales = constant(g, ins, 2, "scales")?;
    let sizes = constant(g, ins, 3, "sizes")?;
    let plan = kiln_ir::resize_taps(op, &xs, roi.as_ref(), scales.as_ref(), sizes.as_ref()).map_err(|e| e.to_string())?;
    if plan.out_shape != shape {
        return Err(format!("the output shape {shape:?} differs from the resize's {:?}", plan.out_shape));
    }
    let total = plan.axes.iter().fold(0usize, |t, (_, taps)| t.saturating_add(taps.iter().map(|t| t.as_ref().map_or(1, Vec::len)).sum()));
    if total > MAX_TAPS {
        return Err(format!("the interpolation tables would have more than {MAX_TAPS} entries"));
    }
    let out_ty = g.dtype(x);
    let mut s = String::new();
    let mut head = String::new();
    let mut close = String::new();
    let mut weight = Vec::new();
    let mut xc: Vec<String> = (0..r).map(|j| format!("i{j}")).collect();
    for (a, taps) in &plan.axes {
        let a = *a;
        // Every position of one axis has as many taps (the mode and scale fix the count).
        let n = taps.iter().flatten().map(Vec::len).next().unwrap_or(1);
        // A position where tf_crop_and_resize extrapolates has the index -1.
        let mut idx = Vec::with_capacity(n * shape[a]);
        let mut w = Vec::with_capacity(n * shape[a]);
        for t in taps {
            match t {
                Some(t) => {
                    for &(k, c) in t {
                        idx.push(k as i64);
                        w.push(lit(c));
                    }
                }
                None => {
                    idx.extend(std::iter::repeat_n(-1, n));
                    w.extend(std::iter::repeat_n("0".to_string(), n));
                }
            }
        }
        let _ = writeln!(s, "  const long ix{a}[] = {}; const M w{a}[] = {};", array(&idx), array(&w));
        let _ = write!(
            head,
            "  for (long t{a} = 0; t{a} < {n}L; t{a}++) {{ long p{a} = ix{a}[i{a} * {n}L + t{a}]; if (p{a} < 0) return {}; M c{a} = w{a}[i{a} * {n}L + t{a}];\n",
            store(out_ty, &lit(*extrapolation_value as f64))?
        );
        close.push_str(" }");
        weight.push(format!("c{a}"));
        xc[a] = format!("p{a}");
    }
    let v = format!("(M){}", g.at(x, &xc));
    if weight.is_empty() {
        let _ = write!(s, "  return {};", store(out_ty, &v)?);
        return Ok(s);
    }
    let _ = write!(s, "  M acc = 0;\n{head}    acc += {} * {v};\n {close}\n  return {};", weight.join(" * "), store(out_ty, "acc")?);
    Ok(s)
}
