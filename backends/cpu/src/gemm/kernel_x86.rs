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
    assert!(
        (1..=MR).contains(&mr),
        "a microkernel has 1 to {MR} rows, not {mr}"
    );
    assemble(mr, B::Packed).expect("the microkernel's fixed instruction list always encodes")
}

/// The kernel for `mr` rows (1..=6) reading B's rows in place at `TileArgs::rs_b` and A
/// from a packed panel. Deterministic: the same bytes every call.
pub fn avx2_fma_rows_b(mr: usize) -> Vec<u8> {
    assert!(
        (1..=MR).contains(&mr),
        "a microkernel has 1 to {MR} rows, not {mr}"
    );
    assemble(mr, B::Rows).expect("the microkernel's fixed instruction list always encodes")
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

fn assemble(mr: usize, source: B) -> Result<Vec<u8>, IcedError> {
    let regs = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11,
    ];
    // Short tiles have too few accumulators to hide the FMA latency (4 cycles, 2 per
    // cycle), so they keep `sets` partial sums, one per k step of the unrolled loop,
    // added together after it.
    let sets = (MR / mr).min(4);
    let acc_of = |set: usize| &regs[set * 2 * mr..(set + 1) * 2 * mr];
    let acc = acc_of(0);
    let mut x = CodeAssembler::new(64)?;
    // Registers: rdi = k, rsi = A rows 0..3, r9 = A rows 3..6, r10 = rs_a bytes,
    // r11 = cs_a bytes, rdx = B, rcx = C, r8 = args, rax = scratch counter / flags.
    let args = r8;
    // Start fetching the C tile now, so that the accumulate and the stores at the end do
    // not wait on a miss (C rows are far apart and often out of L1 after the k loop).
    x.mov(r11, qword_ptr(args + field(offset_of!(TileArgs, ldc))))?;
    x.shl(r11, 2)?;
    x.mov(r9, rcx)?;
    for _ in 0..mr {
        x.prefetcht0(byte_ptr(r9))?;
        x.prefetcht0(byte_ptr(r9 + 63))?;
        x.add(r9, r11)?;
    }
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
    for &r in &regs[..sets * 2 * mr] {
        x.vxorps(r, r, r)?;
    }

    // One step of k into one accumulator set: two B vectors, mr broadcasts of A, 2·mr FMAs.
    // `u` is the step's place in the unrolled loop (packed B: its panel offset).
    let step = |x: &mut CodeAssembler, u: i32, set: usize| -> Result<(), IcedError> {
        let acc = acc_of(set);
        let rows = if source == B::Packed {
            x.vmovups(ymm12, ymmword_ptr(rdx + u * 64))?;
            x.vmovups(ymm13, ymmword_ptr(rdx + u * 64 + 32))?;
            [
                dword_ptr(rsi),
                dword_ptr(rsi + r10),
                dword_ptr(rsi + r10 * 2),
                dword_ptr(r9),
                dword_ptr(r9 + r10),
                dword_ptr(r9 + r10 * 2),
            ]
        } else {
            x.vmovups(ymm12, ymmword_ptr(rdx))?;
            x.vmovups(ymm13, ymmword_ptr(rdx + 32))?;
            // The same row of the panel after next: the rows are far apart (a stream
            // per k step, too many for the hardware prefetcher), and the first row tile
            // of a panel otherwise waits on each (1×1 32→16 on 112²: 0.112 → 0.104 ms
            // best; one panel ahead did the same, four worse).
            x.prefetcht0(byte_ptr(rdx + 128))?;
            x.add(rdx, r10)?;
            let at = |i: i32| dword_ptr(rsi + (u * MR as i32 + i) * 4);
            [at(0), at(1), at(2), at(3), at(4), at(5)]
        };
        for (i, row) in rows.into_iter().take(mr).enumerate() {
            let a = if i % 2 == 0 { ymm14 } else { ymm15 };
            x.vbroadcastss(a, row)?;
            x.vfmadd231ps(acc[2 * i], ymm12, a)?;
            x.vfmadd231ps(acc[2 * i + 1], ymm13, a)?;
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
        for (&total, &part) in acc.iter().zip(acc_of(set)) {
            x.vaddps(total, total, part)?;
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
        x.vaddps(acc[2 * i], acc[2 * i], ymmword_ptr(r9))?;
        x.vaddps(acc[2 * i + 1], acc[2 * i + 1], ymmword_ptr(r9 + 32))?;
        x.add(r9, r10)?;
    }
    x.set_label(&mut no_beta)?;

    let mut no_bias_col = x.create_label();
    x.test(rax, FLAG_BIAS_COL as i32)?;
    x.jz(no_bias_col)?;
    x.mov(r9, qword_ptr(args + field(offset_of!(TileArgs, bias))))?;
    x.vmovups(ymm12, ymmword_ptr(r9))?;
    x.vmovups(ymm13, ymmword_ptr(r9 + 32))?;
    for i in 0..mr {
        x.vaddps(acc[2 * i], acc[2 * i], ymm12)?;
        x.vaddps(acc[2 * i + 1], acc[2 * i + 1], ymm13)?;
    }
    x.set_label(&mut no_bias_col)?;

    let mut no_bias_row = x.create_label();
    x.test(rax, FLAG_BIAS_ROW as i32)?;
    x.jz(no_bias_row)?;
    x.mov(r9, qword_ptr(args + field(offset_of!(TileArgs, bias))))?;
    for i in 0..mr {
        x.vbroadcastss(ymm14, dword_ptr(r9 + (4 * i) as i32))?;
        x.vaddps(acc[2 * i], acc[2 * i], ymm14)?;
        x.vaddps(acc[2 * i + 1], acc[2 * i + 1], ymm14)?;
    }
    x.set_label(&mut no_bias_row)?;

    let mut no_residual = x.create_label();
    x.test(rax, FLAG_RESIDUAL as i32)?;
    x.jz(no_residual)?;
    x.mov(r9, qword_ptr(args + field(offset_of!(TileArgs, residual))))?;
    x.mov(r11, qword_ptr(args + field(offset_of!(TileArgs, ldr))))?;
    x.shl(r11, 2)?;
    for i in 0..mr {
        x.vaddps(acc[2 * i], acc[2 * i], ymmword_ptr(r9))?;
        x.vaddps(acc[2 * i + 1], acc[2 * i + 1], ymmword_ptr(r9 + 32))?;
        x.add(r9, r11)?;
    }
    x.set_label(&mut no_residual)?;

    // Clip with the accumulator as the second source: maxps/minps return the second source
    // when either is NaN, so a NaN result stays NaN as in the reference.
    let mut no_clip = x.create_label();
    x.test(rax, FLAG_CLIP as i32)?;
    x.jz(no_clip)?;
    x.vbroadcastss(ymm14, dword_ptr(args + field(offset_of!(TileArgs, lo))))?;
    x.vbroadcastss(ymm15, dword_ptr(args + field(offset_of!(TileArgs, hi))))?;
    for &r in acc {
        x.vmaxps(r, ymm14, r)?;
        x.vminps(r, ymm15, r)?;
    }
    x.set_label(&mut no_clip)?;

    for i in 0..mr {
        x.vmovups(ymmword_ptr(rcx), acc[2 * i])?;
        x.vmovups(ymmword_ptr(rcx + 32), acc[2 * i + 1])?;
        x.add(rcx, r10)?;
    }
    x.vzeroupper()?;
    x.ret()?;
    x.assemble(0)
}
