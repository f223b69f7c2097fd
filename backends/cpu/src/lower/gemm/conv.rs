//! Conv (NCHW, 1-D and 2-D, any stride, padding, dilation and group) as
//! `out[M×P] = W[M×K] · patches[K×P]` per image and group: the weights are the GEMM's A,
//! read in place (no copy at compile time, run-time weights work the same way), each
//! 16-position panel of patches is gathered from the input into a stack buffer as B, and
//! the output comes out in NCHW with the bias per row, the residual and the clip applied by
//! the microkernel. A 1×1 stride-1 convolution reads its input planes directly as B.
//! Depthwise convolution (one channel per group) runs as a direct loop (`depthwise.rs`).

use super::anchor::{Anchor, Src};
use super::driver::{self, BSource, BiasKind, Mat, Outer, Spec};
use super::{define_kernel, depthwise, kind, Args, LowerCtx, Result};
use crate::kernels::im2col::{Attrs, Geometry};
use crate::lower::{Arg, Kernel, LowerError};
use cranelift_module::Module;
use kiln_ir::{Node, Op};

/// Equal k blocks no deeper than the packed B's KC, a multiple of 4 where possible: the
/// same depth [`crate::gemm::PackedB`] packs with, so both B sources block alike.
pub(super) fn block_depth(k: usize) -> usize {
    let kc = crate::gemm::pack::KC;
    let blocks = k.div_ceil(kc).max(1);
    k.div_ceil(blocks).next_multiple_of(4).clamp(4, kc)
}

pub(super) fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    node: &Node,
    anchor: &Anchor,
    out: &[usize],
) -> Result<Option<Kernel>> {
    let Op::Conv {
        auto_pad,
        dilations,
        group,
        kernel_shape,
        pads,
        strides,
    } = anchor.op
    else {
        return Ok(None);
    };
    let (Some(Some(x)), Some(Some(w))) = (anchor.ins.first(), anchor.ins.get(1)) else {
        return Ok(None);
    };
    let bad = |why: &str| LowerError::unsupported(node, why);
    let group = usize::try_from(*group).map_err(|_| bad("negative group"))?;
    let attrs = Attrs {
        auto_pad: *auto_pad,
        dilations,
        kernel_shape,
        pads,
        strides,
    };
    if out.len() != x.shape.len() || out.len() < 3 {
        return Ok(None);
    }
    let g = Geometry::new(&attrs, &x.shape, &w.shape, group)
        .filter(|g| match out[2..] {
            [ow] => (g.oh, g.ow) == (1, ow),
            [oh, ow] => (g.oh, g.ow) == (oh, ow),
            _ => false,
        })
        .ok_or_else(|| bad("convolution geometry the GEMM lowering does not cover"))?;
    let (batch, m) = (x.shape[0], w.shape[0]);
    if group == 0 || m % group != 0 || out[0] != batch || out[1] != m || g.p() == 0 || batch == 0 {
        return Ok(None);
    }
    let mut args = Args::default();
    let out_arg = args.push(Arg::Output(0));
    let x_arg = args.src(ctx, x)?;
    let w_arg = args.src(ctx, w)?;
    let bias = bias_arg(ctx, &mut args, anchor, m)?;
    let Some(bias) = bias else { return Ok(None) };
    let residual = anchor.epi.residual.map(|i| args.push(Arg::Input(i)));
    let clip = anchor.epi.clip;

    if g.c == 1 && m == group {
        let dw = depthwise::Args {
            x: x_arg,
            w: w_arg,
            bias: bias.0,
            residual,
            out: out_arg,
        };
        let func = define_kernel(ctx, "dwconv", &args, false, |b, _, ptrs, u| {
            depthwise::emit_unit(b, &g, m, clip, &dw, ptrs, u)
        })?;
        return Ok(Some(Kernel {
            func,
            args: args.list,
            units: (batch * m) as u64,
            kind: kind("dwconv", &anchor.epi, "direct"),
        }));
    }

    let (mg, k, p) = (m / group, g.k(), g.p());
    if k == 0 {
        return Ok(None);
    }
    let plane = g.c * g.h * g.w;
    let (rb, pc) = driver::blocking_on_the_fly(mg, p);
    let spec = Spec {
        m: mg,
        n: p,
        k,
        kc: block_depth(k),
        rb,
        pc,
        outer: batch * group,
        a: Mat {
            arg: w_arg,
            rs: k,
            cs: 1,
            outer: Outer {
                div: 1,
                modulo: group,
                stride: mg * k,
            },
        },
        b: if g.pointwise() {
            BSource::Strided(Mat {
                arg: x_arg,
                rs: p,
                cs: 1,
                outer: Outer::each(plane),
            })
        } else {
            BSource::Im2col {
                arg: x_arg,
                outer: Outer::each(plane),
                geometry: g.clone(),
            }
        },
        c: Mat {
            arg: out_arg,
            rs: p,
            cs: 1,
            outer: Outer::each(mg * p),
        },
        bias: bias.0.map(|a| {
            (
                BiasKind::Row,
                a,
                Outer {
                    div: 1,
                    modulo: group,
                    stride: mg,
                },
            )
        }),
        residual: residual.map(|a| Mat {
            arg: a,
            rs: p,
            cs: 1,
            outer: Outer::each(mg * p),
        }),
        clip,
    };
    let units = spec.units();
    let func = define_kernel(ctx, "conv", &args, true, |b, kernels, ptrs, u| {
        driver::emit_unit(b, &spec, kernels, ptrs, u)
    })?;
    Ok(Some(Kernel {
        func,
        args: args.list,
        units,
        kind: kind("conv", &anchor.epi, "gemm"),
    }))
}

/// The bias per output channel: the conv's own plus the fused constant adds, summed into
/// one constant when they are constants. `None` (not covered) for a run-time bias with
/// constant adds to fold in; `Some((None,))` when there is no bias at all.
#[allow(clippy::type_complexity)]
fn bias_arg<M: Module>(
    ctx: &mut LowerCtx<M>,
    args: &mut Args,
    anchor: &Anchor,
    m: usize,
) -> Result<Option<(Option<usize>,)>> {
    let own: Option<&Src> = anchor.ins.get(2).and_then(|s| s.as_ref());
    let extra = anchor.epi.bias.as_ref();
    match (own, extra) {
        (None, None) => Ok(Some((None,))),
        (Some(b), None) if b.value.is_none() => {
            if b.shape.iter().product::<usize>() != m {
                return Ok(None);
            }
            Ok(Some((Some(args.src(ctx, b)?),)))
        }
        (Some(b), _) if b.value.is_none() => Ok(None),
        (own, extra) => {
            let mut sum = vec![0.0f32; m];
            if let Some(b) = own {
                let Some(v) = b.f32().filter(|v| v.len() == m) else {
                    return Ok(None);
                };
                sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
            }
            if let Some(e) = extra {
                if e.len() != m {
                    return Ok(None);
                }
                sum.iter_mut().zip(e).for_each(|(s, x)| *s += x);
            }
            Ok(Some((Some(args.floats(ctx, "bias", &sum)?),)))
        }
    }
}
