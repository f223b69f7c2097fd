//! The AVX2+FMA 6×16 microkernel, written as x86-64 machine code with iced-x86.
//!
//! Why machine code and not `std::arch`: Cranelift emits only 128-bit vectors, and the
//! ahead-of-time object must carry the kernel itself (no Rust function for it to call).
//! Bytes with no relocations can go into any Cranelift module (JIT or object) through
//! `define_function_bytes`, so the same kernel serves both.
//!
//! ABI (System V x86-64, see [`super::TileArgs`] for the fields):
//! `kernel(k: usize, a: *const f32, b: *const f32, c: *mut f32, args: *const TileArgs)`.
//! There is one kernel per row count `mr` in 1..=6 (the last rows of C, and matrix-vector
//! products at batch 1, use the short ones). Each computes the mr×16 tile `C = epilogue((beta ? C : 0) + A·B)` where A is read at
//! `a + i*rs_a + p*cs_a` (packed panels or plain row-major rows), and B is one packed panel:
//! `k` rows of 16 contiguous floats. It uses only caller-saved registers, no stack and no
//! relative addresses outside itself, so it is position independent.
//!
//! A second set ([`avx2_fma_rows_b`]) reads B in place instead of from a packed panel: row
//! p of the tile's 16 columns at `b + p*rs_b` (a 1×1 convolution's input rows, which then
//! need no packing), with A packed ([`super::PackedA`]'s panels: `rs_a = 1`, `cs_a = MR`,
//! fixed in the code so that the registers of A's strides carry `rs_b`).

use iced_x86::code_asm::*;

use super::{TileArgs, FLAG_BETA, FLAG_BIAS_COL, FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL};
use std::mem::offset_of;

/// Rows of the tile.
pub const MR: usize = 6;
/// Columns of the tile (two ymm registers).
pub const NR: usize = 16;

/// Assembles the AVX2+FMA kernel for `mr` rows (1..=6) of 16 columns.
/// Deterministic: the same bytes every call.
pub fn avx2_fma(mr: usize) -> Vec<u8> {
    checked(mr, B::Packed, Width::Ymm)
}

/// The same tile as [`avx2_fma`] with AVX-512F: one zmm register per row of 16 columns and
/// A's broadcast folded into the FMA (`{1to16}`), so a k step is 1 load and `mr` FMAs
/// instead of 2 loads, `mr` broadcasts and `2·mr` FMAs. Same ABI, same packed formats.
pub fn avx512_fma(mr: usize) -> Vec<u8> {
    checked(mr, B::Packed, Width::Zmm)
}

/// [`avx2_fma_rows_b`] with AVX-512F, as [`avx512_fma`] is to [`avx2_fma`].
pub fn avx512_fma_rows_b(mr: usize) -> Vec<u8> {
    checked(mr, B::Rows, Width::Zmm)
}

/// The kernel for `mr` rows (1..=6) reading B's rows in place at `TileArgs::rs_b` and A
/// from a packed panel. Deterministic: the same bytes every call.
pub fn avx2_fma_rows_b(mr: usize) -> Vec<u8> {
    checked(mr, B::Rows, Width::Ymm)
}

/// [`assemble`] for a row count the caller may have got wrong (a panic names it).
fn checked(mr: usize, source: B, width: Width) -> Vec<u8> {
    assert!(
        (1..=MR).contains(&mr),
        "a microkernel has 1 to {MR} rows, not {mr}"
    );
    assemble(mr, source, width).expect("the microkernel's fixed instruction list always encodes")
}

/// The vector registers a row of the tile lives in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    /// Two ymm registers (AVX2).
    Ymm,
    /// One zmm register (AVX-512F).
    Zmm,
}

/// Where the kernel reads B (and so A) from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum B {
    /// B a packed panel (64 bytes per k step), A at `rs_a`/`cs_a`.
    Packed,
    /// B rows at `rs_b`, A a packed panel (24 bytes per k step).
    Rows,
}

fn field(offset: usize) -> i32 {
    offset as i32
}

/// Vector register `i` at the kernel's width. The ymm and zmm forms are distinct types in
/// iced-x86, so each instruction the kernel uses has one helper that picks the form.
struct V {
    width: Width,
}

const YMM: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];
const ZMM: [AsmRegisterZmm; 16] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15,
];

