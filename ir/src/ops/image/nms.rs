//! NonMaxSuppression: per batch and class, greedily keeps the highest-scoring boxes that do
//! not overlap an already kept box by more than the IoU threshold.

use super::need_float;
use crate::error::{IrError, Result};
use crate::ops::util::{input, opt_input, scalar_f64, scalar_i64};
use crate::tensor::Tensor;

/// A box as (x_min, x_max, y_min, y_max), from either ONNX box format.
fn corners(b: &[f64], center_point_box: bool) -> (f64, f64, f64, f64) {
    if center_point_box {
        // [x_center, y_center, width, height]
        let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
        (b[0] - hw, b[0] + hw, b[1] - hh, b[1] + hh)
    } else {
        // [y1, x1, y2, x2], corners in either order
        (
            b[1].min(b[3]),
            b[1].max(b[3]),
            b[0].min(b[2]),
            b[0].max(b[2]),
        )
    }
}

/// True when boxes `a` and `b` overlap by more than `threshold` (intersection over union).
fn suppresses(a: &[f64], b: &[f64], center_point_box: bool, threshold: f64) -> bool {
    let (ax0, ax1, ay0, ay1) = corners(a, center_point_box);
    let (bx0, bx1, by0, by1) = corners(b, center_point_box);
    let ix0 = ax0.max(bx0);
    let ix1 = ax1.min(bx1);
    if ix1 <= ix0 {
        return false;
    }
    let iy0 = ay0.max(by0);
    let iy1 = ay1.min(by1);
    if iy1 <= iy0 {
        return false;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    if inter <= 0.0 {
        return false;
    }
    let area_a = (ax1 - ax0) * (ay1 - ay0);
    let area_b = (bx1 - bx0) * (by1 - by0);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > threshold
}

/// An optional scalar input; an empty tensor counts as absent.
fn opt_scalar(inputs: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    opt_input(inputs, i).filter(|t| !t.is_empty())
}

pub(super) fn eval(center_point_box: bool, inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let boxes = input(inputs, 0)?;
    let scores = input(inputs, 1)?;
    need_float("boxes", boxes.dtype())?;
    need_float("scores", scores.dtype())?;
    let (bs, ss) = (boxes.shape(), scores.shape());
    if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
        return Err(IrError::msg(format!(
            "boxes must be [B, N, 4] and scores [B, C, N], found {bs:?} and {ss:?}"
        )));
    }
    let (n_batch, n_boxes, n_classes) = (bs[0], bs[1], ss[1]);
    let max_out = match opt_scalar(inputs, 2) {
        Some(t) => scalar_i64(t)?.max(0) as u64,
        None => 0,
    };
    let iou = match opt_scalar(inputs, 3) {
        Some(t) => scalar_f64(t)?,
        None => 0.0,
    };
    let score_min = match opt_scalar(inputs, 4) {
        Some(t) => Some(scalar_f64(t)?),
        None => None,
    };
    let bv = boxes.to_f64_vec();
    let sv = scores.to_f64_vec();
    let mut selected: Vec<i64> = Vec::new();
    for b in 0..n_batch {
        let batch_boxes = &bv[b * n_boxes * 4..(b + 1) * n_boxes * 4];
        let bx = |i: usize| &batch_boxes[i * 4..i * 4 + 4];
        for c in 0..n_classes {
            let cs = &sv[(b * n_classes + c) * n_boxes..(b * n_classes + c + 1) * n_boxes];
            let mut cand: Vec<usize> = (0..n_boxes)
                .filter(|&i| score_min.map_or(true, |t| cs[i] > t))
                .collect();
            // Highest score first; equal scores keep the lower box index first.
            cand.sort_by(|&i, &j| cs[j].total_cmp(&cs[i]).then(i.cmp(&j)));
            let mut kept: Vec<usize> = Vec::new();
            for i in cand {
                if kept.len() as u64 >= max_out {
                    break;
                }
                if kept
                    .iter()
                    .all(|&k| !suppresses(bx(i), bx(k), center_point_box, iou))
                {
                    kept.push(i);
                    selected.extend([b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    let n = selected.len() / 3;
    Tensor::new(vec![n, 3], selected)
}
