//! InstanceNorm and GroupNorm (statistics over a group's channels and every spatial
//! position), MeanVarianceNormalization (over the listed axes) and LRN (squares over the
//! neighbouring channels). Each output element recomputes its statistics in M, two passes
//! like eval's `moments`.

use super::{input, lit, shape_of, store, Gen};
use kiln_ir::{Op, Value};
use std::fmt::Write;

pub fn body(g: &Gen, op: &Op, ins: &[Option<Value>]) -> Result<String, String> {
    let x = input(ins, 0)?;
    let xs = shape_of(g, x)?;
    let xd = g.dtype(x);
    if !xd.is_float() {
        return Err(format!("{} on {xd}", op.name()));
    }
    let r = xs.len();
    if r < 2 {
        return Err(format!("{} needs rank 2 or more", op.name()));
    }
    let here: Vec<String> = (0..r).map(|j| format!("i{j}")).collect();
    let me = format!("(M){}", g.at(x, &here));
    let c = xs[1];
    match op {
        Op::InstanceNorm { epsilon } | Op::GroupNorm { epsilon, .. } => {
            let groups = match op {
                Op::GroupNorm { num_groups, .. } => usize::try_from(*num_groups).ok().filter(|&g| g > 0).ok_or("num_groups must be positive")?,
                _ => c.max(1),
            };
            if c % groups != 0 {
                return Err(format!("{groups} groups do not divide {c} channels"));
            }
            for i in [1, 2] {
                let v = input(ins, i)?;
                if shape_of(g, v)?.iter().product::<usize>() != c {
                    return Err(format!("input {i} must have one value per channel"));
                }
            }
            let flat = |v: Value| -> Result<String, String> {
                let s = shape_of(g, v)?;
                let coords: Vec<String> = s.iter().map(|&d| if d == 1 { "0".into() } else { "i1".into() }).collect();
                Ok(format!("(M){}", g.at(v, &coords)))
            };
            let cpg = c / groups;
            let spatial: usize = xs[2..].iter().product();
            let mut loops = format!("for (long ch = (i1 / {cpg}L) * {cpg}L; ch < (i1 / {cpg}L + 1) * {cpg}L; ch++) ");
            let mut xc = vec!["i0".to_string(), "ch".to_string()];
            for (j, d) in xs.iter().enumerate().skip(2) {
                let _ = write!(loops, "for (long s{j} = 0; s{j} < {d}L; s{j}++) ");
                xc.push(format!("s{j}"));
            }
            let v = format!("(M){}", g.at(x, &xc));
            let n = cpg * spatial;
            Ok(format!(
                "  M mean = 0; {loops}{{ mean += {v}; }} mean /= {n};\n  M var = 0; {loops}{{ M e = {v} - mean; var += e * e; }} var /= {n};\n  M inv = 1 / sqrt(var + (M){});\n  return {};",
                lit(*epsilon as f64),
                store(xd, &format!("({me} - mean) * inv * {} + {}", flat(input(ins, 1)?)?, flat(input(ins, 2)?)?))?
            ))
        }
        Op::MeanVarianceNormalization { axes } => {
            let axes: &[i64] = if axes.is_empty() { &[0, 2, 3] } else { axes };
            let mut mask = vec![false; r];
            for &a in axes {
                let n = if a < 0 { a + r as i64 } else { a };
                if n < 0 || n as usize >= r {
                    return Err(format!("axis {a} is out of range for rank {r}"));
                }
                mask[n as usize] = true;
            }
            let mut loops = String::new();
            let mut xc = Vec::new();
            let mut n = 1usize;
            for j in 0..r {
                if mask[j] {
                    let _ = write!(loops, "for (long s{j} = 0; s{j} < {}L; s{j}++) ", xs[j]);
                    xc.push(format!("s{j}"));
                    n *= xs[j];
                } else {
                    xc.push(format!("i{j}"));
                }
            }
            let v = format!("(M){}", g.at(x, &xc));
            Ok(format!(
                "  M mean = 0; {loops}{{ mean += {v}; }} mean /= {n};\n  M var = 0; {loops}{{ M e = {v} - mean; var += e * e; }} var /= {n};\n  return {};",
                store(xd, &format!("({me} - mean) / (sqrt(var) + (M)1e-9)"))?
            ))
        }
        Op::Lrn { alpha, beta, bias, size } => {
            let size = usize::try_from(*size).ok().filter(|&s| s > 0).ok_or("size must be positive")?;
            let (below, above) = ((size - 1) / 2, size / 2);
            let mut xc = here.clone();
            xc[1] = "j".into();
            Ok(format!(
                "  long lo = i1 - {below}L; if (lo < 0) lo = 0; long hi = i1 + {above}L; if (hi > {}L) hi = {}L;\n  M sq = 0; for (long j = lo; j <= hi; j++) {{ M e = (M){}; sq += e * e; }}\n  return {};",
                c - 1,
                c - 1,
                g.at(x, &xc),
                store(xd, &format!("{me} / pow((M){} + (M){} / (M){size} * sq, (M){})", lit(*bias as f64), lit(*alpha as f64), lit(*beta as f64)))?
            ))
        }
        _ => Err(format!("{} is not a normalization", op.name())),
    }
}
