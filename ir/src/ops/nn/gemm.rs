//! The one matrix-multiply kernel that MatMul, Gemm, Conv and ConvTranspose reduce to, and
//! the accumulator types it runs on: f64 for every float type (results round once, at the
//! end, to the output type) and wrapping i64 for integers (numpy's integer matmul wraps,
//! and so does ours).

use crate::dtype::Element;
use crate::tensor::Tensor;
use std::num::Wrapping;
use std::ops::{Add, Mul};

/// A number the kernel can multiply and add.
pub(crate) trait Acc:
    Copy + Default + Add<Output = Self> + Mul<Output = Self> + Send + Sync + 'static
{
}
impl Acc for f64 {}
impl Acc for Wrapping<i64> {}

/// Integer elements as wrapping i64 (u64 above i64::MAX wraps, which is harmless modulo 2^64).
pub(crate) fn wrapping_i64(t: &Tensor) -> Vec<Wrapping<i64>> {
    crate::with_data!(t.data(), v, T => v.iter().map(|x| Wrapping(x.to_i64())).collect())
}

/// Columns of `b` per panel and rows of `b` per panel: a KC×NC f64 panel is 256 KiB, which
/// stays in L2 while every row of `a` streams over it.
const NC: usize = 256;
const KC: usize = 128;

/// `c = a · b` for row-major `a` (m×k), `b` (k×n), `c` (m×n). `c` is overwritten.
///
/// Loop order is panel (j, k) then rows of `a` four at a time, with the innermost loop over
/// contiguous columns of one row of `b`: every `b` element loaded updates four rows of `c`,
/// and the inner loop has no index arithmetic the compiler cannot vectorize.
pub(crate) fn gemm<T: Acc>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &mut [T]) {
    let (a, b, c) = (&a[..m * k], &b[..k * n], &mut c[..m * n]);
    c.iter_mut().for_each(|x| *x = T::default());
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    for j0 in (0..n).step_by(NC) {
        let j1 = (j0 + NC).min(n);
        for k0 in (0..k).step_by(KC) {
            let k1 = (k0 + KC).min(k);
            let mut i = 0;
            while i + 4 <= m {
                let rows = &mut c[i * n..(i + 4) * n];
                let (r0, rest) = rows.split_at_mut(n);
                let (r1, rest) = rest.split_at_mut(n);
                let (r2, r3) = rest.split_at_mut(n);
                let (c0, c1, c2, c3) = (
                    &mut r0[j0..j1],
                    &mut r1[j0..j1],
                    &mut r2[j0..j1],
                    &mut r3[j0..j1],
                );
                for kk in k0..k1 {
                    let av = [
                        a[i * k + kk],
                        a[(i + 1) * k + kk],
                        a[(i + 2) * k + kk],
                        a[(i + 3) * k + kk],
                    ];
                    axpy4(c0, c1, c2, c3, av, &b[kk * n + j0..kk * n + j1]);
                }
                i += 4;
            }
            while i < m {
                let c0 = &mut c[i * n + j0..i * n + j1];
                for kk in k0..k1 {
                    axpy1(c0, a[i * k + kk], &b[kk * n + j0..kk * n + j1]);
                }
                i += 1;
            }
        }
    }
}

#[inline(always)]
fn axpy4<T: Acc>(c0: &mut [T], c1: &mut [T], c2: &mut [T], c3: &mut [T], a: [T; 4], b: &[T]) {
    let n = b.len();
    let (c0, c1, c2, c3) = (&mut c0[..n], &mut c1[..n], &mut c2[..n], &mut c3[..n]);
    for j in 0..n {
        let bv = b[j];
        c0[j] = c0[j] + a[0] * bv;
        c1[j] = c1[j] + a[1] * bv;
        c2[j] = c2[j] + a[2] * bv;
        c3[j] = c3[j] + a[3] * bv;
    }
}

#[inline(always)]
fn axpy1<T: Acc>(c: &mut [T], a: T, b: &[T]) {
    let n = b.len();
    let c = &mut c[..n];
    for j in 0..n {
        c[j] = c[j] + a * b[j];
    }
}

/// Row-major transpose of an r×c matrix.
pub(crate) fn transpose<T: Copy>(r: usize, c: usize, a: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(r * c);
    for j in 0..c {
        out.extend((0..r).map(|i| a[i * c + j]));
    }
    out
}
