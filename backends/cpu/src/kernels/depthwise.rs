//! Depthwise convolution (one input and one output channel per group) as a direct loop:
//! each output plane is the bias plus, for every kernel tap, a weighted copy of the input
//! rows it sees (a contiguous, vectorizable loop for stride 1). Planes are split over the
//! pool's threads; planes with rows up to 256 wide go 8 at a time ([`interleaved`]), or
//! with AVX-512 at stride 2 straight from the plane (`rows512`).

use super::activation::Activation;
use super::im2col::{valid_range, Geometry};
use crate::device::Ctx;
use std::sync::atomic::{AtomicUsize, Ordering};

mod interleaved;
#[cfg(target_arch = "x86_64")]
mod rows512;
mod step;
mod vector;

pub(crate) use step::{is_depthwise, Depthwise};

/// What is applied to each output after the taps and the bias, in order: the residual
/// (of the output's shape), the clip, the activation.
#[derive(Clone, Copy, Default)]
pub(crate) struct Post<'a> {
    pub residual: Option<&'a [f32]>,
    pub clip: Option<(f32, f32)>,
    pub act: Option<&'a Activation>,
}

/// Below this many multiply-adds one thread does the whole convolution.
const PARALLEL_MIN_MACS: usize = 1 << 16;

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    ctx: &Ctx,
    g: &Geometry,
    batch: usize,
    channels: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    clip: Option<(f32, f32)>,
    out: &mut [f32],
) {
    let post = Post {
        residual,
        clip,
        act: None,
    };
    run_with(ctx, g, batch, channels, x, w, bias, &post, out)
}

/// [`run`] with an activation after the clip.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_with(
    ctx: &Ctx,
    g: &Geometry,
    batch: usize,
    channels: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    post: &Post,
    out: &mut [f32],
) {
    assert_eq!(out.len(), batch * channels * g.p(), "depthwise output size");
    // SAFETY: `out` holds every plane.
    unsafe { run_into(ctx, g, batch, channels, x, w, bias, post, out.as_mut_ptr()) }
}

/// [`run_with`] into memory that may be uninitialised: every output is written once, so
/// a fresh output needs no zero fill first.
///
/// # Safety
/// `out` must be valid for `batch · channels · g.p()` writes.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run_into(
    ctx: &Ctx,
    g: &Geometry,
    batch: usize,
    channels: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    post: &Post,
    out: *mut f32,
) {
    let (planes, p, taps, hw) = (batch * channels, g.p(), g.kh * g.kw, g.h * g.w);
    // Threads write disjoint planes (each plane index is taken once from a counter).
    let out_ptr = super::rows::Out(out);
    let next = AtomicUsize::new(0);
    // The device made for the portable GEMM kernel (tests, CPUs without AVX2) runs the
    // portable depthwise loop too, so that path stays tested on any machine.
    let vector = ctx.kernel == crate::gemm::Kernel::Avx2Fma;
    // Planes go to threads a few at a time: a 7×7 plane is a few hundred cycles of work,
    // about what taking one from the shared counter costs when both threads hit it.
    let threads = ctx.pool.map_or(1, |pool| pool.threads());
    // Planes with rows up to 256 wide go 8 at a time (see `interleaved`): a unit of work is then
    // a group of 8 planes.
    // Stride-2 planes of a 3-wide kernel with rows of 16 outputs or more and no
    // activation run straight from the plane with AVX-512 (see `rows512`, which says
    // where that wins); the rest as before.
    #[cfg(target_arch = "x86_64")]
    let direct = vector && post.act.is_none() && rows512::takes(g);
    #[cfg(not(target_arch = "x86_64"))]
    let direct = false;
    let grouped = vector && !direct && interleaved::takes(g);
    let units = if grouped { planes.div_ceil(8) } else { planes };
    let chunk = (units / (8 * threads)).max(1);
    let work = |_thread: usize| loop {
        let first = next.fetch_add(chunk, Ordering::Relaxed);
        if first >= units {
            return;
        }
        for u in first..(first + chunk).min(units) {
            if grouped {
                // SAFETY: `takes` holds; planes 8u.. lie inside `x`, `out` and the
                // residual (the caller's contract) and only this thread writes them.
                unsafe {
                    interleaved::group(
                        g,
                        channels,
                        x,
                        w,
                        bias,
                        post,
                        out_ptr.at(0),
                        8 * u,
                        (8 * u + 8).min(planes),
                    )
                };
                continue;
            }
            let i = u;
            let c = i % channels;
            let plane_post = Post {
                residual: post.residual.map(|r| &r[i * p..(i + 1) * p]),
                ..*post
            };
            #[cfg(target_arch = "x86_64")]
            if direct {
                // SAFETY: `takes` held (AVX-512F, and `vector`: AVX2 and FMA); plane i
                // lies inside `x` and `out` (the caller's contract) and only this thread
                // writes it.
                unsafe {
                    rows512::plane(
                        g,
                        &x[i * hw..(i + 1) * hw],
                        &w[c * taps..(c + 1) * taps],
                        bias.map_or(0.0, |b| b[c]),
                        &plane_post,
                        out_ptr.at(i * p),
                    )
                };
                continue;
            }
            // SAFETY: plane i lies inside `out` (the caller's contract) and only this
            // thread writes it.
            unsafe {
                plane(
                    vector,
                    g,
                    &x[i * hw..(i + 1) * hw],
                    &w[c * taps..(c + 1) * taps],
                    bias.map_or(0.0, |b| b[c]),
                    &plane_post,
                    out_ptr.at(i * p),
                )
            };
        }
    };
    match ctx.pool {
        Some(pool) if planes > 1 && planes * p * taps >= PARALLEL_MIN_MACS => pool.run(&work),
        _ => work(0),
    }
}

