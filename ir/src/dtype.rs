//! Element types and the `Element` trait that ties each one to its Rust type.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// The name used in the text form (`f32`, `i64`, `bool`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.name() == s)
    }

    /// Bytes per element in memory and in the saved form.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    pub fn is_int(self) -> bool {
        !self.is_float() && self != DType::Bool
    }

    pub fn is_signed(self) -> bool {
        matches!(
            self,
            DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::F32 | DType::F16 | DType::BF16 | DType::F64
        )
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be a tensor element. Conversions go through f64 (exact for every
/// float type and for integers up to 2^53) or through i64/u64 for exact integer work.
pub trait Element: Copy + Send + Sync + PartialEq + PartialOrd + fmt::Debug + Default + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    /// Saturating for integers (NaN becomes 0), rounding to nearest for floats.
    fn from_f64(v: f64) -> Self;
    /// Exact for integers and bool; truncation toward zero for floats.
    fn to_i64(self) -> i64;
    /// Wrapping for integers (two's complement), as C and ONNX Cast do.
    fn from_i64(v: i64) -> Self;
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
    fn to_le_bytes_vec(data: &[Self], out: &mut Vec<u8>);
    fn from_le_bytes(b: &[u8]) -> Self;
}

macro_rules! int_element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn to_u64(self) -> u64 {
                self as u64
            }
            fn from_u64(v: u64) -> Self {
                v as $t
            }
            fn to_le_bytes_vec(data: &[Self], out: &mut Vec<u8>) {
                for x in data {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            fn from_le_bytes(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    };
}
int_element!(i8, I8);
int_element!(i16, I16);
int_element!(i32, I32);
int_element!(i64, I64);
int_element!(u8, U8);
int_element!(u16, U16);
int_element!(u32, U32);
int_element!(u64, U64);

macro_rules! float_element {
    ($t:ty, $d:ident, $to:expr, $from:expr, $n:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                ($to)(self)
            }
            fn from_f64(v: f64) -> Self {
                ($from)(v)
            }
            fn to_i64(self) -> i64 {
                ($to)(self) as i64
            }
            fn from_i64(v: i64) -> Self {
                ($from)(v as f64)
            }
            fn to_u64(self) -> u64 {
                ($to)(self) as u64
            }
            fn from_u64(v: u64) -> Self {
                ($from)(v as f64)
            }
            fn to_le_bytes_vec(data: &[Self], out: &mut Vec<u8>) {
                for x in data {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            fn from_le_bytes(b: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    };
}
float_element!(f32, F32, |x: f32| x as f64, |v: f64| v as f32, 4);
float_element!(f64, F64, |x: f64| x, |v: f64| v, 8);
// Through `tensor::*_from_f64`: `half`'s own f64 conversions misround exact ties.
float_element!(f16, F16, |x: f16| x.to_f64(), crate::tensor::f16_from_f64, 2);
float_element!(bf16, BF16, |x: bf16| x.to_f64(), crate::tensor::bf16_from_f64, 2);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn to_u64(self) -> u64 {
        self as u64
    }
    fn from_u64(v: u64) -> Self {
        v != 0
    }
    fn to_le_bytes_vec(data: &[Self], out: &mut Vec<u8>) {
        out.extend(data.iter().map(|&b| b as u8));
    }
    fn from_le_bytes(b: &[u8]) -> Self {
        b[0] != 0
    }
}
