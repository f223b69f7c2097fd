//! Convolution geometry (2-D; 1-D runs as 2-D with height 1) and the im2col layout.

use kiln_ir::AutoPad;

/// One 2-D convolution's sizes, per image and group.
#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    /// Input channels per group, input height and width.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding before the first row and column.
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

/// The attributes as the op holds them (empty = ONNX default).
pub(crate) struct Attrs<'a> {
    pub auto_pad: AutoPad,
    pub dilations: &'a [i64],
    pub kernel_shape: &'a [i64],
    pub pads: &'a [i64],
    pub strides: &'a [i64],
}

fn positive(v: &[i64], n: usize) -> Option<Vec<usize>> {
    if v.is_empty() {
        return Some(vec![1; n]);
    }
    if v.len() != n || v.iter().any(|&x| !(1..=1 << 31).contains(&x)) {
        return None;
    }
    Some(v.iter().map(|&x| x as usize).collect())
}

/// Output size and begin padding of one spatial dim, as ONNX defines them; `None` for an
/// invalid geometry (the reference kernel then reports the error).
fn dim(
    a: &Attrs,
    i: usize,
    n: usize,
    input: usize,
    k: usize,
    s: usize,
    d: usize,
) -> Option<(usize, usize)> {
    let extent = (k.checked_sub(1)?).checked_mul(d)? + 1;
    match a.auto_pad {
        AutoPad::NotSet => {
            let pads: Vec<usize> = if a.pads.is_empty() {
                vec![0; 2 * n]
            } else if a.pads.len() == 2 * n && a.pads.iter().all(|&p| (0..=1 << 31).contains(&p)) {
                a.pads.iter().map(|&p| p as usize).collect()
            } else {
                return None;
            };
            let padded = input + pads[i] + pads[i + n];
            Some(((padded.checked_sub(extent)?) / s + 1, pads[i]))
        }
        AutoPad::Valid => Some(((input.checked_sub(extent)?) / s + 1, 0)),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(s);
            let total = ((out.max(1) - 1) * s + extent).saturating_sub(input);
            let pb = if a.auto_pad == AutoPad::SameUpper {
                total / 2
            } else {
                total - total / 2
            };
            Some((out, pb))
        }
    }
}

impl Geometry {
    /// Geometry for x [N, C, (H,) W] and w [M, C/group, (kh,) kw].
    pub fn new(a: &Attrs, xs: &[usize], ws: &[usize], group: usize) -> Option<Geometry> {
        let n = xs.len().checked_sub(2)?;
        if !(1..=2).contains(&n)
            || ws.len() != xs.len()
            || group == 0
            || ws[1].checked_mul(group)? != xs[1]
        {
            return None;
        }
        let kernel = &ws[2..];
        if !a.kernel_shape.is_empty()
            && (a.kernel_shape.len() != n
                || a.kernel_shape
                    .iter()
                    .zip(kernel)
                    .any(|(&k, &w)| k != w as i64))
        {
            return None;
        }
        if kernel.iter().any(|&k| k == 0) {
            return None;
        }
        let (strides, dilations) = (positive(a.strides, n)?, positive(a.dilations, n)?);
        let mut dims = Vec::new();
        for i in 0..n {
            dims.push(dim(
                a,
                i,
                n,
                xs[2 + i],
                kernel[i],
                strides[i],
                dilations[i],
            )?);
        }
        // 1-D: height 1, kernel height 1, stride and dilation 1, no padding.
        let (h, kh, sh, dh, (oh, ph)) = if n == 2 {
            (xs[2], kernel[0], strides[0], dilations[0], dims[0])
        } else {
            (1, 1, 1, 1, (1, 0))
        };
        let (ow, pw) = dims[n - 1];
        Some(Geometry {
            c: ws[1],
            h,
            w: xs[1 + n],
            kh,
            kw: kernel[n - 1],
            sh,
            sw: strides[n - 1],
            dh,
            dw: dilations[n - 1],
            ph,
            pw,
            oh,
            ow,
        })
    }

