//! `.npy` files in and out. A `.npy` file is untrusted input: the header's shape must agree
//! with the bytes that follow before anything is allocated.

use kiln_ir::{DType, Tensor};
use std::io::Cursor;
use std::path::Path;

/// Reads a `.npy` file (little- or big-endian, C order; every kiln dtype).
pub fn read(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn from_bytes(bytes: &[u8]) -> Result<Tensor, String> {
    check_header(bytes)?;
    check_declared_size(bytes)?;
    let mut cur = Cursor::new(bytes);
    let header = npyz::NpyHeader::from_reader(&mut cur).map_err(|e| format!("not a valid .npy file: {e}"))?;
    let data = &bytes[cur.position() as usize..];
    let npyz::DType::Plain(ts) = header.dtype() else {
        return Err(format!("structured .npy dtypes are not supported ({})", header.dtype().descr()));
    };
    let size = ts.size_field() as usize;
    let dtype = match (ts.type_char(), size) {
        (npyz::TypeChar::Float, 2) => DType::F16,
        (npyz::TypeChar::Float, 4) => DType::F32,
        (npyz::TypeChar::Float, 8) => DType::F64,
        (npyz::TypeChar::Int, 1) => DType::I8,
        (npyz::TypeChar::Int, 2) => DType::I16,
        (npyz::TypeChar::Int, 4) => DType::I32,
        (npyz::TypeChar::Int, 8) => DType::I64,
        (npyz::TypeChar::Uint, 1) => DType::U8,
        (npyz::TypeChar::Uint, 2) => DType::U16,
        (npyz::TypeChar::Uint, 4) => DType::U32,
        (npyz::TypeChar::Uint, 8) => DType::U64,
        (npyz::TypeChar::Bool, 1) => DType::Bool,
        _ => return Err(format!("unsupported .npy dtype {}", ts)),
    };
    if header.order() == npyz::Order::Fortran && header.shape().len() > 1 {
        return Err("Fortran-ordered .npy files are not supported; save with C order".into());
    }
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} is too large")))
        .collect::<Result<_, _>>()?;
    let n = kiln_ir::tensor::checked_numel(&shape).map_err(|e| e.message)?;
    let need = n.checked_mul(size).ok_or("the declared shape is too large")?;
    if data.len() < need {
        return Err(format!("shape {shape:?} needs {need} bytes of data, the file has {}", data.len()));
    }
    let raw = &data[..need];
    let swapped;
    let raw = if ts.endianness() == npyz::Endianness::Big && size > 1 {
        swapped = raw.chunks_exact(size).flat_map(|c| c.iter().rev().copied()).collect::<Vec<u8>>();
        &swapped[..]
    } else {
        raw
    };
    Tensor::from_le_bytes(dtype, shape, raw).map_err(|e| e.message)
}

/// npyz multiplies the header's dims unchecked (an overflow panics in debug builds), so a
/// shape whose element count does not fit a `usize` is refused here first.
fn check_declared_size(bytes: &[u8]) -> Result<(), String> {
    let header = match bytes.get(6) {
        Some(1) => bytes.get(8..10).map(|l| (10usize, u16::from_le_bytes([l[0], l[1]]) as usize)),
        Some(2 | 3) => bytes.get(8..12).map(|l| (12, u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)),
        _ => None,
    };
    let Some(text) = header.and_then(|(start, len)| bytes.get(start..start.checked_add(len)?)) else {
        return Ok(()); // npyz names what is wrong with the magic or the header
    };
    let text = String::from_utf8_lossy(text);
    let Some(dims) = text.split("'shape'").nth(1).and_then(|s| s.split_once('(')).and_then(|(_, s)| s.split_once(')')) else {
        return Ok(());
    };
    let mut n: u64 = 1;
    for d in dims.0.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let Ok(d) = d.parse::<u64>() else { return Ok(()) };
        n = n.checked_mul(d).filter(|&n| usize::try_from(n).is_ok()).ok_or_else(|| format!("the declared shape ({}) has too many elements", dims.0.trim()))?;
    }
    Ok(())
}

/// The deepest bracket nesting a header may have: a plain dtype's is 2 (`{'shape': (2, 3)}`),
/// a structured one's 4 (`{'descr': [('a', '<f4', (2,))]}`).
const MAX_HEADER_NESTING: usize = 4;

/// Checks what npyz would otherwise suffer from: it allocates the header length the preamble
/// declares (up to 4 GB in format 2) before reading it, and its header parser backtracks
/// exponentially in the bracket nesting (10 unclosed `{` took seconds). Anything else wrong
/// with the preamble is left to npyz to describe.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 8 {
        return Ok(());
    }
    let (len, start) = match bytes[6] {
        1 if bytes.len() >= 10 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Ok(()),
    };
    let have = bytes.len() - start;
    if len > have {
        return Err(format!("not a valid .npy file: the header is declared {len} bytes long, the file has {have} after the preamble"));
    }
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None);
    for &c in &bytes[start..start + len] {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'{' | b'[' | b'(') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, b'}' | b']' | b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_HEADER_NESTING {
        return Err(format!(
            "not a valid .npy file: the header nests brackets {deepest} deep (a .npy header nests at most {MAX_HEADER_NESTING})"
        ));
    }
    Ok(())
}

/// Writes a tensor as a little-endian, C-order `.npy` file (bf16 is written as f32, which
/// numpy lacks a type for).
pub fn write(path: &Path, t: &Tensor) -> Result<(), String> {
    std::fs::write(path, to_bytes(t)).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let t = if t.dtype() == DType::BF16 { t.cast(DType::F32) } else { t.clone() };
    let descr = match t.dtype() {
        DType::F16 => "<f2",
        DType::F32 | DType::BF16 => "<f4",
        DType::F64 => "<f8",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    };
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, ending in \n
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.len() * t.dtype().size());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}
