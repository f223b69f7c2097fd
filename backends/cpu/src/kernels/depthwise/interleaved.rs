//! Depthwise convolution of planes with rows up to 256 outputs, 8 planes at a time with
//! the planes in the vector lanes.
//!
//! One plane at a time, a 7×7 or 14×14 plane is one or two vector blocks per row: the
//! padded copy, the row loop and the partial last block cost several times its 441 or
//! 1764 multiply-adds (mobilenet_v2's 14² and 7² layers took 3× onnxruntime's time, which
//! runs them on a channels-blocked layout). Here 8 planes are transposed (8×8 blocks of
//! positions × planes) into one zero-padded buffer holding, for each padded position, its
//! 8 planes' values; every tap of every output is then one FMA with a vector of the 8
//! planes' weights, whatever the stride, dilation or plane width; the sums are transposed
//! back, 8 outputs of one plane per vector, through the epilogue (residual, clip,
//! activation) into the output planes. Tall planes go in strips of output rows whose
//! padded input rows fit in 64 KB.

use super::super::activation::Activation;
use super::super::im2col::Geometry;
use super::Post;

/// Output rows up to this wide go through [`group`]; wider ones plane at a time. Once the
/// transposes kept their vectors in registers, groups won at every width measured up to
/// 150 (one 3×3 depthwise alone, 2 threads, µs, plane at a time → groups: 32×112² stride 1
/// 128 → 89, 32×150² 240 → 167) and tied at 224 (16 planes, stride 1 and 2), where a
/// strip holds only two output rows under its three input rows.
const MAX_WIDTH: usize = 256;
/// A strip's padded buffer up to this many values goes through [`group`] (a kernel too
/// tall for [`STRIP_VALUES`] makes one strip larger).
const MAX_PADDED: usize = 4 * STRIP_VALUES;

/// Padded buffers are sized for about this many values (64 KB): the output rows go in
/// strips whose padded input rows fit, and the input rows under two strips are copied
/// for both. At 32 KB (this core's L1), a 112-wide plane's strip was 6 output rows under
/// 8 input rows, a third of its input copied twice; at 64 KB it is 15 under 17, the
/// buffer in L2 (mobilenet_v2's depthwise convs at one thread, per-kernel minimums of
/// three interleaved runs, summed: 1.269 → 1.205 ms, 32×112² 0.224 → 0.193; at two
/// threads 0.841 → 0.825; efficientnet_b0's 2.589 → 2.507 and 1.601 → 1.589). 128 KB
/// was no faster (1.233 → 1.261).
const STRIP_VALUES: usize = 16384;

/// The strip layout: output rows per strip, and the padded buffer's rows and columns (the
/// input rows a strip reads; every input column an output reads). `None` if a size
/// overflows. Needs at least one output row, column and tap.
fn strips(g: &Geometry) -> Option<(usize, usize, usize)> {
    let span = |n: usize, s: usize, k: usize, d: usize| {
        (n - 1)
            .checked_mul(s)?
            .checked_add((k - 1).checked_mul(d)?)?
            .checked_add(1)
    };
    let wp = span(g.ow, g.sw, g.kw, g.dw)?;
    let reach = span(1, 1, g.kh, g.dh)?;
    let fit = STRIP_VALUES / wp.checked_mul(8)?;
    let rows = if fit > reach {
        (fit - reach) / g.sh + 1
    } else {
        1
    }
    .min(g.oh);
    Some((rows, span(rows, g.sh, g.kh, g.dh)?, wp))
}

/// Whether the planes of this geometry go through [`group`].
pub(super) fn takes(g: &Geometry) -> bool {
    if g.oh == 0 || g.ow == 0 || g.kh == 0 || g.kw == 0 || g.ow > MAX_WIDTH {
        return false;
    }
    strips(g)
        .and_then(|(_, hp, wp)| hp.checked_mul(wp)?.checked_mul(8))
        .is_some_and(|n| n <= MAX_PADDED)
        && super::vector::available()
}

