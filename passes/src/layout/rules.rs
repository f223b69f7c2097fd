//! How each layout-agnostic op commutes with a transpose: given an op whose inputs are held
//! in some layout, the same computation on the held tensors, and the layout its outputs are
//! then held in. Sinking transposes down the graph and hoisting them up to the inputs both
//! read these rules, so each op's axis bookkeeping is written once.
//!
//! Every rule is a pure function of the op and its operands' types, layouts and constant
//! values; it answers `None` whenever it cannot prove the rewrite exact (unknown ranks,
//! run-time axes, mixed layouts), and the caller then leaves the op as it was.

use super::perm::{self, Perm};
use crate::pattern::{pattern, Pattern};
use kiln_ir::ops::util::norm_axis;
use kiln_ir::{DType, Op, Tensor, TensorType};

/// One input of the op being rewritten, as the model means it.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    /// `Some(p)` when the graph holds this value in layout `p`; `None` when held as is.
    pub perm: Option<&'a [usize]>,
    /// The value's type in the model's layout.
    pub ty: &'a TensorType,
    /// Its value in the model's layout, when it is a constant (constants are always held
    /// as is: a transposed constant is folded, never kept pending).
    pub konst: Option<&'a Tensor>,
}

/// An input of the rewritten op.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    /// The held tensor of the same input slot.
    Held,
    /// A new constant (a permuted weight, remapped axes or pads).
    Const(Tensor),
}

/// The op to run on the held tensors instead, and the layout each output is held in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rewrite {
    pub op: Op,
    pub args: Vec<Option<Arg>>,
    /// `None` where an output comes out in the model's layout.
    pub out_perms: Vec<Option<Perm>>,
}

