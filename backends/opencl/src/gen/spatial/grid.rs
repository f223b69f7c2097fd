//! GridSample and AffineGrid. GridSample: each output element reads its grid point,
//! denormalizes it per spatial dim as eval does (rounded to the grid's type, then kept in
//! f32 as ONNX's reference does), applies the padding mode, and sums the tensor product of
//! the per-dim taps (1 nearest, 2 linear, 4 cubic) over the valid pixels.

use super::{input, lit, shape_of, store, Gen};
use kiln_ir::{DType, GridPaddingMode, GridSampleMode, Value};
use std::fmt::Write;

/// Statements folding the M variable `x` into [lo, hi] by reflection, as eval's `reflect`.
fn reflect(x: &str, lo: f64, hi: f64) -> String {
    let (lo, hi) = (lit(lo), lit(hi));
    format!(
        "{{ M rg = {hi} - {lo}; if (rg <= 0) {x} = {lo}; else if ({x} < {lo}) {{ M dx = {lo} - {x}; M nn = trunc(dx / rg); M rr = dx - nn * rg; {x} = fmod(nn, (M)2) == 0 ? {lo} + rr : {hi} - rr; }} else if ({x} > {hi}) {{ M dx = {x} - {hi}; M nn = trunc(dx / rg); M rr = dx - nn * rg; {x} = fmod(nn, (M)2) == 0 ? {hi} - rr : {lo} + rr; }} }}"
    )
}

pub fn grid_sample(g: &Gen, ins: &[Option<Value>], align: bool, mode: GridSampleMode, padding: GridPaddingMode, out: DType) -> Result<String, String> {
    let (x, grid) = (input(ins, 0)?, input(ins, 1)?);
    let (xs, gs) = (shape_of(g, x)?, shape_of(g, grid)?);
    if xs.len() < 3 || gs.len() != xs.len() || gs[0] != xs[0] || gs[xs.len() - 1] != xs.len() - 2 {
        return Err(format!("grid {gs:?} does not match x {xs:?}"));
    }
    let gt = g.dtype(grid);
    if !gt.is_float() || out == DType::Bool {
        return Err(format!("grid_sample on {out} with a {gt} grid"));
    }
    let r = xs.len() - 2;
    // Rounding to the grid's type, as eval's round_to.
    let rt = |e: String| if gt == DType::F32 { format!("(M)(float)({e})") } else { e };
    let mut s = String::from("  M acc = 0;\n");
    let mut head = String::new();
    let mut close = String::new();
    let mut weights = Vec::new();
    let mut xc = vec!["i0".to_string(), "i1".to_string()];
    for i in 0..r {
        let d = xs[2 + i];
        let len = lit(d as f64);
        let (lo, hi) = if align { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) };
        let mut gc: Vec<String> = vec!["i0".into()];
        gc.extend((0..r).map(|j| format!("i{}", 2 + j)));
        gc.push(format!("{}", r - 1 - i));
        let v = format!("((M){})", g.at(grid, &gc));
        let c = if align {
            rt(format!("{} * ({len} - 1)", rt(format!("{} / 2", rt(format!("{v} + 1"))))))
        } else {
            rt(format!("{} / 2", rt(format!("{} * {len} - 1", rt(format!("{v} + 1"))))))
        };
        let _ = writeln!(s, "  M c{i} = (M)(float)({c});");
        if mode == GridSampleMode::Nearest {
            let _ = writeln!(s, "  c{i} = rint(c{i});");
        }
        match padding {
            GridPaddingMode::Border => {
                let _ = writeln!(s, "  if (c{i} < {} || c{i} > {}) c{i} = fmax(fmin(c{i}, {}), (M)0);", lit(lo), lit(hi), lit(d as f64 - 1.0));
            }
            GridPaddingMode::Reflection => {
                let _ = writeln!(s, "  if (c{i} < {} || c{i} > {}) {{ {} c{i} = (M)(float)c{i}; }}", lit(lo), lit(hi), reflect(&format!("c{i}"), lo, hi));
            }
            GridPaddingMode::Zeros => {}
        }
        // First tap and tap count; weights per tap.
        let clampi = |e: &str| format!("(long)fmin(fmax({e}, (M)-1e15), (M)1e15)");
        let (first, taps) = match mode {
            GridSampleMode::Nearest => (clampi(&format!("trunc(c{i})")), 1),
            GridSampleMode::Linear => (clampi(&format!("floor(c{i})")), 2),
            GridSampleMode::Cubic => (format!("{} - 1", clampi(&format!("floor(c{i})"))), 4),
        };
        let _ = writeln!(s, "  long base{i} = {first}; M f{i} = c{i} - floor(c{i});");
        let w = match mode {
            GridSampleMode::Nearest => "(M)1".to_string(),
            GridSampleMode::Linear => format!("(t{i} == 0 ? 1 - f{i} : f{i})"),
            GridSampleMode::Cubic => {
                // Keys' weights with a = -0.75 for the four neighbours, as eval's cubic_weights.
                let _ = writeln!(
                    s,
                    "  M cw{i}[4]; {{ M a = -0.75; M t = fabs(f{i}); cw{i}[0] = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a; cw{i}[1] = ((a + 2) * t - (a + 3)) * t * t + 1; cw{i}[2] = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1; cw{i}[3] = ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a; }}"
                );
                format!("cw{i}[t{i}]")
            }
        };
        let map = match padding {
            GridPaddingMode::Zeros => format!("if (q{i} < 0 || q{i} >= {d}L) continue;"),
            GridPaddingMode::Border => format!("q{i} = q{i} < 0 ? 0 : (q{i} > {m}L ? {m}L : q{i});", m = d as i64 - 1),
            GridPaddingMode::Reflection => format!(
                "{{ M rq = (M)q{i}; {} q{i} = (long)trunc(rq); q{i} = q{i} < 0 ? 0 : (q{i} > {m}L ? {m}L : q{i}); }}",
                reflect("rq", lo, hi),
                m = d as i64 - 1
            ),
        };
        let _ = writeln!(head, "  for (int t{i} = 0; t{i} < {taps}; t{i}++) {{ long q{i} = base{i} + t{i}; {map} M w{i} = {w};");
        close.push_str(" }");
        weights.push(format!("w{i}"));
        xc.push(format!("q{i}"));
    }
    if xs[2..].contains(&0) {
        return Ok(format!("  return {};", store(out, "0")?));
    }
    let _ = write!(s, "{head}    acc += {} * (M){};\n {close}\n  return {};", weights.join(" * "), g.at(x, &xc), store(out, "acc")?);
    Ok(s)
}

