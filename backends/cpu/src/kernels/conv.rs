//! Convolution in NCHW as `out[M × P] = W[M × K] · patches[K × P]` per image and group: the
//! weights are the GEMM's A, read in place (they are already row-major M × K, so nothing
//! needs packing at compile time, and run-time weights work the same way); the patches are
//! packed straight into the GEMM's panels a block of positions at a time per thread
//! ([`Patches`], or the input rows themselves for a 1×1 stride-1 kernel); the output lands
//! in NCHW with the bias per row, the residual and the clip applied by the GEMM's epilogue.
//! Depthwise convolution (one channel per group) runs as a direct loop, as do shallow
//! kernels (a network's first conv, [`conv_direct`]); convolutions with few output
//! positions and many channels run transposed ([`conv_small_p`]), stride-1 ones with few
//! output channels as a sum over the taps ([`conv_taps`]).

use super::conv_direct;
use super::conv_small_p;
use super::conv_taps;
use super::depthwise;
use super::epilogue::Epilogue;
use super::im2col::{Attrs, Geometry, Patches};
use crate::device::Ctx;
use crate::gemm::{
    gemm_source_uninit, Bias, Epilogue as GemmEpilogue, Kernel, PackedA, PackedB, PanelSource,
    RowMajor, SourceA,
};
use crate::program::Arg;
use kiln_ir::{AutoPad, DType, Graph, IrError, NodeId, Op, Result, Tensor, Value};
use std::collections::HashMap;

pub(crate) struct Conv {
    auto_pad: AutoPad,
    dilations: Vec<i64>,
    group: i64,
    kernel_shape: Vec<i64>,
    pads: Vec<i64>,
    strides: Vec<i64>,
    /// Step inputs of x, w and b.
    x: usize,
    w: usize,
    b: Option<usize>,
    epi: Epilogue,
    /// Known at compile time: one channel per group.
    depthwise: bool,
    /// Constant weights packed at compile time, one matrix per group (empty: W is read
    /// in place, as run-time weights are).
    packed: Vec<PackedA>,
    /// Constant weights packed transposed (K × M) for convs with few output positions and
    /// many channels, known from the output type at compile time (`conv_small_p`); then
    /// `packed` is left empty.
    transposed: Option<PackedB>,
    /// Constant weights packed transposed per kernel tap, for stride-1 convs with few
    /// output channels (`conv_taps`); then `packed` is left empty.
    taps: Vec<PackedB>,
    /// Constant weights of a shallow kernel, read in place by the direct loop
    /// (`conv_direct`), known at compile time; then the others are left empty.
    direct: bool,
}

/// Whether the conv runs as `conv_direct`'s loop, from its constant weights' shape and
/// its output type, known at compile time.
fn takes_direct(w: &Tensor, group: usize, out: &kiln_ir::TensorType) -> bool {
    let (Some(dims), [_, c, kernel @ ..]) = (out.shape.concrete(), w.shape()) else {
        return false;
    };
    let (kh, kw) = match kernel {
        [kh, kw] => (*kh, *kw),
        [kw] => (1, *kw),
        _ => return false,
    };
    let ow = dims.last().copied().unwrap_or(0);
    w.dtype() == DType::F32 && conv_direct::available() && conv_direct::takes(group, *c, kh, kw, ow)
}

/// The weights `[M, C, kh, kw]` per tap as `conv_taps` reads them, when the conv's
/// strides, groups and output, known at compile time, call for it.
fn pack_taps(w: &Tensor, group: usize, strides: &[i64], out: &kiln_ir::TensorType) -> Vec<PackedB> {
    let (Some(dims), Ok(wv)) = (out.shape.concrete(), w.as_slice::<f32>()) else {
        return Vec::new();
    };
    let [m, c, kh, kw] = *w.shape() else {
        return Vec::new();
    };
    let ow = dims.get(3).copied().unwrap_or(0);
    if !conv_taps::applies(group, strides.iter().all(|&s| s == 1), kh * kw, m, c, ow) {
        return Vec::new();
    }
    conv_taps::pack(wv, m, c, kh * kw).unwrap_or_default()
}

