//! Instruction helpers that work the same on one f32 and on an f32x4 vector, so that the
//! op lowerings and the math functions are written once and serve both the vectorised
//! inner loop and its scalar tail.
//!
//! A lane mask (the result of a comparison) is an `i32x4` of all-ones/all-zeros lanes on
//! vectors and an `i8` holding 0 or 1 on scalars: what `fcmp` returns in each case. Bool
//! values of the kernel use the same representation.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

pub struct Fx<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    /// f32x4 lanes when true, one f32 when false.
    pub vector: bool,
    /// The target has fused multiply-add (otherwise `mul_add` multiplies, then adds).
    pub fma: bool,
}

impl Fx<'_, '_> {
    pub fn fty(&self) -> Type {
        if self.vector {
            types::F32X4
        } else {
            types::F32
        }
    }

    pub fn ity(&self) -> Type {
        if self.vector {
            types::I32X4
        } else {
            types::I32
        }
    }

    pub fn f(&mut self, v: f32) -> Value {
        let c = self.b.ins().f32const(v);
        if self.vector {
            self.b.ins().splat(types::F32X4, c)
        } else {
            c
        }
    }

    pub fn i(&mut self, v: i32) -> Value {
        let c = self.b.ins().iconst(types::I32, v as i64);
        if self.vector {
            self.b.ins().splat(types::I32X4, c)
        } else {
            c
        }
    }

    /// A mask of all lanes set (`true`) or clear.
    pub fn mask_const(&mut self, v: bool) -> Value {
        if self.vector {
            let c = self.b.ins().iconst(types::I32, if v { -1 } else { 0 });
            self.b.ins().splat(types::I32X4, c)
        } else {
            self.b.ins().iconst(types::I8, v as i64)
        }
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }

    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }

    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }

    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }

    /// `a * b + c`, fused (one rounding) when the target has FMA.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// `a * b + c` with constants `b` and `c`.
    pub fn mul_add_k(&mut self, a: Value, b: f32, c: f32) -> Value {
        let (b, c) = (self.f(b), self.f(c));
        self.mul_add(a, b, c)
    }

    /// Horner's rule: `coeffs[0]·xⁿ + … + coeffs[n]`.
    pub fn poly(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.f(coeffs[0]);
        for &c in &coeffs[1..] {
            let c = self.f(c);
            acc = self.mul_add(acc, x, c);
        }
        acc
    }

    pub fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }

    /// Comparison with a constant.
    pub fn cmp_k(&mut self, cc: FloatCC, a: Value, k: f32) -> Value {
        let k = self.f(k);
        self.cmp(cc, a, k)
    }

    /// Per lane: `mask ? a : b`, for float values.
    pub fn sel(&mut self, mask: Value, a: Value, b: Value) -> Value {
        if self.vector {
            let m = self.b.ins().bitcast(types::F32X4, little(), mask);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(mask, a, b)
        }
    }

    /// Per lane: `mask ? a : b`, for values of the mask's own type (bools, ints).
    pub fn sel_same(&mut self, mask: Value, a: Value, b: Value) -> Value {
        if self.vector {
            self.b.ins().bitselect(mask, a, b)
        } else {
            self.b.ins().select(mask, a, b)
        }
    }

    /// `mask ? k : x` with a constant.
    pub fn sel_k(&mut self, mask: Value, k: f32, x: Value) -> Value {
        let k = self.f(k);
        self.sel(mask, k, x)
    }

    pub fn mask_and(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band(a, b)
    }

    pub fn mask_or(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bor(a, b)
    }

    pub fn mask_not(&mut self, a: Value) -> Value {
        if self.vector {
            self.b.ins().bnot(a)
        } else {
            self.b.ins().bxor_imm_s(a, 1)
        }
    }

    /// A float that is 1.0 where the mask is set and 0.0 elsewhere.
    pub fn mask_to_float(&mut self, mask: Value) -> Value {
        let (one, zero) = (self.f(1.0), self.f(0.0));
        self.sel(mask, one, zero)
    }

    /// A mask of `x != 0` for an f32 (NaN counts as nonzero, as in a cast to bool).
    pub fn float_to_mask(&mut self, x: Value) -> Value {
        self.cmp_k(FloatCC::NotEqual, x, 0.0)
    }

    /// A mask of `a == b` for two masks (bool equality).
    pub fn mask_eq(&mut self, a: Value, b: Value) -> Value {
        let x = self.b.ins().bxor(a, b);
        self.mask_not(x)
    }

    pub fn bits(&mut self, x: Value) -> Value {
        let ty = self.ity();
        self.b.ins().bitcast(ty, little(), x)
    }

    pub fn float_from_bits(&mut self, x: Value) -> Value {
        let ty = self.fty();
        self.b.ins().bitcast(ty, little(), x)
    }

    pub fn abs(&mut self, x: Value) -> Value {
        self.b.ins().fabs(x)
    }

    /// `|x|` with the sign of `s` (a bit operation: NaNs keep their payload).
    pub fn copysign(&mut self, x: Value, s: Value) -> Value {
        let (xb, sb) = (self.bits(x), self.bits(s));
        let magnitude = self.i(0x7fff_ffff);
        let sign = self.i(i32::MIN);
        let m = self.b.ins().band(xb, magnitude);
        let s = self.b.ins().band(sb, sign);
        let r = self.b.ins().bor(m, s);
        self.float_from_bits(r)
    }

    /// `x` with the lanes below `lo` raised to it and those above `hi` lowered to it; NaN
    /// passes through (compare-and-select, cheaper than fmin/fmax and NaN-preserving).
    pub fn clamp(&mut self, x: Value, lo: f32, hi: f32) -> Value {
        let below = self.cmp_k(FloatCC::LessThan, x, lo);
        let x = self.sel_k(below, lo, x);
        let above = self.cmp_k(FloatCC::GreaterThan, x, hi);
        self.sel_k(above, hi, x)
    }

    /// Integer comparison of two scalars or vectors of the mask type.
    pub fn icmp(&mut self, cc: IntCC, a: Value, b: Value) -> Value {
        self.b.ins().icmp(cc, a, b)
    }
}

/// Flags for a bitcast between vector types (Cranelift asks for the byte order).
pub fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}
