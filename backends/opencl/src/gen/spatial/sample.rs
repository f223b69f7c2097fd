//! RoiAlign, DeformConv and MaxUnpool: ops that read their input at positions computed
//! from another input's values (roi boxes, learned offsets, pooling indices), so the
//! positions are found per output element at run time.

use super::{input, lit, shape_of, store, Gen};
use kiln_ir::{CoordinateTransform, Op, RoiPoolMode, Value};

fn attr(v: &[i64], i: usize, default: i64) -> i64 {
    v.get(i).copied().unwrap_or(default)
}

pub fn roi_align(g: &Gen, op: &Op, ins: &[Option<Value>]) -> Result<String, String> {
    let Op::RoiAlign { coordinate_transformation_mode: ct, mode, output_height, output_width, sampling_ratio, spatial_scale } = op else {
        return Err("not a roi_align".into());
    };
    let (x, rois, bi) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
    let xs = shape_of(g, x)?;
    if xs.len() != 4 || !g.dtype(x).is_float() {
        return Err(format!("roi_align of {xs:?}"));
    }
    let (nb, h, w) = (xs[0], xs[2], xs[3]);
    let half = *ct == CoordinateTransform::HalfPixel;
    let (ph, pw) = (*output_height, *output_width);
    let at = |yy: &str, xx: &str| g.at(x, &["bb".into(), "i1".into(), yy.into(), xx.into()]);
    let r = |k: usize| format!("(M){}", g.at(rois, &["i0".into(), k.to_string()]));
    let grid = |len: &str, bins: i64| if *sampling_ratio > 0 { format!("{sampling_ratio}L") } else { format!("(long)fmax(ceil({len} / (M){bins}), (M)0)") };
    let clamp_rw = if half { "" } else { "rw = fmax(rw, (M)1); rh = fmax(rh, (M)1);" };
    let fold = match mode {
        RoiPoolMode::Average => "acc += t;",
        RoiPoolMode::Max => "acc = any ? fmax(acc, t) : t; any = 1;",
    };
    let fin = match mode {
        RoiPoolMode::Average => "acc / (M)(gh * gw > 0 ? gh * gw : 1)",
        RoiPoolMode::Max => "any ? acc : (M)0",
    };
    let tap_fold = match mode {
        RoiPoolMode::Average => "t = v00 * hy * hx + v01 * hy * lx + v10 * ly * hx + v11 * ly * lx;",
        RoiPoolMode::Max => "t = fmax(fmax(fmax(v00 * hy * hx, v01 * hy * lx), v10 * ly * hx), v11 * ly * lx);",
    };
    if h == 0 || w == 0 || nb == 0 {
        return Ok(format!("  return {};", store(g.dtype(x), "0")?));
    }
    Ok(format!(
        "  long bb = (long){bi}; bb = bb < 0 ? 0 : (bb >= {nb}L ? {nb}L - 1 : bb);
  M off = {off}; M scale = (M){scale};
  M sw = {r0} * scale - off, sh = {r1} * scale - off, ew = {r2} * scale - off, eh = {r3} * scale - off;
  M rw = ew - sw, rh = eh - sh; {clamp_rw}
  M bh = rh / (M){ph}, bw = rw / (M){pw};
  long gh = {gh}, gw = {gw};
  M acc = 0; int any = 0; (void)any;
  for (long iy = 0; iy < gh; iy++) for (long ix = 0; ix < gw; ix++) {{
    M y = sh + (M)i2 * bh + ((M)iy + 0.5) * bh / (M)gh;
    M x = sw + (M)i3 * bw + ((M)ix + 0.5) * bw / (M)gw;
    M t = 0;
    if (y >= -1 && y <= (M){h} && x >= -1 && x <= (M){w}) {{
      y = fmax(y, (M)0); x = fmax(x, (M)0);
      long yl = (long)y, xl = (long)x, yh, xh;
      if (yl >= {h}L - 1) {{ yl = {h}L - 1; yh = yl; y = (M)yl; }} else yh = yl + 1;
      if (xl >= {w}L - 1) {{ xl = {w}L - 1; xh = xl; x = (M)xl; }} else xh = xl + 1;
      M ly = y - (M)yl, lx = x - (M)xl, hy = 1 - ly, hx = 1 - lx;
      M v00 = (M){a00}, v01 = (M){a01}, v10 = (M){a10}, v11 = (M){a11};
      {tap_fold}
    }}
    {fold}
  }}
  return {ret};",
        bi = g.at(bi, &["i0".into()]),
        off = if half { "(M)0.5" } else { "(M)0" },
        scale = lit(*spatial_scale as f64),
        r0 = r(0),
        r1 = r(1),
        r2 = r(2),
        r3 = r(3),
        gh = grid("rh", ph),
        gw = grid("rw", pw),
        a00 = at("yl", "xl"),
        a01 = at("yl", "xh"),
        a10 = at("yh", "xl"),
        a11 = at("yh", "xh"),
        ret = store(g.dtype(x), fin)?,
    ))
}

