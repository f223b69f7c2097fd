//! Activations that read their input twice — swish `v·σ(v)` and hard swish
//! `v·clip(v + 3, 0, 6)/6` — recognised after an anchor's epilogue so that a kernel can
//! apply them while its result is still in registers instead of in another pass over
//! memory (efficientnet's and mobilenet_v3's depthwise convolutions).
//!
//! They are not chains: `v` feeds two nodes. A step's chain refers back to `v` with
//! [`crate::program::Arg::Link`], so replaying the chain through `ir::eval` stays the
//! reference behaviour. Every op is applied in the graph's order in f32 (the sigmoid is
//! the only approximation: within 2.5e-7 relative of the exact value, see [`sigmoid`];
//! on vectors within 2.7e-7 above -87 and 6.1e-39 absolute below, see `avx2::sigmoid`).

use kiln_ir::{BinaryOp, DType, Graph, NodeId, Op, Tensor, UnaryOp, Value};
use std::collections::HashMap;

/// One op after the hard swish's clip: a constant scale, or the multiplication by `v`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Post {
    Mul(f32),
    Div(f32),
    MulInput,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Activation {
    /// `v · σ(α·v)` (`mul(v, sigmoid(v))` has α = 1).
    Swish { alpha: f32 },
    /// ONNX HardSwish: `v · clamp(v/6 + ½, 0, 1)`.
    HardSwish,
    /// Keras' hard swish as separate ops: `t = clip(v + shift, lo, hi)`, then `post` in
    /// order (one of them the multiplication by `v`).
    ClipMul {
        shift: f32,
        lo: f32,
        hi: f32,
        post: Vec<Post>,
    },
}

fn scalar(known: &HashMap<Value, Tensor>, v: Option<Value>) -> Option<f32> {
    let t = known.get(&v?)?;
    match t.as_slice::<f32>() {
        Ok([x]) => Some(*x),
        _ => None,
    }
}

/// The activation applied to `v` by the nodes after it, and those nodes in order; `uses`
/// counts the reads of a value by nodes that run (and the graph's outputs count as
/// reads). Only `v` may be read twice, and only the last node's result may leave.
pub(crate) fn recognise(
    graph: &Graph,
    v: Value,
    known: &HashMap<Value, Tensor>,
    uses: &dyn Fn(Value) -> usize,
) -> Option<(Activation, Vec<NodeId>)> {
    let ty = graph.value_type(v).clone();
    if ty.dtype != DType::F32 || known.contains_key(&v) {
        return None;
    }
    let users: Vec<NodeId> = graph.uses_of(v).iter().map(|&(n, _)| n).collect();
    // A node of the activation: one f32 output of v's type.
    let fits = |n: NodeId| {
        let node = graph.node(n);
        node.outputs.len() == 1 && node.outputs[0] == ty
    };
    let ins = |n: NodeId| graph.inputs_of(n);
    let other = |n: NodeId, x: Value| {
        let i = ins(n);
        if i.len() != 2 {
            return None;
        }
        if i[0] == Some(x) {
            i[1]
        } else if i[1] == Some(x) {
            i[0]
        } else {
            None
        }
    };
    let single = |n: NodeId| uses(Value::new(n, 0)) == 1;
    match uses(v) {
        1 if users.len() == 1 && fits(users[0]) => {
            let n = users[0];
            match &graph.node(n).op {
                Op::Swish { alpha } => Some((Activation::Swish { alpha: *alpha }, vec![n])),
                Op::Unary(UnaryOp::HardSwish) => Some((Activation::HardSwish, vec![n])),
                _ => None,
            }
        }
        2 if users.len() == 2 && users.iter().all(|&n| fits(n)) => {
            let op = |n: NodeId| &graph.node(n).op;
            // Swish: sigmoid(v) read once, by mul(v, ·).
            for (s, m) in [(users[0], users[1]), (users[1], users[0])] {
                if matches!(op(s), Op::Unary(UnaryOp::Sigmoid))
                    && single(s)
                    && matches!(op(m), Op::Binary(BinaryOp::Mul))
                    && other(m, v) == Some(Value::new(s, 0))
                {
                    return Some((Activation::Swish { alpha: 1.0 }, vec![s, m]));
                }
            }
            // Hard swish: add(v, shift) → clip(lo, hi) → scales and one mul by v.
            let a = *users
                .iter()
                .find(|&&n| matches!(op(n), Op::Binary(BinaryOp::Add)))?;
            let shift = scalar(known, other(a, v))?;
            let c = graph.uses_of(Value::new(a, 0)).first()?.0;
            if !single(a) || !fits(c) || !matches!(op(c), Op::Clip) {
                return None;
            }
            let ci = ins(c);
            if ci.first().copied().flatten() != Some(Value::new(a, 0)) {
                return None;
            }
            let bound = |i: usize, default: f32| match ci.get(i).copied().flatten() {
                None => Some(default),
                b => scalar(known, b),
            };
            let (lo, hi) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?);
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return None;
            }
            let mut nodes = vec![a, c];
            let mut post = Vec::new();
            let mut cur = Value::new(c, 0);
            let mut multiplied = false;
            // Follow the single-use chain while it scales by constants or multiplies by v.
            while single(cur.node) {
                let Some(&(n, _)) = graph.uses_of(cur).first() else {
                    break;
                };
                if !fits(n) {
                    break;
                }
                let o = other(n, cur);
                let p = match op(n) {
                    Op::Binary(BinaryOp::Mul) if o == Some(v) && !multiplied => {
                        multiplied = true;
                        Post::MulInput
                    }
                    Op::Binary(BinaryOp::Mul) => match scalar(known, o) {
                        Some(k) => Post::Mul(k),
                        None => break,
                    },
                    // Division is not commutative: only `cur / k`.
                    Op::Binary(BinaryOp::Div) if ins(n).first().copied().flatten() == Some(cur) => {
                        match scalar(known, o) {
                            Some(k) => Post::Div(k),
                            None => break,
                        }
                    }
                    _ => break,
                };
                post.push(p);
                nodes.push(n);
                cur = Value::new(n, 0);
            }
            // v's second read must be the multiplication (constant scales before or after
            // it are still a function of v alone).
            if !multiplied {
                return None;
            }
            Some((
                Activation::ClipMul {
                    shift,
                    lo,
                    hi,
                    post,
                },
                nodes,
            ))
        }
        _ => None,
    }
}

