//! Resize (f32, every mode and coordinate transform) as one pass per resized axis, with the
//! taps and weights of `kiln_ir::resize_taps`, the table `ir::eval` itself runs on: each
//! output line along the axis is a weighted sum of input lines, whole rows of the axes
//! inside it at a time (a vectorised multiply-add), rows split over the pool. eval does
//! the same in f64, element by element, on one thread; the sums here are f32 (a few taps,
//! weights summing to 1: inside the zoo's tolerance).
//!
//! A dtype other than f32, or inputs `resize_taps` rejects, return `None`: the step then
//! replays `ir::eval`, which names what is wrong.

use super::rows::collect_rows;
use crate::device::Ctx;
use kiln_ir::{Op, Result, Tensor};

pub(crate) struct Resize {
    op: Op,
    extrapolation: f32,
}

impl Resize {
    pub fn new(op: &Op) -> Option<Resize> {
        match op {
            Op::Resize {
                extrapolation_value,
                ..
            } => Some(Resize {
                op: op.clone(),
                extrapolation: *extrapolation_value,
            }),
            _ => None,
        }
    }

    pub fn run(&self, ctx: &Ctx, args: &[Option<Tensor>]) -> Option<Result<Tensor>> {
        let x = args.first()?.as_ref()?;
        let xv = x.as_slice::<f32>().ok()?;
        let arg = |i: usize| args.get(i).and_then(Option::as_ref);
        let plan = kiln_ir::resize_taps(&self.op, x.shape(), arg(1), arg(2), arg(3)).ok()?;
        let mut shape = x.shape().to_vec();
        let mut cur: Option<Vec<f32>> = None;
        for (a, taps) in &plan.axes {
            let a = *a;
            let src: &[f32] = cur.as_deref().unwrap_or(xv);
            let (in_len, out_len) = (shape[a], plan.out_shape[a]);
            let outer: usize = shape[..a].iter().product();
            let inner: usize = shape[a + 1..].iter().product();
            let row = out_len.checked_mul(inner)?;
            let len = outer.checked_mul(row)?;
            let work = len.saturating_mul(2);
            let table = Taps::of(taps);
            let next = {
                let line = |o: usize, dst: *mut f32| {
                    let src = &src[o * in_len * inner..(o + 1) * in_len * inner];
                    // SAFETY: `collect_rows` gives each row's `row` floats to one call.
                    let dst = unsafe { std::slice::from_raw_parts_mut(dst, row) };
                    if inner == 1 {
                        // One element per position: a gather, no per-line slicing; with
                        // the same number of taps everywhere (nearest 1, linear 2, cubic
                        // 4), a fixed-size inner loop the compiler unrolls.
                        match table.uniform {
                            Some(1) => gather::<1>(dst, src, &table.taps),
                            Some(2) => gather::<2>(dst, src, &table.taps),
                            Some(4) => gather::<4>(dst, src, &table.taps),
                            _ => {
                                for (d, j) in dst.iter_mut().zip(0..) {
                                    *d = table.get(j).map_or(self.extrapolation, |t| t.fold(0.0, |acc, (k, c)| acc + c * src[k]));
                                }
                            }
                        }
                        return;
                    }
                    for (d, j) in dst.chunks_exact_mut(inner).zip(0..) {
                        combine(d, src, inner, table.get(j), self.extrapolation);
                    }
                };
                if inner == 0 || out_len == 0 {
                    Vec::new()
                } else {
                    // SAFETY: `line` writes all `row` floats of its row (one chunk of
                    // `inner` per output position, each from `combine`).
                    unsafe { collect_rows(ctx, len, row, work, line) }
                }
            };
            shape[a] = out_len;
            cur = Some(next);
        }
        let out = match cur {
            Some(v) => v,
            None => xv.to_vec(),
        };
        Some(Tensor::new(plan.out_shape, out))
    }
}

/// One axis's taps as flat f32 tables: output position j reads `taps[spans[j]]`, or
/// extrapolates where its span is `None`.
struct Taps {
    spans: Vec<Option<std::ops::Range<usize>>>,
    taps: Vec<(usize, f32)>,
    /// The tap count when every position has that many (none extrapolating).
    uniform: Option<usize>,
}

impl Taps {
    fn of(axis: &kiln_ir::AxisTaps) -> Taps {
        let mut taps = Vec::new();
        let spans = axis
            .iter()
            .map(|tap| {
                let t = tap.as_ref()?;
                let start = taps.len();
                taps.extend(t.iter().map(|&(k, c)| (k, c as f32)));
                Some(start..taps.len())
            })
            .collect::<Vec<_>>();
        let first = spans.first().and_then(|s: &Option<std::ops::Range<usize>>| s.as_ref()).map(|r| r.len());
        let uniform = first.filter(|&n| spans.iter().all(|s| s.as_ref().is_some_and(|r| r.len() == n)));
        Taps { spans, taps, uniform }
    }

    /// Output position j's taps, `None` where it extrapolates.
    fn get(&self, j: usize) -> Option<impl Iterator<Item = (usize, f32)> + '_> {
        let span = self.spans.get(j)?.clone()?;
        Some(self.taps[span].iter().copied())
    }
}

/// Output positions with `L` taps each, `taps` holding position j's at `j·L..`: each
/// output `0 + Σ c·x` in tap order, as the general path sums.
fn gather<const L: usize>(dst: &mut [f32], src: &[f32], taps: &[(usize, f32)]) {
    for (d, t) in dst.iter_mut().zip(taps.chunks_exact(L)) {
        let t: &[(usize, f32); L] = t.try_into().expect("L taps");
        *d = t.iter().fold(0.0, |acc, &(k, c)| acc + c * src[k]);
    }
}

/// One output line `d` (the `inner` elements at one position of the axis) from the input
/// lines its taps name, or the extrapolation value where there are none. The first tap
/// starts the sum as `0 + c·x`, as a sum over the taps would.
fn combine(d: &mut [f32], src: &[f32], inner: usize, tap: Option<impl Iterator<Item = (usize, f32)>>, extrapolation: f32) {
    let Some(tap) = tap else {
        d.fill(extrapolation);
        return;
    };
    d.fill(0.0);
    for (k, c) in tap {
        let line = &src[k * inner..(k + 1) * inner];
        d.iter_mut().zip(line).for_each(|(d, &x)| *d += c * x);
    }
}
