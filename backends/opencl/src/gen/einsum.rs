//! Einsum, one output element per work-item: the product of the operands summed over every
//! label not in the output. Semantics follow `ir::eval`'s numpy einsum: explicit (`->`) or
//! implicit output (labels used once, in ASCII order, after the ellipsis dims), `...`
//! broadcasting, a label repeated within one operand reads its diagonal, and a size-1 axis
//! broadcasts.

use super::{ctype, dims, Body, Gen};
use kiln_ir::{NodeId, Op};
use std::fmt::Write;

pub fn handles(op: &Op) -> bool {
    matches!(op, Op::Einsum { .. })
}

pub fn body(g: &Gen, n: NodeId, shape: &[usize]) -> Option<Body> {
    match &g.graph.node(n).op {
        Op::Einsum { equation } => Some(einsum(g, n, equation, shape)),
        _ => None,
    }
}

/// A label: a letter, or `_j` for the j-th dim of the ellipsis (aligned right, as numpy).
type Label = String;

/// One term's labels, with the ellipsis (if any) expanded to `ell` dims.
fn term_labels(term: &str, ell: Option<usize>, ell_rank: usize) -> Result<Vec<Label>, String> {
    let (before, after) = match term.find("...") {
        Some(i) => (&term[..i], Some(&term[i + 3..])),
        None => (term, None),
    };
    let letters = |s: &str| -> Result<Vec<Label>, String> {
        s.chars().map(|c| if c.is_ascii_alphabetic() { Ok(c.to_string()) } else { Err(format!("einsum: `{c}` is not a label")) }).collect()
    };
    let mut v = letters(before)?;
    if let Some(after) = after {
        let e = ell.unwrap_or(ell_rank);
        v.extend((ell_rank - e..ell_rank).map(|j| format!("_{j}")));
        v.extend(letters(after)?);
    }
    Ok(v)
}

fn einsum(g: &Gen, n: NodeId, equation: &str, shape: &[usize]) -> Body {
    let ins: Vec<_> = g.graph.inputs_of(n).into_iter().map(|v| v.ok_or("einsum: an operand is missing")).collect::<Result<_, _>>()?;
    let out_dtype = g.graph.node(n).outputs[0].dtype;
    let ty = ctype(out_dtype).ok_or("half tensors")?;
    let acc = if out_dtype.is_float() { ty } else { "long" };
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ins.len() {
        return Err(format!("einsum: the equation has {} operands, the node has {}", terms.len(), ins.len()));
    }
    let shapes: Vec<Vec<usize>> = ins.iter().map(|&v| dims(g.graph, v)).collect::<Result<_, _>>()?;
    // Ellipsis dims per operand: its rank less its letters.
    let mut ells = Vec::new();
    for (t, s) in terms.iter().zip(&shapes) {
        let letters = t.replace("...", "").chars().count();
        let e = s.len().checked_sub(letters).ok_or("einsum: a term has more labels than its operand has dims")?;
        if !t.contains("...") && e != 0 {
            return Err("einsum: a term's labels do not match its operand's rank".into());
        }
        ells.push(e);
    }
    let ell_rank = ells.iter().copied().max().unwrap_or(0);
    let axes: Vec<Vec<Label>> = terms.iter().zip(&ells).map(|(t, &e)| term_labels(t, Some(e), ell_rank)).collect::<Result<_, _>>()?;
    let output: Vec<Label> = match rhs {
        Some(r) => term_labels(r, None, ell_rank)?,
        None => {
            let mut v: Vec<Label> = (0..ell_rank).map(|j| format!("_{j}")).collect();
            let mut letters: Vec<char> = axes.iter().flatten().filter_map(|l| l.chars().next().filter(|c| c.is_ascii_alphabetic())).collect();
            letters.sort_unstable();
            let once: Vec<char> = letters.iter().copied().filter(|c| letters.iter().filter(|d| *d == c).count() == 1).collect();
            // ASCII order puts upper case first, which `sort` already does.
            v.extend(once.into_iter().map(|c| c.to_string()));
            v
        }
    };
    if output.len() != shape.len() {
        return Err("einsum: the output's rank does not match the equation".into());
    }
    // Each label's extent: the largest size any operand gives it (size 1 broadcasts).
    let mut extent: Vec<(Label, usize)> = Vec::new();
    for (ax, s) in axes.iter().zip(&shapes) {
        for (l, &d) in ax.iter().zip(s) {
            match extent.iter_mut().find(|(m, _)| m == l) {
                Some((_, e)) => *e = (*e).max(d),
                None => extent.push((l.clone(), d)),
            }
        }
    }
    let var = |l: &Label| -> String {
        match output.iter().position(|o| o == l) {
            Some(p) => format!("i{p}"),
            None => format!("s{}", l.replace('_', "e")),
        }
    };
    let mut s = String::new();
    let _ = writeln!(s, "  {acc} a = 0;");
    let summed: Vec<&(Label, usize)> = extent.iter().filter(|(l, _)| !output.contains(l)).collect();
    for (l, e) in &summed {
        let v = var(l);
        let _ = write!(s, "  for (long {v} = 0; {v} < {e}L; {v}++)");
    }
    let factors: Vec<String> = ins
        .iter()
        .zip(&axes)
        .zip(&shapes)
        .map(|((&v, ax), sh)| {
            let coords: Vec<String> = ax.iter().zip(sh).map(|(l, &d)| if d == 1 { "0".into() } else { var(l) }).collect();
            format!("({acc}){}", g.at(v, &coords))
        })
        .collect();
    let _ = writeln!(s, " a += {};", factors.join(" * "));
    let _ = write!(s, "  return ({ty})a;");
    Ok(s)
}
