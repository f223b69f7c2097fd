//! Exact GELU after a matmul, `p·x·(1 + erf(r·x))`, applied by the matmul kernel to each
//! chunk of rows (a run-time B) or slice of columns (a constant B, `columns`) right after
//! the GEMM wrote it (still in L1/L2), on sixteen AVX-512 or eight AVX2 lanes.
//! As a separate generated pass it was the second-largest cost of transformer_encoder's
//! feed-forward layers: four lanes, and one more pass over the layer's output.
//!
//! Exporters spell GELU in several ways; [`recognise`] takes the ONNX op and the
//! `erf` forms TensorFlow and PyTorch write (`0.5·x·(1 - erf(-x·0.7071))`,
//! `x·(1 + erf(x/1.4142))·0.5`), reading p and r from the graph's constants. erf is
//! N. Juffa's erff as in `codegen::math` (its coefficients), with 1 + erf(z) taken as
//! erfc(|z|) for negative z, so the negative tail has no cancellation.

// The coefficients are quoted as their authors published them.
#![allow(clippy::excessive_precision)]

use super::rows::Out;
use crate::device::Ctx;
use crate::gemm::{gemm_with, Epilogue as GemmEpilogue, Kernel, Options, PackedB, MR};
use kiln_ir::{
    BinaryOp, DType, GeluApproximation, Graph, IrError, NodeId, Op, Tensor, UnaryOp, Value,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `p·x·(1 + erf(r·x))`: exact GELU is p = ½, r = 1/√2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Gelu {
    pub p: f32,
    pub r: f32,
}

fn scalar(known: &HashMap<Value, Tensor>, v: Option<Value>) -> Option<f32> {
    match known.get(&v?)?.as_slice::<f32>() {
        Ok([x]) => Some(*x),
        _ => None,
    }
}

/// The GELU applied to `x` by the nodes after it: the activation, the nodes in order, and
/// the value holding the result. `reads` counts a value's readers (graph outputs
/// included); only `x` may have two, and every node must keep `x`'s type.
pub(crate) fn recognise(
    graph: &Graph,
    x: Value,
    known: &HashMap<Value, Tensor>,
    reads: &dyn Fn(Value) -> usize,
) -> Option<(Gelu, Vec<NodeId>, Value)> {
    let ty = graph.value_type(x).clone();
    if ty.dtype != DType::F32 {
        return None;
    }
    let fits = |n: NodeId| {
        let node = graph.node(n);
        node.outputs.len() == 1 && node.outputs[0] == ty
    };
    let ins = |n: NodeId| graph.inputs_of(n);
    // The other operand of binary node n, one of whose operands is v.
    let other = |n: NodeId, v: Value| match ins(n)[..] {
        [Some(a), b] if a == v => b,
        [a, Some(b)] if b == v => a,
        _ => None,
    };
    let only_user = |v: Value| -> Option<NodeId> {
        if reads(v) != 1 {
            return None;
        }
        let n = graph.uses_of(v).first()?.0;
        fits(n).then_some(n)
    };
    let users: Vec<NodeId> = graph.uses_of(x).iter().map(|&(n, _)| n).collect();
    if let ([u], 1) = (&users[..], reads(x)) {
        if fits(*u)
            && matches!(
                graph.node(*u).op,
                Op::Gelu {
                    approximate: GeluApproximation::None
                }
            )
        {
            let g = Gelu {
                p: 0.5,
                r: std::f32::consts::FRAC_1_SQRT_2,
            };
            return Some((g, vec![*u], Value::new(*u, 0)));
        }
    }
    if reads(x) != 2 || users.len() != 2 || !users.iter().all(|&n| fits(n)) {
        return None;
    }
    // One user starts the erf argument: neg and constant scales (mul, or div by), any order.
    let scales = |n: NodeId, v: Value| match graph.node(n).op {
        Op::Unary(UnaryOp::Neg) => true,
        Op::Binary(BinaryOp::Mul) => scalar(known, other(n, v)).is_some(),
        Op::Binary(BinaryOp::Div) => ins(n)[0] == Some(v) && scalar(known, ins(n)[1]).is_some(),
        _ => false,
    };
    let leads_to_erf = |u: NodeId| {
        let (mut n, mut v) = (u, x);
        for _ in 0..4 {
            if matches!(graph.node(n).op, Op::Unary(UnaryOp::Erf)) {
                return n != u;
            }
            if !scales(n, v) {
                return false;
            }
            v = Value::new(n, 0);
            match only_user(v) {
                Some(next) => n = next,
                None => return false,
            }
        }
        false
    };
    let mut nodes = Vec::new();
    let mut r = 1.0f32;
    let mut cur = x;
    let mut n = *users.iter().find(|&&u| leads_to_erf(u))?;
    let half = *users.iter().find(|&&u| u != n)?;
    loop {
        let node = graph.node(n);
        match &node.op {
            Op::Unary(UnaryOp::Neg) => r = -r,
            Op::Binary(BinaryOp::Mul) => r *= scalar(known, other(n, cur))?,
            // Only x / c: c / x is not a scale.
            Op::Binary(BinaryOp::Div) if ins(n)[0] == Some(cur) => r /= scalar(known, ins(n)[1])?,
            Op::Unary(UnaryOp::Erf) => break,
            _ => return None,
        }
        nodes.push(n);
        cur = Value::new(n, 0);
        n = only_user(cur)?;
    }
    let erf = n;
    nodes.push(erf);
    // 1 + erf(z) or 1 - erf(z) = 1 + erf(-z).
    let one_op = only_user(Value::new(erf, 0))?;
    let e = Value::new(erf, 0);
    match &graph.node(one_op).op {
        Op::Binary(BinaryOp::Add) if scalar(known, other(one_op, e)) == Some(1.0) => {}
        Op::Binary(BinaryOp::Sub)
            if ins(one_op)[1] == Some(e) && scalar(known, ins(one_op)[0]) == Some(1.0) =>
        {
            r = -r
        }
        _ => return None,
    }
    nodes.push(one_op);
    let ope = Value::new(one_op, 0);
    // The product with x or with c·x, then perhaps a constant scale.
    let mut p = 1.0f32;
    let prod = only_user(ope)?;
    if !matches!(graph.node(prod).op, Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let factor = other(prod, ope)?;
    if prod == half {
        if factor != x {
            return None;
        }
    } else {
        if !matches!(graph.node(half).op, Op::Binary(BinaryOp::Mul))
            || factor != Value::new(half, 0)
            || reads(factor) != 1
        {
            return None;
        }
        p *= scalar(known, other(half, x))?;
        nodes.push(half);
    }
    nodes.push(prod);
    let mut out = Value::new(prod, 0);
    if let Some(s) = only_user(out) {
        if matches!(graph.node(s).op, Op::Binary(BinaryOp::Mul)) {
            if let Some(c) = scalar(known, other(s, out)) {
                p *= c;
                nodes.push(s);
                out = Value::new(s, 0);
            }
        }
    }
    Some((Gelu { p, r }, nodes, out))
}

// N. Juffa's erff, the coefficients `codegen::math` generates code with.
use crate::codegen::math::{ERF_BIG as BIG, ERF_SMALL as SMALL, ERF_SPLIT as SPLIT};
const BIG_LAST: f32 = BIG[6];

impl Gelu {
    /// One element (the lanes [`apply_rows`] does not cover, and CPUs without AVX2).
    pub fn apply(&self, x: f32) -> f32 {
        let z = self.r * x;
        let t = z.abs().min(10.0);
        let s = t * t;
        let ope = if t > SPLIT {
            let r = (BIG[0] * t + BIG[1]) * s + (BIG[2] * t + BIG[3]);
            let r = ((r * t + BIG[4]) * t + BIG[5]) * t + BIG_LAST;
            let erfc = super::softmax::exp(r * t - t);
            if z >= 0.0 {
                2.0 - erfc
            } else {
                erfc
            }
        } else {
            let q = SMALL[1..].iter().fold(SMALL[0], |a, &c| a * s + c);
            let e = q * t + t;
            if z >= 0.0 {
                1.0 + e
            } else {
                1.0 - e
            }
        };
        // NaN: t's min above dropped it, x keeps it.
        if x.is_nan() {
            return x;
        }
        self.p * x * ope
    }
}

/// Applies `g` in place to `v`.
pub(crate) fn apply(g: &Gelu, v: &mut [f32], vector: bool) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if vector {
        if super::avx512f::detected() {
            // SAFETY: AVX-512F was detected.
            done = unsafe { avx512::apply(g, v) };
        }
        // SAFETY: `vector` is set only where AVX2 and FMA were detected.
        done += unsafe { avx2::apply(g, &mut v[done..]) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
    for x in &mut v[done..] {
        *x = g.apply(*x);
    }
}

/// Below this many multiply-adds the caller runs the product and its GELU alone.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Row chunks per thread: a late thread leaves its share to the other, and each chunk's
/// rows of C (up to 64 KiB for a 1024-wide layer) are still in L2 when its GELU runs.
const CHUNKS_PER_THREAD: usize = 4;

/// `c = gelu(epilogue(A·B))`: the pool's threads take chunks of whole row tiles from a
/// counter; each computes its rows on its own (one GEMM over those rows) and applies the
/// GELU to them at once, instead of a second pass over all of C after the GEMM.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    ctx: &Ctx,
    g: &Gelu,
    m: usize,
    a: &[f32],
    k: usize,
    b: &PackedB,
    c: &mut [f32],
    accumulate: bool,
    epi: &GemmEpilogue,
) -> kiln_ir::Result<()> {
    let n = b.n();
    if c.len() < m * n || a.len() < m * k {
        return Err(IrError::msg(
            "gemm: the operands are smaller than their shapes",
        ));
    }
    let threads = ctx.pool.map_or(1, |p| p.threads());
    let tiles = m.div_ceil(MR);
    let parallel = threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS;
    let chunks = if parallel {
        tiles.min(threads * CHUNKS_PER_THREAD)
    } else {
        1
    };
    let vector = ctx.kernel == Kernel::Avx2Fma && Kernel::detect() == Kernel::Avx2Fma;
    let alone = Options {
        pool: None,
        ..ctx.gemm()
    };
    let base = Out(c.as_mut_ptr());
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None);
    let body = |_thread: usize| loop {
        let chunk = next.fetch_add(1, Ordering::Relaxed);
        if chunk >= chunks {
            return;
        }
        let r0 = tiles * chunk / chunks * MR;
        let r1 = (tiles * (chunk + 1) / chunks * MR).min(m);
        if r0 >= r1 {
            continue;
        }
        // SAFETY: rows r0..r1 lie inside `c` (checked above) and only this chunk writes them.
        let rows = unsafe { std::slice::from_raw_parts_mut(base.at(r0 * n), (r1 - r0) * n) };
        let chunk_epi = GemmEpilogue {
            residual: epi
                .residual
                .map(|(r, ld)| (r.get(r0 * ld..).unwrap_or(&[]), ld)),
            ..*epi
        };
        let a_rows = &a[r0 * k..r1 * k];
        match gemm_with(
            &alone,
            r1 - r0,
            a_rows,
            k,
            b,
            rows,
            n,
            accumulate,
            &chunk_epi,
        ) {
            Ok(()) => apply(g, rows, vector),
            Err(e) => {
                *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }
    };
    match ctx.pool {
        Some(pool) if chunks > 1 => pool.run(&body),
        _ => body(0),
    }
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(IrError::msg(e.to_string())),
        None => Ok(()),
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{Gelu, BIG, BIG_LAST, SMALL, SPLIT};
    use crate::codegen::math::{EXP_POLY, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    /// Applies `g` to whole groups of eight; returns how many elements it did.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn apply(g: &Gelu, v: &mut [f32]) -> usize {
        let whole = v.len() / 8 * 8;
        let ptr = v.as_mut_ptr();
        let mut i = 0;
        while i < whole {
            _mm256_storeu_ps(ptr.add(i), lanes(g, _mm256_loadu_ps(ptr.add(i))));
            i += 8;
        }
        whole
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes(g: &Gelu, x: __m256) -> __m256 {
        let k = |c: f32| _mm256_set1_ps(c);
        let z = _mm256_mul_ps(k(g.r), x);
        let t = _mm256_min_ps(_mm256_andnot_ps(k(-0.0), z), k(10.0));
        let s = _mm256_mul_ps(t, t);
        // Large |z|: erfc(t) = exp(P(t)).
        let r = _mm256_fmadd_ps(k(BIG[0]), t, k(BIG[1]));
        let u = _mm256_fmadd_ps(k(BIG[2]), t, k(BIG[3]));
        let r = _mm256_fmadd_ps(r, s, u);
        let r = _mm256_fmadd_ps(r, t, k(BIG[4]));
        let r = _mm256_fmadd_ps(r, t, k(BIG[5]));
        let r = _mm256_fmadd_ps(r, t, k(BIG_LAST));
        let r = _mm256_fmsub_ps(r, t, t);
        let erfc_big = exp(r);
        // Small |z|: erf(t) = t + t·Q(t²).
        let mut q = k(SMALL[0]);
        for &c in &SMALL[1..] {
            q = _mm256_fmadd_ps(q, s, k(c));
        }
        let erf_small = _mm256_fmadd_ps(q, t, t);
        let big = _mm256_cmp_ps::<_CMP_GT_OQ>(t, k(SPLIT));
        // 1 + erf(z): z ≥ 0 gives 1 + erf(t) = 2 - erfc(t); z < 0 gives erfc(t) = 1 - erf(t).
        let erfc = _mm256_blendv_ps(_mm256_sub_ps(k(1.0), erf_small), erfc_big, big);
        let erf = _mm256_blendv_ps(erf_small, _mm256_sub_ps(k(1.0), erfc_big), big);
        let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(z, _mm256_setzero_ps());
        let ope = _mm256_blendv_ps(_mm256_add_ps(k(1.0), erf), erfc, neg);
        let y = _mm256_mul_ps(_mm256_mul_ps(k(g.p), x), ope);
        // NaN in, NaN out (the min above turned t's NaN into 10).
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        _mm256_blendv_ps(y, x, nan)
    }

    /// e^x for x ≤ 0 (the argument above is at most -t): Cephes expf's reduction and
    /// polynomial as in `codegen::math::exp`; below -87 it flushes to 0 (erfc is then far
    /// below what p·x·erfc can show next to the other branch).
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp(x: __m256) -> __m256 {
        let k = |c: f32| _mm256_set1_ps(c);
        let xc = _mm256_max_ps(x, k(-87.0));
        let t = _mm256_fmadd_ps(xc, k(std::f32::consts::LOG2_E), k(12_582_912.0));
        let n = _mm256_sub_ps(t, k(12_582_912.0));
        let r = _mm256_fmadd_ps(n, k(-LN2_HI), xc);
        let r = _mm256_fmadd_ps(n, k(-LN2_LO), r);
        let mut p = k(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, k(*c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), k(1.0));
        // 2^n from n's integer in t's low mantissa bits (n ≥ -126 here, a normal scale).
        let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(k(12_582_912.0)));
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            ni,
            _mm256_set1_epi32(127),
        )));
        let y = _mm256_mul_ps(y, scale);
        // Below -87 the clamp gave e^-87; the true value is smaller still, flushed to 0.
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, k(-87.0));
        _mm256_andnot_ps(under, y)
    }
}

