//! Constant tensors: a shape and typed, shared, immutable element storage.
//!
//! Storage is an `Arc`, so cloning a tensor (into a constant node, an eval result, a
//! second graph) never copies its elements. A tensor either owns its elements (a [`Data`])
//! or reads elements someone else keeps alive ([`SharedElems`]: a numpy array handed to a
//! run), so a caller's buffer reaches the kernels without a copy.

use crate::dtype::{DType, Element};
use crate::error::{IrError, Result};
use half::{bf16, f16};
use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Typed element storage.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

/// Runs `$body` with `$v` bound to the typed `Vec` inside a [`Data`] and the type alias
/// `$T` naming its element type. The way to write one generic body for all 13 types.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident, $T:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => { #[allow(dead_code)] type $T = f32; $body }
            $crate::Data::F16($v) => { #[allow(dead_code)] type $T = $crate::half::f16; $body }
            $crate::Data::BF16($v) => { #[allow(dead_code)] type $T = $crate::half::bf16; $body }
            $crate::Data::F64($v) => { #[allow(dead_code)] type $T = f64; $body }
            $crate::Data::I8($v) => { #[allow(dead_code)] type $T = i8; $body }
            $crate::Data::I16($v) => { #[allow(dead_code)] type $T = i16; $body }
            $crate::Data::I32($v) => { #[allow(dead_code)] type $T = i32; $body }
            $crate::Data::I64($v) => { #[allow(dead_code)] type $T = i64; $body }
            $crate::Data::U8($v) => { #[allow(dead_code)] type $T = u8; $body }
            $crate::Data::U16($v) => { #[allow(dead_code)] type $T = u16; $body }
            $crate::Data::U32($v) => { #[allow(dead_code)] type $T = u32; $body }
            $crate::Data::U64($v) => { #[allow(dead_code)] type $T = u64; $body }
            $crate::Data::Bool($v) => { #[allow(dead_code)] type $T = bool; $body }
        }
    };
}

/// Runs `$body` with the type alias `$T` naming the Rust type of a [`DType`].
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => { type $T = f32; $body }
            $crate::DType::F16 => { type $T = $crate::half::f16; $body }
            $crate::DType::BF16 => { type $T = $crate::half::bf16; $body }
            $crate::DType::F64 => { type $T = f64; $body }
            $crate::DType::I8 => { type $T = i8; $body }
            $crate::DType::I16 => { type $T = i16; $body }
            $crate::DType::I32 => { type $T = i32; $body }
            $crate::DType::I64 => { type $T = i64; $body }
            $crate::DType::U8 => { type $T = u8; $body }
            $crate::DType::U16 => { type $T = u16; $body }
            $crate::DType::U32 => { type $T = u32; $body }
            $crate::DType::U64 => { type $T = u64; $body }
            $crate::DType::Bool => { type $T = bool; $body }
        }
    };
}

/// Moves a typed `Vec` into and out of [`Data`].
pub trait Storable: Element {
    fn wrap(v: Vec<Self>) -> Data;
    fn slice(d: &Data) -> Option<&[Self]>;
}

macro_rules! storable {
    ($t:ty, $d:ident) => {
        impl Storable for $t {
            fn wrap(v: Vec<Self>) -> Data {
                Data::$d(v)
            }
            fn slice(d: &Data) -> Option<&[Self]> {
                match d {
                    Data::$d(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
storable!(f32, F32);
storable!(f16, F16);
storable!(bf16, BF16);
storable!(f64, F64);
storable!(i8, I8);
storable!(i16, I16);
storable!(i32, I32);
storable!(i64, I64);
storable!(u8, U8);
storable!(u16, U16);
storable!(u32, U32);
storable!(u64, U64);
storable!(bool, Bool);

impl Data {
    pub fn dtype(&self) -> DType {
        with_data!(self, _v, T => <T as Element>::DTYPE)
    }
    pub fn len(&self) -> usize {
        with_data!(self, v, T => v.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `n` zeros (false for bool) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Data {
        with_dtype!(dtype, T => <T as Storable>::wrap(vec![T::default(); n]))
    }
}

/// Elements owned outside kiln that a tensor reads in place, kept alive by the value that
/// implements this (which the tensor holds until its last clone drops).
///
/// # Safety
/// `elems` must return the same slice (address and length) on every call for as long as
/// the value lives, and nothing may write to those elements meanwhile: kernels read them
/// through plain `&[T]` from several threads, and unsafe kernels index them by the
/// tensor's shape.
pub unsafe trait SharedElems<T>: Send + Sync + 'static {
    fn elems(&self) -> &[T];
}

// Immutable owned buffers keep their address while they live.
unsafe impl<T: Send + Sync + 'static> SharedElems<T> for Vec<T> {
    fn elems(&self) -> &[T] {
        self
    }
}
unsafe impl<T: Send + Sync + 'static> SharedElems<T> for Box<[T]> {
    fn elems(&self) -> &[T] {
        self
    }
}
unsafe impl<T: Send + Sync + 'static> SharedElems<T> for Arc<[T]> {
    fn elems(&self) -> &[T] {
        self
    }
}

/// Where a tensor's elements live.
#[derive(Clone)]
enum Storage {
    Owned(Arc<Data>),
    Shared(Arc<Shared>),
}

struct Shared {
    dtype: DType,
    len: usize,
    /// A `Box<dyn SharedElems<T>>` for the `T` of `dtype`: the type is erased so one
    /// `Storage` holds any element type, and recovered by downcasting in [`Shared::slice`].
    elems: Box<dyn Any + Send + Sync>,
    /// The elements copied into a [`Data`] the first time someone asks for [`Tensor::data`]
    /// (code written against the owned `Vec`s); kernels that read `as_slice` never copy.
    copy: OnceLock<Data>,
}

impl Shared {
    fn slice<T: Storable>(&self) -> Option<&[T]> {
        self.elems.downcast_ref::<Box<dyn SharedElems<T>>>().map(|e| e.elems())
    }
}

/// A constant tensor. Row-major, dense; a scalar has an empty shape.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Storage,
}

impl fmt::Debug for Tensor {
    // As `#[derive(Debug)]` printed it when every tensor owned a `Data`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor").field("shape", &self.shape).field("data", self.data()).finish()
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        if self.shape != other.shape || self.dtype() != other.dtype() {
            return false;
        }
        with_dtype!(self.dtype(), T => self.as_slice::<T>().ok() == other.as_slice::<T>().ok())
    }
}

/// The number of elements of `shape`, or an error when it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| IrError::msg(format!("shape {shape:?} has more elements than fit in memory")))
}

impl Tensor {
    /// A tensor from a shape and its elements; errors when the counts disagree.
    pub fn new<T: Storable>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor> {
        Tensor::from_data(shape, T::wrap(data))
    }

    pub fn from_data(shape: Vec<usize>, data: Data) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(IrError::msg(format!(
                "shape {:?} needs {} elements but {} were given",
                shape,
                n,
                data.len()
            )));
        }
        Ok(Tensor { shape, data: Storage::Owned(Arc::new(data)) })
    }

    /// A tensor reading `elems` in place (no copy); errors when the counts disagree.
    pub fn from_shared<T: Storable>(shape: Vec<usize>, elems: impl SharedElems<T>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        let len = elems.elems().len();
        if n != len {
            return Err(IrError::msg(format!("shape {shape:?} needs {n} elements but {len} were given")));
        }
        let elems: Box<dyn SharedElems<T>> = Box::new(elems);
        let shared = Shared { dtype: T::DTYPE, len, elems: Box::new(elems), copy: OnceLock::new() };
        Ok(Tensor { shape, data: Storage::Shared(Arc::new(shared)) })
    }

    /// Whether the elements are read in place from a buffer kiln does not own.
    pub fn is_shared(&self) -> bool {
        matches!(self.data, Storage::Shared(_))
    }

    pub fn scalar<T: Storable>(v: T) -> Tensor {
        Tensor { shape: vec![], data: Storage::Owned(Arc::new(T::wrap(vec![v]))) }
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        Ok(Tensor { shape, data: Storage::Owned(Arc::new(Data::zeros(dtype, n))) })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn dtype(&self) -> DType {
        match &self.data {
            Storage::Owned(d) => d.dtype(),
            Storage::Shared(s) => s.dtype,
        }
    }
    pub fn len(&self) -> usize {
        match &self.data {
            Storage::Owned(d) => d.len(),
            Storage::Shared(s) => s.len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The elements as a typed `Vec`. A shared tensor copies its elements the first time
    /// (once per tensor and its clones): prefer [`Tensor::as_slice`] where it will do.
    pub fn data(&self) -> &Data {
        match &self.data {
            Storage::Owned(d) => d,
            Storage::Shared(s) => s.copy.get_or_init(|| {
                with_dtype!(s.dtype, T => <T as Storable>::wrap(s.slice::<T>().map(<[T]>::to_vec).unwrap_or_default()))
            }),
        }
    }

    /// The elements as `&[T]` (in place, also for a shared tensor); errors when `T` is not
    /// this tensor's type.
    pub fn as_slice<T: Storable>(&self) -> Result<&[T]> {
        let slice = match &self.data {
            Storage::Owned(d) => T::slice(d),
            Storage::Shared(s) => s.slice::<T>(),
        };
        slice.ok_or_else(|| {
            IrError::msg(format!("expected a {} tensor, found {}", T::DTYPE, self.dtype()))
        })
    }

    /// Same elements, new shape (no copy). Errors when the element counts differ.
    pub fn reshape(&self, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != self.len() {
            return Err(IrError::msg(format!(
                "cannot reshape {:?} ({} elements) to {:?}",
                self.shape,
                self.len(),
                shape
            )));
        }
        Ok(Tensor { shape, data: self.data.clone() })
    }

    /// Every element converted to f64 (exact for floats and for integers below 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_data!(self.data(), v, T => v.iter().map(|x| x.to_f64()).collect())
    }

    /// Every element as i64 (floats truncate toward zero; u64 above i64::MAX wraps).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        with_data!(self.data(), v, T => v.iter().map(|x| x.to_i64()).collect())
    }

    /// A tensor of `dtype` from f64 values (see [`Element::from_f64`]).
    pub fn from_f64(dtype: DType, shape: Vec<usize>, vals: &[f64]) -> Result<Tensor> {
        let data = with_dtype!(dtype, T => <T as Storable>::wrap(vals.iter().map(|&x| T::from_f64(x)).collect()));
        Tensor::from_data(shape, data)
    }

    /// A tensor of `dtype` from i64 values (see [`Element::from_i64`]).
    pub fn from_i64(dtype: DType, shape: Vec<usize>, vals: &[i64]) -> Result<Tensor> {
        let data = with_dtype!(dtype, T => <T as Storable>::wrap(vals.iter().map(|&x| T::from_i64(x)).collect()));
        Tensor::from_data(shape, data)
    }

    /// Element-type conversion with ONNX `Cast` semantics: float→int truncates toward
    /// zero, int→int wraps, anything→bool is `x != 0`, int→float rounds to nearest.
    pub fn cast(&self, to: DType) -> Tensor {
        if to == self.dtype() {
            return self.clone();
        }
        let data = with_data!(self.data(), v, S => {
            with_dtype!(to, D => {
                let out: Vec<D> = if S::DTYPE.is_float() {
                    if D::DTYPE == DType::F16 || D::DTYPE == DType::BF16 {
                        // `half`'s own f64 conversion can misround ties; see f16_from_f64.
                        v.iter().map(|x| D::from_f64(round_for(D::DTYPE, x.to_f64()))).collect()
                    } else if D::DTYPE.is_float() || D::DTYPE == DType::Bool {
                        v.iter().map(|x| D::from_f64(x.to_f64())).collect()
                    } else if D::DTYPE.is_signed() {
                        v.iter().map(|x| D::from_i64(float_to_i64(x.to_f64()))).collect()
                    } else {
                        v.iter().map(|x| D::from_u64(float_to_u64(x.to_f64()))).collect()
                    }
                } else if D::DTYPE == DType::F16 || D::DTYPE == DType::BF16 {
                    let wide: Vec<f64> = if S::DTYPE == DType::U64 {
                        v.iter().map(|x| x.to_u64() as f64).collect()
                    } else {
                        v.iter().map(|x| x.to_i64() as f64).collect()
                    };
                    wide.into_iter().map(|x| D::from_f64(round_for(D::DTYPE, x))).collect()
                } else if S::DTYPE == DType::U64 {
                    v.iter().map(|x| D::from_u64(x.to_u64())).collect()
                } else {
                    v.iter().map(|x| D::from_i64(x.to_i64())).collect()
                };
                <D as Storable>::wrap(out)
            })
        });
        Tensor { shape: self.shape.clone(), data: Storage::Owned(Arc::new(data)) }
    }

    /// Little-endian bytes of the elements (bool as one byte each).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size());
        with_data!(self.data(), v, T => T::to_le_bytes_vec(v, &mut out));
        out
    }

    /// A tensor from little-endian bytes; errors when the byte count does not match.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        let size = dtype.size();
        if n.checked_mul(size) != Some(bytes.len()) {
            return Err(IrError::msg(format!(
                "a {} tensor of shape {:?} needs {} bytes, found {}",
                dtype,
                shape,
                n.saturating_mul(size),
                bytes.len()
            )));
        }
        let data = with_dtype!(dtype, T => <T as Storable>::wrap(bytes.chunks_exact(size).map(<T as Element>::from_le_bytes).collect()));
        Tensor::from_data(shape, data)
    }
}

/// `x` already rounded to nearest-even f16 or bf16 (so that `half`'s conversion of the
/// result is exact); other dtypes pass through.
fn round_for(to: DType, x: f64) -> f64 {
    match to {
        DType::F16 => f16_from_f64(x).to_f64(),
        DType::BF16 => bf16_from_f64(x).to_f64(),
        _ => x,
    }
}

/// f64 to f32 rounding to odd: truncate, then set the last bit if anything was lost. A
/// second rounding from there to a format with at least two fewer significand bits (f16,
/// bf16) is then the correctly rounded result, which one step through `half`'s f64
/// conversion is not (it drops the low 32 bits before rounding, misplacing ties).
fn f32_round_to_odd(x: f64) -> f32 {
    let r = x as f32;
    if r.is_nan() || (r as f64) == x {
        return r;
    }
    // `as` rounded to nearest; step back toward zero if it rounded away from zero.
    let t = if (r as f64).abs() > x.abs() { f32::from_bits(r.to_bits() - 1) } else { r };
    f32::from_bits(t.to_bits() | 1)
}

/// f64 to f16, round to nearest even.
pub fn f16_from_f64(x: f64) -> f16 {
    f16::from_f32(f32_round_to_odd(x))
}

/// f64 to bf16, round to nearest even.
pub fn bf16_from_f64(x: f64) -> bf16 {
    bf16::from_f32(f32_round_to_odd(x))
}

/// Truncation toward zero, saturating; NaN is 0. (ONNX leaves out-of-range casts
/// undefined; this is what numpy does on x86 for in-range values.)
fn float_to_i64(x: f64) -> i64 {
    x as i64
}
fn float_to_u64(x: f64) -> u64 {
    if x < 0.0 {
        (x as i64) as u64
    } else {
        x as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_tensor_reads_the_callers_buffer_in_place() {
        let elems: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let address = elems.as_ptr();
        let t = Tensor::from_shared(vec![2, 3], elems).unwrap();
        assert!(t.is_shared());
        assert_eq!((t.dtype(), t.len(), t.shape()), (DType::F32, 6, &[2usize, 3][..]));
        assert_eq!(t.as_slice::<f32>().unwrap().as_ptr(), address);
        // Clones and reshapes share the same buffer too.
        assert_eq!(t.reshape(vec![3, 2]).unwrap().as_slice::<f32>().unwrap().as_ptr(), address);
        assert_eq!(t.clone().as_slice::<f32>().unwrap().as_ptr(), address);
    }

    #[test]
    fn a_shared_tensor_equals_and_prints_as_the_owned_one() {
        let owned = Tensor::new(vec![3], vec![1i64, -2, 3]).unwrap();
        let shared = Tensor::from_shared(vec![3], Arc::<[i64]>::from(vec![1i64, -2, 3])).unwrap();
        assert_eq!(shared, owned);
        assert_eq!(owned, shared);
        assert_ne!(shared, Tensor::new(vec![3], vec![1i64, -2, 4]).unwrap());
        assert_ne!(shared, Tensor::new(vec![1, 3], vec![1i64, -2, 3]).unwrap());
        assert_eq!(format!("{shared:?}"), format!("{owned:?}"));
        assert_eq!(shared.data(), owned.data());
        assert_eq!(shared.to_f64_vec(), vec![1.0, -2.0, 3.0]);
        assert_eq!(shared.cast(DType::F32), owned.cast(DType::F32));
        assert_eq!(shared.to_le_bytes(), owned.to_le_bytes());
    }

    #[test]
    fn a_shared_tensor_checks_its_count_and_type() {
        let e = Tensor::from_shared(vec![2, 2], vec![1u8, 2, 3]).unwrap_err();
        assert_eq!(e.to_string(), "shape [2, 2] needs 4 elements but 3 were given");
        let t = Tensor::from_shared(vec![3], vec![1u8, 2, 3].into_boxed_slice()).unwrap();
        assert_eq!(t.as_slice::<i8>().unwrap_err().to_string(), "expected a i8 tensor, found u8");
    }

    #[test]
    fn eval_runs_on_shared_inputs() {
        let x = Tensor::from_shared(vec![4], vec![1.0f32, -2.0, 3.0, -4.0]).unwrap();
        let owned = Tensor::new(vec![4], vec![1.0f32, -2.0, 3.0, -4.0]).unwrap();
        let op = crate::Op::Unary(crate::UnaryOp::Abs);
        let out = crate::eval::eval_op(&op, &[Some(x)], 1).unwrap();
        assert_eq!(out, crate::eval::eval_op(&op, &[Some(owned)], 1).unwrap());
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    }
}