/// A thread's buffers: the padded strip (and the geometry whose padding columns it holds
/// as zeros: input cells are rewritten for every strip, those columns never), the
/// weights, and the sums.
#[derive(Default)]
struct Buffers {
    input: Vec<f32>,
    zeroed_for: Option<(usize, usize, usize, usize)>,
    weights: Vec<f32>,
    sums: Vec<f32>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

/// Planes `first..last` (at most 8) of a depthwise convolution over `channels` channels:
/// plane `i` reads `x[i·h·w..]`, channel `i mod channels`'s weights and bias, the residual
/// `post.residual[i·p..]`, and writes `out + i·p`.
///
/// # Safety
/// [`takes`] must hold for `g`; `x` must hold every plane's input, `k` every channel's
/// `kh·kw` taps, `bias` (if any) every channel's, the residual (if any) every plane's
/// `g.p()` values; `out` must be valid for `g.p()` writes per plane (it may be
/// uninitialised).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn group(
    g: &Geometry,
    channels: usize,
    x: &[f32],
    k: &[f32],
    bias: Option<&[f32]>,
    post: &Post,
    out: *mut f32,
    first: usize,
    last: usize,
) {
    let lanes = last - first;
    debug_assert!((1..=8).contains(&lanes));
    let taps = g.kh * g.kw;
    // Lanes past the last plane repeat it; their results are not stored.
    let plane = |l: usize| first + l.min(lanes - 1);
    let mut b = [0.0f32; 8];
    for (l, b) in b.iter_mut().enumerate() {
        *b = bias.map_or(0.0, |bias| bias[plane(l) % channels]);
    }
    let hw = g.h * g.w;
    let inputs: [*const f32; 8] = std::array::from_fn(|l| x[plane(l) * hw..].as_ptr());
    let outputs: [*mut f32; 8] = std::array::from_fn(|l| out.add(plane(l) * g.p()));
    let residuals: Option<[*const f32; 8]> = post
        .residual
        .map(|r| std::array::from_fn(|l| r[plane(l) * g.p()..].as_ptr()));
    // `takes` held, so the layout exists.
    let Some((rows, hp, wp)) = strips(g) else {
        debug_assert!(false, "group called on a geometry `takes` refuses");
        return;
    };
    BUFFERS.with(|buffers| {
        let mut buffers = buffers.borrow_mut();
        let buffers = &mut *buffers;
        let key = (hp, wp, g.pw, g.w);
        if buffers.zeroed_for != Some(key) {
            buffers.input.clear();
            buffers.input.resize(hp * wp * 8, 0.0);
            buffers.zeroed_for = Some(key);
        }
        // Per tap, the 8 planes' weights.
        buffers.weights.resize(taps * 8, 0.0);
        for l in 0..8 {
            let c = plane(l) % channels;
            for t in 0..taps {
                buffers.weights[t * 8 + l] = k[c * taps + t];
            }
        }
        let weights = &buffers.weights;
        // The sums, with room for the last transpose's 8 positions.
        let need = (rows * g.ow + 8) * 8;
        if buffers.sums.len() < need {
            buffers.sums.resize(need, 0.0);
        }
        // With no residual and no clip, the activation runs over the sums buffer (still in
        // L1), 16 lanes at a time, before they are transposed: in `store` it cost a call
        // and the 8 vectors' trip through memory per 8 positions (efficientnet's 3×3
        // 32-plane swish at 112×112 took 241 µs against 111 with a relu, onnxruntime's
        // conv and swish 150). Applied in registers to each block before it is stored
        // straight to the planes (as the clip is below) it cost more again: efficientnet's
        // depthwise convs with their swish at one thread, 2.478 → 3.243 ms.
        let act_on_sums = post.act.filter(|_| post.residual.is_none() && post.clip.is_none());
        let fin = Finish {
            clip: post.clip,
            act: if act_on_sums.is_some() { None } else { post.act },
            wide: super::super::avx512f::detected(),
        };
        // SAFETY: AVX2 and FMA are available (`takes`); the buffers hold the padded
        // strip and its sums; the planes' pointers hold `hw` inputs and `g.p()` outputs
        // and residuals each (the caller's contract).
        unsafe {
            let mut oh = 0;
            while oh < g.oh {
                let strip = oh..(oh + rows).min(g.oh);
                fill(g, &inputs, &mut buffers.input, wp, oh);
                let (buf, out) = (&buffers.input, &mut buffers.sums);
                // Whole groups with only a clip after the sums (mobilenet's relu6): each
                // block of outputs is transposed and stored to the planes as soon as it is
                // summed, with no trip through the sums buffer and no `store` pass.
                // mobilenet_v2's depthwise convs, per-kernel minimums of three interleaved
                // runs: 32×112² 0.203 → 0.161 ms and 144×56² 0.182 → 0.154 at one thread,
                // all of them 0.832 → 0.747 at two.
                let direct = (lanes == 8 && post.residual.is_none() && post.act.is_none()).then(|| {
                    let clip = post.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
                    Direct { outputs: &outputs, clip }
                });
                let d = direct.as_ref();
                match (g.kh, g.kw, g.sw, g.dw) {
                    (3, 3, 1, 1) => sums::<3, 1>(g, buf, wp, weights, &b, out, strip.clone(), d),
                    (3, 3, _, _) => sums::<3, 0>(g, buf, wp, weights, &b, out, strip.clone(), d),
                    (5, 5, 1, 1) => sums::<5, 1>(g, buf, wp, weights, &b, out, strip.clone(), d),
                    (5, 5, _, _) => sums::<5, 0>(g, buf, wp, weights, &b, out, strip.clone(), d),
                    _ => sums::<0, 0>(g, buf, wp, weights, &b, out, strip.clone(), d),
                }
                if direct.is_none() {
                    if let Some(a) = act_on_sums {
                        let n = strip.len() * g.ow * 8;
                        super::super::activation::apply_in_place(true, a, &mut out[..n]);
                    }
                    store(
                        g,
                        out,
                        &fin,
                        residuals.as_ref(),
                        &outputs,
                        lanes,
                        strip.clone(),
                    );
                }
                oh = strip.end;
            }
        }
    });
}