/// The same on sixteen lanes: with 32 registers the polynomials' constants stay in
/// registers (on eight lanes they were loaded again for every vector), and masks take the
/// place of the blends: 0.65 ns per element on one thread where eight lanes take 1.50
/// (best of 300 passes over 16384 values, most within ±4).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{Gelu, BIG, BIG_LAST, SMALL, SPLIT};
    use crate::codegen::math::{EXP_POLY, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    /// Applies `g` to whole groups of sixteen; returns how many elements it did.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn apply(g: &Gelu, v: &mut [f32]) -> usize {
        let whole = v.len() / 16 * 16;
        let ptr = v.as_mut_ptr();
        let mut i = 0;
        while i < whole {
            _mm512_storeu_ps(ptr.add(i), lanes(g, _mm512_loadu_ps(ptr.add(i))));
            i += 16;
        }
        whole
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes(g: &Gelu, x: __m512) -> __m512 {
        let k = |c: f32| _mm512_set1_ps(c);
        let z = _mm512_mul_ps(k(g.r), x);
        let t = _mm512_min_ps(_mm512_abs_ps(z), k(10.0));
        let s = _mm512_mul_ps(t, t);
        // Large |z|: erfc(t) = exp(P(t)).
        let r = _mm512_fmadd_ps(k(BIG[0]), t, k(BIG[1]));
        let u = _mm512_fmadd_ps(k(BIG[2]), t, k(BIG[3]));
        let r = _mm512_fmadd_ps(r, s, u);
        let r = _mm512_fmadd_ps(r, t, k(BIG[4]));
        let r = _mm512_fmadd_ps(r, t, k(BIG[5]));
        let r = _mm512_fmadd_ps(r, t, k(BIG_LAST));
        let r = _mm512_fmsub_ps(r, t, t);
        let erfc_big = exp(r);
        // Small |z|: erf(t) = t + t·Q(t²).
        let mut q = k(SMALL[0]);
        for &c in &SMALL[1..] {
            q = _mm512_fmadd_ps(q, s, k(c));
        }
        let erf_small = _mm512_fmadd_ps(q, t, t);
        let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t, k(SPLIT));
        // 1 + erf(z): z ≥ 0 gives 1 + erf(t) = 2 - erfc(t); z < 0 gives erfc(t) = 1 - erf(t).
        let erfc = _mm512_mask_blend_ps(big, _mm512_sub_ps(k(1.0), erf_small), erfc_big);
        let erf = _mm512_mask_blend_ps(big, erf_small, _mm512_sub_ps(k(1.0), erfc_big));
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
        let ope = _mm512_mask_blend_ps(neg, _mm512_add_ps(k(1.0), erf), erfc);
        let y = _mm512_mul_ps(_mm512_mul_ps(k(g.p), x), ope);
        // NaN in, NaN out (the min above turned t's NaN into 10).
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_blend_ps(nan, y, x)
    }

    /// `avx2::exp` on sixteen lanes (x ≤ 0, flushed to 0 below -87).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp(x: __m512) -> __m512 {
        let k = |c: f32| _mm512_set1_ps(c);
        let xc = _mm512_max_ps(x, k(-87.0));
        let t = _mm512_fmadd_ps(xc, k(std::f32::consts::LOG2_E), k(12_582_912.0));
        let n = _mm512_sub_ps(t, k(12_582_912.0));
        let r = _mm512_fmadd_ps(n, k(-LN2_HI), xc);
        let r = _mm512_fmadd_ps(n, k(-LN2_LO), r);
        let mut p = k(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, k(*c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), k(1.0));
        let ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(k(12_582_912.0)));
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            ni,
            _mm512_set1_epi32(127),
        )));
        let y = _mm512_mul_ps(y, scale);
        let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, k(-87.0));
        _mm512_maskz_mov_ps(!under, y)
    }
}