thread_local! {
    /// A stride-2 plane's input columns, even ones then odd ones per row.
    static SPLIT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One output plane: `o = act(clip(bias + Σ_taps w[tap] · shifted x + residual))`, with
/// `post` holding this plane's residual.
///
/// # Safety
/// `o` must be valid for `g.p()` writes (it may be uninitialised).
unsafe fn plane(
    vector: bool,
    g: &Geometry,
    x: &[f32],
    k: &[f32],
    bias: f32,
    post: &Post,
    o: *mut f32,
) {
    if vector && (g.sw == 1 || g.sw == 2) && vector::plane(g, x, k, bias, post, o) {
        return;
    }
    // The portable loop adds into the plane: it starts from initialised memory.
    std::ptr::write_bytes(o, 0, g.p());
    let o = std::slice::from_raw_parts_mut(o, g.p());
    portable_plane(g, x, k, bias, o);
    if let Some(r) = post.residual {
        o.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    if let Some((lo, hi)) = post.clip {
        // max then min, as the GEMM does: NaN stays NaN. Written as selects so the loop
        // vectorises.
        o.iter_mut().for_each(|v| {
            let x = if *v < lo { lo } else { *v };
            *v = if x > hi { hi } else { x };
        });
    }
    if let Some(a) = post.act {
        a.apply_all(o);
    }
}

/// Splits each input row of a stride-2 plane into its even columns then its odd ones
/// (into `buf`), so that every tap of a stride-2 output row reads a contiguous run.
fn split_columns(g: &Geometry, x: &[f32], buf: &mut Vec<f32>) {
    let (even, odd) = (g.w.div_ceil(2), g.w / 2);
    buf.resize(g.h * g.w, 0.0);
    for (r, row) in x[..g.h * g.w].chunks_exact(g.w).enumerate() {
        let dst = &mut buf[r * g.w..(r + 1) * g.w];
        for c in 0..even {
            dst[c] = row[2 * c];
        }
        for c in 0..odd {
            dst[even + c] = row[2 * c + 1];
        }
    }
}

/// [`plane`] without the vector path and without its epilogue.
fn portable_plane(g: &Geometry, x: &[f32], k: &[f32], bias: f32, o: &mut [f32]) {
    if g.sw == 2 && g.w >= 2 {
        // Every tap of a stride-2 row reads every other input column: with each input row
        // split into its even and its odd columns, each tap is a contiguous axpy again
        // (vectorised) instead of a gather.
        return SPLIT.with(|buf| {
            let mut buf = buf.borrow_mut();
            split_columns(g, x, &mut buf);
            plane_split(g, &buf, k, bias, o);
        });
    }
    o.fill(bias);
    let cols: Vec<(usize, usize, usize)> = (0..g.kw)
        .map(|j| {
            let off_w = (j * g.dw) as isize - g.pw as isize;
            let (lo, hi) = valid_range(g.ow, g.sw, off_w, g.w);
            let first = if lo < hi {
                (lo as isize * g.sw as isize + off_w) as usize
            } else {
                0
            };
            (lo, hi, first)
        })
        .collect();
    each_tap(g, x, k, &cols, o, |dst, src, first, wv| {
        if g.sw == 1 {
            let n = dst.len();
            dst.iter_mut()
                .zip(&src[first..first + n])
                .for_each(|(d, s)| *d += wv * s);
        } else {
            dst.iter_mut()
                .enumerate()
                .for_each(|(t, d)| *d += wv * src[first + t * g.sw]);
        }
    });
}

/// [`plane`] for stride 2 over `x` split by [`plane`]: output column `ow` of tap column
/// offset `c0` reads input column `2·ow + c0`, that is split column `ow + c0 div 2` of the
/// even half (`c0` even) or the odd half.
fn plane_split(g: &Geometry, x: &[f32], k: &[f32], bias: f32, o: &mut [f32]) {
    o.fill(bias);
    let even = g.w.div_ceil(2);
    // Per tap column: valid outputs, and where output `lo` reads in the split row.
    let cols: Vec<(usize, usize, usize)> = (0..g.kw)
        .map(|j| {
            let off_w = (j * g.dw) as isize - g.pw as isize;
            let (lo, hi) = valid_range(g.ow, 2, off_w, g.w);
            if lo >= hi {
                return (0, 0, 0);
            }
            // Input column of output lo: 2·lo + off_w ≥ 0; its parity picks the half.
            let first = (2 * lo as isize + off_w) as usize;
            (
                lo,
                hi,
                if first % 2 == 0 {
                    first / 2
                } else {
                    even + first / 2
                },
            )
        })
        .collect();
    each_tap(g, x, k, &cols, o, |dst, row, start, wv| {
        let n = dst.len();
        dst.iter_mut()
            .zip(&row[start..start + n])
            .for_each(|(d, s)| *d += wv * s);
    });
}

/// Output rows outer, taps inner, so a row stays in L1 while every tap adds to it:
/// `axpy(dst, input_row, first, weight)` adds one tap to the valid outputs `dst` of a row,
/// where `cols[j] = (lo, hi, first)` says which outputs tap column `j` reaches and where
/// output `lo` reads in the input row.
fn each_tap(
    g: &Geometry,
    x: &[f32],
    k: &[f32],
    cols: &[(usize, usize, usize)],
    o: &mut [f32],
    axpy: impl Fn(&mut [f32], &[f32], usize, f32),
) {
    if g.ow == 0 {
        return;
    }
    for (oh, orow) in o.chunks_exact_mut(g.ow).enumerate() {
        for i in 0..g.kh {
            let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
            if ih < 0 || ih as usize >= g.h {
                continue;
            }
            let src = &x[ih as usize * g.w..(ih as usize + 1) * g.w];
            for (j, &(lo, hi, first)) in cols.iter().enumerate() {
                if lo < hi {
                    axpy(&mut orow[lo..hi], src, first, k[i * g.kw + j]);
                }
            }
        }
    }
}
