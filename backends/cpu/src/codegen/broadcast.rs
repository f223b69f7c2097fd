//! numpy broadcasting, and the loop layout a kernel walks: the output's dims with every
//! operand's element strides, simplified so that the generated loop nest is as shallow as
//! the data allows.

/// The numpy broadcast of two shapes (right-aligned; a dim of 1 stretches), or `None` when
/// they do not broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < rank {
            1
        } else {
            s[i + s.len() - rank]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The loop nest of a kernel: `dims` (outermost first; the last is the inner loop, which
/// the generated code vectorises) and, for each operand, its stride in elements along each
/// dim (0 where it broadcasts). Outputs are dense in the iteration order, so they need no
/// strides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Never empty; a scalar iterates over `[1]`.
    pub dims: Vec<usize>,
    pub strides: Vec<Vec<usize>>,
}

impl Layout {
    /// The layout of `out` (the iteration shape) reading operands of `shapes`, each of
    /// which must broadcast to `out` (the caller checked).
    ///
    /// Dims of size 1 are dropped, and two neighbouring dims merge when every operand
    /// walks them as one (its outer stride is its inner stride times the inner size,
    /// which includes broadcasting along both): `[2,3,4] + [4]` becomes `[6,4]`, and
    /// `[8,16] + [8,16]` becomes `[128]`. Every operand's inner stride is then 0 or 1.
    pub fn new(out: &[usize], shapes: &[&[usize]]) -> Layout {
        let rank = out.len();
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: Vec<Vec<usize>> = vec![Vec::new(); shapes.len()];
        let full: Vec<Vec<usize>> = shapes.iter().map(|s| aligned_strides(out, s)).collect();
        for d in 0..rank {
            if out[d] == 1 {
                continue;
            }
            let mergeable = !dims.is_empty()
                && full.iter().enumerate().all(|(k, f)| {
                    let last = *strides[k].last().expect("one stride per kept dim");
                    last == f[d] * out[d]
                });
            if mergeable {
                *dims.last_mut().expect("checked non-empty") *= out[d];
                for (k, f) in full.iter().enumerate() {
                    *strides[k].last_mut().expect("checked non-empty") = f[d];
                }
            } else {
                dims.push(out[d]);
                for (k, f) in full.iter().enumerate() {
                    strides[k].push(f[d]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for s in &mut strides {
                s.push(0);
            }
        }
        Layout { dims, strides }
    }

    /// Elements per inner row.
    pub fn inner(&self) -> usize {
        *self.dims.last().expect("a layout has at least one dim")
    }

    /// Number of output elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The element strides of a dense row-major `shape` read as `out` under broadcasting:
/// one stride per dim of `out`, 0 where `shape` has no dim or a dim of 1.
fn aligned_strides(out: &[usize], shape: &[usize]) -> Vec<usize> {
    let lead = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut step = 1;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 {
            strides[lead + i] = step;
        }
        step *= shape[i];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 3, 4], &[4]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn layouts_merge_dims_walked_alike() {
        let l = Layout::new(&[2, 3, 4], &[&[2, 3, 4], &[4]]);
        assert_eq!(l.dims, vec![6, 4]);
        assert_eq!(l.strides, vec![vec![4, 1], vec![0, 1]]);
        let l = Layout::new(&[8, 16], &[&[8, 16], &[8, 16], &[]]);
        assert_eq!(l.dims, vec![128]);
        assert_eq!(l.strides, vec![vec![1], vec![1], vec![0]]);
        let l = Layout::new(&[2, 3, 4], &[&[2, 1, 4], &[3, 1]]);
        assert_eq!(l.dims, vec![2, 3, 4]);
        assert_eq!(l.strides, vec![vec![4, 0, 1], vec![0, 1, 0]]);
        // A per-channel scale over NCHW.
        let l = Layout::new(&[1, 8, 5, 5], &[&[1, 8, 5, 5], &[8, 1, 1]]);
        assert_eq!(l.dims, vec![8, 25]);
        assert_eq!(l.strides, vec![vec![25, 1], vec![1, 0]]);
        let l = Layout::new(&[], &[&[]]);
        assert_eq!(l.dims, vec![1]);
        assert_eq!(l.strides, vec![vec![0]]);
    }
}
