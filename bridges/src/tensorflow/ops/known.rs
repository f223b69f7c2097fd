//! The elements of a small integer tensor that are known at load time, even when the
//! tensor as a whole is not a constant. Keras builds shape arguments such as
//! Conv2DBackpropInput's `input_sizes` as Pack(Shape(x)[0], 64, 64, 16): the batch entry
//! is only known at run time, the others are constants or come from known dims of `x`.

use super::*;
use kiln_ir::Dim;

/// Bound on how far back the walk goes; shape computations are a handful of nodes.
const MAX_DEPTH: usize = 32;

impl Builder<'_> {
    /// Each element of the 1-D (or scalar) integer value `v`: `Some` where it is known at
    /// load time. `None` when not even the element count is known.
    pub(super) fn known_elements(&self, v: Value) -> Option<Vec<Option<i64>>> {
        self.known_at(v, 0)
    }

    fn known_at(&self, v: Value, depth: usize) -> Option<Vec<Option<i64>>> {
        if let Some(t) = self.g.const_value(v) {
            return (t.rank() <= 1 && t.dtype().is_int())
                .then(|| t.to_i64_vec().into_iter().map(Some).collect());
        }
        let ty = self.g.value_type(v);
        let len = ty.shape.numel()?;
        let unknown = || Some(vec![None; len]);
        if depth > MAX_DEPTH || v.output != 0 {
            return unknown();
        }
        let node = self.g.node(v.node);
        let ins = self.g.inputs_of(v.node);
        let first = ins.first().copied().flatten();
        let elems = match (&node.op, first) {
            (Op::Shape { start, end }, Some(x)) => {
                let dims = self.g.value_type(x).shape.dims()?.to_vec();
                let r = dims.len() as i64;
                let clamp = |i: i64| (if i < 0 { i + r } else { i }).clamp(0, r) as usize;
                let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
                let picked: &[Dim] = dims.get(s..e.max(s))?;
                picked.iter().map(|d| d.known().map(|k| k as i64)).collect()
            }
            (Op::Concat { axis }, _) if *axis == 0 || *axis == -1 => {
                let mut all = Vec::with_capacity(len);
                for i in &ins {
                    all.extend(self.known_at((*i)?, depth + 1)?);
                }
                all
            }
            // Reshapes between a scalar and a 1-element vector, and int casts, keep the
            // elements in order.
            (
                Op::Unsqueeze | Op::Squeeze | Op::Reshape { .. } | Op::Unary(UnaryOp::Identity),
                Some(x),
            ) => self.known_at(x, depth + 1)?,
            (Op::Cast { to }, Some(x)) if to.is_int() && self.g.value_type(x).dtype.is_int() => {
                self.known_at(x, depth + 1)?
            }
            // A slice or gather of known positions: run the op on the positions themselves.
            (Op::Slice | Op::Gather { axis: 0 }, Some(x)) => {
                let src = self.known_at(x, depth + 1)?;
                let positions =
                    Tensor::new(vec![src.len()], (0..src.len() as i64).collect::<Vec<i64>>())
                        .ok()?;
                let mut args: Vec<Option<Tensor>> = vec![Some(positions)];
                for i in &ins[1..] {
                    args.push(match i {
                        Some(i) => Some(self.g.const_value(*i)?.clone()),
                        None => None,
                    });
                }
                let picked = kiln_ir::eval::eval_op(&node.op, &args, 1).ok()?;
                let picked = picked.first()?.to_i64_vec();
                picked
                    .iter()
                    .map(|&p| {
                        usize::try_from(p)
                            .ok()
                            .and_then(|p| src.get(p).copied().flatten())
                    })
                    .collect()
            }
            // Keras 2 computes output sizes as dim * stride + k from Shape(x).
            (Op::Binary(op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul)), Some(x)) => {
                let a = self.known_at(x, depth + 1)?;
                let c = self.known_at(ins.get(1).copied().flatten()?, depth + 1)?;
                let at = |v: &[Option<i64>], i: usize| {
                    if v.len() == 1 {
                        v[0]
                    } else {
                        v.get(i).copied().flatten()
                    }
                };
                (0..len)
                    .map(|i| {
                        let (p, q) = (at(&a, i)?, at(&c, i)?);
                        match op {
                            BinaryOp::Add => p.checked_add(q),
                            BinaryOp::Sub => p.checked_sub(q),
                            _ => p.checked_mul(q),
                        }
                    })
                    .collect()
            }
            _ => return unknown(),
        };
        if elems.len() == len {
            Some(elems)
        } else {
            unknown()
        }
    }
}