/// Where [`sums`] stores its blocks of 8 outputs itself: the 8 planes, and the clip
/// applied on the way (infinite bounds for none).
struct Direct<'a> {
    outputs: &'a [*mut f32; 8],
    clip: (f32, f32),
}

/// What each output gets after its taps and bias: the residual (per output), the clip,
/// the activation.
struct Finish<'a> {
    clip: Option<(f32, f32)>,
    act: Option<&'a Activation>,
    /// The activation runs on 16 AVX-512 lanes, two planes at a time.
    wide: bool,
}

/// The 8×8 register transpose of the transpose kernel's tiles.
#[cfg(target_arch = "x86_64")]
use super::super::transpose::tiles::transpose8;

/// Writes the 8 planes' inputs for the strip of output rows from `oh` into the padded
/// buffer (`wp` columns of 8 values): padded row r is input row `oh·sh - ph + r`, all
/// zeros outside the input; input column c goes to padded column c + pw, unless no output
/// reads it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fill(g: &Geometry, inputs: &[*const f32; 8], buf: &mut [f32], wp: usize, oh: usize) {
    use std::arch::x86_64::*;
    let rows = buf.len() / (8 * wp);
    let top = (oh * g.sh) as isize - g.ph as isize;
    let (lo, hi) = (top.max(0), (top + rows as isize).min(g.h as isize));
    for r in 0..rows {
        let ir = top + r as isize;
        if ir < lo || ir >= hi {
            buf[r * wp * 8..(r + 1) * wp * 8].fill(0.0);
        }
    }
    if lo >= hi {
        return;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    // Padded row and input column of position t, stepped along (a division per
    // position cost as much as the transposes).
    let (mut r, mut c) = ((lo as isize - top) as usize, 0);
    let next = |r: &mut usize, c: &mut usize| {
        let at = (*c + g.pw < wp).then_some((*r * wp + *c + g.pw) * 8);
        *c += 1;
        if *c == g.w {
            (*r, *c) = (*r + 1, 0);
        }
        at
    };
    let b = buf.as_mut_ptr();
    let (mut t, end) = (lo * g.w, hi * g.w);
    while t + 8 <= end {
        let mut v: [__m256; 8] = std::array::from_fn(|l| _mm256_loadu_ps(inputs[l].add(t)));
        transpose8(&mut v);
        if c + 8 <= g.w && c + g.pw + 8 <= wp {
            // All 8 positions in one row and in the buffer: consecutive padded cells.
            let at = b.add((r * wp + c + g.pw) * 8);
            for (i, v) in v.into_iter().enumerate() {
                _mm256_storeu_ps(at.add(i * 8), v);
            }
            c += 8;
            if c == g.w {
                (r, c) = (r + 1, 0);
            }
        } else {
            for v in v {
                if let Some(at) = next(&mut r, &mut c) {
                    _mm256_storeu_ps(b.add(at), v);
                }
            }
        }
        t += 8;
    }
    for t in t..end {
        if let Some(at) = next(&mut r, &mut c) {
            for (l, p) in inputs.iter().enumerate() {
                *b.add(at + l) = *p.add(t);
            }
        }
    }
}