/// The rewrite of `op` over `ins` so that it runs on the held tensors, if the op is
/// layout-agnostic and every input can be had in a common layout.
pub(crate) fn sink(op: &Op, ins: &[Option<Operand>], n_outputs: usize) -> Option<Rewrite> {
    match op {
        _ if pattern(op) == Pattern::Elementwise => {
            let p = data_perm(ins, &[0])?;
            if ins.len() != 1 || n_outputs != 1 {
                return None;
            }
            Some(Rewrite {
                op: op.clone(),
                args: vec![Some(Arg::Held)],
                out_perms: vec![Some(p)],
            })
        }
        Op::Binary(_) | Op::Where => broadcast(op, ins),
        Op::Clip => clip(ins),
        Op::Pad { .. } => pad(op, ins),
        Op::Reduce {
            keepdims,
            noop_with_empty_axes,
            ..
        } => reduce(op, ins, *keepdims, *noop_with_empty_axes),
        Op::ArgReduce {
            max,
            axis,
            keepdims,
            select_last_index,
        } => {
            let p = data_perm(ins, &[0])?;
            let a = norm_axis(*axis, p.len()).ok()?;
            let op = Op::ArgReduce {
                max: *max,
                axis: p[a] as i64,
                keepdims: *keepdims,
                select_last_index: *select_last_index,
            };
            let out = if *keepdims {
                p.clone()
            } else {
                perm::without_axes(&p, &[a])
            };
            Some(Rewrite {
                op,
                args: vec![Some(Arg::Held)],
                out_perms: vec![perm::normalize(out)],
            })
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Hardmax { axis } => {
            let p = data_perm(ins, &[0])?;
            let a = p[norm_axis(*axis, p.len()).ok()?] as i64;
            let op = match op {
                Op::Softmax { .. } => Op::Softmax { axis: a },
                Op::LogSoftmax { .. } => Op::LogSoftmax { axis: a },
                _ => Op::Hardmax { axis: a },
            };
            Some(Rewrite {
                op,
                args: vec![Some(Arg::Held)],
                out_perms: vec![Some(p)],
            })
        }
        Op::Concat { axis } => concat(ins, *axis),
        Op::Split { axis } => {
            let p = data_perm(ins, &[0])?;
            let a = p[norm_axis(*axis, p.len()).ok()?] as i64;
            let mut args = vec![Some(Arg::Held)];
            args.extend(ins[1..].iter().map(|i| i.map(|_| Arg::Held)));
            Some(Rewrite {
                op: Op::Split { axis: a },
                args,
                out_perms: vec![Some(p); n_outputs],
            })
        }
        Op::Slice => slice(ins),
        Op::Resize { .. } => resize(op, ins),
        Op::Squeeze => squeeze(ins),
        Op::Unsqueeze => unsqueeze(ins),
        _ => None,
    }
}

/// The layout shared by the inputs in `slots`: each must be present, not constant and
/// held in the same non-identity layout.
fn data_perm(ins: &[Option<Operand>], slots: &[usize]) -> Option<Perm> {
    let mut common: Option<&[usize]> = None;
    for &s in slots {
        let o = ins.get(s)?.as_ref()?;
        let p = o.perm?;
        if o.konst.is_some() || o.ty.shape.rank() != Some(p.len()) || common.is_some_and(|c| c != p) {
            return None;
        }
        common = Some(p);
    }
    common.map(|p| p.to_vec())
}

/// The constant axes list of input `slot`, normalized to `rank`.
fn const_axes(ins: &[Option<Operand>], slot: usize, rank: usize) -> Option<Vec<usize>> {
    let t = ins.get(slot)?.as_ref()?.konst?;
    if t.rank() > 1 || !matches!(t.dtype(), DType::I64 | DType::I32) {
        return None;
    }
    let axes = t
        .to_i64_vec()
        .into_iter()
        .map(|a| norm_axis(a, rank).ok())
        .collect::<Option<Vec<_>>>()?;
    let mut sorted = axes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    (sorted.len() == axes.len()).then_some(axes)
}

fn axes_const(axes: &[usize], like: DType) -> Option<Tensor> {
    let v: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    Tensor::from_i64(like, vec![v.len()], &v).ok()
}

/// Numpy broadcasting: operands held in a common layout `p` lose it; constants of lower
/// rank are first given the missing leading axes, then permuted into the held layout (a
/// bias `[C]` of an NHWC value becomes `[C,1,1]` for the NCHW tensor).
fn broadcast(op: &Op, ins: &[Option<Operand>]) -> Option<Rewrite> {
    let mut p: Option<&[usize]> = None;
    for o in ins.iter().flatten() {
        if let (Some(q), None) = (o.perm, o.konst) {
            if p.is_some_and(|p| p != q) {
                return None;
            }
            p = Some(q);
        }
    }
    let p = p?.to_vec();
    let rank = p.len();
    let mut args = Vec::with_capacity(ins.len());
    for o in ins {
        let o = o.as_ref()?;
        let arg = match (o.perm, o.konst) {
            (_, Some(c)) => Arg::Const(broadcast_const(c, &p)?),
            (Some(_), None) if o.ty.shape.rank() == Some(rank) => Arg::Held,
            // A run-time scalar broadcasts the same in any layout.
            (None, None) if o.ty.shape.rank() == Some(0) => Arg::Held,
            _ => return None,
        };
        args.push(Some(arg));
    }
    Some(Rewrite {
        op: op.clone(),
        args,
        out_perms: vec![Some(p)],
    })
}

/// A constant that broadcasts against a value of layout `p`, made to broadcast the same
/// against the held tensor: missing leading axes added, permuted, leading unit axes dropped.
pub(crate) fn broadcast_const(c: &Tensor, p: &[usize]) -> Option<Tensor> {
    let rank = p.len();
    if c.rank() > rank {
        return None;
    }
    if c.rank() == 0 {
        return Some(c.clone());
    }
    let mut full = vec![1; rank - c.rank()];
    full.extend_from_slice(c.shape());
    let held = perm::permute_tensor(&c.reshape(full).ok()?, &perm::inverse(p)).ok()?;
    let lead = held.shape().iter().take_while(|&&d| d == 1).count();
    let keep = lead.min(rank.saturating_sub(c.rank()));
    held.reshape(held.shape()[keep..].to_vec()).ok()
}

fn clip(ins: &[Option<Operand>]) -> Option<Rewrite> {
    let p = data_perm(ins, &[0])?;
    let mut args = vec![Some(Arg::Held)];
    for o in &ins[1..] {
        match o {
            None => args.push(None),
            Some(o) if o.ty.shape.rank() == Some(0) && o.perm.is_none() => args.push(Some(Arg::Held)),
            Some(_) => return None,
        }
    }
    Some(Rewrite {
        op: Op::Clip,
        args,
        out_perms: vec![Some(p)],
    })
}

/// Pad (data, pads, value?, axes?): the begin and end pads of axis `i` move to axis `p[i]`.
fn pad(op: &Op, ins: &[Option<Operand>]) -> Option<Rewrite> {
    let p = data_perm(ins, &[0])?;
    let rank = p.len();
    if ins.get(3).is_some_and(|a| a.is_some()) {
        return None;
    }
    let pads_t = ins.get(1)?.as_ref()?.konst?;
    let pads = pads_t.to_i64_vec();
    if pads.len() != 2 * rank {
        return None;
    }
    let mut held = vec![0i64; 2 * rank];
    for i in 0..rank {
        held[p[i]] = pads[i];
        held[rank + p[i]] = pads[rank + i];
    }
    let mut args = vec![
        Some(Arg::Held),
        Some(Arg::Const(
            Tensor::from_i64(pads_t.dtype(), vec![2 * rank], &held).ok()?,
        )),
    ];
    match ins.get(2) {
        Some(Some(v)) if v.perm.is_none() && v.ty.shape.numel() == Some(1) => args.push(Some(Arg::Held)),
        Some(Some(_)) => return None,
        Some(None) => args.push(None),
        None => {}
    }
    Some(Rewrite {
        op: op.clone(),
        args,
        out_perms: vec![Some(p)],
    })
}

/// Reduce (data, axes?): the axes move with the layout; without kept dims the surviving
/// axes may come out in the model's layout (a global average pool over H and W of an NHWC
/// value held as NCHW gives `[N,C]` as is).
fn reduce(op: &Op, ins: &[Option<Operand>], keepdims: bool, noop_empty: bool) -> Option<Rewrite> {
    let p = data_perm(ins, &[0])?;
    let rank = p.len();
    let axes = match ins.get(1) {
        Some(Some(_)) => const_axes(ins, 1, rank)?,
        _ => Vec::new(),
    };
    if axes.is_empty() {
        // No axes: nothing (noop) or everything, whatever the layout.
        let out = if noop_empty || keepdims { Some(p) } else { None };
        let args = ins.iter().map(|o| o.map(|_| Arg::Held)).collect();
        return Some(Rewrite {
            op: op.clone(),
            args,
            out_perms: vec![out],
        });
    }
    let held: Vec<usize> = axes.iter().map(|&a| p[a]).collect();
    let dtype = ins[1].as_ref()?.konst?.dtype();
    let out = if keepdims {
        p.clone()
    } else {
        perm::without_axes(&p, &axes)
    };
    Some(Rewrite {
        op: op.clone(),
        args: vec![Some(Arg::Held), Some(Arg::Const(axes_const(&held, dtype)?))],
        out_perms: vec![perm::normalize(out)],
    })
}

/// Concat: every input held in the same layout (constants are permuted into it).
fn concat(ins: &[Option<Operand>], axis: i64) -> Option<Rewrite> {
    let p = ins
        .iter()
        .flatten()
        .find_map(|o| if o.konst.is_none() { o.perm } else { None })?
        .to_vec();
    let rank = p.len();
    let mut args = Vec::with_capacity(ins.len());
    for o in ins {
        let o = o.as_ref()?;
        let arg = match (o.perm, o.konst) {
            (_, Some(c)) if c.rank() == rank => Arg::Const(perm::permute_tensor(c, &perm::inverse(&p)).ok()?),
            (Some(q), None) if q == p.as_slice() => Arg::Held,
            _ => return None,
        };
        args.push(Some(arg));
    }
    let a = p[norm_axis(axis, rank).ok()?] as i64;
    Some(Rewrite {
        op: Op::Concat { axis: a },
        args,
        out_perms: vec![Some(p)],
    })
}

/// Slice (data, starts, ends, axes?, steps?): only which axes are sliced changes.
fn slice(ins: &[Option<Operand>]) -> Option<Rewrite> {
    let p = data_perm(ins, &[0])?;
    let rank = p.len();
    let (axes, dtype) = match ins.get(3) {
        Some(Some(a)) => (const_axes(ins, 3, rank)?, a.konst?.dtype()),
        _ => {
            // Absent axes mean the first len(starts) axes.
            let starts = ins.get(1)?.as_ref()?;
            let n = match starts.ty.shape.dims()? {
                [d] => d.known()?,
                _ => return None,
            };
            (
                (0..n).collect::<Vec<_>>().into_iter().filter(|&a| a < rank).collect(),
                starts.ty.dtype,
            )
        }
    };
    let held: Vec<usize> = axes.iter().map(|&a| p[a]).collect();
    let mut args: Vec<Option<Arg>> = vec![Some(Arg::Held)];
    for o in ins.get(1..3)? {
        args.push(Some(match o.as_ref()? {
            o if o.perm.is_none() => Arg::Held,
            _ => return None,
        }));
    }
    args.push(Some(Arg::Const(axes_const(&held, dtype)?)));
    match ins.get(4) {
        Some(Some(o)) if o.perm.is_none() => args.push(Some(Arg::Held)),
        Some(Some(_)) => return None,
        _ => {}
    }
    Some(Rewrite {
        op: Op::Slice,
        args,
        out_perms: vec![Some(p)],
    })
}

/// Resize (x, roi?, scales?, sizes?): separable per axis, so the scales or sizes (one per
/// axis, or one per listed axis) follow the layout. A region of interest is left alone.
fn resize(op: &Op, ins: &[Option<Operand>]) -> Option<Rewrite> {
    let Op::Resize { axes, .. } = op else { return None };
    let p = data_perm(ins, &[0])?;
    let rank = p.len();
    // A region of interest (tf_crop_and_resize) is left alone.
    if ins
        .get(1)
        .is_some_and(|r| r.is_some_and(|r| r.ty.shape.numel() != Some(0)))
    {
        return None;
    }
    let mut new_op = op.clone();
    let mut args: Vec<Option<Arg>> = vec![Some(Arg::Held), ins.get(1).and_then(|o| o.map(|_| Arg::Held))];
    if axes.is_empty() {
        for o in ins.get(2..).unwrap_or(&[]) {
            args.push(match o {
                None => None,
                Some(o) => Some(Arg::Const(perm::permute_entries(o.konst?, &perm::inverse(&p))?)),
            });
        }
    } else {
        let held: Vec<i64> = axes
            .iter()
            .map(|&a| norm_axis(a, rank).map(|a| p[a] as i64))
            .collect::<Result<_, _>>()
            .ok()?;
        if let Op::Resize { axes, .. } = &mut new_op {
            *axes = held;
        }
        for o in ins.get(2..).unwrap_or(&[]) {
            args.push(match o {
                None => None,
                Some(o) if o.perm.is_none() => Some(Arg::Held),
                Some(_) => return None,
            });
        }
    }
    Some(Rewrite {
        op: new_op,
        args,
        out_perms: vec![Some(p)],
    })
}

fn squeeze(ins: &[Option<Operand>]) -> Option<Rewrite> {
    let p = data_perm(ins, &[0])?;
    let axes = const_axes(ins, 1, p.len())?;
    let held: Vec<usize> = axes.iter().map(|&a| p[a]).collect();
    let dtype = ins[1].as_ref()?.konst?.dtype();
    Some(Rewrite {
        op: Op::Squeeze,
        args: vec![Some(Arg::Held), Some(Arg::Const(axes_const(&held, dtype)?))],
        out_perms: vec![perm::normalize(perm::without_axes(&p, &axes))],
    })
}

/// Unsqueeze inserts the same unit axes into the held tensor; the layout grows around them.
fn unsqueeze(ins: &[Option<Operand>]) -> Option<Rewrite> {
    let p = data_perm(ins, &[0])?;
    let n = ins.get(1)?.as_ref()?.konst?.len();
    let mut axes = const_axes(ins, 1, p.len() + n)?;
    axes.sort_unstable();
    Some(Rewrite {
        op: Op::Unsqueeze,
        args: vec![Some(Arg::Held), Some(Arg::Held)],
        out_perms: vec![perm::normalize(perm::with_axes(&p, &axes))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_bias_of_an_nhwc_value_becomes_c_1_1() {
        let bias = Tensor::new(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let held = broadcast_const(&bias, &[0, 2, 3, 1]).unwrap();
        assert_eq!(held.shape(), &[3, 1, 1]);
        assert_eq!(held.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
    }
}
