//! exp, log, tanh, sigmoid, erf and friends as branch-free CLIF, one code path for one f32
//! and for f32x4 lanes (special cases are selects, not branches).
//!
//! The polynomials are Cephes' single-precision ones (exp, log, tanh) and N. Juffa's erf,
//! evaluated with FMA where the target has it. Maximum relative error against the correctly
//! rounded f64 result, measured by `tests/codegen.rs` (`math_*` tests, dense sweeps over
//! the ranges named there, FMA on; the tests assert these bounds):
//!
//! | function | range swept | measured | asserted |
//! |---|---|---|---|
//! | exp | [-87, 88] | 8.1e-8 | 1.2e-7 |
//! | log | e^[-69, 69], [0.5, 2], denormals | 7.8e-8 | 1.2e-7 |
//! | tanh | [-10, 10] | 1.4e-7 | 2e-7 |
//! | sigmoid | [-80, 30] | 1.9e-7 | 2.5e-7 |
//! | erf | [-5, 5] | 8.8e-8 | 1.2e-7 |
//! | expm1 (elu) | [-10, 0] | 8.7e-8 | 1.2e-7 |
//! | softplus | [-80, 80] | 2.0e-7 | 3e-7 |
//! | gelu (exact) | [-1, 12] | 2.4e-7 | 3e-7 |
//! | gelu (exact) | [-3, 12] | 7.4e-6 | 1e-5 |
//!
//! (A rounding of the exact result alone costs up to 6e-8.) GELU's negative tail takes
//! 1 + erf(x/√2) = erfc(|x|/√2) from Juffa's exp(P(t)), which was fitted for erf's absolute
//! accuracy, not erfc's relative one: below x = -1 its relative error grows (6.5e-5 at
//! -5) while the absolute error stays under 3.1e-8 (asserted ≤ 5e-8 on [-5, -3]).
//!
//! Outside the swept ranges the functions saturate correctly: exp overflows to inf above
//! 88.72 and underflows through the denormals to 0; tanh, sigmoid and erf reach their
//! limits; NaN in gives NaN out everywhere. A test failing means a change made them worse.

// The coefficients are quoted as their authors published them.
#![allow(clippy::excessive_precision)]

use super::emit::Fx;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split for Cody–Waite reduction: `LN2_HI` has few mantissa bits, so `n·LN2_HI` is
/// exact for the |n| ≤ 160 that occur.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// e^r - 1 - r = r²·P(r) on |r| ≤ ln2/2 (Cephes expf), highest power first; the native
/// kernels' vector exp reads the same numbers.
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];

/// e^x.
///
/// x = n·ln2 + r with |r| ≤ ln2/2; e^r by a degree-7 polynomial (Cephes expf); then
/// multiplied by 2^n in two halves, so that results near the overflow threshold and in the
/// denormal range are formed without an intermediate overflow or double underflow.
pub fn exp(fx: &mut Fx, x: Value) -> Value {
    // Beyond these, e^x is inf or rounds to 0; clamping keeps n within the exponent range
    // of the two half-scales. NaN passes the clamp and poisons r.
    let x = fx.clamp(x, -110.0, 89.0);
    // n = round(x·log2 e) by adding and subtracting 1.5·2^23: the sum's last mantissa bit
    // has weight 1, so the addition rounds to an integer, and the integer sits in the low
    // mantissa bits (read below by subtracting the constant's bits).
    let magic = fx.f(12_582_912.0);
    let t = fx.mul_add_k(x, LOG2_E, 12_582_912.0);
    let n = fx.sub(t, magic);
    let tb = fx.bits(t);
    let mb = fx.bits(magic);
    let ni = fx.b.ins().isub(tb, mb);
    let hi = fx.f(-LN2_HI);
    let lo = fx.f(-LN2_LO);
    let r = fx.mul_add(n, hi, x);
    let r = fx.mul_add(n, lo, r);
    let p = fx.poly(r, &EXP_POLY);
    let r2 = fx.mul(r, r);
    let y = fx.mul_add(p, r2, r);
    let one = fx.f(1.0);
    let y = fx.add(y, one);
    // 2^n = 2^(n>>1) · 2^(n - n>>1), each half a normal float for |n| ≤ 252.
    let n1 = fx.b.ins().sshr_imm_s(ni, 1);
    let n2 = fx.b.ins().isub(ni, n1);
    let s1 = pow2(fx, n1);
    let s2 = pow2(fx, n2);
    let y = fx.mul(y, s1);
    fx.mul(y, s2)
}

