//! The blocking loops of [`crate::gemm::driver`] as CLIF, with every size known at compile
//! time: one kernel computes `outer` independent GEMMs `C = clip(A·B + bias + residual)`
//! (images × groups of a convolution, batches of a matmul), each cut into row blocks and
//! chunks of 16-column panels. A work unit is one (GEMM, row block, panel chunk).
//!
//! Inside a unit, outermost first: k blocks (as deep as the packed B's), panels of the
//! chunk (B's panel either read from the packed constant or packed on the fly into a
//! stack buffer), row tiles of 6 (the last one shorter, by the kernel for that many rows).
//! The last panel, when n is not a multiple of 16, accumulates in a stack tile over all k
//! blocks and is copied out with the column bias, residual and clip applied on the way,
//! so no kernel ever reads or writes past a row of C, the bias or the residual.

use super::clif::{for_const, for_range, mem, smin, stack_buffer, when, I64};
use super::pack;
use crate::gemm::{
    TileArgs, FLAG_BETA, FLAG_BIAS_COL, FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL, MR, NR,
};
use crate::kernels::im2col::Geometry;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, FuncRef, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};
use std::mem::offset_of;

/// Element offset of one of the `outer` GEMMs in an operand: `((o / div) % modulo) * stride`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outer {
    pub div: usize,
    /// 0: no wrap.
    pub modulo: usize,
    pub stride: usize,
}

impl Outer {
    /// Every GEMM at `o * stride`.
    pub fn each(stride: usize) -> Outer {
        Outer {
            div: 1,
            modulo: 0,
            stride,
        }
    }

    /// The same operand for every GEMM.
    pub fn shared() -> Outer {
        Outer {
            div: 1,
            modulo: 0,
            stride: 0,
        }
    }

    fn bytes(&self, b: &mut FunctionBuilder, o: Value) -> Value {
        if self.stride == 0 {
            return b.ins().iconst(I64, 0);
        }
        let mut q = o;
        if self.div > 1 {
            q = b.ins().udiv_imm_s(q, self.div as i64);
        }
        if self.modulo > 0 {
            q = b.ins().urem_imm_s(q, self.modulo as i64);
        }
        b.ins().imul_imm_s(q, (self.stride * 4) as i64)
    }
}

/// A matrix operand: argument `arg`, element (i, j) at `i*rs + j*cs` past the GEMM's origin.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mat {
    pub arg: usize,
    pub rs: usize,
    pub cs: usize,
    pub outer: Outer,
}

/// Where B's 16-column panels come from.
#[derive(Clone, Debug)]
pub(super) enum BSource {
    /// A constant packed at compile time in [`crate::gemm::PackedB`]'s layout (its block
    /// depth is the spec's `kc`).
    Packed { arg: usize },
    /// A run-time k×n matrix, packed panel by panel.
    Strided(Mat),
    /// A convolution's patches, gathered panel by panel from its NCHW input.
    Im2col {
        arg: usize,
        outer: Outer,
        geometry: Geometry,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BiasKind {
    /// One value per row of C (a convolution's output channel).
    Row,
    /// One value per column (a dense layer's output feature).
    Col,
}

/// One GEMM kernel's compile-time description.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Depth of a k block.
    pub kc: usize,
    /// Rows per row block: a multiple of [`MR`], or at least `m`.
    pub rb: usize,
    /// Panels per chunk.
    pub pc: usize,
    /// Independent GEMMs.
    pub outer: usize,
    pub a: Mat,
    pub b: BSource,
    /// `cs` is 1.
    pub c: Mat,
    pub bias: Option<(BiasKind, usize, Outer)>,
    /// `cs` is 1.
    pub residual: Option<Mat>,
    pub clip: Option<(f32, f32)>,
}

impl Spec {
    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn row_blocks(&self) -> usize {
        self.m.div_ceil(self.rb)
    }

    fn chunks(&self) -> usize {
        self.panels().div_ceil(self.pc)
    }