/// AffineGrid: output (b, s0.., row) is theta's row dotted with the homogeneous point whose
/// coordinates list the innermost spatial dim first.
pub fn affine_grid(g: &Gen, ins: &[Option<Value>], align: bool, shape: &[usize]) -> Result<String, String> {
    let theta = input(ins, 0)?;
    let td = g.dtype(theta);
    if !td.is_float() {
        return Err(format!("affine_grid on {td}"));
    }
    let k = shape.len().checked_sub(2).ok_or("affine_grid's output has rank 4 or 5")?;
    let ts = shape_of(g, theta)?;
    if ts != [shape[0], k, k + 1] {
        return Err(format!("theta {ts:?} does not match the output {shape:?}"));
    }
    let mut s = String::from("  M acc = 0;\n");
    for c in 0..k {
        let a = k - 1 - c;
        let d = shape[1 + a];
        let coord = if align {
            if d == 1 {
                "(M)-1".to_string()
            } else {
                format!("(-1 + (M)i{} * (2 / (M){}))", 1 + a, d as f64 - 1.0)
            }
        } else {
            format!("((-1 + (2 / (M){d}) / 2) + (M)i{} * (2 / (M){d}))", 1 + a)
        };
        let _ = writeln!(s, "  acc += (M){} * {coord};", g.at(theta, &["i0".into(), format!("i{}", k + 1), c.to_string()]));
    }
    let _ = write!(s, "  acc += (M){};\n  return {};", g.at(theta, &["i0".into(), format!("i{}", k + 1), k.to_string()]), store(td, "acc")?);
    Ok(s)
}
