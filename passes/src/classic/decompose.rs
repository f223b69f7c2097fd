//! Decompositions of composite ops into primitives, for backends that lack a kernel for
//! them: `Decompose::new(|op| backend_has(op))` rewrites every op the backend does not keep.
//! Each decomposition computes what the reference semantics of the composite compute, in the
//! input's dtype (the reference computes in f64, so results agree to rounding).
//!
//! Not in the standard pipelines: the reference device runs every op; backends push it.

use super::util::each_graph;
use kiln_ir::rewrite::{is_unused, is_used, remove_node, replace_uses};
use kiln_ir::verify::compatible;
use kiln_ir::{
    BinaryOp, DType, Dim, GeluApproximation, Graph, NodeId, Op, ReduceKind, Result, Tensor,
    UnaryOp, Value,
};

/// `decompose`: rewrites the ops `keep` rejects into primitives.
pub struct Decompose {
    keep: Box<dyn Fn(&Op) -> bool + Send + Sync>,
}

impl Decompose {
    /// `keep(op)` says whether the backend runs `op` itself.
    pub fn new(keep: impl Fn(&Op) -> bool + Send + Sync + 'static) -> Decompose {
        Decompose {
            keep: Box::new(keep),
        }
    }
}

/// A decomposition may produce another composite (Mish makes a Softplus); a few rounds
/// settle every chain this file writes.
const ROUNDS: usize = 4;

impl crate::Pass for Decompose {
    fn name(&self) -> &'static str {
        "decompose"
    }

    fn run(&self, g: &mut Graph) -> Result<()> {
        each_graph(g, &mut |g| {
            let mut touched = false;
            for _ in 0..ROUNDS {
                let mut changed = false;
                for n in g.topo_order()? {
                    if !(self.keep)(&g.node(n).op) && decomposable(&g.node(n).op) {
                        touched = true;
                        changed |= decompose_node(g, n);
                    }
                }
                if !changed {
                    break;
                }
            }
            if touched {
                // A decomposition given up half way leaves its first nodes unread.
                g.remove_dead();
            }
            Ok(())
        })
    }
}

/// The ops this pass knows how to take apart.
pub fn decomposable(op: &Op) -> bool {
    matches!(
        op,
        Op::LayerNorm { .. }
            | Op::Gelu { .. }
            | Op::Swish { .. }
            | Op::Unary(UnaryOp::HardSwish | UnaryOp::Mish | UnaryOp::Softplus)
            | Op::Selu { .. }
            | Op::Elu { .. }
            | Op::HardSigmoid { .. }
            | Op::BatchNorm { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Gemm { .. }
            | Op::Flatten { .. }
    )
}

/// Rewrites node `n`; true when its uses now read the primitives.
fn decompose_node(g: &mut Graph, n: NodeId) -> bool {
    let node = g.node(n).clone();
    let ins = g.inputs_of(n);
    let Some(Some(x)) = ins.first().copied() else {
        return false;
    };
    let dtype = g.value_type(x).dtype;
    let mut b = Builder {
        g,
        name: node.name.clone(),
        dtype,
    };
    let Some(outs) = b.expand(&node.op, x, &ins) else {
        return false;
    };
    // Every output that is read needs its replacement.
    if (0..node.outputs.len())
        .any(|k| is_used(b.g, Value::new(n, k)) && outs.get(k).copied().flatten().is_none())
    {
        return false;
    }
    for (k, new) in outs.into_iter().enumerate() {
        let Some(new) = new else { continue };
        // The replacement may know less (or more) of the shape; the node's declared type,
        // already verified, keeps graph outputs and consumers as they were.
        let declared = &node.outputs[k];
        if compatible(declared, b.g.value_type(new))
            && !matches!(b.g.node(new.node).op, Op::Input | Op::Const { .. })
        {
            b.g.nodes[new.node].outputs[new.output] = declared.clone();
        }
        replace_uses(b.g, Value::new(n, k), new);
    }
    if is_unused(b.g, n) {
        remove_node(b.g, n);
    }
    true
}

/// Adds primitive nodes named after the node they replace.
struct Builder<'a> {
    g: &'a mut Graph,
    name: String,
    dtype: DType,
}

