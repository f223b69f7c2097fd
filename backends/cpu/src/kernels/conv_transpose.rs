//! 2-D ConvTranspose (f32) as eval computes it, on the packed GEMM: per image and group,
//! `cols = Wᵀ·X` gives every (output channel, kernel position) contribution of every input
//! position, then each output plane starts from its bias and adds its rows of `cols` at
//! `input·stride + kernel·dilation - pad_begin` (col2im), planes split over the pool. The
//! geometry is `kiln_ir::conv_transpose_geometry`, eval's own. eval runs the same plan in
//! f64 on a naive GEMM (unet_mix's 2×2/2 upsampling took a third of the model there).
//!
//! Anything else (another rank or dtype, inputs eval rejects) returns `None`: the step
//! then replays `ir::eval`, which names what is wrong.

use super::rows::for_each_row;
use crate::device::Ctx;
use crate::gemm::{gemm_source, Epilogue, RowMajor};
use kiln_ir::{Op, Result, Tensor};

pub(crate) struct ConvTranspose {
    op: Op,
    group: usize,
}

impl ConvTranspose {
    pub fn new(op: &Op) -> Option<ConvTranspose> {
        match op {
            Op::ConvTranspose { group, .. } => Some(ConvTranspose {
                op: op.clone(),
                group: usize::try_from(*group).ok().filter(|&g| g >= 1)?,
            }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let w = args.get(1)?.as_ref()?;
        let bias = match args.get(2).and_then(Option::as_ref) {
            Some(b) => Some(b.as_slice::<f32>().ok()?),
            None => None,
        };
        let (xv, wv) = (x.as_slice::<f32>().ok()?, w.as_slice::<f32>().ok()?);
        let (xs, ws) = (x.shape(), w.shape());
        let group = self.group;
        if xs.len() != 4 || ws.len() != 4 || ws[0] != xs[1] || xs[1] % group != 0 {
            return None;
        }
        let g = kiln_ir::conv_transpose_geometry(&self.op, &xs[2..], &ws[2..]).ok()?;
        let (n, c, m) = (xs[0], xs[1], ws[1].checked_mul(group)?);
        if bias.is_some_and(|b| b.len() != m) {
            return None;
        }
        let (cg, mg) = (c / group, ws[1]);
        let (kh, kw) = (ws[2], ws[3]);
        let (ih, iw) = (xs[2], xs[3]);
        let (oh, ow) = (g.out[0], g.out[1]);
        let (in_plane, out_plane) = (ih.checked_mul(iw)?, oh.checked_mul(ow)?);
        let rows = mg.checked_mul(kh)?.checked_mul(kw)?;
        let len = n.checked_mul(m)?.checked_mul(out_plane)?;
        let cols_len = rows.checked_mul(in_plane)?;
        // eval's bound on any tensor it makes: past it, eval reports the error.
        if len.max(cols_len) > 1 << 31 {
            return None;
        }
        let mut out = vec![0.0f32; len];
        let mut cols = vec![0.0f32; cols_len];
        for gi in 0..group {
            // Wᵀ of this group: rows (output channel, kernel position) × its input channels.
            let wg = &wv[gi * cg * rows..(gi + 1) * cg * rows];
            let mut wt = vec![0.0f32; rows * cg];
            for (ci, line) in wg.chunks_exact(rows).enumerate() {
                for (r, &v) in line.iter().enumerate() {
                    wt[r * cg + ci] = v;
                }
            }
            for b in 0..n {
                let xg = &xv[(b * c + gi * cg) * in_plane..(b * c + (gi + 1) * cg) * in_plane];
                let source = match RowMajor::new(xg, cg, in_plane, in_plane) {
                    Ok(s) => s,
                    Err(_) => return None,
                };
                let done = gemm_source(&ctx.gemm(), rows, &wt, cg, cg, in_plane, &source, &mut cols, in_plane, false, &Epilogue::none());
                if done.is_err() {
                    return None;
                }
                let first = (b * m + gi * mg) * out_plane;
                let planes = &mut out[first..first + mg * out_plane];
                let work = rows * in_plane;
                for_each_row(ctx, planes, out_plane, work, |mo, plane| {
                    plane.fill(bias.map_or(0.0, |b| b[gi * mg + mo]));
                    for i in 0..kh {
                        for j in 0..kw {
                            let src = &cols[((mo * kh + i) * kw + j) * in_plane..][..in_plane];
                            add_tap(plane, src, (ih, iw), (oh, ow), &g, (i, j));
                        }
                    }
                });
            }
        }
        let shape = vec![n, m, oh, ow];
        Some(Tensor::new(shape, out))
    }
}

/// Adds one kernel position's contributions (`src`, one per input position) into an
/// output plane: input (y, x) lands on (y·s + i·d - pad, x·s + j·d - pad) where inside.
fn add_tap(
    plane: &mut [f32],
    src: &[f32],
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
    g: &kiln_ir::ConvTransposeGeometry,
    (i, j): (usize, usize),
) {
    let (sh, sw) = (g.strides[0], g.strides[1]);
    let off_h = (i * g.dilations[0]) as isize - g.pad_begin[0];
    let off_w = (j * g.dilations[1]) as isize - g.pad_begin[1];
    // Input columns whose output column lies inside: lo..hi.
    let (lo, hi) = inside(iw, sw, off_w, ow);
    if lo >= hi {
        return;
    }
    for y in 0..ih {
        let r = (y * sh) as isize + off_h;
        if r < 0 || r as usize >= oh {
            continue;
        }
        let row = &mut plane[r as usize * ow..(r as usize + 1) * ow];
        let line = &src[y * iw..(y + 1) * iw];
        let start = (lo as isize * sw as isize + off_w) as usize;
        for (k, &v) in line[lo..hi].iter().enumerate() {
            row[start + k * sw] += v;
        }
    }
}

/// The input positions `lo..hi` (of `n`) whose output position `p·s + off` lies in `0..out`.
fn inside(n: usize, s: usize, off: isize, out: usize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let hi = if (out as isize) <= off { 0 } else { ((out as isize - off + s - 1) / s).min(n as isize) };
    (lo as usize, (hi.max(lo)) as usize)
}