/// 2^n for an integer n in [-126, 127], built from its exponent bits.
fn pow2(fx: &mut Fx, n: Value) -> Value {
    let bias = fx.i(127);
    let e = fx.b.ins().iadd(n, bias);
    let bits = fx.b.ins().ishl_imm_s(e, 23);
    fx.float_from_bits(bits)
}

/// Natural logarithm; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf.
///
/// x = m·2^e with m in [√½, √2); log(m) = t - t²/2 + t³·P(t) with t = m - 1 and a degree-8
/// P (Cephes logf); e·ln2 is added in two parts.
pub fn log(fx: &mut Fx, x: Value) -> Value {
    // Denormals: scale into the normal range first, and take 23 off the exponent.
    let denormal = fx.cmp_k(FloatCC::LessThan, x, f32::MIN_POSITIVE);
    let scaled = fx.mul_k(x, 8_388_608.0);
    let xs = fx.sel(denormal, scaled, x);
    let zero = fx.f(0.0);
    let e_adj = fx.sel_k(denormal, -23.0, zero);
    let bits = fx.bits(xs);
    let exp_bits = fx.b.ins().ushr_imm_s(bits, 23);
    let bias = fx.i(126);
    let e = fx.b.ins().isub(exp_bits, bias);
    let e = fx.int_to_float(e);
    let e = fx.add(e, e_adj);
    // m in [0.5, 1): the mantissa with the exponent of 0.5.
    let mantissa = fx.i(0x007f_ffff);
    let half = fx.i(0x3f00_0000);
    let mb = fx.b.ins().band(bits, mantissa);
    let mb = fx.b.ins().bor(mb, half);
    let m = fx.float_from_bits(mb);
    // Below √½, use 2m and e - 1 so that t = m - 1 stays in [-0.29, 0.41].
    let small = fx.cmp_k(FloatCC::LessThan, m, std::f32::consts::FRAC_1_SQRT_2);
    let one = fx.f(1.0);
    let t = fx.sub(m, one);
    let extra = fx.sel(small, m, zero);
    let t = fx.add(t, extra);
    let dec = fx.sel(small, one, zero);
    let e = fx.sub(e, dec);
    let z = fx.mul(t, t);
    let p = fx.poly(
        t,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333_1e-1,
        ],
    );
    let tz = fx.mul(t, z);
    let y = fx.mul(p, tz);
    let lo = fx.f(LN2_LO);
    let y = fx.mul_add(e, lo, y);
    let minus_half = fx.f(-0.5);
    let y = fx.mul_add(z, minus_half, y);
    let r = fx.add(t, y);
    let hi = fx.f(LN2_HI);
    let r = fx.mul_add(e, hi, r);
    // Special cases: NaN and negatives give NaN, ±0 gives -inf, inf gives inf.
    let positive = fx.cmp_k(FloatCC::GreaterThan, x, 0.0);
    let nan = fx.f(f32::NAN);
    let r = fx.sel(positive, r, nan);
    let is_zero = fx.cmp_k(FloatCC::Equal, x, 0.0);
    let r = fx.sel_k(is_zero, f32::NEG_INFINITY, r);
    let is_inf = fx.cmp_k(FloatCC::Equal, x, f32::INFINITY);
    fx.sel_k(is_inf, f32::INFINITY, r)
}

