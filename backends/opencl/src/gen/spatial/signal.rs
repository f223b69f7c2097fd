//! Window, DFT, STFT and Det. DFT and STFT are eval's plain O(n) sum per output bin, with
//! the twiddle angle taken from (k·t) mod n so large products stay exact; Det is eval's
//! partial-pivoting elimination on a private copy of the matrix.

use super::{input, lit, shape_of, store, Gen};
use kiln_ir::{DType, Value, WindowKind};
use std::fmt::Write;

/// π and ln 10 as literals: OpenCL's M_PI and M_LN10 are defined only with fp64.
const PI: &str = "((M)3.141592653589793)";
const LN10: &str = "((M)2.302585092994046)";

/// Matrices past this size are refused (the copy lives in private memory).
const MAX_DET: usize = 32;

fn const_int(g: &Gen, v: Option<Value>, what: &str) -> Result<Option<i64>, String> {
    match v {
        None => Ok(None),
        Some(v) => {
            let t = g.graph.const_value(v).ok_or_else(|| format!("{what} must be a constant"))?;
            Ok(t.to_i64_vec().first().copied())
        }
    }
}

pub fn window(kind: WindowKind, periodic: bool, out: DType, shape: &[usize]) -> Result<String, String> {
    let size = *shape.first().ok_or("window's output is 1-D")?;
    let denom = lit(if periodic { size as f64 } else { size as f64 - 1.0 });
    let pi = PI;
    let e = match kind {
        WindowKind::Hann => format!("pown(sin({pi} * n / {denom}), 2)"),
        WindowKind::Hamming => format!("(25.0 / 46.0) - cos(2.0 * {pi} * n / {denom}) * (1.0 - 25.0 / 46.0)"),
        WindowKind::Blackman => format!("0.42 - 0.5 * cos(2.0 * {pi} * n / {denom}) + 0.08 * cos(4.0 * {pi} * n / {denom})"),
    };
    Ok(format!("  M n = (M)i0;\n  return {};", store(out, &e)?))
}

/// The complex sample `t` of the line through coordinates `coords` (with `t` at `axis`),
/// as (re, im) C expressions; the last input dim is 1 (real) or 2 (complex).
fn sample(g: &Gen, x: Value, coords: &[String], complex: bool) -> (String, String) {
    let mut c = coords.to_vec();
    let last = c.len() - 1;
    c[last] = "0".into();
    let re = format!("(M){}", g.at(x, &c));
    let im = if complex {
        c[last] = "1".into();
        format!("(M){}", g.at(x, &c))
    } else {
        "(M)0".into()
    };
    (re, im)
}

