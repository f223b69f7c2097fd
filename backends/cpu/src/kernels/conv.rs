//! Convolution in NCHW as `out[M × P] = W[M × K] · col[K × P]` per image and group: the
//! weights are the GEMM's A, read in place (they are already row-major M × K, so nothing
//! needs packing at compile time, and run-time weights work the same way); the patches
//! (im2col, or the input itself for a 1×1 stride-1 kernel) are packed as B per call; the
//! output lands in NCHW with the bias per row, the residual and the clip applied by the
//! GEMM's epilogue. Depthwise convolution (one channel per group) runs as a direct loop.

use super::depthwise;
use super::epilogue::Epilogue;
use super::im2col::{im2col, im2row, Attrs, Geometry};
use crate::device::Ctx;
use crate::gemm::{gemm_with, Bias, Epilogue as GemmEpilogue, PackedB};
use crate::program::Arg;
use kiln_ir::{AutoPad, DType, Graph, IrError, NodeId, Op, Result, Tensor, Value};
use std::cell::RefCell;
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
    /// Constant weights of a non-pointwise convolution, packed once per group as
    /// B = W_gᵀ (K × M/group) for the transposed product (see [`Conv::run_im2row`]).
    packed: Option<Vec<PackedB>>,
}

/// The transposed product (im2row) is used when the output has at least this many
/// positions per output channel; below, im2col with per-call packing measured faster
/// (resnet50 on this machine: 56×56×64 twice as fast with im2row, 7×7×512 twice as slow).
const IM2ROW_MIN_RATIO: usize = 4;

thread_local! {
    /// The im2col / im2row matrix, kept per thread between calls.
    static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The transposed product's output (P × M/group) before it is turned into NCHW.
    static TMP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows of the im2row matrix shared by the pool's threads; each writes its own rows.
struct Rows(*mut f32);
// SAFETY: threads write disjoint output rows (each taken once from a counter).
unsafe impl Sync for Rows {}

impl Rows {
    fn at(&self) -> *mut f32 {
        self.0
    }
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
        let one_by_one = w_shape
            .as_ref()
            .is_some_and(|s| s[2..].iter().all(|&k| k == 1))
            && strides.iter().all(|&s| s == 1);
        let packed = match w_const {
            Some(w)
                if !depthwise
                    && !one_by_one
                    && *group >= 1
                    && w.rank() >= 3
                    && w.dtype() == DType::F32 =>
            {
                let (m, grp) = (w.shape()[0], *group as usize);
                let k: usize = w.shape()[1..].iter().product();
                let wv = w.as_slice::<f32>().ok()?;
                if m % grp != 0 {
                    return None;
                }
                let mg = m / grp;
                let mut packs = Vec::with_capacity(grp);
                for gi in 0..grp {
                    packs.push(
                        PackedB::from_transposed(k, mg, &wv[gi * mg * k..(gi + 1) * mg * k], k)
                            .ok()?,
                    );
                }
                Some(packs)
            }
            _ => None,
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
        })
    }

    pub fn label(&self) -> &'static str {
        if self.depthwise {
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
        let mut out = vec![0.0f32; numel];
        let (cg, mg) = (g.c, m / group);
        if cg == 1 && mg == 1 {
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
        } else if let Some(packs) = self.packed.as_ref().filter(|p| {
            p.len() == group
                && p[0].k() == g.k()
                && p[0].n() == mg
                && !g.pointwise()
                && g.p() >= IM2ROW_MIN_RATIO * mg
        }) {
            if let Err(e) = self.run_im2row(
                ctx,
                &g,
                batch,
                m,
                group,
                xv,
                packs,
                bias.as_deref(),
                residual,
                &mut out,
            ) {
                return Some(Err(e));
            }
        } else {
            let k = g.k();
            let in_image = g.c * group * g.h * g.w;
            for b in 0..batch {
                for gi in 0..group {
                    let xg = &xv[b * in_image + gi * cg * g.h * g.w
                        ..b * in_image + (gi + 1) * cg * g.h * g.w];
                    let packed = if g.pointwise() {
                        PackedB::new(k, p, xg, p)
                    } else {
                        COL.with(|col| {
                            let mut col = col.borrow_mut();
                            col.resize(k * p, 0.0);
                            im2col(&g, xg, &mut col);
                            PackedB::new(k, p, &col, p)
                        })
                    };
                    let packed = match packed {
                        Ok(pb) => pb,
                        Err(e) => return Some(Err(IrError::msg(e.to_string()))),
                    };
                    let rows = (b * m + gi * mg) * p..(b * m + (gi + 1) * mg) * p;
                    let epi = GemmEpilogue {
                        bias: bias
                            .as_deref()
                            .map(|v| Bias::PerRow(&v[gi * mg..(gi + 1) * mg])),
                        residual: residual.map(|r| (&r[rows.clone()], p)),
                        clip: self.epi.clip,
                    };
                    let wg = &wv[gi * mg * k..(gi + 1) * mg * k];
                    if let Err(e) = gemm_with(
                        &ctx.gemm(),
                        mg,
                        wg,
                        k,
                        &packed,
                        &mut out[rows],
                        p,
                        false,
                        &epi,
                    ) {
                        return Some(Err(IrError::msg(e.to_string())));
                    }
                }
            }
        }
        Some(Tensor::new(out_shape, out))
    }
}