    pub fn units(&self) -> u64 {
        (self.outer * self.row_blocks() * self.chunks()) as u64
    }

    /// The epilogue flags for the last k block.
    fn ep_flags(&self) -> u64 {
        let mut f = 0;
        match self.bias {
            Some((BiasKind::Row, ..)) => f |= FLAG_BIAS_ROW,
            Some((BiasKind::Col, ..)) => f |= FLAG_BIAS_COL,
            None => {}
        }
        if self.residual.is_some() {
            f |= FLAG_RESIDUAL;
        }
        if self.clip.is_some() {
            f |= FLAG_CLIP;
        }
        f
    }
}

/// Row blocks and panel chunks for a GEMM whose B is packed on the fly: all rows in one
/// block where the edge tile fits the stack (each panel is packed once), and chunks small
/// enough that a unit's C columns stay in L2 and that there are a few units per thread.
pub(super) fn blocking_on_the_fly(m: usize, n: usize) -> (usize, usize) {
    const MAX_ROWS: usize = 1024;
    let blocks = m.div_ceil(MAX_ROWS).max(1);
    let rb = m.div_ceil(blocks).next_multiple_of(MR).max(MR);
    let panels = n.div_ceil(NR).max(1);
    let pc = (8192 / rb.max(1)).max(1).min(panels.div_ceil(16)).max(1);
    (rb, pc)
}

/// Row blocks and panel chunks for a GEMM with B packed at compile time: the JIT's MC rows
/// (A's block stays in L2 across the panels), panels cut so that there are about 16 units.
pub(super) fn blocking_packed(m: usize, n: usize) -> (usize, usize) {
    let rb = if m > crate::gemm::pack::MC {
        crate::gemm::pack::MC
    } else {
        m.max(1)
    };
    let blocks = m.div_ceil(rb).max(1);
    let panels = n.div_ceil(NR).max(1);
    let chunks = (16 / blocks).clamp(1, panels);
    (rb, panels.div_ceil(chunks))
}

/// The module's microkernels as callees of the function being built.
pub(super) fn kernel_refs<M: Module>(
    module: &mut M,
    b: &mut FunctionBuilder,
    ids: &[FuncId],
) -> Vec<FuncRef> {
    ids.iter()
        .map(|&id| module.declare_func_in_func(id, b.func))
        .collect()
}

/// Per-unit state fixed at emission.
struct Ctx<'s> {
    spec: &'s Spec,
    kernels: &'s [FuncRef],
}