pub fn dft(g: &Gen, ins: &[Option<Value>], inverse: bool, onesided: bool) -> Result<String, String> {
    let x = input(ins, 0)?;
    let xs = shape_of(g, x)?;
    let r = xs.len();
    if r < 2 || !g.dtype(x).is_float() || !(xs[r - 1] == 1 || xs[r - 1] == 2) {
        return Err(format!("dft of {xs:?}"));
    }
    let nonempty = |i: usize| ins.get(i).copied().flatten().filter(|v| g.graph.const_value(*v).is_none_or(|t| !t.is_empty()));
    let axis = const_int(g, nonempty(2), "axis")?.unwrap_or(-2);
    let ax = axis.rem_euclid(r as i64) as usize;
    if ax == r - 1 {
        return Err("the axis is the real/complex dim".into());
    }
    let len = xs[ax];
    let irfft = inverse && onesided;
    let n = match const_int(g, nonempty(1), "dft_length")? {
        Some(d) if d > 0 => d as usize,
        Some(d) => return Err(format!("dft_length {d} must be positive")),
        None if irfft => 2 * len.checked_sub(1).ok_or("an empty signal")?,
        None => len,
    };
    let complex = xs[r - 1] == 2;
    let sign = if inverse { "" } else { "-" };
    let mut coords: Vec<String> = (0..r).map(|j| format!("i{j}")).collect();
    coords[ax] = "s".into();
    let (re, im) = sample(g, x, &coords, complex);
    let out = g.dtype(x);
    let scale = if inverse { format!("(1.0 / (M){n})") } else { "(M)1".into() };
    if irfft {
        // The full spectrum from its first half: bin t past the middle is bin n - t conjugated.
        let half = n / 2 + 1;
        return Ok(format!(
            "  M sr = 0;\n  for (long t = 0; t < {n}L; t++) {{ long s = t < {half}L ? t : {n}L - t; if (s >= {len}L) continue; M re = {re}; M im = {im}; if (t >= {half}L) im = -im; M a = 2.0 * {PI} * (M)((i{ax} * t) % {n}L) / (M){n}; sr += re * cos(a) - im * sin(a); }}\n  return {};",
            store(out, &format!("sr * {scale}"))?
        ));
    }
    let used = len.min(n);
    let pick = format!("i{}", r - 1);
    Ok(format!(
        "  M sr = 0, si = 0;\n  for (long s = 0; s < {used}L; s++) {{ M re = {re}; M im = {im}; M a = {sign}2.0 * {PI} * (M)((i{ax} * s) % {n}L) / (M){n}; M c = cos(a), sn = sin(a); sr += re * c - im * sn; si += re * sn + im * c; }}\n  return {};",
        store(out, &format!("({pick} == 0 ? sr : si) * {scale}"))?
    ))
}

pub fn stft(g: &Gen, ins: &[Option<Value>], shape: &[usize]) -> Result<String, String> {
    let x = input(ins, 0)?;
    let xs = shape_of(g, x)?;
    if xs.len() != 3 || !(xs[2] == 1 || xs[2] == 2) || !g.dtype(x).is_float() || shape.len() != 4 {
        return Err(format!("stft of {xs:?}"));
    }
    let len = xs[1];
    let step = const_int(g, ins.get(1).copied().flatten(), "frame_step")?.ok_or("frame_step is missing")?;
    if step < 1 {
        return Err(format!("frame_step {step} must be positive"));
    }
    let window = ins.get(2).copied().flatten().filter(|v| shape_of(g, *v).is_ok_and(|s| s.iter().product::<usize>() > 0));
    let ws = match window {
        Some(w) => match shape_of(g, w)?.as_slice() {
            [n] => *n,
            s => return Err(format!("window must be 1-D, found {s:?}")),
        },
        None => 0,
    };
    let fl = match const_int(g, ins.get(3).copied().flatten().filter(|v| g.graph.const_value(*v).is_none_or(|t| !t.is_empty())), "frame_length")? {
        Some(f) if f > 0 => f as usize,
        Some(f) => return Err(format!("frame_length {f} must be positive")),
        None if window.is_some() => ws,
        None => len,
    };
    let ws = if window.is_some() { ws } else { fl };
    let used = ws.min(fl);
    let (re, im) = sample(g, x, &["i0".into(), "p".into(), "0".into()], xs[2] == 2);
    let w = match window {
        Some(w) => format!("(M){}", g.at(w, &["s".into()])),
        None => "(M)1".into(),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "  M sr = 0, si = 0;\n  for (long s = 0; s < {used}L; s++) {{ long p = i1 * {step}L + s; if (p >= {len}L) continue; M wv = {w}; M re = {re} * wv; M im = {im} * wv; M a = -2.0 * {PI} * (M)((i2 * s) % {fl}L) / (M){fl}; M c = cos(a), sn = sin(a); sr += re * c - im * sn; si += re * sn + im * c; }}\n  return {};",
        store(g.dtype(x), "i3 == 0 ? sr : si")?
    );
    Ok(s)
}

