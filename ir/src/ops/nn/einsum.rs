//! Einsum with numpy semantics: explicit (`->`) or implicit output (the labels used once,
//! in ASCII order, after any ellipsis dims), `...` broadcasting, repeated labels within one
//! operand (diagonals) and summation over every label not in the output.
//!
//! Each operand's offset moves by a per-label step; a label repeated in one operand gets the
//! sum of its axes' strides, which is exactly a diagonal, and a broadcast size-1 axis gets
//! step 0. Two operands run as a batched matmul; any other count walks every combination
//! of label values once.

use super::gemm::{gemm, wrapping_i64, Acc};
use super::geometry::bounded_numel;
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::ops::util::{input_type, strides};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::Tensor;
use std::num::Wrapping;

/// A label: a letter (0..52) or the j-th broadcast dim of the ellipsis (52 + j).
type Label = usize;
const ELLIPSIS_BASE: Label = 52;

fn letter(c: char) -> Result<Label> {
    match c {
        'a'..='z' => Ok(c as usize - 'a' as usize),
        'A'..='Z' => Ok(26 + c as usize - 'A' as usize),
        _ => Err(IrError::msg(format!("einsum: `{c}` is not a label"))),
    }
}

/// One operand's term: letters, with an optional ellipsis position.
struct Term {
    before: Vec<Label>,
    after: Vec<Label>,
    ellipsis: bool,
}

fn parse_term(s: &str) -> Result<Term> {
    let (before, after, ellipsis) = match s.find("...") {
        Some(i) => (&s[..i], &s[i + 3..], true),
        None => (s, "", false),
    };
    if after.contains('.') || (!ellipsis && before.contains('.')) {
        return Err(IrError::msg(format!("einsum: malformed term `{s}`")));
    }
    Ok(Term {
        before: before.chars().map(letter).collect::<Result<_>>()?,
        after: after.chars().map(letter).collect::<Result<_>>()?,
        ellipsis,
    })
}

/// The parsed equation, resolved against operand ranks.
struct Plan {
    /// Per operand, the label of each axis.
    axes: Vec<Vec<Label>>,
    output: Vec<Label>,
}

fn plan(equation: &str, ranks: &[usize]) -> Result<Plan> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<Term> = lhs.split(',').map(parse_term).collect::<Result<_>>()?;
    if terms.len() != ranks.len() {
        return Err(IrError::msg(format!(
            "einsum: the equation has {} operands, the node has {}",
            terms.len(),
            ranks.len()
        )));
    }
    let mut ell_rank = 0;
    let mut ell_of = Vec::with_capacity(terms.len());
    for (t, &r) in terms.iter().zip(ranks) {
        let letters = t.before.len() + t.after.len();
        if r < letters || (!t.ellipsis && r != letters) {
            return Err(IrError::msg(format!(
                "einsum: a term with {letters} labels does not fit an operand of rank {r}"
            )));
        }
        let e = r - letters;
        ell_rank = ell_rank.max(e);
        ell_of.push(e);
    }
    let axes: Vec<Vec<Label>> = terms
        .iter()
        .zip(&ell_of)
        .map(|(t, &e)| {
            let mut v = t.before.clone();
            v.extend((ell_rank - e..ell_rank).map(|j| ELLIPSIS_BASE + j));
            v.extend(&t.after);
            v
        })
        .collect();
    let output = match rhs {
        Some(r) => {
            let t = parse_term(r)?;
            if !t.ellipsis && ell_rank > 0 {
                return Err(IrError::msg(
                    "einsum: the output needs `...` for the operands' broadcast dims",
                ));
            }
            let mut v = t.before.clone();
            if t.ellipsis {
                v.extend((0..ell_rank).map(|j| ELLIPSIS_BASE + j));
            }
            v.extend(&t.after);
            for (i, l) in v.iter().enumerate() {
                if v[..i].contains(l) {
                    return Err(IrError::msg("einsum: an output label repeats"));
                }
                if !axes.iter().any(|a| a.contains(l)) {
                    return Err(IrError::msg("einsum: an output label is in no operand"));
                }
            }
            v
        }
        None => {
            let mut counts = [0usize; ELLIPSIS_BASE];
            for a in &axes {
                for &l in a {
                    if l < ELLIPSIS_BASE {
                        counts[l] += 1;
                    }
                }
            }
            // ASCII order: upper case before lower case.
            let mut v: Vec<Label> = (0..ell_rank).map(|j| ELLIPSIS_BASE + j).collect();
            v.extend((26..52).chain(0..26).filter(|&l| counts[l] == 1));
            v
        }
    };
    Ok(Plan { axes, output })
}