/// The weights `[M, C, kernel…]` as the transposed product's B (K × M), when the conv's
/// output positions and channels, known at compile time, call for it.
fn pack_transposed(w: &Tensor, group: usize, out: &kiln_ir::TensorType) -> Option<PackedB> {
    let dims = out.shape.concrete()?;
    let positions: usize = dims.get(2..)?.iter().product();
    let (wv, [m, ..]) = (w.as_slice::<f32>().ok()?, w.shape()) else {
        return None;
    };
    let k: usize = w.shape()[1..].iter().product();
    if w.rank() < 3 || !conv_small_p::applies(positions, *m, k, group) {
        return None;
    }
    PackedB::from_transposed(k, *m, wv, k).ok()
}

/// Constant weights `[M, C/group, kernel…]` packed per group as the GEMM's A; empty when
/// they are not f32 or their shape does not divide into groups (the run then reads W in
/// place, or declines).
fn pack_weights(w: &Tensor, group: usize) -> Vec<PackedA> {
    let (Ok(wv), [m, ..]) = (w.as_slice::<f32>(), w.shape()) else {
        return Vec::new();
    };
    if w.rank() < 3 || group == 0 || m % group != 0 {
        return Vec::new();
    }
    let mg = m / group;
    let k: usize = w.shape()[1..].iter().product();
    let packed: Option<Vec<PackedA>> = (0..group)
        .map(|gi| {
            let wg = wv.get(gi * mg * k..(gi + 1) * mg * k)?;
            PackedA::new(mg, k, wg, k).ok()
        })
        .collect();
    packed.unwrap_or_default()
}

/// The output of `batch` images of `out_image` floats each, image b written by `image` from
/// its input (`in_image` floats of `xv` from `b·in_image`) and its part of the residual,
/// straight into the output's capacity. `None` when an image's input is missing or
/// `image` declines.
///
/// # Safety
/// `image(x, r, dst)` must write all `out_image` floats at `dst` when it returns `Some`.
unsafe fn per_image(
    xv: &[f32],
    batch: usize,
    in_image: usize,
    out_image: usize,
    residual: Option<&[f32]>,
    mut image: impl FnMut(&[f32], Option<&[f32]>, *mut f32) -> Option<()>,
) -> Option<Vec<f32>> {
    let numel = batch.checked_mul(out_image)?;
    let mut out = Vec::<f32>::with_capacity(numel);
    for b in 0..batch {
        let x = xv.get(b * in_image..(b + 1) * in_image)?;
        let r = match residual {
            Some(r) => Some(r.get(b * out_image..(b + 1) * out_image)?),
            None => None,
        };
        // Image b's floats lie inside the capacity of `out` (numel = batch·out_image).
        image(x, r, out.as_mut_ptr().add(b * out_image))?;
    }
    // Every image's floats were written above (the caller's contract).
    out.set_len(numel);
    Some(out)
}

fn input_index(arg: Option<&Arg>) -> Option<usize> {
    match arg {
        Some(Arg::Input(i)) => Some(*i),
        _ => None,
    }
}

