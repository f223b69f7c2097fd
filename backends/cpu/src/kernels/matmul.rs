//! MatMul (numpy batching and broadcasting) and Gemm on the packed GEMM. A constant 2-D B
//! (the weights of a dense layer) is packed once, at compile time, with Gemm's transB and
//! alpha applied; a run-time B is packed per call. The epilogue (bias per column, residual,
//! clip) is the GEMM's; Gemm's C folds into the bias when it is a constant row, and is
//! otherwise written into the output first and accumulated onto.

use super::columns::Columns;
use super::epilogue::Epilogue;
use super::gelu::{self, Gelu};
use super::movement::Movement;
use super::rows::Out;
use crate::device::Ctx;
use crate::gemm::{gemm_with, Bias, Epilogue as GemmEpilogue, PackedB};
use crate::program::Arg;
use kiln_ir::{DType, Graph, IrError, NodeId, Op, Result, Tensor, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Below this many multiply-adds a batch of products runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

#[derive(Clone, Copy)]
struct GemmAttrs {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

pub(crate) struct MatMul {
    /// `None` for MatMul.
    gemm: Option<GemmAttrs>,
    a: usize,
    /// `None` when B is a constant of a fused body (then `packed` holds it).
    b: Option<usize>,
    /// Gemm's C when it is not folded into the bias.
    c: Option<usize>,
    /// The constant B (k×n after transB), packed.
    packed: Option<Arc<PackedB>>,
    /// Bias per output column: the fused constant adds (and Gemm's constant C row).
    bias: Option<Vec<f32>>,
    residual: Option<usize>,
    clip: Option<(f32, f32)>,
    /// A GELU after the epilogue, applied to each chunk of rows as the GEMM finishes it.
    gelu: Option<Gelu>,
    /// The shape of the result when reshapes follow the product (a fused body's output):
    /// the data is the product's, in the same order.
    out_shape: Option<Vec<usize>>,
    /// Transposes and reshapes from the step input to A (a fused body's head split).
    a_moves: Option<Movement>,
    /// A constant factor of the product, applied to a run-time B as it is packed.
    scale: Option<f32>,
    /// The constant B cut into column slices (then `packed` is `None`): see `columns`.
    columns: Option<Arc<Columns>>,
}

fn input_index(arg: Option<&Arg>) -> Option<usize> {
    match arg {
        Some(Arg::Input(i)) => Some(*i),
        _ => None,
    }
}

fn err(e: impl ToString) -> IrError {
    IrError::msg(e.to_string())
}

impl MatMul {
    pub fn new(
        graph: &Graph,
        n: NodeId,
        args: &[Arg],
        known: &HashMap<Value, Tensor>,
        epi: Epilogue,
    ) -> Option<MatMul> {
        let node = graph.node(n);
        if node.outputs.first()?.dtype != DType::F32 {
            return None;
        }
        let gemm = match node.op {
            Op::MatMul => None,
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => Some(GemmAttrs {
                alpha,
                beta,
                trans_a,
                trans_b,
            }),
            _ => return None,
        };
        let ins = graph.inputs_of(n);
        let b_const = ins
            .get(1)
            .copied()
            .flatten()
            .and_then(|v| known.get(&v))
            .filter(|t| t.dtype() == DType::F32 && t.rank() == 2);
        let packed = match b_const {
            None => None,
            Some(b) => {
                let (alpha, trans_b) = gemm.map_or((1.0, false), |g| (g.alpha, g.trans_b));
                let bv = b.as_slice::<f32>().ok()?;
                let scaled: Vec<f32>;
                let bv = if alpha != 1.0 {
                    scaled = bv.iter().map(|x| x * alpha).collect();
                    &scaled[..]
                } else {
                    bv
                };
                let (r, c) = (b.shape()[0], b.shape()[1]);
                let p = if trans_b {
                    PackedB::from_transposed(c, r, bv, c)
                } else {
                    PackedB::new(r, c, bv, c)
                };
                Some(Arc::new(p.ok()?))
            }
        };
        let mut bias = epi.bias;
        let mut c = None;
        if let Some(g) = gemm {
            match args.get(2) {
                None | Some(Arg::Absent) => {}
                Some(arg) => {
                    let c_val = ins.get(2).copied().flatten();
                    let n_cols = packed.as_ref().map(|p| p.n());
                    let row = c_val.and_then(|v| known.get(&v)).filter(|t| {
                        t.dtype() == DType::F32
                            && t.rank() <= 2
                            && t.shape().iter().rev().skip(1).all(|&d| d == 1)
                            && n_cols.is_some_and(|n| t.len() == n || t.len() == 1)
                    });
                    match (row, n_cols) {
                        (Some(t), Some(nc)) => {
                            let v = t.as_slice::<f32>().ok()?;
                            let b = bias.get_or_insert_with(|| vec![0.0; nc]);
                            if b.len() != nc {
                                return None;
                            }
                            for (j, x) in b.iter_mut().enumerate() {
                                *x += g.beta * if v.len() == 1 { v[0] } else { v[j] };
                            }
                        }
                        _ => c = Some(input_index(Some(arg))?),
                    }
                }
            }
        }
        Some(MatMul {
            gemm,
            a: input_index(args.first())?,
            b: match input_index(args.get(1)) {
                None if packed.is_none() => return None,
                b => b,
            },
            c,
            packed,
            bias,
            residual: epi.residual,
            clip: epi.clip,
            gelu: None,
            out_shape: None,
            a_moves: None,
            scale: None,
            columns: None,
        })
    }

    /// What surrounds the product in a fused body (see `fused_matmul`): the moves that
    /// make A from the step input, a constant scale of the product (applied to a run-time
    /// B as it is packed; the caller scaled a constant B before it was packed), the GELU,
    /// the output shape. `None` for a scale on Gemm.
    pub fn set_tail(
        &mut self,
        gelu: Option<Gelu>,
        out_shape: Vec<usize>,
        a_moves: Option<Movement>,
        scale: Option<f32>,
    ) -> Option<()> {
        if scale.is_some() && self.gemm.is_some() {
            return None;
        }
        self.gelu = gelu;
        self.out_shape = Some(out_shape);
        self.a_moves = a_moves;
        self.scale = scale;
        Some(())
    }

    /// Splits the product by columns over the threads (see `columns`): `b` is the
    /// constant B (k×n, already scaled), which MatMul packed whole. `None` for Gemm or a
    /// `b` that is not the packed one.
    pub fn cut_columns(&mut self, b: &Tensor) -> Option<()> {
        let packed = self.packed.as_ref()?;
        if self.gemm.is_some() || b.rank() != 2 || b.shape() != [packed.k(), packed.n()] {
            return None;
        }
        let cols = Columns::new(packed.k(), packed.n(), b.as_slice::<f32>().ok()?)?;
        self.columns = Some(Arc::new(cols));
        self.packed = None;
        Some(())
    }

    /// The result's shape: the product's (`shape`), or the fused body's output shape when
    /// it holds as many elements.
    fn final_shape(&self, shape: Vec<usize>) -> Option<Vec<usize>> {
        match &self.out_shape {
            None => Some(shape),
            Some(s) => {
                (s.iter().product::<usize>() == shape.iter().product::<usize>()).then(|| s.clone())
            }
        }
    }

    /// `gemm_with` over all rows, with the GELU (if any) applied per chunk of rows.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        ctx: &Ctx,
        m: usize,
        a: &[f32],
        k: usize,
        b: &PackedB,
        c: &mut [f32],
        accumulate: bool,
        epi: &GemmEpilogue,
    ) -> Result<()> {
        let n = b.n();
        match &self.gelu {
            None => gemm_with(&ctx.gemm(), m, a, k, b, c, n, accumulate, epi).map_err(err),
            Some(g) => gelu::gemm(ctx, g, m, a, k, b, c, accumulate, epi),
        }
    }

    fn epilogue<'a>(&'a self, residual: Option<(&'a [f32], usize)>) -> GemmEpilogue<'a> {
        GemmEpilogue {
            bias: self.bias.as_deref().map(Bias::PerCol),
            residual,
            clip: self.clip,
        }
    }

    fn residual<'a>(
        &self,
        args: &'a [Option<Tensor>],
        shape: &[usize],
    ) -> Option<Option<&'a [f32]>> {
        match self.residual {
            None => Some(None),
            Some(i) => {
                let r = args.get(i)?.as_ref()?;
                // Through a fused body's reshapes the residual has the add's shape: the
                // same elements in the same order.
                let fits = match self.out_shape {
                    None => r.shape() == shape,
                    Some(_) => r.len() == shape.iter().product::<usize>(),
                };
                fits.then_some(())?;
                Some(Some(r.as_slice::<f32>().ok()?))
            }
        }
    }

    /// The output, or `None` when the step should replay its chain through `ir::eval`.
    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        match self.gemm {
            None => self.matmul(ctx, args),
            Some(g) => self.gemm_op(ctx, args, g),
        }
    }

    fn matmul(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let a = args.get(self.a)?.as_ref()?;
        let moved;
        let a = match &self.a_moves {
            None => a,
            Some(m) => match m.run(ctx, std::slice::from_ref(args.get(self.a)?))? {
                Ok(t) => {
                    moved = t;
                    &moved
                }
                Err(e) => return Some(Err(e)),
            },
        };
        let av = a.as_slice::<f32>().ok()?;
        if a.rank() == 0 {
            return None;
        }
        let k = *a.shape().last()?;
        if let Some(cols) = &self.columns {
            if cols.k() != k || self.bias.as_ref().is_some_and(|b| b.len() != cols.n()) {
                return None;
            }
            let rows = av.len() / k;
            let mut shape = a.shape()[..a.rank() - 1].to_vec();
            shape.push(cols.n());
            let residual = self.residual(args, &shape)?;
            let shape = self.final_shape(shape)?;
            let out = cols.run(
                ctx,
                rows,
                av,
                self.bias.as_deref(),
                residual,
                self.clip,
                self.gelu.as_ref(),
            );
            return Some(out.and_then(|v| Tensor::new(shape, v)));
        }
        if let Some(pb) = &self.packed {
            // One GEMM over all rows of A: the weights are shared by every batch.
            if pb.k() != k || self.bias.as_ref().is_some_and(|b| b.len() != pb.n()) {
                return None;
            }
            let rows = if k == 0 {
                a.shape()[..a.rank() - 1].iter().product()
            } else {
                av.len() / k
            };
            let mut shape = a.shape()[..a.rank() - 1].to_vec();
            shape.push(pb.n());
            let residual = self.residual(args, &shape)?;
            let shape = self.final_shape(shape)?;
            let mut out = vec![0.0f32; rows.checked_mul(pb.n())?];
            let epi = self.epilogue(residual.map(|r| (r, pb.n())));
            if let Err(e) = self.product(ctx, rows, av, k, pb, &mut out, false, &epi) {
                return Some(Err(e));
            }
            return Some(Tensor::new(shape, out));
        }
        let b = args.get(self.b?)?.as_ref()?;
        let bv = b.as_slice::<f32>().ok()?;
        if b.rank() == 0 {
            return None;
        }
        // numpy: a 1-D A is a row, a 1-D B a column, each dropped from the result.
        let (a_batch, m) = if a.rank() == 1 {
            (&[][..], 1)
        } else {
            (&a.shape()[..a.rank() - 2], a.shape()[a.rank() - 2])
        };
        let (b_batch, kb, n) = match b.rank() {
            1 => (&[][..], b.shape()[0], 1),
            r => (&b.shape()[..r - 2], b.shape()[r - 2], b.shape()[r - 1]),
        };
        if kb != k || self.bias.as_ref().is_some_and(|v| v.len() != n) {
            return None;
        }
        let batch = kiln_ir::ops::util::broadcast_shapes(a_batch, b_batch).ok()?;
        let mut shape = batch.clone();
        if a.rank() > 1 {
            shape.push(m);
        }
        if b.rank() > 1 {
            shape.push(n);
        }
        let residual = self.residual(args, &shape)?;
        let shape = self.final_shape(shape)?;
        let count: usize = batch.iter().product();
        let mut out = vec![0.0f32; count.checked_mul(m)?.checked_mul(n)?];
        let a_map = kiln_ir::ops::util::broadcast_index_map(a_batch, &batch);
        let b_map = kiln_ir::ops::util::broadcast_index_map(b_batch, &batch);
        let pack = |bi: usize| -> Result<PackedB> {
            let block = &bv[bi * k * n..(bi + 1) * k * n];
            let scaled: Vec<f32>;
            let block = match self.scale {
                None => block,
                Some(s) => {
                    scaled = block.iter().map(|x| x * s).collect();
                    &scaled
                }
            };
            PackedB::new(k, n, block, n).map_err(err)
        };
        let index = |i: usize| {
            (
                a_map.get(i).copied().unwrap_or(0),
                b_map.get(i).copied().unwrap_or(0),
            )
        };
        let threads = ctx.pool.map_or(1, |p| p.threads());
        let macs = count.saturating_mul(m).saturating_mul(n).saturating_mul(k);
        // Attention's heads (4 × 128×64×128): whole items per thread, each B packed by the
        // thread that uses it, instead of each item's GEMM split over the pool (one
        // hand-off per head). Only where B is not broadcast: a shared B is packed once.
        if threads > 1 && count >= threads && b_batch == &batch[..] && macs >= PARALLEL_MIN_MACS {
            let alone = Ctx {
                kernel: ctx.kernel,
                pool: None,
            };
            let base = Out(out.as_mut_ptr());
            let next = AtomicUsize::new(0);
            let failed = Mutex::new(None);
            let body = |_thread: usize| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let (ai, bi) = index(i);
                // SAFETY: item i's rows lie inside `out` and only this item writes them.
                let rows = unsafe { std::slice::from_raw_parts_mut(base.at(i * m * n), m * n) };
                let res = pack(bi).and_then(|pb| {
                    let r = i * m * n..(i + 1) * m * n;
                    let epi = self.epilogue(residual.map(|res| (&res[r], n)));
                    let a_rows = &av[ai * m * k..(ai + 1) * m * k];
                    self.product(&alone, m, a_rows, k, &pb, rows, false, &epi)
                });
                if let Err(e) = res {
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            };
            match ctx.pool {
                Some(pool) => pool.run(&body),
                None => body(0),
            }
            if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
                return Some(Err(e));
            }
            return Some(Tensor::new(shape, out));
        }
        let mut last_b = usize::MAX;
        let mut packed = None;
        for i in 0..count {
            let (ai, bi) = index(i);
            if bi != last_b {
                match pack(bi) {
                    Ok(p) => packed = Some(p),
                    Err(e) => return Some(Err(e)),
                }
                last_b = bi;
            }
            let pb = packed.as_ref()?;
            let rows = i * m * n..(i + 1) * m * n;
            let epi = self.epilogue(residual.map(|r| (&r[rows.clone()], n)));
            let a_rows = &av[ai * m * k..(ai + 1) * m * k];
            if let Err(e) = self.product(ctx, m, a_rows, k, pb, &mut out[rows], false, &epi) {
                return Some(Err(e));
            }
        }
        Some(Tensor::new(shape, out))
    }

    fn gemm_op(&self, ctx: &Ctx, args: &[Option<Tensor>], g: GemmAttrs) -> Option<Result<Tensor>> {
        let a = args.get(self.a)?.as_ref()?;
        if a.rank() != 2 {
            return None;
        }
        let av = a.as_slice::<f32>().ok()?;
        let (m, k) = if g.trans_a {
            (a.shape()[1], a.shape()[0])
        } else {
            (a.shape()[0], a.shape()[1])
        };
        let a_t: Vec<f32>;
        let av = if g.trans_a {
            a_t = (0..m * k).map(|idx| av[(idx % k) * m + idx / k]).collect();
            &a_t[..]
        } else {
            av
        };
        let owned;
        let pb = match &self.packed {
            Some(p) => &**p,
            None => {
                let b = args.get(self.b?)?.as_ref()?;
                if b.rank() != 2 {
                    return None;
                }
                let bv = b.as_slice::<f32>().ok()?;
                let scaled: Vec<f32>;
                let bv = if g.alpha != 1.0 {
                    scaled = bv.iter().map(|x| x * g.alpha).collect();
                    &scaled[..]
                } else {
                    bv
                };
                let (r, c) = (b.shape()[0], b.shape()[1]);
                let p = if g.trans_b {
                    PackedB::from_transposed(c, r, bv, c)
                } else {
                    PackedB::new(r, c, bv, c)
                };
                owned = match p {
                    Ok(p) => p,
                    Err(e) => return Some(Err(err(e))),
                };
                &owned
            }
        };
        let n = pb.n();
        if pb.k() != k || self.bias.as_ref().is_some_and(|v| v.len() != n) {
            return None;
        }
        let shape = vec![m, n];
        let residual = self.residual(args, &shape)?;
        let final_shape = self.final_shape(shape.clone())?;
        let mut out = vec![0.0f32; m.checked_mul(n)?];
        let mut accumulate = false;
        if let Some(ci) = self.c {
            // beta·C broadcast onto [m, n], then the product accumulated onto it.
            let c = args.get(ci)?.as_ref()?;
            let cv = c.as_slice::<f32>().ok()?;
            let full = kiln_ir::ops::util::broadcast_shapes(c.shape(), &shape).ok()?;
            if full != shape {
                return None;
            }
            let map = kiln_ir::ops::util::broadcast_index_map(c.shape(), &shape);
            for (o, &src) in out.iter_mut().zip(&map) {
                *o = g.beta * cv[src];
            }
            accumulate = true;
        }
        let epi = self.epilogue(residual.map(|r| (r, n)));
        if let Err(e) = self.product(ctx, m, av, k, pb, &mut out, accumulate, &epi) {
            return Some(Err(e));
        }
        Some(Tensor::new(final_shape, out))
    }
}
