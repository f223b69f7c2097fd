//! The machinery every elementwise op shares: broadcast walks, numeric traits that give
//! one generic body per type family, and dtype-family dispatch macros.

use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::ops::util::broadcast_shapes;
use crate::tensor::{checked_numel, Storable, Tensor};
use half::{bf16, f16};

/// Calls `f` with the flat offset into each of `K` inputs for every element of the
/// broadcast output `out`, in row-major order. Each input shape must broadcast to `out`
/// (callers get `out` from [`broadcast_shapes`]), so every offset is in bounds.
pub(crate) fn walk<const K: usize>(
    ins: [&[usize]; K],
    out: &[usize],
    mut f: impl FnMut([usize; K]),
) {
    let n = out.len();
    if out.contains(&0) {
        return;
    }
    if n == 0 {
        f([0; K]);
        return;
    }
    // Per-dim stride of each input, 0 where the input is broadcast along that dim.
    let mut st = vec![[0usize; K]; n];
    for (k, s) in ins.iter().enumerate() {
        let off = n - s.len();
        let mut acc = 1usize;
        for i in (0..s.len()).rev() {
            st[off + i][k] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
    }
    let inner = out[n - 1];
    let ist = st[n - 1];
    let mut idx = vec![0usize; n - 1];
    let mut base = [0usize; K];
    loop {
        let mut o = base;
        for _ in 0..inner {
            f(o);
            for k in 0..K {
                o[k] += ist[k];
            }
        }
        // Advance the odometer over the outer dims; done when it rolls over entirely.
        let mut d = n - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            for k in 0..K {
                base[k] += st[d][k];
            }
            if idx[d] < out[d] {
                break;
            }
            for k in 0..K {
                base[k] -= st[d][k] * out[d];
            }
            idx[d] = 0;
        }
    }
}

/// One input mapped elementwise.
pub(crate) fn map1<A: Copy, O: Storable>(
    t: &Tensor,
    x: &[A],
    f: impl Fn(A) -> O,
) -> Result<Tensor> {
    Tensor::new(
        t.shape().to_vec(),
        x.iter().map(|&v| f(v)).collect::<Vec<O>>(),
    )
}

/// Two inputs, numpy-broadcast, combined elementwise.
pub(crate) fn map2<A: Copy, B: Copy, O: Storable>(
    a: &Tensor,
    x: &[A],
    b: &Tensor,
    y: &[B],
    f: impl Fn(A, B) -> O,
) -> Result<Tensor> {
    if a.shape() == b.shape() {
        return Tensor::new(
            a.shape().to_vec(),
            x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect::<Vec<O>>(),
        );
    }
    let out = broadcast_shapes(a.shape(), b.shape())?;
    if b.len() == 1 {
        if let Some(&q) = y.first() {
            if out == a.shape() {
                return map1(a, x, |p| f(p, q));
            }
        }
    }
    let mut v = Vec::with_capacity(checked_numel(&out)?);
    walk([a.shape(), b.shape()], &out, |[i, j]| v.push(f(x[i], y[j])));
    Tensor::new(out, v)
}

/// Three inputs, numpy-broadcast, combined elementwise.
pub(crate) fn map3<A: Copy, B: Copy, C: Copy, O: Storable>(
    (a, x): (&Tensor, &[A]),
    (b, y): (&Tensor, &[B]),
    (c, z): (&Tensor, &[C]),
    f: impl Fn(A, B, C) -> O,
) -> Result<Tensor> {
    let out = broadcast_shapes(&broadcast_shapes(a.shape(), b.shape())?, c.shape())?;
    let mut v = Vec::with_capacity(checked_numel(&out)?);
    walk([a.shape(), b.shape(), c.shape()], &out, |[i, j, k]| {
        v.push(f(x[i], y[j], z[k]))
    });
    Tensor::new(out, v)
}

/// Float element types. Math is done in f64 and rounded once to the element type, which
/// is exact for + - * / and sqrt and within an ulp of numpy's float32 library functions.
pub(crate) trait Flt: Storable {
    /// Round to nearest even (correctly, unlike `half`'s f64 path, which truncates first).
    fn of(v: f64) -> Self;
}
impl Flt for f32 {
    fn of(v: f64) -> f32 {
        v as f32
    }
}
impl Flt for f64 {
    fn of(v: f64) -> f64 {
        v
    }
}
impl Flt for f16 {
    fn of(v: f64) -> f16 {
        crate::tensor::f16_from_f64(v)
    }
}
impl Flt for bf16 {
    fn of(v: f64) -> bf16 {
        crate::tensor::bf16_from_f64(v)
    }
}

