//! Tensor values in text: inline lists and `bin(offset, nbytes)` ranges, and the literals
//! they are made of. Nothing is allocated before the element count is checked against
//! what the text or the `.bin` holds.

use super::lex::{error_at, Pos, Tok};
use super::parse::Parser;
use crate::dtype::DType;
use crate::error::Result;
use crate::shape::TensorType;
use crate::tensor::{checked_numel, Data, Tensor};
use half::{bf16, f16};

impl Parser<'_, '_> {
    pub(super) fn tensor_data(&mut self, ty: TensorType, pos: Pos) -> Result<Tensor> {
        let Some(shape) = ty.shape.concrete() else {
            return Err(error_at(
                pos,
                format!(
                    "a constant's shape must be fully known, found {}",
                    super::print::type_text(&ty)
                ),
            ));
        };
        let numel = checked_numel(&shape).map_err(|e| error_at(pos, e.message))?;
        if self.is_word("bin") {
            return self.bin_data(ty.dtype, shape, numel, pos);
        }
        if !self.is_punct('[') {
            return Err(error_at(
                self.pos,
                format!(
                    "expected the values of this {} constant (`[…]` or `bin(offset, nbytes)`), found {}; \
                     text printed with elided weights is for reading and cannot be parsed back",
                    super::print::type_text(&ty),
                    self.tok.describe()
                ),
            ));
        }
        self.advance()?;
        fn ints<T: std::str::FromStr>(p: &mut Parser) -> Result<Vec<T>> {
            p.comma_list(']', |p| match p.advance()? {
                (Tok::Int(s), pos) => parse_int::<T>(s, pos),
                (t, pos) => Err(error_at(pos, format!("expected an integer, found {}", t.describe()))),
            })
        }
        let data = match ty.dtype {
            DType::F32 => Data::F32(self.comma_list(']', |p| p.advance().and_then(|(t, pos)| elem_f32(&t, pos)))?),
            DType::F64 => Data::F64(self.comma_list(']', |p| {
                p.advance().and_then(|(t, pos)| match t {
                    Tok::Int(s) | Tok::Float(s) => s.parse::<f64>().map_err(|_| error_at(pos, "not a number")),
                    Tok::Hex(h) => parse_hex::<u64>(h, pos).map(f64::from_bits),
                    t => Err(error_at(pos, format!("expected a number, found {}", t.describe()))),
                })
            })?),
            DType::F16 => Data::F16(self.comma_list(']', |p| {
                p.advance()
                    .and_then(|(t, pos)| elem_half(&t, pos, f16::from_f64, f16::from_bits))
            })?),
            DType::BF16 => Data::BF16(self.comma_list(']', |p| {
                p.advance()
                    .and_then(|(t, pos)| elem_half(&t, pos, bf16::from_f64, bf16::from_bits))
            })?),
            DType::I8 => Data::I8(ints(self)?),
            DType::I16 => Data::I16(ints(self)?),
            DType::I32 => Data::I32(ints(self)?),
            DType::I64 => Data::I64(ints(self)?),
            DType::U8 => Data::U8(ints(self)?),
            DType::U16 => Data::U16(ints(self)?),
            DType::U32 => Data::U32(ints(self)?),
            DType::U64 => Data::U64(ints(self)?),
            DType::Bool => Data::Bool(self.comma_list(']', |p| match p.advance()? {
                (Tok::Ident("true"), _) => Ok(true),
                (Tok::Ident("false"), _) => Ok(false),
                (t, pos) => Err(error_at(pos, format!("expected true or false, found {}", t.describe()))),
            })?),
        };
        if data.len() != numel {
            return Err(error_at(
                pos,
                format!(
                    "{} holds {} elements but {} are given",
                    super::print::type_text(&ty),
                    numel,
                    data.len()
                ),
            ));
        }
        Tensor::from_data(shape, data).map_err(|e| error_at(pos, e.message))
    }

