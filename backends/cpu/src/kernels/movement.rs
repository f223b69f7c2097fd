//! A fused kernel made only of data movement (transposes and reshapes, as a transformer's
//! head split leaves them: transpose → reshape → transpose) as one strided copy: each op
//! changes a view of the input (sizes and strides) without touching the data, and only the
//! final view is copied out. Two transposes that undo each other's inner dims then cost
//! one pass of contiguous row copies instead of two strided gathers.

use super::transpose::gather;
use crate::device::Ctx;
use kiln_ir::{Graph, Op, Result, Tensor, Value};

/// One op of the chain.
enum Move {
    Transpose(Option<Vec<i64>>),
    /// A reshape (or squeeze, unsqueeze, flatten) to this shape.
    Reshape(Vec<usize>),
}

pub(crate) struct Movement {
    moves: Vec<Move>,
}

impl Movement {
    /// The chain of a fused body with one input, one output and only movement ops in a
    /// line, every reshape's result shape known; `None` otherwise.
    pub fn new(body: &Graph) -> Option<Movement> {
        let [x] = body.inputs[..] else {
            return None;
        };
        let [(_, y)] = body.outputs[..] else {
            return None;
        };
        Movement::of_chain(body, Value::new(x, 0), y)
    }

    /// The movement ops from `from` to `to`, each value read once (by the next op), every
    /// reshape's result shape known; `None` otherwise. (A fused matmul's A operand can be
    /// such a chain from a body input.)
    pub fn of_chain(body: &Graph, from: Value, y: Value) -> Option<Movement> {
        let mut cur = from;
        let mut moves = Vec::new();
        while cur != y {
            let [(n, 0)] = body.uses_of(cur)[..] else {
                return None;
            };
            let node = body.node(n);
            let shape = || -> Option<Vec<usize>> {
                node.outputs
                    .first()?
                    .shape
                    .dims()?
                    .iter()
                    .map(|d| d.known())
                    .collect()
            };
            moves.push(match &node.op {
                Op::Transpose { perm } => Move::Transpose(perm.clone()),
                Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Flatten { .. } => {
                    Move::Reshape(shape()?)
                }
                Op::Unary(kiln_ir::UnaryOp::Identity) => Move::Reshape(shape()?),
                _ => return None,
            });
            if node.outputs.len() != 1 {
                return None;
            }
            cur = Value::new(n, 0);
        }
        Some(Movement { moves })
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        if xv.is_empty() {
            return None;
        }
        let mut sizes = x.shape().to_vec();
        let mut strides = row_major(&sizes);
        // The data the view reads: the input, or a copy made where a reshape cannot be a
        // view (it merges dims a transpose separated).
        let mut copy: Option<Vec<f32>> = None;
        for m in &self.moves {
            match m {
                Move::Transpose(perm) => {
                    let rank = sizes.len();
                    let perm: Vec<usize> = match perm {
                        None => (0..rank).rev().collect(),
                        Some(p) => p
                            .iter()
                            .map(|&a| usize::try_from(a).ok())
                            .collect::<Option<_>>()?,
                    };
                    let mut seen = vec![false; rank];
                    if perm.len() != rank
                        || perm
                            .iter()
                            .any(|&a| a >= rank || std::mem::replace(&mut seen[a], true))
                    {
                        return None;
                    }
                    (sizes, strides) = (
                        perm.iter().map(|&a| sizes[a]).collect(),
                        perm.iter().map(|&a| strides[a]).collect(),
                    );
                }
                Move::Reshape(shape) => {
                    strides = match reshape(&sizes, &strides, shape) {
                        Some(t) => t,
                        None => {
                            if sizes.iter().product::<usize>() != shape.iter().product::<usize>() {
                                return None;
                            }
                            let (s, t) = merge(&sizes, &strides);
                            copy = Some(gather(ctx, copy.as_deref().unwrap_or(xv), &s, &t));
                            row_major(shape)
                        }
                    };
                    sizes = shape.clone();
                }
            }
        }
        let (s, t) = merge(&sizes, &strides);
        Some(Tensor::new(
            sizes,
            gather(ctx, copy.as_deref().unwrap_or(xv), &s, &t),
        ))
    }
}

fn row_major(sizes: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; sizes.len()];
    for i in (0..sizes.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * sizes[i + 1];
    }
    s
}

/// Strides of the view `sizes`/`strides` reshaped to `new` without copying (numpy's
/// rule: each group of old dims that becomes a group of new dims must be contiguous
/// within itself); `None` when the view does not allow it or the sizes differ.
fn reshape(sizes: &[usize], strides: &[usize], new: &[usize]) -> Option<Vec<usize>> {
    if sizes.iter().product::<usize>() != new.iter().product::<usize>() {
        return None;
    }
    // Size-1 dims carry no layout: dropped from the old view, stride 0 in the new one.
    let old: Vec<(usize, usize)> = sizes
        .iter()
        .copied()
        .zip(strides.iter().copied())
        .filter(|&(n, _)| n != 1)
        .collect();
    let mut out = vec![0usize; new.len()];
    let big: Vec<usize> = (0..new.len()).filter(|&i| new[i] != 1).collect();
    let (mut oi, mut ni) = (0, 0);
    while oi < old.len() && ni < big.len() {
        let (mut oj, mut nj) = (oi + 1, ni + 1);
        let (mut op, mut np) = (old[oi].0, new[big[ni]]);
        while op != np {
            if np < op {
                np *= new[*big.get(nj)?];
                nj += 1;
            } else {
                op *= old.get(oj)?.0;
                oj += 1;
            }
        }
        for k in oi..oj - 1 {
            if old[k].1 != old[k + 1].0 * old[k + 1].1 {
                return None;
            }
        }
        out[big[nj - 1]] = old[oj - 1].1;
        for k in (ni..nj - 1).rev() {
            out[big[k]] = out[big[k + 1]] * new[big[k + 1]];
        }
        oi = oj;
        ni = nj;
    }
    (oi == old.len() && ni == big.len()).then_some(out)
}

/// The view with size-1 dims dropped and neighbouring dims that walk memory as one merged.
fn merge(sizes: &[usize], strides: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let (mut s, mut t): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for (&n, &st) in sizes.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        match (s.last_mut(), t.last_mut()) {
            (Some(ls), Some(lt)) if *lt == n * st => {
                *ls *= n;
                *lt = st;
            }
            _ => {
                s.push(n);
                t.push(st);
            }
        }
    }
    (s, t)
}
