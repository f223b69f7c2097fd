//! Einsum with numpy semantics: explicit (`->`) or implicit output (the labels used once,
//! in ASCII order, after any ellipsis dims), `...` broadcasting, repeated labels within one
//! operand (diagonals) and summation over every label not in the output.
//!
//! Evaluation walks every combination of label values once. Each operand's offset moves by
//! a per-label stride; a label repeated in one operand gets the sum of its axes' strides,
//! which is exactly a diagonal, and a broadcast size-1 axis gets stride 0.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::ops::util::{input_type, strides};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{checked_numel, Tensor};

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
    // Loop labels: output labels first (outer), then the summed ones.
    let mut loop_labels = p.output.clone();
    for ax in &p.axes {
        for &l in ax {
            if !loop_labels.contains(&l) {
                loop_labels.push(l);
            }
        }
    }
    let loop_dims: Vec<usize> = loop_labels.iter().map(|&l| sizes[l].unwrap_or(1)).collect();
    let out_shape: Vec<usize> = loop_dims[..p.output.len()].to_vec();
    let out_n = checked_numel(&out_shape)?;
    let sum_n = checked_numel(&loop_dims[p.output.len()..])?;
    // Per operand and loop label, the offset step (sum over the axes carrying the label).
    let steps: Vec<Vec<usize>> = ts
        .iter()
        .zip(&p.axes)
        .map(|(t, ax)| {
            let st = strides(t.shape());
            loop_labels
                .iter()
                .map(|&l| {
                    ax.iter()
                        .enumerate()
                        .filter(|&(i, &a)| a == l && t.shape()[i] != 1)
                        .map(|(i, _)| st[i])
                        .sum()
                })
                .collect()
        })
        .collect();
    let integer = !dt.is_float();
    let vals: Vec<Vec<f64>> = if integer {
        vec![]
    } else {
        ts.iter().map(|t| t.to_f64_vec()).collect()
    };
    let ivals: Vec<Vec<i64>> = if integer {
        ts.iter().map(|t| t.to_i64_vec()).collect()
    } else {
        vec![]
    };
    let n_ops = ts.len();
    let mut idx = vec![0usize; loop_labels.len()];
    let mut offs = vec![0usize; n_ops];
    let mut fout = Vec::with_capacity(if integer { 0 } else { out_n });
    let mut iout = Vec::with_capacity(if integer { out_n } else { 0 });
    for _ in 0..out_n {
        let (mut fsum, mut isum) = (0.0f64, 0i64);
        for _ in 0..sum_n {
            if integer {
                let mut prod = 1i64;
                for (o, v) in offs.iter().zip(&ivals) {
                    prod = prod.wrapping_mul(v[*o]);
                }
                isum = isum.wrapping_add(prod);
            } else {
                let mut prod = 1.0f64;
                for (o, v) in offs.iter().zip(&vals) {
                    prod *= v[*o];
                }
                fsum += prod;
            }
            // Advance the whole loop index (the summed labels are innermost).
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                for (o, st) in offs.iter_mut().zip(&steps) {
                    *o += st[d];
                }
                if idx[d] < loop_dims[d] {
                    break;
                }
                for (o, st) in offs.iter_mut().zip(&steps) {
                    *o -= st[d] * idx[d];
                }
                idx[d] = 0;
            }
        }
        if integer {
            iout.push(isum);
        } else {
            fout.push(fsum);
        }
    }
    if integer {
        return Ok(vec![Tensor::from_i64(dt, out_shape, &iout)?]);
    }
    // bf16 results go through f32, as the reference accumulates bf16 in f32.
    if dt == DType::BF16 {
        fout.iter_mut().for_each(|v| *v = *v as f32 as f64);
    }
    Ok(vec![Tensor::from_f64(dt, out_shape, &fout)?])
}