/// Label sizes from operand dims (size 1 broadcasts against any size).
fn label_sizes<D: Clone + PartialEq>(
    plan: &Plan,
    shapes: &[&[D]],
    one: &D,
) -> Result<Vec<Option<D>>> {
    let mut sizes: Vec<Option<D>> = vec![None; ELLIPSIS_BASE * 2 + 64];
    let n_labels = sizes.len();
    for (ax, shape) in plan.axes.iter().zip(shapes) {
        for (&l, d) in ax.iter().zip(shape.iter()) {
            if l >= n_labels {
                return Err(IrError::msg("einsum: too many broadcast dims"));
            }
            match &sizes[l] {
                None => sizes[l] = Some(d.clone()),
                Some(s) if s == d || d == one => {}
                Some(s) if s == one => sizes[l] = Some(d.clone()),
                Some(_) => return Err(IrError::msg("einsum: a label has two different sizes")),
            }
        }
    }
    Ok(sizes)
}

pub(crate) fn infer(equation: &str, types: &[Option<&TensorType>]) -> Result<Vec<TensorType>> {
    let ts: Vec<&TensorType> = (0..types.len())
        .map(|i| input_type(types, i))
        .collect::<Result<_>>()?;
    let first = ts
        .first()
        .ok_or_else(|| IrError::msg("einsum needs at least one operand"))?;
    if ts.iter().any(|t| t.dtype != first.dtype) || first.dtype == DType::Bool {
        return Err(IrError::msg("einsum operands must share one numeric type"));
    }
    let Some(dims) = ts
        .iter()
        .map(|t| t.shape.dims())
        .collect::<Option<Vec<&[Dim]>>>()
    else {
        return Ok(vec![TensorType::unknown_shape(first.dtype)]);
    };
    let ranks: Vec<usize> = dims.iter().map(|d| d.len()).collect();
    let p = plan(equation, &ranks)?;
    // Symbolic dims: a known size other than 1 wins; otherwise keep what there is.
    let mut sizes: Vec<Option<Dim>> = vec![None; ELLIPSIS_BASE * 2 + 64];
    for (ax, shape) in p.axes.iter().zip(&dims) {
        for (&l, d) in ax.iter().zip(shape.iter()) {
            let slot = sizes
                .get_mut(l)
                .ok_or_else(|| IrError::msg("einsum: too many broadcast dims"))?;
            *slot = match (slot.take(), d) {
                (None, d) => Some(d.clone()),
                (Some(Dim::Known(1)), d) => Some(d.clone()),
                (Some(s), Dim::Known(1)) => Some(s),
                (Some(Dim::Known(a)), Dim::Known(b)) if a != *b => {
                    return Err(IrError::msg(format!(
                        "einsum: a label has sizes {a} and {b}"
                    )))
                }
                (Some(Dim::Known(a)), _) => Some(Dim::Known(a)),
                (Some(_), Dim::Known(b)) => Some(Dim::Known(*b)),
                (Some(s), d) if &s == d => Some(s),
                (Some(_), _) => Some(Dim::Unknown),
            };
        }
    }
    let out: Vec<Dim> = p
        .output
        .iter()
        .map(|&l| sizes[l].clone().unwrap_or(Dim::Unknown))
        .collect();
    Ok(vec![TensorType::new(first.dtype, Shape(Some(out)))])
}