/// The logistic function as `ir::eval` defines it, on one f32: 1/(1 + e^-x) for x ≥ 0,
/// e^x/(1 + e^x) below, from one e^-|x|.
pub(crate) fn sigmoid(x: f32) -> f32 {
    let e = super::softmax::exp(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x >= 0.0 {
        s
    } else if x.is_nan() {
        x
    } else {
        e * s
    }
}

impl Activation {
    /// The activation of one value.
    pub(crate) fn apply(&self, v: f32) -> f32 {
        match self {
            Activation::Swish { alpha } => v * sigmoid(alpha * v),
            Activation::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::ClipMul {
                shift,
                lo,
                hi,
                post,
            } => {
                let a = v + shift;
                // max then min with the value second: NaN stays NaN, as Clip does.
                let a = if a < *lo { *lo } else { a };
                let mut t = if a > *hi { *hi } else { a };
                for p in post {
                    t = match p {
                        Post::Mul(k) => t * k,
                        Post::Div(k) => t / k,
                        Post::MulInput => v * t,
                    };
                }
                t
            }
        }
    }

    /// In place over a slice (the portable path).
    pub(crate) fn apply_all(&self, o: &mut [f32]) {
        o.iter_mut().for_each(|x| *x = self.apply(*x));
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! The activations on eight lanes.
    use super::{Activation, Post};
    use std::arch::x86_64::*;

    /// e^z for z in [-87, 88] (the caller clamps): 2^n for n = round(z·log2 e) in
    /// [-126, 127] is one normal number, built from its exponent bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_clamped(z: __m256) -> __m256 {
        let shift = _mm256_set1_ps(12_582_912.0);
        let n = _mm256_sub_ps(
            _mm256_fmadd_ps(z, _mm256_set1_ps(std::f32::consts::LOG2_E), shift),
            shift,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), z);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
    }

    /// The sigmoid on eight lanes as 1/(1 + e^-x), with -x clamped to [-87, 88] so that
    /// e^-x is one scaled polynomial and 1 + e^-x stays finite: within 2.7e-7 relative of
    /// the exact value for x ≥ -87 (asserted by the test below); below -88, where the exact value is under 6.1e-39, it
    /// is 0 (an absolute error no tolerance sees), and in between at most that bound. NaN
    /// passes through the final blend. (The scalar [`super::sigmoid`] splits at 0 to stay relative in
    /// the tail too; on vectors that split cost a third of the sigmoid's time.)
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sigmoid(x: __m256) -> __m256 {
        let z = _mm256_sub_ps(_mm256_setzero_ps(), x);
        let z = _mm256_min_ps(
            _mm256_max_ps(z, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let one = _mm256_set1_ps(1.0);
        let s = _mm256_div_ps(one, _mm256_add_ps(one, exp_clamped(z)));
        // 0 below -88 (so that -∞ · σ(-∞) is NaN, as the reference computes it).
        let s = _mm256_and_ps(s, _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-88.0)));
        _mm256_blendv_ps(s, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
    }

    /// Writes the activation of whole blocks of 8 of `x` to `dst`; returns how many
    /// elements it wrote.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `x` must be valid for `len` reads and `dst` for
    /// `len` writes (`dst` may be `x`: each element is read before it is written).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn apply_into(a: &Activation, x: *const f32, len: usize, dst: *mut f32) -> usize {
        let whole = len / 8 * 8;
        // One loop per kind, so the kind is not looked at per vector.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn each(x: *const f32, whole: usize, dst: *mut f32, f: impl Fn(__m256) -> __m256) {
            let mut i = 0;
            while i < whole {
                _mm256_storeu_ps(dst.add(i), f(_mm256_loadu_ps(x.add(i))));
                i += 8;
            }
        }
        // SAFETY (all three): whole ≤ x.len() and dst holds x.len() values; AVX2 and FMA
        // are available (this function's contract).
        match a {
            Activation::Swish { alpha } if *alpha == 1.0 => {
                each(x, whole, dst, |v| unsafe { _mm256_mul_ps(v, sigmoid(v)) })
            }
            Activation::HardSwish => each(x, whole, dst, |v| unsafe {
                apply(&Activation::HardSwish, v)
            }),
            _ => each(x, whole, dst, |v| unsafe { apply(a, v) }),
        }
        whole
    }

    /// [`Activation::apply`] on eight lanes.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn apply(a: &Activation, v: __m256) -> __m256 {
        match a {
            Activation::Swish { alpha } => {
                let x = if *alpha == 1.0 {
                    v
                } else {
                    _mm256_mul_ps(_mm256_set1_ps(*alpha), v)
                };
                _mm256_mul_ps(v, sigmoid(x))
            }
            Activation::HardSwish => {
                let t = _mm256_add_ps(_mm256_div_ps(v, _mm256_set1_ps(6.0)), _mm256_set1_ps(0.5));
                let t = _mm256_min_ps(_mm256_set1_ps(1.0), _mm256_max_ps(_mm256_setzero_ps(), t));
                _mm256_mul_ps(v, t)
            }
            Activation::ClipMul {
                shift,
                lo,
                hi,
                post,
            } => {
                let t = _mm256_add_ps(v, _mm256_set1_ps(*shift));
                let mut t =
                    _mm256_min_ps(_mm256_set1_ps(*hi), _mm256_max_ps(_mm256_set1_ps(*lo), t));
                for p in post {
                    t = match p {
                        Post::Mul(k) => _mm256_mul_ps(t, _mm256_set1_ps(*k)),
                        Post::Div(k) => _mm256_div_ps(t, _mm256_set1_ps(*k)),
                        Post::MulInput => _mm256_mul_ps(v, t),
                    };
                }
                t
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! [`super::avx2`] on sixteen lanes: the same operations in the same order, so each
    //! lane's result is the 8-lane one bit for bit.
    use super::{Activation, Post};
    use std::arch::x86_64::*;

    /// `avx2::exp_clamped` on sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp_clamped(z: __m512) -> __m512 {
        let shift = _mm512_set1_ps(12_582_912.0);
        let n = _mm512_sub_ps(
            _mm512_fmadd_ps(z, _mm512_set1_ps(std::f32::consts::LOG2_E), shift),
            shift,
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), z);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p, _mm512_castsi512_ps(scale))
    }

    /// `avx2::sigmoid` on sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sigmoid(x: __m512) -> __m512 {
        let z = _mm512_sub_ps(_mm512_setzero_ps(), x);
        let z = _mm512_min_ps(
            _mm512_max_ps(z, _mm512_set1_ps(-87.0)),
            _mm512_set1_ps(88.0),
        );
        let one = _mm512_set1_ps(1.0);
        let s = _mm512_div_ps(one, _mm512_add_ps(one, exp_clamped(z)));
        let tail = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-88.0));
        let s = _mm512_maskz_mov_ps(tail, s);
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), s, x)
    }

    /// `avx2::apply` on sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn apply(a: &Activation, v: __m512) -> __m512 {
        match a {
            Activation::Swish { alpha } => {
                let x = if *alpha == 1.0 {
                    v
                } else {
                    _mm512_mul_ps(_mm512_set1_ps(*alpha), v)
                };
                _mm512_mul_ps(v, sigmoid(x))
            }
            Activation::HardSwish => {
                let t = _mm512_add_ps(_mm512_div_ps(v, _mm512_set1_ps(6.0)), _mm512_set1_ps(0.5));
                let t = _mm512_min_ps(_mm512_set1_ps(1.0), _mm512_max_ps(_mm512_setzero_ps(), t));
                _mm512_mul_ps(v, t)
            }
            Activation::ClipMul {
                shift,
                lo,
                hi,
                post,
            } => {
                let t = _mm512_add_ps(v, _mm512_set1_ps(*shift));
                let mut t =
                    _mm512_min_ps(_mm512_set1_ps(*hi), _mm512_max_ps(_mm512_set1_ps(*lo), t));
                for p in post {
                    t = match p {
                        Post::Mul(k) => _mm512_mul_ps(t, _mm512_set1_ps(*k)),
                        Post::Div(k) => _mm512_div_ps(t, _mm512_set1_ps(*k)),
                        Post::MulInput => _mm512_mul_ps(v, t),
                    };
                }
                t
            }
        }
    }

    /// `avx2::apply` on each of the first `n` vectors of `v`, two per sixteen-lane
    /// operation (the depthwise convolution's 8 planes × 8 positions).
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn apply_pairs(a: &Activation, v: &mut [__m256; 8], n: usize) {
        let mut l = 0;
        while l < n.min(8) {
            let hi = if l + 1 < n {
                v[l + 1]
            } else {
                _mm256_setzero_ps()
            };
            let w = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(v[l])),
                _mm256_castps_pd(hi),
            ));
            let y = apply(a, w);
            v[l] = _mm512_castps512_ps256(y);
            if l + 1 < n {
                v[l + 1] = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(y)));
            }
            l += 2;
        }
    }

    /// `avx2::apply_into` on whole blocks of 16; returns how many elements it wrote.
    ///
    /// # Safety
    /// AVX-512F must be available; `x` must be valid for `len` reads and `dst` for `len`
    /// writes (`dst` may be `x`).
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn apply_into(a: &Activation, x: *const f32, len: usize, dst: *mut f32) -> usize {
        let whole = len / 16 * 16;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn each(x: *const f32, whole: usize, dst: *mut f32, f: impl Fn(__m512) -> __m512) {
            let mut i = 0;
            while i < whole {
                _mm512_storeu_ps(dst.add(i), f(_mm512_loadu_ps(x.add(i))));
                i += 16;
            }
        }
        // SAFETY (all three): whole ≤ x.len() and dst holds x.len() values; AVX-512F is
        // available (this function's contract).
        match a {
            Activation::Swish { alpha } if *alpha == 1.0 => {
                each(x, whole, dst, |v| _mm512_mul_ps(v, sigmoid(v)))
            }
            Activation::HardSwish => each(x, whole, dst, |v| apply(&Activation::HardSwish, v)),
            _ => each(x, whole, dst, |v| apply(a, v)),
        }
        whole
    }
}