    /// `bin(offset, nbytes)`: a range of the `.bin`, checked before anything is allocated.
    fn bin_data(&mut self, dtype: DType, shape: Vec<usize>, numel: usize, pos: Pos) -> Result<Tensor> {
        self.advance()?;
        self.punct('(')?;
        let offset = self.usize_arg()?;
        self.punct(',')?;
        let len = self.usize_arg()?;
        self.punct(')')?;
        let Some(bin) = self.bin else {
            return Err(error_at(pos, "the text refers to a .bin of weights but none was given"));
        };
        let ty = super::print::type_text(&TensorType::known(dtype, &shape));
        if numel.checked_mul(dtype.size()) != Some(len) {
            return Err(error_at(
                pos,
                format!(
                    "{ty} needs {} bytes, bin(…) gives {len}",
                    numel.saturating_mul(dtype.size())
                ),
            ));
        }
        let end = offset.checked_add(len).filter(|&e| e <= bin.len()).ok_or_else(|| {
            error_at(
                pos,
                format!(
                    "bin({offset}, {len}) lies outside the .bin, which holds {} bytes",
                    bin.len()
                ),
            )
        })?;
        self.bin_used = self.bin_used.saturating_add(len);
        if self.bin_used > bin.len() {
            return Err(error_at(
                pos,
                "the bin(…) references add up to more bytes than the .bin holds",
            ));
        }
        let bytes = bin.get(offset..end).unwrap_or(&[]);
        Tensor::from_le_bytes(dtype, shape, bytes).map_err(|e| error_at(pos, e.message))
    }

    fn usize_arg(&mut self) -> Result<usize> {
        match self.advance()? {
            (Tok::Int(s), pos) => parse_int::<usize>(s, pos),
            (t, pos) => Err(error_at(pos, format!("expected a byte count, found {}", t.describe()))),
        }
    }
}

pub(super) fn parse_int<T: std::str::FromStr>(s: &str, pos: Pos) -> Result<T> {
    s.parse::<T>()
        .map_err(|_| error_at(pos, format!("{s} is out of range for {}", std::any::type_name::<T>())))
}

pub(super) fn parse_hex<T: num_from_hex::FromHex>(h: &str, pos: Pos) -> Result<T> {
    T::from_hex(h).ok_or_else(|| error_at(pos, format!("0x{h} has more bits than the element type")))
}

pub(super) mod num_from_hex {
    pub trait FromHex: Sized {
        fn from_hex(h: &str) -> Option<Self>;
    }
    macro_rules! from_hex {
        ($($t:ty),*) => {$(
            impl FromHex for $t {
                fn from_hex(h: &str) -> Option<Self> {
                    <$t>::from_str_radix(h, 16).ok()
                }
            }
        )*};
    }
    from_hex!(u16, u32, u64);
}

pub(super) fn elem_f32(t: &Tok, pos: Pos) -> Result<f32> {
    match t {
        // f32 is read directly: going through f64 could round twice.
        Tok::Int(s) | Tok::Float(s) => s.parse::<f32>().map_err(|_| error_at(pos, "not a number")),
        Tok::Hex(h) => parse_hex::<u32>(h, pos).map(f32::from_bits),
        t => Err(error_at(pos, format!("expected a number, found {}", t.describe()))),
    }
}

/// f16 and bf16 decimals are read through f64, as the printer checks them.
fn elem_half<H>(t: &Tok, pos: Pos, from_f64: fn(f64) -> H, from_bits: fn(u16) -> H) -> Result<H> {
    match t {
        Tok::Int(s) | Tok::Float(s) => s
            .parse::<f64>()
            .map(from_f64)
            .map_err(|_| error_at(pos, "not a number")),
        Tok::Hex(h) => parse_hex::<u16>(h, pos).map(from_bits),
        t => Err(error_at(pos, format!("expected a number, found {}", t.describe()))),
    }
}