pub(crate) fn eval(equation: &str, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
    let ts: Vec<&Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_ref()
                .ok_or_else(|| IrError::msg(format!("input {i} is required but absent")))
        })
        .collect::<Result<_>>()?;
    let first = ts
        .first()
        .ok_or_else(|| IrError::msg("einsum needs at least one operand"))?;
    let dt = first.dtype();
    if ts.iter().any(|t| t.dtype() != dt) || dt == DType::Bool {
        return Err(IrError::msg("einsum operands must share one numeric type"));
    }
    let ranks: Vec<usize> = ts.iter().map(|t| t.rank()).collect();
    let p = plan(equation, &ranks)?;
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let sizes = label_sizes(&p, &shapes, &1usize)?;
    let size = |l: Label| sizes[l].unwrap_or(1);
    // Every label once: the output's first, then the summed ones.
    let mut labels = p.output.clone();
    for ax in &p.axes {
        for &l in ax {
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
    }
    let out_shape: Vec<usize> = p.output.iter().map(|&l| size(l)).collect();
    bounded_numel(&out_shape)?;
    let e = Einsum {
        labels,
        n_out: p.output.len(),
        sizes: labels_sizes(&sizes),
        steps: label_steps(&ts, &p.axes),
    };
    if dt.is_float() {
        let vals: Vec<Vec<f64>> = ts.iter().map(|t| t.to_f64_vec()).collect();
        let mut out = e.run(&vals, &p)?;
        // bf16 results go through f32, as the reference accumulates bf16 in f32.
        if dt == DType::BF16 {
            out.iter_mut().for_each(|v| *v = *v as f32 as f64);
        }
        Ok(vec![Tensor::from_f64(dt, out_shape, &out)?])
    } else {
        let vals: Vec<Vec<Wrapping<i64>>> = ts.iter().map(|t| wrapping_i64(t)).collect();
        let out: Vec<i64> = e.run(&vals, &p)?.into_iter().map(|v| v.0).collect();
        Ok(vec![Tensor::from_i64(dt, out_shape, &out)?])
    }
}

fn labels_sizes(sizes: &[Option<usize>]) -> Vec<usize> {
    sizes.iter().map(|s| s.unwrap_or(1)).collect()
}

/// Per operand and label, the offset step: the sum of the strides of the operand's axes
/// carrying the label (0 where the label is absent or the axis broadcasts from size 1).
fn label_steps(ts: &[&Tensor], axes: &[Vec<Label>]) -> Vec<Vec<usize>> {
    ts.iter()
        .zip(axes)
        .map(|(t, ax)| {
            let st = strides(t.shape());
            let mut steps = vec![0usize; ELLIPSIS_BASE * 2 + 64];
            for (i, &l) in ax.iter().enumerate() {
                if t.shape()[i] != 1 {
                    steps[l] += st[i];
                }
            }
            steps
        })
        .collect()
}

struct Einsum {
    /// Output labels first, then the summed ones.
    labels: Vec<Label>,
    n_out: usize,
    /// Size of each label (indexed by label).
    sizes: Vec<usize>,
    /// Per operand, offset step of each label (indexed by label).
    steps: Vec<Vec<usize>>,
}

/// Materialised operands above this many elements make the two-operand gemm path fall back
/// to the direct loop.
const GEMM_PATH_LIMIT: usize = 1 << 28;

impl Einsum {
    fn run<T: Acc>(&self, vals: &[Vec<T>], p: &Plan) -> Result<Vec<T>> {
        if vals.len() == 2 {
            if let Some(out) = self.two_operand_gemm(vals, p) {
                return Ok(out);
            }
        }
        Ok(self.direct(vals))
    }

    /// Walks every combination of label values; each output element sums the products.
    fn direct<T: Acc>(&self, vals: &[Vec<T>]) -> Vec<T> {
        let dims: Vec<usize> = self.labels.iter().map(|&l| self.sizes[l]).collect();
        let steps: Vec<Vec<usize>> = self
            .steps
            .iter()
            .map(|s| self.labels.iter().map(|&l| s[l]).collect())
            .collect();
        let out_n: usize = dims[..self.n_out].iter().product();
        let sum_n: usize = dims[self.n_out..].iter().product();
        let mut idx = vec![0usize; dims.len()];
        let mut offs = vec![0usize; vals.len()];
        let mut out = Vec::with_capacity(out_n);
        for _ in 0..out_n {
            let mut sum = T::default();
            for _ in 0..sum_n {
                let mut prod = vals[0][offs[0]];
                for (o, v) in offs.iter().zip(vals).skip(1) {
                    prod = prod * v[*o];
                }
                sum = sum + prod;
                // Advance the whole index; the summed labels are innermost.
                for d in (0..idx.len()).rev() {
                    idx[d] += 1;
                    for (o, st) in offs.iter_mut().zip(&steps) {
                        *o += st[d];
                    }
                    if idx[d] < dims[d] {
                        break;
                    }
                    for (o, st) in offs.iter_mut().zip(&steps) {
                        *o -= st[d] * idx[d];
                    }
                    idx[d] = 0;
                }
            }
            out.push(sum);
        }
        out
    }