impl Conv {
    pub fn new(
        graph: &Graph,
        n: NodeId,
        args: &[Arg],
        known: &HashMap<Value, Tensor>,
        epi: Epilogue,
    ) -> Option<Conv> {
        let node = graph.node(n);
        let Op::Conv {
            auto_pad,
            dilations,
            group,
            kernel_shape,
            pads,
            strides,
        } = &node.op
        else {
            return None;
        };
        if node.outputs.first()?.dtype != DType::F32 {
            return None;
        }
        let w_const = graph
            .inputs_of(n)
            .get(1)
            .copied()
            .flatten()
            .and_then(|v| known.get(&v));
        let w_shape = w_const.map(|t| t.shape().to_vec());
        let depthwise = w_shape
            .as_ref()
            .is_some_and(|s| s.len() >= 2 && s[1] == 1 && s[0] as i64 == *group);
        let group_n = usize::try_from(*group).ok()?;
        let direct = match w_const {
            Some(w) if !depthwise => takes_direct(w, group_n, node.outputs.first()?),
            _ => false,
        };
        let transposed = match w_const {
            Some(w) if !depthwise && !direct => pack_transposed(w, group_n, node.outputs.first()?),
            _ => None,
        };
        let taps = match w_const {
            Some(w) if !depthwise && !direct && transposed.is_none() => {
                pack_taps(w, group_n, strides, node.outputs.first()?)
            }
            _ => Vec::new(),
        };
        let packed = match w_const {
            Some(w) if !depthwise && !direct && transposed.is_none() && taps.is_empty() => {
                pack_weights(w, group_n)
            }
            _ => Vec::new(),
        };
        Some(Conv {
            auto_pad: *auto_pad,
            dilations: dilations.clone(),
            group: *group,
            kernel_shape: kernel_shape.clone(),
            pads: pads.clone(),
            strides: strides.clone(),
            x: input_index(args.first())?,
            w: input_index(args.get(1))?,
            b: match args.get(2) {
                None | Some(Arg::Absent) => None,
                a => Some(input_index(a)?),
            },
            epi,
            depthwise,
            packed,
            transposed,
            taps,
            direct,
        })
    }