/// Emits the computation of work unit `u` (an i64) of `spec`; `ptrs[i]` is argument i.
pub(super) fn emit_unit(
    b: &mut FunctionBuilder,
    spec: &Spec,
    kernels: &[FuncRef],
    ptrs: &[Value],
    u: Value,
) {
    let s = spec;
    let cx = Ctx { spec, kernels };
    let (panels, full) = (s.panels(), s.n / NR);
    let edge_cols = s.n % NR;
    let per_outer = (s.row_blocks() * s.chunks()) as i64;
    let o = b.ins().udiv_imm_s(u, per_outer);
    let rest = b.ins().urem_imm_s(u, per_outer);
    let rbi = b.ins().udiv_imm_s(rest, s.chunks() as i64);
    let ch = b.ins().urem_imm_s(rest, s.chunks() as i64);
    let i0 = b.ins().imul_imm_s(rbi, s.rb as i64);

    let base = |b: &mut FunctionBuilder, m: &Mat, rows: Value| {
        let off = m.outer.bytes(b, o);
        let p = b.ins().iadd(ptrs[m.arg], off);
        let r = b.ins().imul_imm_s(rows, (m.rs * 4) as i64);
        b.ins().iadd(p, r)
    };
    let a0 = base(b, &s.a, i0);
    let c0 = base(b, &s.c, i0);
    let r0 = s.residual.map(|r| base(b, &r, i0));
    let bias0 = s.bias.map(|(kind, arg, outer)| {
        let off = outer.bytes(b, o);
        let p = b.ins().iadd(ptrs[arg], off);
        if kind == BiasKind::Row {
            let r = b.ins().imul_imm_s(i0, 4);
            b.ins().iadd(p, r)
        } else {
            p
        }
    });
    let b0 = match &s.b {
        BSource::Packed { arg } => ptrs[*arg],
        BSource::Strided(m) => {
            let off = m.outer.bytes(b, o);
            b.ins().iadd(ptrs[m.arg], off)
        }
        BSource::Im2col { arg, outer, .. } => {
            let off = outer.bytes(b, o);
            b.ins().iadd(ptrs[*arg], off)
        }
    };

    let m_total = b.ins().iconst(I64, s.m as i64);
    let m_left = b.ins().isub(m_total, i0);
    let rb = b.ins().iconst(I64, s.rb as i64);
    let rows = smin(b, rb, m_left);
    let p0 = b.ins().imul_imm_s(ch, s.pc as i64);
    let p_end = b.ins().iadd_imm_s(p0, s.pc as i64);
    let panels_v = b.ins().iconst(I64, panels as i64);
    let p1 = smin(b, p_end, panels_v);
    let full_v = b.ins().iconst(I64, full as i64);
    let pf1 = smin(b, p1, full_v);
    let has_edge = if edge_cols > 0 {
        Some(b.ins().icmp_imm_s(IntCC::Equal, p1, panels as i64))
    } else {
        None
    };

    // Two TileArgs: C in place, and the edge tile (row stride 16).
    let tile_args = |b: &mut FunctionBuilder, ldc: usize| {
        let t = stack_buffer(b, std::mem::size_of::<TileArgs>());
        let put = |b: &mut FunctionBuilder, v: i64, at: usize| {
            let x = b.ins().iconst(I64, v);
            b.ins().store(mem(), x, t, at as i32);
        };
        put(b, s.a.rs as i64, offset_of!(TileArgs, rs_a));
        put(b, s.a.cs as i64, offset_of!(TileArgs, cs_a));
        put(b, ldc as i64, offset_of!(TileArgs, ldc));
        put(
            b,
            s.residual.map_or(0, |r| r.rs) as i64,
            offset_of!(TileArgs, ldr),
        );
        put(b, 0, offset_of!(TileArgs, bias));
        put(b, 0, offset_of!(TileArgs, residual));
        let (lo, hi) = s.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let lo = b.ins().f32const(lo);
        b.ins().store(mem(), lo, t, offset_of!(TileArgs, lo) as i32);
        let hi = b.ins().f32const(hi);
        b.ins().store(mem(), hi, t, offset_of!(TileArgs, hi) as i32);
        t
    };
    let args_c = tile_args(b, s.c.rs);
    let edge_rows = s.rb.min(s.m).next_multiple_of(MR);
    let edge = has_edge.map(|_| (tile_args(b, NR), stack_buffer(b, edge_rows * NR * 4)));
    let packed_panel = match s.b {
        BSource::Packed { .. } => None,
        _ => Some(stack_buffer(b, s.kc * NR * 4)),
    };

    let ep = s.ep_flags();
    for_const(b, 0, s.k as i64, s.kc as i64, |b, k0| {
        let k_total = b.ins().iconst(I64, s.k as i64);
        let k_left = b.ins().isub(k_total, k0);
        let kc_max = b.ins().iconst(I64, s.kc as i64);
        let kc = smin(b, kc_max, k_left);
        let first = b.ins().icmp_imm_s(IntCC::Equal, k0, 0);
        let k_end = b.ins().iadd(k0, kc);
        let last = b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, k_end, s.k as i64);
        let flags_for = |b: &mut FunctionBuilder, ep: u64| {
            let zero = b.ins().iconst(I64, 0);
            let beta = b.ins().iconst(I64, FLAG_BETA as i64);
            let acc = b.ins().select(first, zero, beta);
            let epv = b.ins().iconst(I64, ep as i64);
            let tail = b.ins().select(last, epv, zero);
            b.ins().bor(acc, tail)
        };
        let flags = flags_for(b, ep);
        b.ins()
            .store(mem(), flags, args_c, offset_of!(TileArgs, flags) as i32);
        let a_k = {
            let off = b.ins().imul_imm_s(k0, (s.a.cs * 4) as i64);
            b.ins().iadd(a0, off)
        };
        for_range(b, p0, pf1, 1, |b, p| {
            let panel = panel_address(b, &cx, b0, packed_panel, k0, kc, p, true);
            let col = b.ins().imul_imm_s(p, (NR * 4) as i64);
            let c = b.ins().iadd(c0, col);
            let bias = bias0.map(|bias| match s.bias {
                Some((BiasKind::Col, ..)) => b.ins().iadd(bias, col),
                _ => bias,
            });
            let res = r0.map(|r| b.ins().iadd(r, col));
            tiles(b, &cx, rows, a_k, panel, c, s.c.rs, args_c, bias, res, kc);
        });
        if let (Some(has_edge), Some((args_e, tile))) = (has_edge, edge) {
            when(b, has_edge, |b| {
                let flags = flags_for(b, ep & FLAG_BIAS_ROW);
                b.ins()
                    .store(mem(), flags, args_e, offset_of!(TileArgs, flags) as i32);
                let p = b.ins().iconst(I64, full as i64);
                let panel = panel_address(b, &cx, b0, packed_panel, k0, kc, p, false);
                let bias = bias0.filter(|_| ep & FLAG_BIAS_ROW != 0);
                tiles(b, &cx, rows, a_k, panel, tile, NR, args_e, bias, None, kc);
            });
        }
    });
    if let (Some(has_edge), Some((_, tile))) = (has_edge, edge) {
        when(b, has_edge, |b| copy_out(b, &cx, rows, tile, c0, bias0, r0));
    }
}