impl V {
    /// Registers per row of 16 floats.
    fn per_row(&self) -> usize {
        match self.width {
            Width::Ymm => 2,
            Width::Zmm => 1,
        }
    }
    fn zero(&self, x: &mut CodeAssembler, r: usize) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => x.vxorps(YMM[r], YMM[r], YMM[r]),
            Width::Zmm => x.vxorps(ZMM[r], ZMM[r], ZMM[r]),
        }
    }
    fn load(&self, x: &mut CodeAssembler, r: usize, m: AsmMemoryOperand) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => x.vmovups(YMM[r], m),
            Width::Zmm => x.vmovups(ZMM[r], m),
        }
    }
    fn store(&self, x: &mut CodeAssembler, m: AsmMemoryOperand, r: usize) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => x.vmovups(m, YMM[r]),
            Width::Zmm => x.vmovups(m, ZMM[r]),
        }
    }
    fn broadcast(
        &self,
        x: &mut CodeAssembler,
        r: usize,
        m: AsmMemoryOperand,
    ) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => x.vbroadcastss(YMM[r], m),
            Width::Zmm => x.vbroadcastss(ZMM[r], m),
        }
    }
    fn add(&self, x: &mut CodeAssembler, d: usize, a: usize, b: usize) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => x.vaddps(YMM[d], YMM[a], YMM[b]),
            Width::Zmm => x.vaddps(ZMM[d], ZMM[a], ZMM[b]),
        }
    }
    fn add_mem(
        &self,
        x: &mut CodeAssembler,
        d: usize,
        m: AsmMemoryOperand,
    ) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => x.vaddps(YMM[d], YMM[d], m),
            Width::Zmm => x.vaddps(ZMM[d], ZMM[d], m),
        }
    }
    /// `d = max(lo, d)` then `d = min(hi, d)`, with the accumulator second so that NaN
    /// stays NaN (maxps/minps return the second source when either is NaN).
    fn clip(&self, x: &mut CodeAssembler, d: usize, lo: usize, hi: usize) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => {
                x.vmaxps(YMM[d], YMM[lo], YMM[d])?;
                x.vminps(YMM[d], YMM[hi], YMM[d])
            }
            Width::Zmm => {
                x.vmaxps(ZMM[d], ZMM[lo], ZMM[d])?;
                x.vminps(ZMM[d], ZMM[hi], ZMM[d])
            }
        }
    }
    /// Row `i`'s accumulators += B (registers `b`, `b + 1`) × A's element at `a`; `t` is
    /// a register the ymm form broadcasts A into (the zmm form broadcasts in the FMA).
    fn fma_row(
        &self,
        x: &mut CodeAssembler,
        acc: &[usize],
        b: usize,
        a: AsmMemoryOperand,
        t: usize,
    ) -> Result<(), IcedError> {
        match self.width {
            Width::Ymm => {
                x.vbroadcastss(YMM[t], a)?;
                x.vfmadd231ps(YMM[acc[0]], YMM[b], YMM[t])?;
                x.vfmadd231ps(YMM[acc[1]], YMM[b + 1], YMM[t])
            }
            Width::Zmm => x.vfmadd231ps(ZMM[acc[0]], ZMM[b], dword_bcst(a)),
        }
    }
}

/// r9 = the residual's tile, r11 = its row stride in bytes.
fn residual_rows(x: &mut CodeAssembler, args: AsmRegister64) -> Result<(), IcedError> {
    x.mov(r9, qword_ptr(args + field(offset_of!(TileArgs, residual))))?;
    x.mov(r11, qword_ptr(args + field(offset_of!(TileArgs, ldr))))?;
    x.shl(r11, 2)
}