impl Builder<'_> {
    fn op(&mut self, op: Op, ins: &[Value]) -> Option<Value> {
        let name = format!("{}/{}", self.name, op.name());
        self.g.add1(op, name, ins).ok()
    }
    fn un(&mut self, u: UnaryOp, x: Value) -> Option<Value> {
        self.op(Op::Unary(u), &[x])
    }
    fn bin(&mut self, b: BinaryOp, x: Value, y: Value) -> Option<Value> {
        self.op(Op::Binary(b), &[x, y])
    }
    /// A scalar constant of the node's dtype.
    fn scalar(&mut self, v: f64) -> Option<Value> {
        let t = Tensor::from_f64(self.dtype, vec![], &[v]).ok()?;
        Some(self.g.add_const(format!("{}/{v}", self.name), t))
    }
    fn ints(&mut self, what: &str, v: &[i64]) -> Option<Value> {
        let t = Tensor::new(vec![v.len()], v.to_vec()).ok()?;
        Some(self.g.add_const(format!("{}/{what}", self.name), t))
    }
    fn mul_by(&mut self, x: Value, k: f64) -> Option<Value> {
        let k = self.scalar(k)?;
        self.bin(BinaryOp::Mul, x, k)
    }
    fn add_const(&mut self, x: Value, k: f64) -> Option<Value> {
        let k = self.scalar(k)?;
        self.bin(BinaryOp::Add, x, k)
    }
    fn clip01(&mut self, x: Value) -> Option<Value> {
        let (lo, hi) = (self.scalar(0.0)?, self.scalar(1.0)?);
        self.op(Op::Clip, &[x, lo, hi])
    }
    fn reduce(&mut self, kind: ReduceKind, x: Value, axes: &[i64]) -> Option<Value> {
        let a = self.ints("axes", axes)?;
        self.op(
            Op::Reduce {
                kind,
                keepdims: true,
                noop_with_empty_axes: false,
            },
            &[x, a],
        )
    }
    /// alpha·(exp(x) − 1)
    fn exp_m1_times(&mut self, x: Value, alpha: f64) -> Option<Value> {
        let e = self.un(UnaryOp::Exp, x)?;
        let m1 = self.add_const(e, -1.0)?;
        self.mul_by(m1, alpha)
    }

    /// The values replacing each output of `op` (None for an output it does not provide).
    fn expand(&mut self, op: &Op, x: Value, ins: &[Option<Value>]) -> Option<Vec<Option<Value>>> {
        let float = self.dtype.is_float();
        let one = |v: Option<Value>| v.map(|v| vec![Some(v)]);
        match *op {
            Op::Gelu { approximate } if float => {
                let inner = match approximate {
                    GeluApproximation::None => {
                        let t = self.mul_by(x, std::f64::consts::FRAC_1_SQRT_2)?;
                        self.un(UnaryOp::Erf, t)?
                    }
                    GeluApproximation::Tanh => {
                        let x2 = self.bin(BinaryOp::Mul, x, x)?;
                        let x3 = self.bin(BinaryOp::Mul, x2, x)?;
                        let c = self.mul_by(x3, 0.044715)?;
                        let s = self.bin(BinaryOp::Add, x, c)?;
                        let t = self.mul_by(s, (2.0 / std::f64::consts::PI).sqrt())?;
                        self.un(UnaryOp::Tanh, t)?
                    }
                };
                let p = self.add_const(inner, 1.0)?;
                let h = self.mul_by(x, 0.5)?;
                one(self.bin(BinaryOp::Mul, h, p))
            }
            Op::Swish { alpha } if float => {
                let ax = if alpha == 1.0 {
                    x
                } else {
                    self.mul_by(x, alpha as f64)?
                };
                let s = self.un(UnaryOp::Sigmoid, ax)?;
                one(self.bin(BinaryOp::Mul, x, s))
            }
            Op::Unary(UnaryOp::HardSwish) if float => {
                let six = self.scalar(6.0)?;
                let d = self.bin(BinaryOp::Div, x, six)?;
                let s = self.add_const(d, 0.5)?;
                let c = self.clip01(s)?;
                one(self.bin(BinaryOp::Mul, x, c))
            }
            Op::Unary(UnaryOp::Mish) if float => {
                let sp = self.un(UnaryOp::Softplus, x)?;
                let t = self.un(UnaryOp::Tanh, sp)?;
                one(self.bin(BinaryOp::Mul, x, t))
            }
            // relu(x) + log(1 + exp(−|x|)): no overflow for large |x|.
            Op::Unary(UnaryOp::Softplus) if float => {
                let r = self.un(UnaryOp::Relu, x)?;
                let a = self.un(UnaryOp::Abs, x)?;
                let na = self.un(UnaryOp::Neg, a)?;
                let e = self.un(UnaryOp::Exp, na)?;
                let p = self.add_const(e, 1.0)?;
                let l = self.un(UnaryOp::Log, p)?;
                one(self.bin(BinaryOp::Add, r, l))
            }
            Op::Selu { alpha, gamma } if float => {
                let zero = self.scalar(0.0)?;
                let pos = self.bin(BinaryOp::Greater, x, zero)?;
                let neg = self.exp_m1_times(x, alpha as f64)?;
                let w = self.op(Op::Where, &[pos, x, neg])?;
                one(self.mul_by(w, gamma as f64))
            }
            Op::Elu { alpha } if float => {
                let zero = self.scalar(0.0)?;
                let neg = self.bin(BinaryOp::Less, x, zero)?;
                let e = self.exp_m1_times(x, alpha as f64)?;
                one(self.op(Op::Where, &[neg, e, x]))
            }
            Op::HardSigmoid { alpha, beta } if float => {
                let ax = self.mul_by(x, alpha as f64)?;
                let s = self.add_const(ax, beta as f64)?;
                one(self.clip01(s))
            }
            Op::BatchNorm { epsilon } if float => one(self.batch_norm(x, ins, epsilon as f64)),
            Op::Softmax { axis } | Op::LogSoftmax { axis } if float => {
                let m = self.reduce(ReduceKind::Max, x, &[axis])?;
                let d = self.bin(BinaryOp::Sub, x, m)?;
                let e = self.un(UnaryOp::Exp, d)?;
                let s = self.reduce(ReduceKind::Sum, e, &[axis])?;
                if matches!(op, Op::Softmax { .. }) {
                    one(self.bin(BinaryOp::Div, e, s))
                } else {
                    let l = self.un(UnaryOp::Log, s)?;
                    one(self.bin(BinaryOp::Sub, d, l))
                }
            }
            Op::LayerNorm {
                axis,
                epsilon,
                stash_type,
            } if float => self.layer_norm(x, ins, axis, epsilon as f64, stash_type),
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let t = |b: &mut Self, v: Value, yes: bool| {
                    if yes {
                        b.op(
                            Op::Transpose {
                                perm: Some(vec![1, 0]),
                            },
                            &[v],
                        )
                    } else {
                        Some(v)
                    }
                };
                let a = t(self, x, trans_a)?;
                let bm = t(self, ins.get(1).copied()??, trans_b)?;
                let mut y = self.op(Op::MatMul, &[a, bm])?;
                if alpha != 1.0 {
                    y = self.mul_by(y, alpha as f64)?;
                }
                if let Some(c) = ins.get(2).copied().flatten() {
                    let c = if beta == 1.0 {
                        c
                    } else {
                        self.mul_by(c, beta as f64)?
                    };
                    y = self.bin(BinaryOp::Add, y, c)?;
                }
                one(Some(y))
            }
            Op::Flatten { axis } => {
                let dims = self.g.value_type(x).shape.dims()?.to_vec();
                let a = if axis < 0 {
                    axis + dims.len() as i64
                } else {
                    axis
                };
                let a = usize::try_from(a).ok().filter(|&a| a <= dims.len())?;
                let product = |d: &[Dim]| {
                    d.iter()
                        .map(|d| d.known())
                        .try_fold(1usize, |p, k| p.checked_mul(k?))
                };
                // Reshape's 0 copies a dim and −1 takes what is left; a known size of 0
                // would make −1 ambiguous.
                let target = if a == 0 {
                    vec![1, -1]
                } else if let Some(p) = product(&dims[..a]).filter(|&p| p > 0) {
                    vec![p as i64, -1]
                } else if a == 1 {
                    vec![0, -1]
                } else {
                    vec![-1, product(&dims[a..]).filter(|&p| p > 0)? as i64]
                };
                let s = self.ints("shape", &target)?;
                one(self.op(Op::Reshape { allowzero: false }, &[x, s]))
            }
            _ => None,
        }
    }

    /// y = x·s + t with s = scale/√(var+ε) and t = bias − mean·s, computed once when the
    /// statistics are constants.
    fn batch_norm(&mut self, x: Value, ins: &[Option<Value>], eps: f64) -> Option<Value> {
        let p: Vec<Vec<f64>> = (1..5)
            .map(|i| Some(self.g.const_value(ins.get(i).copied()??)?.to_f64_vec()))
            .collect::<Option<_>>()?;
        let rank = self.g.value_type(x).shape.rank()?;
        let c = p[0].len();
        if p.iter().any(|v| v.len() != c) || rank == 0 {
            return None;
        }
        let s: Vec<f64> = (0..c).map(|i| p[0][i] / (p[3][i] + eps).sqrt()).collect();
        let t: Vec<f64> = (0..c).map(|i| p[1][i] - p[2][i] * s[i]).collect();
        let mut shape = vec![c];
        shape.extend(std::iter::repeat(1).take(rank.saturating_sub(2)));
        let sv = Tensor::from_f64(self.dtype, shape.clone(), &s).ok()?;
        let tv = Tensor::from_f64(self.dtype, shape, &t).ok()?;
        let sv = self.g.add_const(format!("{}/scale", self.name), sv);
        let tv = self.g.add_const(format!("{}/shift", self.name), tv);
        let y = self.bin(BinaryOp::Mul, x, sv)?;
        self.bin(BinaryOp::Add, y, tv)
    }

    /// (x − mean)/√(var+ε)·scale + bias over the axes from `axis` on, the statistics in
    /// `stash`; the mean and 1/√(var+ε) are the optional outputs.
    fn layer_norm(
        &mut self,
        x: Value,
        ins: &[Option<Value>],
        axis: i64,
        eps: f64,
        stash: DType,
    ) -> Option<Vec<Option<Value>>> {
        let rank = self.g.value_type(x).shape.rank()? as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&a) || !stash.is_float() {
            return None;
        }
        let axes: Vec<i64> = (a..rank).collect();
        let dtype = self.dtype;
        let xs = if stash == dtype {
            x
        } else {
            self.op(Op::Cast { to: stash }, &[x])?
        };
        self.dtype = stash;
        let mean = self.reduce(ReduceKind::Mean, xs, &axes)?;
        let d = self.bin(BinaryOp::Sub, xs, mean)?;
        let d2 = self.bin(BinaryOp::Mul, d, d)?;
        let var = self.reduce(ReduceKind::Mean, d2, &axes)?;
        let ve = self.add_const(var, eps)?;
        let sd = self.un(UnaryOp::Sqrt, ve)?;
        let inv = self.un(UnaryOp::Reciprocal, sd)?;
        let norm = self.bin(BinaryOp::Mul, d, inv)?;
        self.dtype = dtype;
        let norm = if stash == dtype {
            norm
        } else {
            self.op(Op::Cast { to: dtype }, &[norm])?
        };
        let mut y = self.bin(BinaryOp::Mul, norm, ins.get(1).copied()??)?;
        if let Some(bias) = ins.get(2).copied().flatten() {
            y = self.bin(BinaryOp::Add, y, bias)?;
        }
        Some(vec![Some(y), Some(mean), Some(inv)])
    }
}