pub fn det(g: &Gen, ins: &[Option<Value>]) -> Result<String, String> {
    let x = input(ins, 0)?;
    let xs = shape_of(g, x)?;
    let r = xs.len();
    if r < 2 || xs[r - 1] != xs[r - 2] || !g.dtype(x).is_float() {
        return Err(format!("det of {xs:?}"));
    }
    let n = xs[r - 1];
    if n > MAX_DET {
        return Err(format!("det of {n}x{n} matrices: at most {MAX_DET}x{MAX_DET} fit a work-item's private memory"));
    }
    let mut coords: Vec<String> = (0..r - 2).map(|j| format!("i{j}")).collect();
    coords.push("rr".into());
    coords.push("cc".into());
    let nn = (n * n).max(1);
    Ok(format!(
        "  M a[{nn}];\n  for (long rr = 0; rr < {n}L; rr++) for (long cc = 0; cc < {n}L; cc++) a[rr * {n} + cc] = (M){};\n  M d = 1;\n  for (int c = 0; c < {n}; c++) {{\n    int p = c; for (int r = c + 1; r < {n}; r++) if (fabs(a[r * {n} + c]) > fabs(a[p * {n} + c])) p = r;\n    if (a[p * {n} + c] == 0) return {};\n    if (p != c) {{ for (int k = 0; k < {n}; k++) {{ M t = a[p * {n} + k]; a[p * {n} + k] = a[c * {n} + k]; a[c * {n} + k] = t; }} d = -d; }}\n    M piv = a[c * {n} + c]; d *= piv;\n    for (int r = c + 1; r < {n}; r++) {{ M f = a[r * {n} + c] / piv; if (f != 0) for (int k = c + 1; k < {n}; k++) a[r * {n} + k] -= f * a[c * {n} + k]; }}\n  }}\n  return {};",
        g.at(x, &coords),
        store(g.dtype(x), "0")?,
        store(g.dtype(x), "d")?
    ))
}

/// MelWeightMatrix: element (bin j, mel band i) of the triangular filter bank; each
/// element finds band i's three edges (lower, centre, upper) as eval does.
pub fn mel_weight_matrix(g: &Gen, ins: &[Option<Value>], out: DType, shape: &[usize]) -> Result<String, String> {
    if shape.len() != 2 {
        return Err("mel_weight_matrix's output is 2-D".into());
    }
    let scalar = |i: usize| -> Result<String, String> {
        let v = input(ins, i)?;
        let r = shape_of(g, v)?.len();
        Ok(format!("(M){}", g.at(v, &vec!["0".to_string(); r])))
    };
    let lo_t = g.dtype(input(ins, 3)?);
    if !lo_t.is_float() {
        return Err(format!("lower_edge_hertz must be a float, found {lo_t}"));
    }
    let rt = |e: &str| if lo_t == DType::F32 { format!("(M)(float)({e})") } else { format!("({e})") };
    let to_mel = |hz: &str| format!("({} / {LN10})", rt(&format!("2595.0 * {}", rt(&format!("log1p({})", rt(&format!("{hz} / 700.0")))))));
    let bins = shape[1];
    Ok(format!(
        "  M dl = {dl}, rate = {rate};\n  M lo = {lo}, hi = {hi};\n  M step = (hi - lo) / (M){steps};\n  long e[3];\n  for (int k = 0; k < 3; k++) {{ M mel = (M)(i1 + k) * step + lo; M hz = 700.0 * expm1(mel / 2595.0 * {LN10}); e[k] = (long)floor((dl + 1.0) * hz / rate); }}\n  long up = e[1] - e[0], down = e[2] - e[1];\n  M v = 0;\n  if (down > 0 && i0 >= e[1] && i0 < e[2]) v = (M)(e[2] - i0) / (M)down;\n  else if (up == 0 && i0 == e[1]) v = 1;\n  else if (up > 0 && i0 >= e[0] && i0 <= e[1]) v = (M)(i0 - e[0]) / (M)up;\n  return {ret};",
        dl = scalar(1)?,
        rate = scalar(2)?,
        lo = to_mel(&scalar(3)?),
        hi = to_mel(&scalar(4)?),
        steps = bins + 2,
        ret = store(out, "v")?,
    ))
}