/// The sums (bias plus taps) of the strip's output positions, 8 planes per position,
/// into `sums`; kernels `K`×`K` (0: any shape, read from `g`), with column stride `S` and
/// no column dilation (0: any, read from `g`). With both known, each input cell is loaded
/// once per row of taps; on stride 2 that measured slower (3×3: 0.18 → 0.20 ms, 5×5:
/// 0.28 → 0.41, one thread), so stride 2 takes the plain loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sums<const K: usize, const S: usize>(
    g: &Geometry,
    buf: &[f32],
    wp: usize,
    weights: &[f32],
    bias: &[f32; 8],
    sums: &mut [f32],
    strip: std::ops::Range<usize>,
    direct: Option<&Direct>,
) {
    use std::arch::x86_64::*;
    let (kh, kw) = if K == 0 { (g.kh, g.kw) } else { (K, K) };
    let b = _mm256_loadu_ps(bias.as_ptr());
    let (buf, w, s) = (buf.as_ptr(), weights.as_ptr(), sums.as_mut_ptr());
    // `NB` outputs from (oh, ow): independent FMA chains, so the FMAs' latency overlaps.
    // (Blocks of 8 positions across row ends, for 7- and 14-wide rows, measured no
    // faster: the FMAs are not what a group waits on.)
    macro_rules! block {
        ($oh:expr, $ow:expr, $nb:literal) => {{
            let mut acc = [b; $nb];
            let top = buf.add(((($oh - strip.start) * g.sh) * wp + $ow * g.sw) * 8);
            for i in 0..kh {
                let row = top.add(i * g.dh * wp * 8);
                if K != 0 && S != 0 {
                    // Output u's tap j reads cell u·S + j of the row: each cell is loaded
                    // once for every output and tap that reads it (10 loads instead of 24
                    // for 8 outputs of a 3-wide row), the row's weights in registers.
                    let wv: [__m256; K] =
                        std::array::from_fn(|j| _mm256_loadu_ps(w.add((i * K + j) * 8)));
                    for v in 0..($nb - 1) * S + K {
                        let x = _mm256_loadu_ps(row.add(v * 8));
                        for j in 0..K {
                            if v >= j && (v - j) % S == 0 && (v - j) / S < $nb {
                                let u = (v - j) / S;
                                acc[u] = _mm256_fmadd_ps(wv[j], x, acc[u]);
                            }
                        }
                    }
                    continue;
                }
                for j in 0..kw {
                    let wv = _mm256_loadu_ps(w.add((i * kw + j) * 8));
                    let at = row.add(j * g.dw * 8);
                    for u in 0..$nb {
                        acc[u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(at.add(u * g.sw * 8)), acc[u]);
                    }
                }
            }
            match direct {
                Some(d) => {
                    // Output position (oh, ow + u) of plane l is lane l of acc[u]: after
                    // the transpose, v[l] holds plane l's `NB` outputs in its first lanes.
                    let mut v: [__m256; 8] = std::array::from_fn(|u| {
                        if u < $nb { acc[u % $nb] } else { _mm256_setzero_ps() }
                    });
                    transpose8(&mut v);
                    let (lo, hi) = (_mm256_set1_ps(d.clip.0), _mm256_set1_ps(d.clip.1));
                    let at = $oh * g.ow + $ow;
                    for (l, v) in v.into_iter().enumerate() {
                        let v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
                        let o = d.outputs[l].add(at);
                        match $nb {
                            8 => _mm256_storeu_ps(o, v),
                            4 => _mm_storeu_ps(o, _mm256_castps256_ps128(v)),
                            2 => _mm_store_sd(o.cast(), _mm_castps_pd(_mm256_castps256_ps128(v))),
                            _ => _mm_store_ss(o, _mm256_castps256_ps128(v)),
                        }
                    }
                }
                _ => {
                    let dst = s.add((($oh - strip.start) * g.ow + $ow) * 8);
                    for u in 0..$nb {
                        _mm256_storeu_ps(dst.add(u * 8), acc[u]);
                    }
                }
            }
        }};
    }
    for oh in strip.clone() {
        let mut ow = 0;
        while ow + 8 <= g.ow {
            block!(oh, ow, 8);
            ow += 8;
        }
        if ow + 4 <= g.ow {
            block!(oh, ow, 4);
            ow += 4;
        }
        if ow + 2 <= g.ow {
            block!(oh, ow, 2);
            ow += 2;
        }
        if ow < g.ow {
            block!(oh, ow, 1);
        }
    }
}