/// The activation of a whole elementwise group, if the group is one: a subgraph with one
/// f32 input whose every computing node belongs to the activation of that input.
pub(crate) fn of_group(sub: &Graph) -> Option<Activation> {
    let [x] = sub.inputs[..] else {
        return None;
    };
    let [(_, y)] = sub.outputs[..] else {
        return None;
    };
    let known: HashMap<Value, Tensor> = sub
        .nodes
        .node_indices()
        .filter_map(|n| match &sub.node(n).op {
            Op::Const { value } => Some((Value::new(n, 0), value.clone())),
            _ => None,
        })
        .collect();
    let reads =
        |v: Value| sub.uses_of(v).len() + sub.outputs.iter().filter(|(_, o)| *o == v).count();
    let (act, nodes) = recognise(sub, Value::new(x, 0), &known, &reads)?;
    let computing = sub
        .nodes
        .node_indices()
        .filter(|&n| !matches!(sub.node(n).op, Op::Input | Op::Const { .. }))
        .count();
    (computing == nodes.len() && nodes.last().map(|&n| Value::new(n, 0)) == Some(y)).then_some(act)
}

/// Elements per work unit of [`run`] (16 KiB in, 16 KiB out).
const BLOCK: usize = 4096;

/// Below this many elements [`run`] uses one thread (about 10 µs of swish).
const PARALLEL_MIN: usize = 4 * BLOCK;