/// Integer element types with the wrapping (two's complement) arithmetic ONNX and numpy use.
pub(crate) trait Int: Storable + Ord {
    const SIGNED: bool;
    const ZERO: Self;
    const ONE: Self;
    fn wadd(self, o: Self) -> Self;
    fn wsub(self, o: Self) -> Self;
    fn wmul(self, o: Self) -> Self;
    fn wneg(self) -> Self;
    /// Truncating division; the caller has ruled out a zero divisor. MIN / -1 wraps.
    fn wdiv(self, o: Self) -> Self;
    /// Remainder with the dividend's sign (C `%`); the caller has ruled out zero.
    fn wrem(self, o: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn not(self) -> Self;
    /// Shift by `n` bits; `n >= BITS` shifts everything out.
    fn shl(self, n: u32) -> Self;
    /// Arithmetic for signed types, logical for unsigned; `n >= BITS` leaves only sign bits.
    fn shr(self, n: u32) -> Self;
    /// The shift amount, with negative amounts read as huge (they shift everything out).
    fn shift_amount(self) -> u32;
}

macro_rules! int_impl {
    ($t:ty, $signed:expr) => {
        impl Int for $t {
            const SIGNED: bool = $signed;
            const ZERO: Self = 0;
            const ONE: Self = 1;
            fn wadd(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn wsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn wmul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn wneg(self) -> Self {
                self.wrapping_neg()
            }
            fn wdiv(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_div(o)
                }
            }
            fn wrem(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_rem(o)
                }
            }
            fn and(self, o: Self) -> Self {
                self & o
            }
            fn or(self, o: Self) -> Self {
                self | o
            }
            fn xor(self, o: Self) -> Self {
                self ^ o
            }
            fn not(self) -> Self {
                !self
            }
            fn shl(self, n: u32) -> Self {
                self.checked_shl(n).unwrap_or(0)
            }
            fn shr(self, n: u32) -> Self {
                match self.checked_shr(n) {
                    Some(v) => v,
                    None => self
                        .checked_shr(<$t>::BITS - 1)
                        .map_or(0, |v| if $signed { v } else { 0 }),
                }
            }
            fn shift_amount(self) -> u32 {
                #[allow(unused_comparisons)]
                if self < 0 {
                    u32::MAX
                } else {
                    u32::try_from(self).unwrap_or(u32::MAX)
                }
            }
        }
    };
}
int_impl!(i8, true);
int_impl!(i16, true);
int_impl!(i32, true);
int_impl!(i64, true);
int_impl!(u8, false);
int_impl!(u16, false);
int_impl!(u32, false);
int_impl!(u64, false);

/// `$body` with `$T` the float type of `$d`; `$other` for every non-float dtype.
macro_rules! with_float {
    ($d:expr, $T:ident => $body:expr, _ => $other:expr) => {
        match $d {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            _ => $other,
        }
    };
}

/// `$body` with `$T` the integer type of `$d`; `$other` for floats and bool.
macro_rules! with_int {
    ($d:expr, $T:ident => $body:expr, _ => $other:expr) => {
        match $d {
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            _ => $other,
        }
    };
}
pub(crate) use {with_float, with_int};

/// A float tensor mapped through an f64 function, rounded back to its own type.
pub(crate) fn float_map(t: &Tensor, f: impl Fn(f64) -> f64) -> Option<Result<Tensor>> {
    with_float!(t.dtype(), T => Some(t.as_slice::<T>().and_then(|x| map1(t, x, |v| T::of(f(v.to_f64()))))), _ => None)
}

/// A float tensor mapped through an f64 predicate.
pub(crate) fn float_test(t: &Tensor, f: impl Fn(f64) -> bool) -> Option<Result<Tensor>> {
    with_float!(t.dtype(), T => Some(t.as_slice::<T>().and_then(|x| map1(t, x, |v| f(v.to_f64())))), _ => None)
}

/// The one element of a scalar (or one-element) bound input, as `T`.
pub(crate) fn one<T: Storable>(t: &Tensor, what: &str) -> Result<T> {
    let v = t
        .as_slice::<T>()
        .map_err(|e| crate::IrError::msg(format!("{what}: {}", e.message)))?;
    match v {
        [x] => Ok(*x),
        _ => Err(crate::IrError::msg(format!(
            "{what} must have one element, has shape {:?}",
            t.shape()
        ))),
    }
}

/// Errors unless `d` is a float type.
pub(crate) fn need_float(op: &str, d: DType) -> Result<()> {
    if d.is_float() {
        Ok(())
    } else {
        Err(crate::IrError::msg(format!(
            "{op} takes float tensors, not {d}"
        )))
    }
}