impl Conv {
    /// The transposed product for a convolution with constant weights and a real window:
    /// `outᵀ[P × M] = im2row(x)[P × K] · Wᵀ[K × M]` per image and group. The weights are
    /// packed once (they are small: they stay in L2 while the patches stream through),
    /// the patches are read in place by the GEMM (no per-call packing), and the result is
    /// transposed into NCHW with the residual and clip applied on the way.
    #[allow(clippy::too_many_arguments)]
    fn run_im2row(
        &self,
        ctx: &Ctx,
        g: &Geometry,
        batch: usize,
        m: usize,
        group: usize,
        xv: &[f32],
        packs: &[PackedB],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<()> {
        let (k, p, mg) = (g.k(), g.p(), m / group);
        let plane = g.c * g.h * g.w;
        COL.with(|col| {
            TMP.with(|tmp| {
                let (mut a, mut t) = (col.borrow_mut(), tmp.borrow_mut());
                a.resize(p * k, 0.0);
                t.resize(p * mg, 0.0);
                for b in 0..batch {
                    for gi in 0..group {
                        let xg = &xv[(b * group + gi) * plane..(b * group + gi + 1) * plane];
                        fill_im2row(ctx, g, xg, &mut a);
                        // Without a residual the clip can run in the GEMM; with one it must
                        // wait for the residual, added during the transpose.
                        let epi = GemmEpilogue {
                            bias: bias.map(|v| Bias::PerCol(&v[gi * mg..(gi + 1) * mg])),
                            residual: None,
                            clip: if residual.is_none() {
                                self.epi.clip
                            } else {
                                None
                            },
                        };
                        gemm_with(&ctx.gemm(), p, &a, k, &packs[gi], &mut t, mg, false, &epi)
                            .map_err(|e| IrError::msg(e.to_string()))?;
                        let base = (b * m + gi * mg) * p;
                        let dst = &mut out[base..base + mg * p];
                        let res = residual.map(|r| &r[base..base + mg * p]);
                        transpose_into(
                            &t,
                            p,
                            mg,
                            dst,
                            res,
                            if residual.is_some() {
                                self.epi.clip
                            } else {
                                None
                            },
                        );
                    }
                }
                Ok(())
            })
        })
    }
}

/// Builds the im2row matrix, output rows split over the pool's threads.
fn fill_im2row(ctx: &Ctx, g: &Geometry, x: &[f32], a: &mut [f32]) {
    let rows = Rows(a.as_mut_ptr());
    let len = a.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let chunk = 4usize;
    let work = |_t: usize| loop {
        let r0 = next.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
        if r0 >= g.oh {
            return;
        }
        let r1 = (r0 + chunk).min(g.oh);
        let row_len = g.ow * g.k();
        debug_assert!(r1 * row_len <= len);
        // SAFETY: rows r0..r1 are inside the buffer and only this thread takes them.
        let a = unsafe {
            std::slice::from_raw_parts_mut(rows.at().add(r0 * row_len), (r1 - r0) * row_len)
        };
        im2row(g, x, a, r0..r1);
    };
    match ctx.pool {
        Some(pool) if g.oh > chunk && g.p() * g.k() >= 1 << 16 => pool.run(&work),
        _ => work(0),
    }
}

/// `dst[j][i] = clip(src[i][j] + res[j][i])` for src rows × cols, in cache-sized blocks.
fn transpose_into(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    res: Option<&[f32]>,
    clip: Option<(f32, f32)>,
) {
    const B: usize = 32;
    let (lo, hi) = clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for j in j0..(j0 + B).min(cols) {
                for i in i0..(i0 + B).min(rows) {
                    let mut v = src[i * cols + j];
                    if let Some(r) = res {
                        v += r[j * rows + i];
                    }
                    if v < lo {
                        v = lo;
                    }
                    if v > hi {
                        v = hi;
                    }
                    dst[j * rows + i] = v;
                }
            }
        }
    }
}