/// The activation of `x` into a new buffer, blocks over the pool. The output is written
/// once, straight into fresh memory (no zero fill first).
pub(crate) fn run(ctx: &crate::device::Ctx, act: &Activation, x: &[f32]) -> Vec<f32> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = x.len();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let base = super::rows::Out(out.as_mut_ptr());
    let blocks = n.div_ceil(BLOCK);
    let next = AtomicUsize::new(0);
    let vector = ctx.kernel == crate::gemm::Kernel::Avx2Fma && avx2_available();
    let body = |_thread: usize| loop {
        let b = next.fetch_add(1, Ordering::Relaxed);
        if b >= blocks {
            return;
        }
        let (s, e) = (b * BLOCK, (b * BLOCK + BLOCK).min(n));
        // SAFETY: block b of the output's capacity is written by this thread only, each
        // element once, before `set_len` below.
        unsafe { apply_into(vector, act, x[s..e].as_ptr(), e - s, base.at(s)) };
    };
    // The threshold is lower than a copy's ([`super::rows::PARALLEL_MIN_WORK`]): a swish
    // costs about 2 cycles per element, so efficientnet's 7×7×1152 maps (56K elements,
    // 30 µs) ran on one thread while the other waited.
    match ctx.pool {
        Some(pool) if blocks > 1 && n >= PARALLEL_MIN => pool.run(&body),
        _ => body(0),
    }
    // SAFETY: every block 0..blocks, that is every element below n, was written above
    // (the pool returns after all threads finish).
    unsafe { out.set_len(n) };
    out
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Writes `act(x[i])` to `dst[i]` for `i < len`.
///
/// # Safety
/// `x` must be valid for `len` reads and `dst` for `len` writes (`dst` may be `x`: each
/// element is read before it is written); with `vector`, AVX2 and FMA must be available.
unsafe fn apply_into(vector: bool, act: &Activation, x: *const f32, len: usize, dst: *mut f32) {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if vector {
        if super::avx512f::detected() {
            i = avx512::apply_into(act, x, len, dst);
        }
        i += avx2::apply_into(act, x.add(i), len - i, dst.add(i));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
    for k in i..len {
        dst.add(k).write(act.apply(x.add(k).read()));
    }
}

/// `x[i] = act(x[i])`: for a kernel that has its results in a buffer still in cache
/// (the depthwise convolution's sums), rather than in registers.
///
/// # Safety
/// With `vector`, AVX2 and FMA must be available.
pub(crate) unsafe fn apply_in_place(vector: bool, act: &Activation, x: &mut [f32]) {
    let p = x.as_mut_ptr();
    apply_into(vector, act, p, x.len(), p);
}

#[cfg(test)]
mod tests {
    /// The 8-lane sigmoid against the exact value over a dense sweep: within 2.7e-7
    /// relative above -87 (2.66e-7 measured), within 6.1e-39 absolute below, 0 below -88, NaN kept.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vector_sigmoid_is_within_its_stated_error() {
        use std::arch::x86_64::*;
        if !super::avx2_available() {
            return;
        }
        let mut xs: Vec<f32> = (0..2_000_000).map(|i| -100.0 + i as f32 * 1e-4).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-30,
            -1e-30,
        ]);
        while xs.len() % 8 != 0 {
            xs.push(0.5);
        }
        let mut worst = 0.0f64;
        for chunk in xs.chunks_exact(8) {
            let mut got = [0.0f32; 8];
            // SAFETY: AVX2 and FMA were checked above.
            unsafe {
                _mm256_storeu_ps(
                    got.as_mut_ptr(),
                    super::avx2::sigmoid(_mm256_loadu_ps(chunk.as_ptr())),
                );
            }
            for (&x, &y) in chunk.iter().zip(&got) {
                if x.is_nan() {
                    assert!(y.is_nan(), "sigmoid(NaN) = {y}");
                    continue;
                }
                let want = 1.0 / (1.0 + (-(x as f64)).exp());
                if x >= -87.0 {
                    let rel = ((y as f64 - want) / want).abs();
                    worst = worst.max(rel);
                    assert!(
                        rel <= 2.7e-7,
                        "sigmoid({x}) = {y}, exact {want}: {rel:e} relative"
                    );
                } else {
                    assert!(
                        (y as f64 - want).abs() <= 6.1e-39,
                        "sigmoid({x}) = {y}, exact {want}"
                    );
                    if x < -88.0 {
                        assert_eq!(y, 0.0, "sigmoid({x})");
                    }
                }
            }
        }
        assert!(worst > 0.0);
    }

    /// The 16-lane activations equal the 8-lane ones bit for bit, for every kind, over a
    /// sweep through the sigmoid's tails with NaN and infinities.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lanes_equal_eight_lanes() {
        use super::{Activation, Post};
        if !super::avx2_available() || !super::super::avx512f::detected() {
            return;
        }
        let mut xs: Vec<f32> = (0..400_000).map(|i| -100.0 + i as f32 * 5e-4).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            3.0,
            -3.0,
        ]);
        xs.truncate(xs.len() / 16 * 16);
        let acts = [
            Activation::Swish { alpha: 1.0 },
            Activation::Swish { alpha: 1.702 },
            Activation::HardSwish,
            Activation::ClipMul {
                shift: 3.0,
                lo: 0.0,
                hi: 6.0,
                post: vec![Post::Mul(1.0 / 6.0), Post::MulInput],
            },
            Activation::ClipMul {
                shift: 3.0,
                lo: 0.0,
                hi: 6.0,
                post: vec![Post::MulInput, Post::Div(6.0)],
            },
        ];
        for act in &acts {
            let (mut eight, mut sixteen) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
            // SAFETY: AVX2, FMA and AVX-512F were checked above; both outputs hold xs.len().
            let done = unsafe {
                (
                    super::avx2::apply_into(act, xs.as_ptr(), xs.len(), eight.as_mut_ptr()),
                    super::avx512::apply_into(act, xs.as_ptr(), xs.len(), sixteen.as_mut_ptr()),
                )
            };
            assert_eq!(done, (xs.len(), xs.len()));
            for ((x, a), b) in xs.iter().zip(&eight).zip(&sixteen) {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{act:?} at {x}: 8 lanes {a}, 16 lanes {b}"
                );
            }
            // Two vectors per operation, for each count of vectors 1..=8.
            for (c, chunk) in xs.chunks_exact(64).enumerate().step_by(97) {
                let n = c % 8 + 1;
                // SAFETY: AVX2, FMA and AVX-512F were checked above; the chunk has 64 floats.
                let (paired, single) = unsafe {
                    use std::arch::x86_64::*;
                    let mut v: [__m256; 8] =
                        std::array::from_fn(|i| _mm256_loadu_ps(chunk.as_ptr().add(8 * i)));
                    let single: Vec<__m256> =
                        v[..n].iter().map(|&x| super::avx2::apply(act, x)).collect();
                    super::avx512::apply_pairs(act, &mut v, n);
                    let bits = |x: &__m256| -> [u32; 8] { std::mem::transmute(*x) };
                    (
                        v[..n].iter().map(bits).collect::<Vec<_>>(),
                        single.iter().map(bits).collect::<Vec<_>>(),
                    )
                };
                assert_eq!(paired, single, "{act:?}, {n} vectors from {}", chunk[0]);
            }
        }
    }
}