    /// Output positions per image.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Depth of the GEMM: channels × kernel positions.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// A plain matrix product: 1×1 kernel, stride 1, no padding.
    pub fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.ph == 0
            && self.pw == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// Output positions `o < out` whose input coordinate `o·s + off` lies in `0..input`.
pub(crate) fn valid_range(out: usize, s: usize, off: isize, input: usize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 {
        0
    } else {
        ((-off + s - 1) / s) as usize
    };
    let hi = if (input as isize) <= off {
        0
    } else {
        (((input as isize - off) + s - 1) / s) as usize
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// Lays out one group's input patches (`x`: c × h × w) as a (c·kh·kw) × (oh·ow) matrix:
/// row (channel, kernel row, kernel column), column output position. Padding reads as zero.
pub(crate) fn im2col(g: &Geometry, x: &[f32], col: &mut [f32]) {
    let p = g.p();
    let mut row = 0;
    for ci in 0..g.c {
        let xc = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let dst = &mut col[row * p..(row + 1) * p];
                let off_w = (j * g.dw) as isize - g.pw as isize;
                let (lo, hi) = valid_range(g.ow, g.sw, off_w, g.w);
                for oh in 0..g.oh {
                    let seg = &mut dst[oh * g.ow..(oh + 1) * g.ow];
                    let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
                    if ih < 0 || ih as usize >= g.h || lo >= hi {
                        seg.fill(0.0);
                        continue;
                    }
                    seg[..lo].fill(0.0);
                    seg[hi..].fill(0.0);
                    let src = &xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    let first = (lo as isize * g.sw as isize + off_w) as usize;
                    if g.sw == 1 {
                        seg[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (k, v) in seg[lo..hi].iter_mut().enumerate() {
                            *v = src[first + k * g.sw];
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Lays out one group's input patches (`x`: c × h × w) as an (oh·ow) × (c·kh·kw) matrix
/// (row: output position; column: channel, kernel row, kernel column), output rows
/// `rows` only. Padding reads as zero. `a` holds just those rows.
///
/// Output positions outer: each row of `a` is written front to back, while the c·kh input
/// rows it reads from stay in L1 from one position to the next. A position whose window
/// lies inside the input width copies each kernel row's taps without bounds checks.
pub(crate) fn im2row(g: &Geometry, x: &[f32], a: &mut [f32], rows: std::ops::Range<usize>) {
    let k = g.k();
    let first = rows.start;
    // Per (channel, kernel row): the input row's offset in x, or None in the padding.
    let mut srcs: Vec<Option<usize>> = Vec::with_capacity(g.c * g.kh);
    for oh in rows {
        srcs.clear();
        for ci in 0..g.c {
            for i in 0..g.kh {
                let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
                srcs.push((ih >= 0 && (ih as usize) < g.h).then(|| (ci * g.h + ih as usize) * g.w));
            }
        }
        let block = &mut a[(oh - first) * g.ow * k..(oh - first + 1) * g.ow * k];
        for (ow, dst) in block.chunks_exact_mut(k).enumerate() {
            let base = (ow * g.sw) as isize - g.pw as isize;
            let inside = base >= 0 && base as usize + (g.kw - 1) * g.dw < g.w;
            for (src, d) in srcs.iter().zip(dst.chunks_exact_mut(g.kw)) {
                match *src {
                    None => d.fill(0.0),
                    Some(off) if inside => {
                        let s = &x[off + base as usize..];
                        if g.dw == 1 {
                            copy_taps(d, s);
                        } else {
                            for (j, v) in d.iter_mut().enumerate() {
                                *v = s[j * g.dw];
                            }
                        }
                    }
                    Some(off) => {
                        for (j, v) in d.iter_mut().enumerate() {
                            let iw = base + (j * g.dw) as isize;
                            *v = if iw >= 0 && (iw as usize) < g.w {
                                x[off + iw as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
}

/// `d.copy_from_slice(&s[..d.len()])` with the common kernel widths as fixed-size copies
/// the compiler inlines (a copy of a run-time length is a `memmove` call, which cost more
/// than the copy for three or seven floats).
#[inline(always)]
fn copy_taps(d: &mut [f32], s: &[f32]) {
    fn fixed<const N: usize>(d: &mut [f32], s: &[f32]) {
        let s: &[f32; N] = s[..N].try_into().expect("N taps");
        let d: &mut [f32; N] = d.try_into().expect("N taps");
        *d = *s;
    }
    match d.len() {
        1 => d[0] = s[0],
        2 => fixed::<2>(d, s),
        3 => fixed::<3>(d, s),
        5 => fixed::<5>(d, s),
        7 => fixed::<7>(d, s),
        n => d.copy_from_slice(&s[..n]),
    }
}