fn assemble(mr: usize, source: B, width: Width) -> Result<Vec<u8>, IcedError> {
    let v = V { width };
    let per = v.per_row();
    // Registers 0..12 accumulate; 12 (and 13) hold B's 16 floats; 14 and 15 are scratch.
    const B0: usize = 12;
    // Short tiles have too few accumulators to hide the FMA latency (4 cycles, 2 per
    // cycle), so they keep `sets` partial sums, one per k step of the unrolled loop,
    // added together after it.
    let sets = (MR / mr).min(4);
    let acc_of = |set: usize| (set * per * mr..(set + 1) * per * mr).collect::<Vec<usize>>();
    let acc = acc_of(0);
    // Register j of row i's accumulators covers columns 16/per·j .. ; its byte offset:
    let col = |j: usize| (j * 64 / per) as i32;
    let mut x = CodeAssembler::new(64)?;
    // Registers: rdi = k, rsi = A rows 0..3, r9 = A rows 3..6, r10 = rs_a bytes,
    // r11 = cs_a bytes, rdx = B, rcx = C, r8 = args, rax = scratch counter / flags.
    let args = r8;
    // Start fetching the C tile now, so that the accumulate and the stores at the end do
    // not wait on a miss (C rows are far apart and often out of L1 after the k loop).
    // The tile's `mr` rows from r9, r11 bytes apart, into L1.
    let prefetch_rows = |x: &mut CodeAssembler| -> Result<(), IcedError> {
        for _ in 0..mr {
            x.prefetcht0(byte_ptr(r9))?;
            x.prefetcht0(byte_ptr(r9 + 63))?;
            x.add(r9, r11)?;
        }
        Ok(())
    };
    x.mov(r11, qword_ptr(args + field(offset_of!(TileArgs, ldc))))?;
    x.shl(r11, 2)?;
    x.mov(r9, rcx)?;
    prefetch_rows(&mut x)?;
    // The residual's tile too, when this call adds it: a skip connection was written a
    // few layers back and is mostly out of L1 and L2 by now, and the epilogue waited on
    // its rows (resnet50 on one thread, `perf`: 7.6% of the kernel's samples on the
    // instructions after the residual's loads).
    let mut no_residual_fetch = x.create_label();
    x.mov(rax, qword_ptr(args + field(offset_of!(TileArgs, flags))))?;
    x.test(rax, FLAG_RESIDUAL as i32)?;
    x.jz(no_residual_fetch)?;
    residual_rows(&mut x, args)?;
    prefetch_rows(&mut x)?;
    x.set_label(&mut no_residual_fetch)?;
    if source == B::Packed {
        x.mov(r10, qword_ptr(args + field(offset_of!(TileArgs, rs_a))))?;
        x.shl(r10, 2)?;
        x.mov(r11, qword_ptr(args + field(offset_of!(TileArgs, cs_a))))?;
        x.shl(r11, 2)?;
        x.lea(r9, qword_ptr(rsi + r10 * 2))?;
        x.add(r9, r10)?;
    } else {
        // r10 = rs_b bytes; A's rows are the panel's consecutive floats.
        x.mov(r10, qword_ptr(args + field(offset_of!(TileArgs, rs_b))))?;
        x.shl(r10, 2)?;
    }
    for r in 0..sets * per * mr {
        v.zero(&mut x, r)?;
    }

    // One step of k into one accumulator set: B's 16 floats, then per row A's element
    // times B. `u` is the step's place in the unrolled loop (packed B: its panel offset).
    let step = |x: &mut CodeAssembler, u: i32, set: usize| -> Result<(), IcedError> {
        let acc = acc_of(set);
        let rows = if source == B::Packed {
            for j in 0..per {
                v.load(x, B0 + j, ptr(rdx + u * 64 + col(j)))?;
            }
            [
                ptr(rsi),
                ptr(rsi + r10),
                ptr(rsi + r10 * 2),
                ptr(r9),
                ptr(r9 + r10),
                ptr(r9 + r10 * 2),
            ]
        } else {
            for j in 0..per {
                v.load(x, B0 + j, ptr(rdx + col(j)))?;
            }
            // The same row of the panel after next: the rows are far apart (a stream
            // per k step, too many for the hardware prefetcher), and the first row tile
            // of a panel otherwise waits on each (1×1 32→16 on 112²: 0.112 → 0.104 ms
            // best; one panel ahead did the same, four worse).
            x.prefetcht0(byte_ptr(rdx + 128))?;
            x.add(rdx, r10)?;
            let at = |i: i32| ptr(rsi + (u * MR as i32 + i) * 4);
            [at(0), at(1), at(2), at(3), at(4), at(5)]
        };
        for (i, row) in rows.into_iter().take(mr).enumerate() {
            v.fma_row(x, &acc[per * i..per * (i + 1)], B0, row, 14 + i % 2)?;
        }
        if source == B::Packed {
            x.add(rsi, r11)?;
            x.add(r9, r11)?;
        }
        Ok(())
    };

    let mut tail = x.create_label();
    let mut epilogue = x.create_label();
    x.mov(rax, rdi)?;
    x.shr(rax, 2)?;
    x.jz(tail)?;
    let mut loop4 = x.create_label();
    x.set_label(&mut loop4)?;
    for u in 0..4usize {
        step(&mut x, u as i32, u % sets)?;
    }
    if source == B::Packed {
        x.add(rdx, 256)?;
    } else {
        x.add(rsi, (4 * MR * 4) as i32)?;
    }
    x.dec(rax)?;
    x.jnz(loop4)?;
    x.set_label(&mut tail)?;
    x.and(rdi, 3)?;
    x.jz(epilogue)?;
    let mut loop1 = x.create_label();
    x.set_label(&mut loop1)?;
    step(&mut x, 0, 0)?;
    if source == B::Packed {
        x.add(rdx, 64)?;
    } else {
        x.add(rsi, (MR * 4) as i32)?;
    }
    x.dec(rdi)?;
    x.jnz(loop1)?;

    // Epilogue, in the order the fused ops need: accumulate, bias, residual, clip, store.
    x.set_label(&mut epilogue)?;
    for set in 1..sets {
        for (&total, &part) in acc.iter().zip(&acc_of(set)) {
            v.add(&mut x, total, total, part)?;
        }
    }
    x.mov(r10, qword_ptr(args + field(offset_of!(TileArgs, ldc))))?;
    x.shl(r10, 2)?;
    x.mov(rax, qword_ptr(args + field(offset_of!(TileArgs, flags))))?;

    let mut no_beta = x.create_label();
    x.test(rax, FLAG_BETA as i32)?;
    x.jz(no_beta)?;
    x.mov(r9, rcx)?;
    for i in 0..mr {
        for j in 0..per {
            v.add_mem(&mut x, acc[per * i + j], ptr(r9 + col(j)))?;
        }
        x.add(r9, r10)?;
    }
    x.set_label(&mut no_beta)?;

    let mut no_bias_col = x.create_label();
    x.test(rax, FLAG_BIAS_COL as i32)?;
    x.jz(no_bias_col)?;
    x.mov(r9, qword_ptr(args + field(offset_of!(TileArgs, bias))))?;
    for j in 0..per {
        v.load(&mut x, B0 + j, ptr(r9 + col(j)))?;
    }
    for i in 0..mr {
        for j in 0..per {
            v.add(&mut x, acc[per * i + j], acc[per * i + j], B0 + j)?;
        }
    }
    x.set_label(&mut no_bias_col)?;

    let mut no_bias_row = x.create_label();
    x.test(rax, FLAG_BIAS_ROW as i32)?;
    x.jz(no_bias_row)?;
    x.mov(r9, qword_ptr(args + field(offset_of!(TileArgs, bias))))?;
    for i in 0..mr {
        v.broadcast(&mut x, 14, ptr(r9 + (4 * i) as i32))?;
        for j in 0..per {
            v.add(&mut x, acc[per * i + j], acc[per * i + j], 14)?;
        }
    }
    x.set_label(&mut no_bias_row)?;

    let mut no_residual = x.create_label();
    x.test(rax, FLAG_RESIDUAL as i32)?;
    x.jz(no_residual)?;
    residual_rows(&mut x, args)?;
    for i in 0..mr {
        for j in 0..per {
            v.add_mem(&mut x, acc[per * i + j], ptr(r9 + col(j)))?;
        }
        x.add(r9, r11)?;
    }
    x.set_label(&mut no_residual)?;

    let mut no_clip = x.create_label();
    x.test(rax, FLAG_CLIP as i32)?;
    x.jz(no_clip)?;
    v.broadcast(&mut x, 14, ptr(args + field(offset_of!(TileArgs, lo))))?;
    v.broadcast(&mut x, 15, ptr(args + field(offset_of!(TileArgs, hi))))?;
    for &r in &acc {
        v.clip(&mut x, r, 14, 15)?;
    }
    x.set_label(&mut no_clip)?;

    for i in 0..mr {
        for j in 0..per {
            v.store(&mut x, ptr(rcx + col(j)), acc[per * i + j])?;
        }
        x.add(rcx, r10)?;
    }
    x.vzeroupper()?;
    x.ret()?;
    x.assemble(0)
}