/// The address of B's panel `p` for the k block at `k0` of depth `kc`.
#[allow(clippy::too_many_arguments)]
fn panel_address(
    b: &mut FunctionBuilder,
    cx: &Ctx,
    b0: Value,
    buffer: Option<Value>,
    k0: Value,
    kc: Value,
    p: Value,
    full: bool,
) -> Value {
    let s = cx.spec;
    match (&s.b, buffer) {
        (BSource::Packed { .. }, _) | (_, None) => {
            // PackedB: block k0 starts at k0 * panels * 16; its panels are kc * 16 apart.
            let block = b.ins().imul_imm_s(k0, (s.panels() * NR * 4) as i64);
            let within = b.ins().imul(p, kc);
            let within = b.ins().imul_imm_s(within, (NR * 4) as i64);
            let off = b.ins().iadd(block, within);
            b.ins().iadd(b0, off)
        }
        (BSource::Strided(m), Some(buf)) => {
            let cols = if full { NR } else { s.n % NR };
            pack::strided(b, buf, b0, m.rs, m.cs, k0, kc, p, cols);
            buf
        }
        (BSource::Im2col { geometry, .. }, Some(buf)) => {
            let cols = if full { NR } else { s.n % NR };
            pack::im2col(b, buf, b0, geometry, k0, kc, p, cols);
            buf
        }
    }
}