pub fn deform_conv(g: &Gen, op: &Op, ins: &[Option<Value>]) -> Result<String, String> {
    let Op::DeformConv { dilations, group, kernel_shape: _, offset_group, pads, strides } = op else {
        return Err("not a deform_conv".into());
    };
    let (x, w, offset) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
    let (xs, ws) = (shape_of(g, x)?, shape_of(g, w)?);
    if xs.len() != 4 || ws.len() != 4 || !g.dtype(x).is_float() {
        return Err(format!("deform_conv supports 2-D inputs only: x {xs:?}, w {ws:?}"));
    }
    let (c, ih, iw) = (xs[1], xs[2], xs[3]);
    let (groups, og) = ((*group).max(1) as usize, (*offset_group).max(1) as usize);
    if ws[1].checked_mul(groups) != Some(c) || ws[0] % groups != 0 || c % og != 0 {
        return Err(format!("x {xs:?}, w {ws:?}: channels do not divide into {groups} groups and {og} offset groups"));
    }
    let (cg, mg) = (ws[1], ws[0] / groups);
    let (kh, kw) = (ws[2], ws[3]);
    let taps = kh * kw;
    let cpo = c / og;
    let (sh, sw) = (attr(strides, 0, 1), attr(strides, 1, 1));
    let (dh, dw) = (attr(dilations, 0, 1), attr(dilations, 1, 1));
    let (ph, pw) = (attr(pads, 0, 0), attr(pads, 1, 0));
    let o = |ch: &str| g.at(offset, &["i0".into(), ch.into(), "i2".into(), "i3".into()]);
    let mask = match ins.get(4).copied().flatten() {
        Some(m) => format!("v *= (M){};", g.at(m, &["i0".into(), format!("ogi * {taps}L + t"), "i2".into(), "i3".into()])),
        None => String::new(),
    };
    let bias = match ins.get(3).copied().flatten() {
        Some(b) => format!("(M){}", g.at(b, &["i1".into()])),
        None => "(M)0".into(),
    };
    let px = |yy: &str, xx: &str| {
        format!(
            "(({yy} < 0 || {xx} < 0 || {yy} >= {ih} || {xx} >= {iw}) ? (M)0 : (M){})",
            g.at(x, &["i0".into(), "ch".into(), format!("(long){yy}"), format!("(long){xx}")])
        )
    };
    Ok(format!(
        "  long gi = i1 / {mg}L; M acc = 0;
  for (long ci = 0; ci < {cg}L; ci++) for (long t = 0; t < {taps}L; t++) {{
    long ch = gi * {cg}L + ci; long ogi = ch / {cpo}L; long ki = t / {kw}L, kj = t % {kw}L;
    M y = (M)(i2 * {sh}L) - (M){ph} + (M)(ki * {dh}L) + (M){oy};
    M x = (M)(i3 * {sw}L) - (M){pw} + (M)(kj * {dw}L) + (M){ox};
    M v = 0;
    if (y > -1 && y < (M){ih} && x > -1 && x < (M){iw}) {{
      M y0 = floor(y), x0 = floor(x), fy = y - y0, fx = x - x0, y1 = y0 + 1, x1 = x0 + 1;
      v = {p00} * (1 - fy) * (1 - fx) + {p01} * (1 - fy) * fx + {p10} * fy * (1 - fx) + {p11} * fy * fx;
    }}
    {mask}
    acc += (M){wv} * v;
  }}
  return {ret};",
        oy = o(&format!("(ogi * {taps}L + t) * 2")),
        ox = o(&format!("(ogi * {taps}L + t) * 2 + 1")),
        p00 = px("y0", "x0"),
        p01 = px("y0", "x1"),
        p10 = px("y1", "x0"),
        p11 = px("y1", "x1"),
        wv = g.at(w, &["i1".into(), "ci".into(), "ki".into(), "kj".into()]),
        ret = store(g.dtype(x), &format!("acc + {bias}"))?,
    ))
}

/// MaxUnpool: output element `o` takes x at the last input position whose index names it
/// (eval scatters in order, so a later duplicate wins); the search runs over all of x.
pub fn max_unpool(g: &Gen, op: &Op, ins: &[Option<Value>], shape: &[usize]) -> Result<String, String> {
    let Op::MaxUnpool { kernel_shape, pads, strides } = op else {
        return Err("not a max_unpool".into());
    };
    let (x, ind) = (input(ins, 0)?, input(ins, 1)?);
    let xs = shape_of(g, x)?;
    let nsp = kernel_shape.len();
    if xs.len() != nsp + 2 || shape.len() != xs.len() {
        return Err(format!("max_unpool of {xs:?} with kernel_shape {kernel_shape:?}"));
    }
    // The unpooled shape the indices refer to, as eval's `unpooled`.
    let mut inferred = xs[..2].to_vec();
    for i in 0..nsp {
        let d = (xs[2 + i] as i64 - 1) * attr(strides, i, 1) + kernel_shape[i] - attr(pads, i, 0) - attr(pads, i + nsp, 0);
        if d < 0 {
            return Err(format!("spatial dim {i} unpools to {d}"));
        }
        inferred.push(d as usize);
    }
    let mut inside = Vec::new();
    for (j, &d) in inferred.iter().enumerate() {
        if d < shape[j] {
            inside.push(format!("i{j} < {d}L"));
        }
    }
    let coords: Vec<String> = (0..shape.len()).map(|j| format!("i{j}")).collect();
    let want = super::super::linear(&inferred, &coords);
    let total: usize = xs.iter().product();
    let src = super::super::delinearize(&xs, "s", "q");
    let qs: Vec<String> = (0..xs.len()).map(|j| format!("q{j}")).collect();
    let guard = if inside.is_empty() { String::new() } else { format!("  if (!({})) return 0;\n", inside.join(" && ")) };
    Ok(format!(
        "{guard}  long want = {want};\n  for (long s = {last}L; s >= 0; s--) {{ {src} if ((long){i} == want) return {x}; }}\n  return 0;",
        last = total as i64 - 1,
        i = g.at(ind, &qs),
        x = g.at(x, &qs),
    ))
}