    pub fn label(&self) -> &'static str {
        if self.depthwise || self.direct {
            "direct"
        } else {
            "gemm"
        }
    }

    /// The output, or `None` when this kernel does not handle the inputs (the step then
    /// replays its chain through `ir::eval`).
    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.get(self.x)?.as_ref()?;
        let w = args.get(self.w)?.as_ref()?;
        let (xv, wv) = (x.as_slice::<f32>().ok()?, w.as_slice::<f32>().ok()?);
        let group = usize::try_from(self.group).ok()?;
        let attrs = Attrs {
            auto_pad: self.auto_pad,
            dilations: &self.dilations,
            kernel_shape: &self.kernel_shape,
            pads: &self.pads,
            strides: &self.strides,
        };
        let g = Geometry::new(&attrs, x.shape(), w.shape(), group)?;
        let (batch, m) = (x.shape()[0], w.shape()[0]);
        if m % group != 0 {
            return None;
        }
        let mut out_shape = vec![batch, m];
        out_shape.extend(&[g.oh, g.ow][2 - (x.rank() - 2)..]);
        let p = g.p();
        // Bias: the conv's own plus the fused constant adds.
        let mut bias = match self.b {
            None => None,
            Some(i) => {
                let b = args.get(i)?.as_ref()?;
                let bv = b.as_slice::<f32>().ok()?;
                if bv.len() != m {
                    return None;
                }
                Some(bv.to_vec())
            }
        };
        if let Some(extra) = &self.epi.bias {
            if extra.len() != m {
                return None;
            }
            let b = bias.get_or_insert_with(|| vec![0.0; m]);
            b.iter_mut().zip(extra).for_each(|(x, y)| *x += y);
        }
        let residual = match self.epi.residual {
            None => None,
            Some(i) => {
                let r = args.get(i)?.as_ref()?;
                if r.shape() != out_shape.as_slice() {
                    return None;
                }
                Some(r.as_slice::<f32>().ok()?)
            }
        };
        let numel = batch.checked_mul(m)?.checked_mul(p)?;
        let (cg, mg) = (g.c, m / group);
        if cg == 1 && mg == 1 {
            let mut out = vec![0.0f32; numel];
            depthwise::run(
                ctx,
                &g,
                batch,
                m,
                xv,
                wv,
                bias.as_deref(),
                residual,
                self.epi.clip,
                &mut out,
            );
            Some(Tensor::new(out_shape, out))
        } else if let Some(wt) = self.transposed.as_ref().filter(|wt| {
            conv_small_p::applies(p, m, g.k(), group) && wt.n() == m && wt.k() == g.k()
        }) {
            // SAFETY: conv_small_p::run writes every one of the image's m·p floats.
            let out = unsafe {
                per_image(xv, batch, g.c * g.h * g.w, m * p, residual, |x, r, dst| {
                    conv_small_p::run(ctx, &g, wt, x, bias.as_deref(), r, self.epi.clip, dst)
                })?
            };
            Some(Tensor::new(out_shape, out))
        } else if self.direct && conv_direct::applies(ctx, &g, group) {
            // SAFETY: conv_direct::run writes every one of the image's m·p floats.
            let out = unsafe {
                per_image(xv, batch, g.c * g.h * g.w, m * p, residual, |x, r, dst| {
                    conv_direct::run(ctx, &g, m, x, wv, bias.as_deref(), r, self.epi.clip, dst)
                })?
            };
            Some(Tensor::new(out_shape, out))
        } else if !self.taps.is_empty()
            && group == 1
            && g.sh == 1
            && g.sw == 1
            && self.taps.len() == g.kh * g.kw
            && self.taps.iter().all(|t| t.n() == m && t.k() == g.c)
        {
            let taps = &self.taps;
            // SAFETY: conv_taps::run writes every one of the image's m·p floats.
            let out = unsafe {
                per_image(xv, batch, g.c * g.h * g.w, m * p, residual, |x, r, dst| {
                    conv_taps::run(ctx, &g, taps, x, bias.as_deref(), r, self.epi.clip, dst)
                })?
            };
            Some(Tensor::new(out_shape, out))
        } else {
            // The GEMMs below write every element (each image and group's rows once, beta
            // = 0), so the output is not zero-filled first.
            let mut out = Vec::<f32>::with_capacity(numel);
            let k = g.k();
            let in_image = g.c * group * g.h * g.w;
            for b in 0..batch {
                for gi in 0..group {
                    let start = b * in_image + gi * cg * g.h * g.w;
                    let xg = &xv[start..start + cg * g.h * g.w];
                    let row_major;
                    let patches;
                    let source: &dyn PanelSource = if g.pointwise() {
                        row_major = match RowMajor::new(xg, k, p, p) {
                            Ok(r) => r,
                            Err(e) => return Some(Err(IrError::msg(e.to_string()))),
                        };
                        &row_major
                    } else {
                        patches = Patches::new(&g, xg, ctx.kernel == Kernel::Avx2Fma)?;
                        &patches
                    };
                    let rows = (b * m + gi * mg) * p..(b * m + (gi + 1) * mg) * p;
                    let epi = GemmEpilogue {
                        bias: bias
                            .as_deref()
                            .map(|v| Bias::PerRow(&v[gi * mg..(gi + 1) * mg])),
                        residual: residual.map(|r| (&r[rows.clone()], p)),
                        clip: self.epi.clip,
                    };
                    let wg = wv.get(gi * mg * k..(gi + 1) * mg * k)?;
                    let a = match self.packed.get(gi) {
                        Some(a) if a.m() == mg && a.k() == k => SourceA::Packed(a),
                        _ => SourceA::InPlace {
                            m: mg,
                            k,
                            a: wg,
                            lda: k,
                        },
                    };
                    // SAFETY: `rows` lies inside the capacity of `out` (numel = batch·m·p
                    // floats), which only this call touches.
                    let done = unsafe {
                        gemm_source_uninit(
                            &ctx.gemm(),
                            a,
                            p,
                            source,
                            out.as_mut_ptr().add(rows.start),
                            rows.len(),
                            p,
                            &epi,
                        )
                    };
                    if let Err(e) = done {
                        return Some(Err(IrError::msg(e.to_string())));
                    }
                }
            }
            // SAFETY: the loops above wrote all numel floats, every (image, group) rows.
            unsafe { out.set_len(numel) };
            Some(Tensor::new(out_shape, out))
        }
    }
}