/// e^x - 1 without the cancellation near 0: a degree-8 Taylor polynomial for |x| < 0.5
/// (truncation error below 1e-8 relative there), e^x - 1 beyond (where e^x - 1 loses at
/// most a factor 2.6 to cancellation).
pub fn expm1(fx: &mut Fx, x: Value) -> Value {
    let e = exp(fx, x);
    let one = fx.f(1.0);
    let big = fx.sub(e, one);
    // x·(1 + x/2·(1 + x/3·(…))) written as x + x²·(1/2! + x/3! + … + x⁶/8!).
    let c: [f32; 7] = [
        1.0 / 40320.0,
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
    ];
    let p = fx.poly(x, &c);
    let x2 = fx.mul(x, x);
    let small = fx.mul_add(p, x2, x);
    let ax = fx.abs(x);
    let near = fx.cmp_k(FloatCC::LessThan, ax, 0.5);
    fx.sel(near, small, big)
}

/// ln(1 + u) for u ≥ 0 with full relative accuracy at small u: log(w)·u/(w - 1) with
/// w = 1 + u corrects the rounding of w (Goldberg's trick); u itself where w rounds to 1.
fn log1p_nonneg(fx: &mut Fx, u: Value) -> Value {
    let one = fx.f(1.0);
    let w = fx.add(one, u);
    let lw = log(fx, w);
    let wm1 = fx.sub(w, one);
    let ratio = fx.div(u, wm1);
    let r = fx.mul(lw, ratio);
    let exact = fx.cmp(FloatCC::Equal, w, one);
    fx.sel(exact, u, r)
}

/// ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|).
pub fn softplus(fx: &mut Fx, x: Value) -> Value {
    let ax = fx.abs(x);
    let neg = fx.b.ins().fneg(ax);
    let e = exp(fx, neg);
    let l = log1p_nonneg(fx, e);
    let pos = fx.cmp_k(FloatCC::GreaterThan, x, 0.0);
    let zero = fx.f(0.0);
    let m = fx.sel(pos, x, zero);
    fx.add(m, l)
}

/// The logistic function: 1/(1 + e^-x) for x ≥ 0, e^x/(1 + e^x) below, both from one
/// e^-|x| (so no overflow, and full relative accuracy down into the denormals).
pub fn sigmoid(fx: &mut Fx, x: Value) -> Value {
    let ax = fx.abs(x);
    let neg = fx.b.ins().fneg(ax);
    let e = exp(fx, neg);
    let one = fx.f(1.0);
    let d = fx.add(one, e);
    let s = fx.div(one, d);
    let es = fx.mul(e, s);
    let pos = fx.cmp_k(FloatCC::GreaterThanOrEqual, x, 0.0);
    fx.sel(pos, s, es)
}

/// tanh: an odd degree-11 polynomial below |x| = 0.625 (Cephes tanhf), 1 - 2/(e^2|x| + 1)
/// with x's sign above (e^2|x| overflowing to inf gives exactly ±1).
pub fn tanh(fx: &mut Fx, x: Value) -> Value {
    let z = fx.mul(x, x);
    let p = fx.poly(
        z,
        &[
            -5.704_988_7e-3,
            2.063_908_9e-2,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328_2e-1,
        ],
    );
    let pz = fx.mul(p, z);
    let small = fx.mul_add(pz, x, x);
    let ax = fx.abs(x);
    let two_ax = fx.add(ax, ax);
    let e = exp(fx, two_ax);
    let one = fx.f(1.0);
    let two = fx.f(2.0);
    let d = fx.add(e, one);
    let q = fx.div(two, d);
    let big = fx.sub(one, q);
    let big = fx.copysign(big, x);
    let near = fx.cmp_k(FloatCC::LessThan, ax, 0.625);
    fx.sel(near, small, big)
}

