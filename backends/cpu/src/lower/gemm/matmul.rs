//! MatMul and Gemm. A constant 2-D B (a dense layer's weights) is packed at compile time
//! into the kernel's read-only data in [`PackedB`]'s layout, Gemm's transB and alpha
//! applied, and all rows of a batched A go through one GEMM. A run-time B is packed panel
//! by panel per call, one GEMM per batch (batch dims equal, or all 1 on one side). Gemm's
//! C becomes the column bias when it is a constant row or scalar, the residual when it has
//! the output's shape (constant: scaled by beta at compile time; run-time: beta = 1).

use super::anchor::Anchor;
use super::conv::block_depth;
use super::driver::{self, BSource, BiasKind, Mat, Outer, Spec};
use super::{define_kernel, kind, Args, LowerCtx, Result};
use crate::gemm::PackedB;
use crate::lower::{Arg, Kernel};
use cranelift_module::Module;
use kiln_ir::{Node, Op};

pub(super) fn lower<M: Module>(
    ctx: &mut LowerCtx<M>,
    _node: &Node,
    anchor: &Anchor,
    out: &[usize],
) -> Result<Option<Kernel>> {
    let (Some(Some(a)), Some(Some(bsrc))) = (anchor.ins.first(), anchor.ins.get(1)) else {
        return Ok(None);
    };
    let (alpha, beta, trans_a, trans_b, name) = match *anchor.op {
        Op::MatMul => (1.0, 0.0, false, false, "matmul"),
        Op::Gemm { alpha, beta, trans_a, trans_b } => (alpha, beta, trans_a, trans_b, "gemm"),
        _ => return Ok(None),
    };
    let gemm = name == "gemm";
    if gemm && (a.shape.len() != 2 || bsrc.shape.len() != 2) {
        return Ok(None);
    }
    // A as rows × k: MatMul folds A's batch dims into rows when B is shared.
    let (ar, ak) = match a.shape.len() {
        0 => return Ok(None),
        1 => (1, a.shape[0]),
        r if trans_a => (a.shape[r - 1], a.shape[r - 2]),
        r => (a.shape[r - 2], a.shape[r - 1]),
    };
    if bsrc.shape.len() < 2 {
        return Ok(None);
    }
    let br = bsrc.shape.len();
    let (k, n) = if trans_b {
        (bsrc.shape[br - 1], bsrc.shape[br - 2])
    } else {
        (bsrc.shape[br - 2], bsrc.shape[br - 1])
    };
    if k != ak || k == 0 || n == 0 || out.last() != Some(&n) {
        return Ok(None);
    }
    let a_batch: usize = a.shape[..a.shape.len().saturating_sub(2)].iter().product();
    let b_batch: usize = bsrc.shape[..br - 2].iter().product();
    let out_batch: usize = out[..out.len().saturating_sub(2)].iter().product();
    let mut args = Args::default();
    let c_arg = args.push(Arg::Output(0));
    let a_arg = args.src(ctx, a)?;
    // B's element (p, j) at p*rs + j*cs.
    let (rs_b, cs_b) = if trans_b { (1, k) } else { (n, 1) };

    // Shared B: one GEMM over all of A's rows. Otherwise one GEMM per batch.
    let shared_b = br == 2;
    let (m, outer, a_outer, b_outer) = if shared_b {
        let rows = if a.shape.len() == 1 { 1 } else { a_batch * ar };
        (rows, 1, Outer::shared(), Outer::shared())
    } else {
        let same = |x: usize| x == out_batch;
        let a_dims = &a.shape[..a.shape.len().saturating_sub(2)];
        let b_dims = &bsrc.shape[..br - 2];
        let out_dims = &out[..out.len() - 2];
        let lines_up = |d: &[usize]| d.iter().product::<usize>() == 1 || d == &out_dims[out_dims.len() - d.len()..];
        if a.shape.len() < 2 || !lines_up(a_dims) || !lines_up(b_dims) {
            return Ok(None);
        }
        let each = |batch: usize, size: usize| if same(batch) { Outer::each(size) } else { Outer::shared() };
        (ar, out_batch, each(a_batch, ar * k), each(b_batch, k * n))
    };
    if out.iter().product::<usize>() != m * n * outer {
        return Ok(None);
    }
    let (rs_a, cs_a) = if trans_a { (1, ar) } else { (k, 1) };

    let (b, packed) = match bsrc.f32() {
        Some(v) if shared_b => {
            let scaled: Vec<f32>;
            let v = if alpha != 1.0 {
                scaled = v.iter().map(|x| x * alpha).collect();
                &scaled[..]
            } else {
                v
            };
            let Ok(pb) = PackedB::from_strided(k, n, v, rs_b, cs_b) else { return Ok(None) };
            let arg = args.floats(ctx, "packed_b", pb.as_slice())?;
            (BSource::Packed { arg }, Some(pb.kc()))
        }
        _ if alpha != 1.0 => return Ok(None),
        _ => {
            let arg = args.src(ctx, bsrc)?;
            (BSource::Strided(Mat { arg, rs: rs_b, cs: cs_b, outer: b_outer }), None)
        }
    };

    // Gemm's C: a constant row → bias; the output's shape → residual.
    let mut bias = anchor.epi.bias.clone();
    let mut residual = anchor.epi.residual.map(|i| args.push(Arg::Input(i)));
    if let Some(Some(c)) = anchor.ins.get(2).filter(|_| gemm && beta != 0.0) {
        let row = c.shape.iter().rev().skip(1).all(|&d| d == 1) && c.shape.len() <= 2;
        match c.f32() {
            Some(v) if row && (v.len() == n || v.len() == 1) => {
                let b = bias.get_or_insert_with(|| vec![0.0; n]);
                for (j, x) in b.iter_mut().enumerate() {
                    *x += beta * if v.len() == 1 { v[0] } else { v[j] };
                }
            }
            Some(v) if c.shape == out && residual.is_none() => {
                let scaled: Vec<f32> = v.iter().map(|x| x * beta).collect();
                residual = Some(args.floats(ctx, "gemm_c", &scaled)?);
            }
            None if c.shape == out && residual.is_none() && beta == 1.0 => {
                residual = Some(args.src(ctx, c)?);
            }
            _ => return Ok(None),
        }
    }
    if bias.as_ref().is_some_and(|b| b.len() != n) {
        return Ok(None);
    }
    let bias = match bias {
        Some(v) => Some((BiasKind::Col, args.floats(ctx, "bias", &v)?, Outer::shared())),
        None => None,
    };
    let (rb, pc) = if packed.is_some() {
        driver::blocking_packed(m, n)
    } else {
        driver::blocking_on_the_fly(m, n)
    };
    let spec = Spec {
        m,
        n,
        k,
        kc: packed.unwrap_or_else(|| block_depth(k)),
        rb,
        pc,
        outer,
        a: Mat { arg: a_arg, rs: rs_a, cs: cs_a, outer: a_outer },
        b,
        c: Mat { arg: c_arg, rs: n, cs: 1, outer: Outer::each(m * n) },
        bias,
        residual: residual.map(|arg| Mat { arg, rs: n, cs: 1, outer: Outer::each(m * n) }),
        clip: anchor.epi.clip,
    };
    let units = spec.units();
    let func = define_kernel(ctx, name, &args, true, |b, kernels, ptrs, u| {
        driver::emit_unit(b, &spec, kernels, ptrs, u)
    })?;
    Ok(Some(Kernel { func, args: args.list, units, kind: kind(name, &anchor.epi, "gemm") }))
}
