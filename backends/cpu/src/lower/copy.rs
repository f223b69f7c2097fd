//! One kernel for every op that only moves elements: a list of strided copies ("pieces"),
//! each reading a view of one argument and writing a view of another. Reshape and its kin
//! are one dense piece; Transpose permutes the source strides; Slice offsets and scales
//! them; Expand zeroes them where the input broadcasts; Concat and Split are one piece per
//! input or output. Copies are bit-exact, so every dtype works.

use super::clif::{self, Params};
use super::{LowerCtx, LowerError, Result};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Copies `dims` elements from argument `src` (element strides and offset) to argument
/// `dst`.
#[derive(Clone, Debug)]
pub struct Piece {
    pub src: usize,
    pub src_offset: i64,
    pub src_strides: Vec<i64>,
    pub dst: usize,
    pub dst_offset: i64,
    pub dst_strides: Vec<i64>,
    pub dims: Vec<usize>,
}

impl Piece {
    /// A dense copy of `n` elements.
    pub fn dense(src: usize, dst: usize, n: usize) -> Piece {
        Piece {
            src,
            src_offset: 0,
            src_strides: vec![1],
            dst,
            dst_offset: 0,
            dst_strides: vec![1],
            dims: vec![n],
        }
    }

    /// The same copy with size-1 dims dropped and neighbouring dims merged wherever both
    /// sides walk them as one, so that the inner loop is as long as the data allows.
    fn simplified(&self) -> Piece {
        let mut p = Piece {
            dims: Vec::new(),
            src_strides: Vec::new(),
            dst_strides: Vec::new(),
            ..self.clone()
        };
        for d in 0..self.dims.len() {
            let (n, s, t) = (self.dims[d], self.src_strides[d], self.dst_strides[d]);
            if n == 1 {
                continue;
            }
            if let (Some(&ls), Some(&lt)) = (p.src_strides.last(), p.dst_strides.last()) {
                if ls == s * n as i64 && lt == t * n as i64 {
                    *p.dims.last_mut().expect("non-empty") *= n;
                    *p.src_strides.last_mut().expect("non-empty") = s;
                    *p.dst_strides.last_mut().expect("non-empty") = t;
                    continue;
                }
            }
            p.dims.push(n);
            p.src_strides.push(s);
            p.dst_strides.push(t);
        }
        if p.dims.is_empty() || self.dims.contains(&0) {
            let n = if self.dims.contains(&0) { 0 } else { 1 };
            p.dims = vec![n];
            p.src_strides = vec![1];
            p.dst_strides = vec![1];
        }
        p
    }

    /// Rows of this piece: every dim but the inner one.
    fn rows(&self) -> u64 {
        self.dims[..self.dims.len() - 1].iter().product::<usize>() as u64
    }
}

/// Defines the kernel that performs `pieces` (elements of `elem` bytes); returns it and its
/// unit count (one unit per row of every piece, pieces one after the other).
pub fn define<M: Module>(
    ctx: &mut LowerCtx<M>,
    what: &str,
    elem: usize,
    pieces: &[Piece],
) -> Result<(FuncId, u64)> {
    let ty = match elem {
        1 => types::I8,
        2 => types::I16,
        4 => types::I32,
        8 => types::I64,
        _ => {
            return Err(LowerError::Unsupported(format!(
                "{what}: {elem}-byte elements"
            )))
        }
    };
    let pieces: Vec<Piece> = pieces.iter().map(Piece::simplified).collect();
    let units: u64 = pieces
        .iter()
        .map(|p| if p.dims.contains(&0) { 0 } else { p.rows() })
        .sum();
    let id = clif::define(ctx, what, |b, p| {
        let mut first = 0u64;
        for piece in &pieces {
            let rows = if piece.dims.contains(&0) {
                0
            } else {
                piece.rows()
            };
            if rows > 0 {
                copy_rows(b, p, piece, first, rows, elem as i64, ty)?;
            }
            first += rows;
        }
        Ok(())
    })?;
    Ok((id, units))
}

/// Rows `first..first+rows` of the unit range belong to `piece`: copy those of them that
/// fall in this call's `start..end`.
fn copy_rows(
    b: &mut FunctionBuilder,
    p: Params,
    piece: &Piece,
    first: u64,
    rows: u64,
    elem: i64,
    ty: cranelift_codegen::ir::Type,
) -> Result<()> {
    let lo_bound = b.ins().iconst(types::I64, first as i64);
    let hi_bound = b.ins().iconst(types::I64, (first + rows) as i64);
    let lo = b.ins().umax(p.start, lo_bound);
    let hi = b.ins().umin(p.end, hi_bound);
    let src = clif::arg(b, p, piece.src);
    let dst = clif::arg(b, p, piece.dst);
    let src = b.ins().iadd_imm_s(src, piece.src_offset * elem);
    let dst = b.ins().iadd_imm_s(dst, piece.dst_offset * elem);
    let outer = &piece.dims[..piece.dims.len() - 1];
    let inner = *piece.dims.last().expect("a piece has a dim") as i64;
    let src_outer: Vec<i64> = piece.src_strides[..outer.len()]
        .iter()
        .map(|s| s * elem)
        .collect();
    let dst_outer: Vec<i64> = piece.dst_strides[..outer.len()]
        .iter()
        .map(|s| s * elem)
        .collect();
    let (si, di) = (
        piece.src_strides[outer.len()],
        piece.dst_strides[outer.len()],
    );
    clif::for_range(b, lo, hi, &mut |b, u| {
        let r = b.ins().iadd_imm_s(u, -(first as i64));
        let so = clif::unravel_offset(b, r, outer, &src_outer);
        let doff = clif::unravel_offset(b, r, outer, &dst_outer);
        let s = b.ins().iadd(src, so);
        let d = b.ins().iadd(dst, doff);
        if si == 1 && di == 1 {
            copy_bytes(b, s, d, inner * elem)
        } else {
            clif::for_n(b, inner as u64, &mut |b, j| {
                let a = clif::index(b, s, j, si * elem);
                let v = b.ins().load(ty, clif::mem(), a, 0);
                let a = clif::index(b, d, j, di * elem);
                b.ins().store(clif::mem(), v, a, 0);
                Ok(())
            })
        }
    })
}

/// Copies `n` contiguous bytes: 16 at a time, then one at a time.
pub fn copy_bytes(b: &mut FunctionBuilder, src: Value, dst: Value, n: i64) -> Result<()> {
    let chunks = n / 16;
    if chunks > 0 {
        clif::for_n(b, chunks as u64, &mut |b, i| {
            let s = clif::index(b, src, i, 16);
            let v = b.ins().load(types::I8X16, clif::mem(), s, 0);
            let d = clif::index(b, dst, i, 16);
            b.ins().store(clif::mem(), v, d, 0);
            Ok(())
        })?;
    }
    for k in chunks * 16..n {
        let v = b.ins().load(types::I8, clif::mem(), src, k as i32);
        b.ins().store(clif::mem(), v, dst, k as i32);
    }
    Ok(())
}