/// N. Juffa's erff: for t = |x| above [`ERF_SPLIT`], erfc(t) = exp(P(t)) with
/// P(t) = ((((c0·t + c1)·t² + (c2·t + c3))·t + c4)·t + c5)·t + c6 − t (c = [`ERF_BIG`]);
/// below, erf(t) = t + t·Q(t²) with Q's coefficients [`ERF_SMALL`], highest first. The
/// generated code and the native GELU (`kernels/gelu.rs`) both read them from here.
pub(crate) const ERF_BIG: [f32; 7] = [
    -1.728_534_7e-5,
    3.831_971_3e-4,
    -3.883_964_4e-3,
    2.425_462_2e-2,
    -1.067_778_8e-1,
    -6.348_466_9e-1,
    -1.287_175_1e-1,
];
pub(crate) const ERF_SMALL: [f32; 6] = [
    -5.967_617e-4,
    4.991_194_2e-3,
    -2.676_813_5e-2,
    1.128_199_3e-1,
    -3.761_253_4e-1,
    1.283_791_7e-1,
];
pub(crate) const ERF_SPLIT: f32 = 0.927_734_4;

/// erf(|x|) and erfc(|x|); erfc above 0.93 comes from the exponential directly, not from
/// 1 - erf, so it keeps its absolute accuracy where it is small (see the table above for
/// its relative accuracy). N. Juffa's erff: an odd polynomial below
/// |x| = 0.9277, 1 - exp(P(|x|)) above.
fn erf_erfc_abs(fx: &mut Fx, x: Value) -> (Value, Value) {
    let t = fx.abs(x);
    // erf is 1 to f32 precision long before 10; the clamp keeps P finite (NaN passes).
    let t = fx.clamp(t, 0.0, 10.0);
    let s = fx.mul(t, t);
    // Large branch: P(t) = c0 t⁷ + … - t, written for two independent chains.
    let r = fx.mul_add_k(t, ERF_BIG[0], ERF_BIG[1]);
    let u = fx.mul_add_k(t, ERF_BIG[2], ERF_BIG[3]);
    let r = fx.mul_add(r, s, u);
    let r = fx.mul_add_k_var(r, t, ERF_BIG[4]);
    let r = fx.mul_add_k_var(r, t, ERF_BIG[5]);
    let r = fx.mul_add_k_var(r, t, ERF_BIG[6]);
    let neg_t = fx.b.ins().fneg(t);
    let r = fx.mul_add(r, t, neg_t);
    let erfc_large = exp(fx, r);
    let one = fx.f(1.0);
    let erf_large = fx.sub(one, erfc_large);
    // Small branch: t + t·s·Q(s).
    let q = fx.poly(s, &ERF_SMALL);
    let erf_small = fx.mul_add(q, t, t);
    let erfc_small = fx.sub(one, erf_small);
    let large = fx.cmp_k(FloatCC::GreaterThan, t, ERF_SPLIT);
    let erf = fx.sel(large, erf_large, erf_small);
    let erfc = fx.sel(large, erfc_large, erfc_small);
    (erf, erfc)
}

pub fn erf(fx: &mut Fx, x: Value) -> Value {
    let (e, _) = erf_erfc_abs(fx, x);
    fx.copysign(e, x)
}

/// 1 + erf(x), without cancellation for negative x (it is erfc(|x|) there): what exact
/// GELU needs.
pub fn one_plus_erf(fx: &mut Fx, x: Value) -> Value {
    let (e, c) = erf_erfc_abs(fx, x);
    let one = fx.f(1.0);
    let above = fx.add(one, e);
    let nonneg = fx.cmp_k(FloatCC::GreaterThanOrEqual, x, 0.0);
    fx.sel(nonneg, above, c)
}

impl Fx<'_, '_> {
    fn mul_k(&mut self, a: Value, k: f32) -> Value {
        let k = self.f(k);
        self.mul(a, k)
    }

    /// `a * b + c` with a constant `c`.
    fn mul_add_k_var(&mut self, a: Value, b: Value, c: f32) -> Value {
        let c = self.f(c);
        self.mul_add(a, b, c)
    }

    /// Signed integer lanes to float.
    pub fn int_to_float(&mut self, i: Value) -> Value {
        let ty = self.fty();
        self.b.ins().fcvt_from_sint(ty, i)
    }
}