    /// Two operands as a batched matmul: labels in both operands and the output are the
    /// batch, those in the output and one operand are the rows (A) or columns (B), and the
    /// summed ones the inner dim (an operand without a summed label repeats along it, which
    /// sums the other operand's values as the label demands). Each operand is gathered into
    /// that order — diagonals and broadcasting come free with the label steps — multiplied
    /// with [`gemm`], and the result gathered into the output's label order.
    fn two_operand_gemm<T: Acc>(&self, vals: &[Vec<T>], p: &Plan) -> Option<Vec<T>> {
        let in_a = |l: &Label| p.axes[0].contains(l);
        let in_b = |l: &Label| p.axes[1].contains(l);
        let out = &self.labels[..self.n_out];
        let batch: Vec<Label> = out.iter().copied().filter(|l| in_a(l) && in_b(l)).collect();
        let rows: Vec<Label> = out
            .iter()
            .copied()
            .filter(|l| in_a(l) && !in_b(l))
            .collect();
        let cols: Vec<Label> = out
            .iter()
            .copied()
            .filter(|l| !in_a(l) && in_b(l))
            .collect();
        let inner: Vec<Label> = self.labels[self.n_out..].to_vec();
        let prod = |ls: &[Label]| {
            ls.iter()
                .try_fold(1usize, |acc, &l| acc.checked_mul(self.sizes[l]))
        };
        let (nb, m, n, k) = (prod(&batch)?, prod(&rows)?, prod(&cols)?, prod(&inner)?);
        let too_big = |x: usize, y: usize, z: usize| {
            x.checked_mul(y)
                .and_then(|v| v.checked_mul(z))
                .is_none_or(|v| v > GEMM_PATH_LIMIT)
        };
        if too_big(nb, m, k) || too_big(nb, k, n) || too_big(nb, m, n) {
            return None;
        }
        let a_order = [batch.as_slice(), &rows, &inner].concat();
        let b_order = [batch.as_slice(), &inner, &cols].concat();
        let a = self.gather(&vals[0], &self.steps[0], &a_order);
        let b = self.gather(&vals[1], &self.steps[1], &b_order);
        let mut c = vec![T::default(); nb * m * n];
        for i in 0..nb {
            gemm(
                m,
                n,
                k,
                &a[i * m * k..(i + 1) * m * k],
                &b[i * k * n..(i + 1) * k * n],
                &mut c[i * m * n..(i + 1) * m * n],
            );
        }
        // c is laid out (batch, rows, cols); read it back in output order.
        let c_order = [batch.as_slice(), &rows, &cols].concat();
        let c_dims: Vec<usize> = c_order.iter().map(|&l| self.sizes[l]).collect();
        let c_strides = strides(&c_dims);
        let mut c_steps = vec![0usize; self.sizes.len()];
        for (i, &l) in c_order.iter().enumerate() {
            c_steps[l] = c_strides[i];
        }
        Some(self.gather(&c, &c_steps, out))
    }

    /// The elements of an operand in the row-major order of `order`'s labels.
    fn gather<T: Copy>(&self, v: &[T], steps: &[usize], order: &[Label]) -> Vec<T> {
        let dims: Vec<usize> = order.iter().map(|&l| self.sizes[l]).collect();
        let st: Vec<usize> = order.iter().map(|&l| steps[l]).collect();
        let total: usize = dims.iter().product();
        let mut out = Vec::with_capacity(total);
        let mut idx = vec![0usize; dims.len()];
        let mut off = 0usize;
        for _ in 0..total {
            out.push(v[off]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                off += st[d];
                if idx[d] < dims[d] {
                    break;
                }
                off -= st[d] * idx[d];
                idx[d] = 0;
            }
        }
        out
    }
}