/// Transposes the sums back to the planes, 8 outputs of a plane per vector, through the
/// epilogue, and stores the first `lanes` planes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(
    g: &Geometry,
    sums: &[f32],
    fin: &Finish,
    residuals: Option<&[*const f32; 8]>,
    outputs: &[*mut f32; 8],
    lanes: usize,
    strip: std::ops::Range<usize>,
) {
    use std::arch::x86_64::*;
    // The strip's outputs: positions `first..p` of every plane, sums from 0.
    let (first, p) = (strip.start * g.ow, strip.end * g.ow);
    let s = sums.as_ptr().wrapping_sub(first * 8);
    // No clip is the infinite bounds: max(lo, v) then min(hi, ·), the value second, lets
    // NaN through both.
    let (lo, hi) = fin.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let mut t = first;
    if lanes == 8 && residuals.is_none() && fin.act.is_none() {
        // Whole groups whose activation ran on the sums buffer (efficientnet's swish; a
        // clip alone goes straight from `sums` to the planes) with every vector in a
        // register: the general loop below keeps `v` in memory for the activation and
        // tests each lane's residual, and took twice as long as the sums themselves.
        while t + 8 <= p {
            let mut v: [__m256; 8] =
                std::array::from_fn(|i| _mm256_loadu_ps(s.wrapping_add((t + i) * 8)));
            transpose8(&mut v);
            for (l, v) in v.into_iter().enumerate() {
                _mm256_storeu_ps(outputs[l].add(t), _mm256_min_ps(hi, _mm256_max_ps(lo, v)));
            }
            t += 8;
        }
    }
    while t < p {
        // The sums buffer has 8 positions past the last: the lanes past p are dropped.
        let mut v: [__m256; 8] =
            std::array::from_fn(|i| _mm256_loadu_ps(s.wrapping_add((t + i) * 8)));
        transpose8(&mut v);
        let n = (p - t).min(8);
        for (l, v) in v.iter_mut().enumerate().take(lanes) {
            *v = match residuals {
                Some(r) if n == 8 => _mm256_add_ps(*v, _mm256_loadu_ps(r[l].add(t))),
                Some(r) => {
                    let mut tile = [0.0f32; 8];
                    std::ptr::copy_nonoverlapping(r[l].add(t), tile.as_mut_ptr(), n);
                    _mm256_add_ps(*v, _mm256_loadu_ps(tile.as_ptr()))
                }
                None => *v,
            };
            *v = _mm256_min_ps(hi, _mm256_max_ps(lo, *v));
        }
        match fin.act {
            Some(a) if fin.wide => super::super::activation::avx512::apply_pairs(a, &mut v, lanes),
            Some(a) => {
                for v in v.iter_mut().take(lanes) {
                    *v = super::super::activation::avx2::apply(a, *v);
                }
            }
            None => {}
        }
        for (l, &v) in v.iter().enumerate().take(lanes) {
            if n == 8 {
                _mm256_storeu_ps(outputs[l].add(t), v);
            } else {
                let mut tile = [0.0f32; 8];
                _mm256_storeu_ps(tile.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(tile.as_ptr(), outputs[l].add(t), n);
            }
        }
        t += 8;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn fill(_g: &Geometry, _inputs: &[*const f32; 8], _buf: &mut [f32], _wp: usize, _oh: usize) {
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn sums<const K: usize, const S: usize>(
    _g: &Geometry,
    _buf: &[f32],
    _wp: usize,
    _weights: &[f32],
    _bias: &[f32; 8],
    _sums: &mut [f32],
    _strip: std::ops::Range<usize>,
    _direct: Option<&Direct>,
) {
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn store(
    _g: &Geometry,
    _sums: &[f32],
    _fin: &Finish,
    _residuals: Option<&[*const f32; 8]>,
    _outputs: &[*mut f32; 8],
    _lanes: usize,
    _strip: std::ops::Range<usize>,
) {
}