/// The row tiles of one panel: full tiles of 6, then the short one when m is not a
/// multiple of 6 and this block holds the last rows.
#[allow(clippy::too_many_arguments)]
fn tiles(
    b: &mut FunctionBuilder,
    cx: &Ctx,
    rows: Value,
    a: Value,
    panel: Value,
    c: Value,
    ldc: usize,
    args: Value,
    bias: Option<Value>,
    residual: Option<Value>,
    kc: Value,
) {
    let s = cx.spec;
    let call = |b: &mut FunctionBuilder, i: Value, kernel: FuncRef| {
        let a_i = {
            let off = b.ins().imul_imm_s(i, (s.a.rs * 4) as i64);
            b.ins().iadd(a, off)
        };
        let c_i = {
            let off = b.ins().imul_imm_s(i, (ldc * 4) as i64);
            b.ins().iadd(c, off)
        };
        if let Some(bias) = bias {
            let at = match s.bias {
                Some((BiasKind::Row, ..)) => {
                    let off = b.ins().imul_imm_s(i, 4);
                    b.ins().iadd(bias, off)
                }
                _ => bias,
            };
            b.ins()
                .store(mem(), at, args, offset_of!(TileArgs, bias) as i32);
        }
        if let (Some(r), Some(rm)) = (residual, s.residual) {
            let off = b.ins().imul_imm_s(i, (rm.rs * 4) as i64);
            let at = b.ins().iadd(r, off);
            b.ins()
                .store(mem(), at, args, offset_of!(TileArgs, residual) as i32);
        }
        b.ins().call(kernel, &[kc, a_i, panel, c_i, args]);
    };
    let full_tiles = b.ins().udiv_imm_s(rows, MR as i64);
    let zero = b.ins().iconst(I64, 0);
    for_range(b, zero, full_tiles, 1, |b, t| {
        let i = b.ins().imul_imm_s(t, MR as i64);
        call(b, i, cx.kernels[MR - 1]);
    });
    let short = s.m % MR;
    if short != 0 {
        let i = b.ins().imul_imm_s(full_tiles, MR as i64);
        let left = b.ins().isub(rows, i);
        when(b, left, |b| call(b, i, cx.kernels[short - 1]));
    }
}

/// The edge tile's valid columns into C, with the column bias, residual and clip the
/// kernel was not asked to apply there.
fn copy_out(
    b: &mut FunctionBuilder,
    cx: &Ctx,
    rows: Value,
    tile: Value,
    c0: Value,
    bias0: Option<Value>,
    r0: Option<Value>,
) {
    let s = cx.spec;
    let col0 = (s.n / NR) * NR;
    let zero = b.ins().iconst(I64, 0);
    let clip = s
        .clip
        .map(|(lo, hi)| (b.ins().f32const(lo), b.ins().f32const(hi)));
    let bias_col = bias0.filter(|_| matches!(s.bias, Some((BiasKind::Col, ..))));
    for_range(b, zero, rows, 1, |b, i| {
        let t = {
            let off = b.ins().imul_imm_s(i, (NR * 4) as i64);
            b.ins().iadd(tile, off)
        };
        let c = {
            let off = b.ins().imul_imm_s(i, (s.c.rs * 4) as i64);
            b.ins().iadd(c0, off)
        };
        let r = r0.zip(s.residual).map(|(r, rm)| {
            let off = b.ins().imul_imm_s(i, (rm.rs * 4) as i64);
            b.ins().iadd(r, off)
        });
        for j in 0..s.n % NR {
            let mut v = b.ins().load(types::F32, mem(), t, (j * 4) as i32);
            if let Some(bias) = bias_col {
                let x = b
                    .ins()
                    .load(types::F32, mem(), bias, ((col0 + j) * 4) as i32);
                v = b.ins().fadd(v, x);
            }
            if let Some(r) = r {
                let x = b.ins().load(types::F32, mem(), r, ((col0 + j) * 4) as i32);
                v = b.ins().fadd(v, x);
            }
            if let Some((lo, hi)) = clip {
                v = clamp_scalar(b, v, lo, hi);
            }
            b.ins().store(mem(), v, c, ((col0 + j) * 4) as i32);
        }
    });
}

/// Clamp one f32 to [lo, hi]; NaN passes through, as in the microkernels.
pub(super) fn clamp_scalar(b: &mut FunctionBuilder, x: Value, lo: Value, hi: Value) -> Value {
    use cranelift_codegen::ir::condcodes::FloatCC;
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = b.ins().select(below, lo, x);
    let above = b.ins().fcmp(FloatCC::GreaterThan, x, hi);
    b.ins().select(above, hi, x)
}
