//! Shape and data movement.

use super::*;

pub(super) fn convert(b: &mut Builder, n: &NodeDef, ins: &[Value]) -> Result<Option<Vec<Value>>> {
    let name = n.name.as_str();
    let one = |v: Value| -> Result<Vec<Value>> { Ok(vec![v]) };
    let r = match n.op.as_str() {
        // ── Shape and data movement ──
        "Reshape" => {
            let s = b.as_i64_1d(&format!("{name}/shape"), input(ins, 1)?)?;
            // TF's 0 is a zero-size dim, not ONNX's "copy the input dim".
            one(b.add1(Op::Reshape { allowzero: true }, name, &[input(ins, 0)?, s])?)
        }
        "Transpose" => {
            let perm = b.const_ints(input(ins, 1)?, "the permutation")?;
            one(b.add1(Op::Transpose { perm: Some(perm) }, name, &[input(ins, 0)?])?)
        }
        "Squeeze" => {
            let axes = attr_ints(n, "squeeze_dims");
            let x = input(ins, 0)?;
            if axes.is_empty() {
                one(b.add1(Op::Squeeze, name, &[x])?)
            } else {
                let a = b.i64s(&format!("{name}/axes"), &axes);
                one(b.add1(Op::Squeeze, name, &[x, a])?)
            }
        }
        "ExpandDims" => {
            let a = b.as_i64_1d(&format!("{name}/axes"), input(ins, 1)?)?;
            one(b.add1(Op::Unsqueeze, name, &[input(ins, 0)?, a])?)
        }
        "ConcatV2" | "Concat" => {
            let (axis_v, vals) = if n.op == "ConcatV2" {
                let (last, rest) = ins
                    .split_last()
                    .ok_or_else(|| IrError::msg("ConcatV2 has no inputs"))?;
                (*last, rest.to_vec())
            } else {
                let (first, rest) = ins
                    .split_first()
                    .ok_or_else(|| IrError::msg("Concat has no inputs"))?;
                (*first, rest.to_vec())
            };
            let axis = *b
                .const_ints(axis_v, "the axis")?
                .first()
                .ok_or_else(|| IrError::msg("the axis is empty"))?;
            one(b.add1(Op::Concat { axis }, name, &vals)?)
        }
        "Pack" => {
            let axis = attr_i(n, "axis", 0);
            let x0 = input(ins, 0)?;
            let r = b.rank_of(x0)? as i64;
            let axis = if axis < 0 { axis + r + 1 } else { axis };
            let a = b.i64s(&format!("{name}/axes"), &[axis]);
            let mut parts = Vec::new();
            for (i, &v) in ins.iter().enumerate() {
                parts.push(b.add1(Op::Unsqueeze, &format!("{name}/{i}"), &[v, a])?);
            }
            one(b.add1(Op::Concat { axis }, name, &parts)?)
        }
        "Unpack" => {
            let num = attr_i(n, "num", 0);
            let num = usize::try_from(num)
                .ok()
                .filter(|&k| k > 0 && k <= 1 << 20)
                .ok_or_else(|| IrError::msg("bad `num`"))?;
            let axis = attr_i(n, "axis", 0);
            let x = input(ins, 0)?;
            let outs = b.add(
                Op::Split { axis },
                &format!("{name}/split"),
                &[Some(x)],
                num,
            )?;
            let a = b.i64s(&format!("{name}/axes"), &[axis]);
            let mut res = Vec::new();
            for (i, v) in outs.into_iter().enumerate() {
                res.push(b.add1(Op::Squeeze, &format!("{name}:{i}"), &[v, a])?);
            }
            Ok(res)
        }
        "Split" => {
            let k = usize::try_from(attr_i(n, "num_split", 0))
                .ok()
                .filter(|&k| k > 0 && k <= 1 << 20)
                .ok_or_else(|| IrError::msg("bad `num_split`"))?;
            let axis = *b
                .const_ints(input(ins, 0)?, "the axis")?
                .first()
                .ok_or_else(|| IrError::msg("the axis is empty"))?;
            b.add(Op::Split { axis }, name, &[Some(input(ins, 1)?)], k)
        }
        "SplitV" => {
            let x = input(ins, 0)?;
            let mut sizes = b.const_ints(input(ins, 1)?, "size_splits")?;
            let axis = *b
                .const_ints(input(ins, 2)?, "the axis")?
                .first()
                .ok_or_else(|| IrError::msg("the axis is empty"))?;
            if let Some(pos) = sizes.iter().position(|&s| s == -1) {
                let r = b.rank_of(x)? as i64;
                let ax = if axis < 0 { axis + r } else { axis };
                let dim =
                    b.g.value_type(x)
                        .shape
                        .dims()
                        .and_then(|d| usize::try_from(ax).ok().and_then(|a| d.get(a)))
                        .and_then(|d| d.known())
                        .ok_or_else(|| {
                            IrError::msg("SplitV with a -1 size needs the split dim known")
                        })?;
                let known: i64 = sizes.iter().filter(|&&s| s != -1).sum();
                sizes[pos] = dim as i64 - known;
            }
            let s = b.i64s(&format!("{name}/sizes"), &sizes);
            b.add(Op::Split { axis }, name, &[Some(x), Some(s)], sizes.len())
        }
        "Shape" => {
            let s = b.add1(
                Op::Shape {
                    start: 0,
                    end: None,
                },
                name,
                &[input(ins, 0)?],
            )?;
            let to = match attr(n, "out_type") {
                Some(attr_value::Value::Type(t)) => dtype_from_tf(*t)?,
                _ => DType::I32,
            };
            if to == DType::I64 {
                one(s)
            } else {
                one(b.add1(Op::Cast { to }, &format!("{name}/cast"), &[s])?)
            }
        }
        "Fill" => {
            let dims = b.as_i64_1d(&format!("{name}/dims"), input(ins, 0)?)?;
            one(b.add1(Op::Expand, name, &[input(ins, 1)?, dims])?)
        }
        "Range" => one(b.add1(
            Op::Range,
            name,
            &[input(ins, 0)?, input(ins, 1)?, input(ins, 2)?],
        )?),
        "Tile" => {
            let m = b.as_i64_1d(&format!("{name}/multiples"), input(ins, 1)?)?;
            one(b.add1(Op::Tile, name, &[input(ins, 0)?, m])?)
        }
        "Pad" | "PadV2" | "MirrorPad" => {
            // paddings [rank, 2] → ONNX [begins..., ends...]
            let p = input(ins, 1)?;
            let p = b.add1(
                Op::Cast { to: DType::I64 },
                &format!("{name}/pads_i64"),
                &[p],
            )?;
            let p = b.transpose(&format!("{name}/pads_t"), p, &[1, 0])?;
            let p = b.as_i64_1d(&format!("{name}/pads"), p)?;
            let mode = if n.op == "MirrorPad" {
                match attr_s(n, "mode", "REFLECT").as_str() {
                    "REFLECT" => PadMode::Reflect,
                    m => return Err(IrError::msg(format!("MirrorPad mode {m} is not supported"))),
                }
            } else {
                PadMode::Constant
            };
            let x = input(ins, 0)?;
            if n.op == "PadV2" {
                one(b.add1(Op::Pad { mode }, name, &[x, p, input(ins, 2)?])?)
            } else {
                one(b.add1(Op::Pad { mode }, name, &[x, p])?)
            }
        }
        "Slice" => {
            let begin = b.const_ints(input(ins, 1)?, "Slice's begin")?;
            let size = b.const_ints(input(ins, 2)?, "Slice's size")?;
            if begin.len() != size.len() {
                return Err(IrError::msg("Slice's begin and size differ in length"));
            }
            let ends: Vec<i64> = begin
                .iter()
                .zip(&size)
                .map(|(&s, &z)| if z < 0 { i64::MAX } else { s.saturating_add(z) })
                .collect();
            let axes: Vec<i64> = (0..begin.len() as i64).collect();
            let s = b.i64s(&format!("{name}/starts"), &begin);
            let e = b.i64s(&format!("{name}/ends"), &ends);
            let a = b.i64s(&format!("{name}/axes"), &axes);
            one(b.add1(Op::Slice, name, &[input(ins, 0)?, s, e, a])?)
        }
        "StridedSlice" => strided_slice(b, n, ins),
        "ReverseV2" => {
            // A reversal is a slice from the last element back past the first: step -1,
            // start -1, end i64::MIN (clamped to "before index 0" by Slice's rules).
            let x = input(ins, 0)?;
            let rank = b.rank_of(x)? as i64;
            let mut axes = b.const_ints(input(ins, 1)?, "ReverseV2's axis")?;
            for a in &mut axes {
                if *a < -rank || *a >= rank {
                    return Err(IrError::msg(format!(
                        "ReverseV2's axis {a} is out of range for rank {rank}"
                    )));
                }
                if *a < 0 {
                    *a += rank;
                }
            }
            axes.sort_unstable();
            axes.dedup();
            if axes.is_empty() {
                return Ok(Some(vec![b.add1(Op::Unary(UnaryOp::Identity), name, &[x])?]));
            }
            let k = axes.len();
            let s = b.i64s(&format!("{name}/starts"), &vec![-1; k]);
            let e = b.i64s(&format!("{name}/ends"), &vec![i64::MIN; k]);
            let a = b.i64s(&format!("{name}/axes"), &axes);
            let st = b.i64s(&format!("{name}/steps"), &vec![-1; k]);
            one(b.add1(Op::Slice, name, &[x, s, e, a, st])?)
        }
        "GatherV2" | "Gather" => {
            if attr_i(n, "batch_dims", 0) != 0 {
                return Err(IrError::msg("GatherV2 with batch_dims is not supported"));
            }
            let axis = if n.op == "GatherV2" {
                *b.const_ints(input(ins, 2)?, "the axis")?
                    .first()
                    .ok_or_else(|| IrError::msg("the axis is empty"))?
            } else {
                0
            };
            one(b.add1(Op::Gather { axis }, name, &[input(ins, 0)?, input(ins, 1)?])?)
        }
        "ResizeBilinear" | "ResizeNearestNeighbor" => {
            let align = attr_b(n, "align_corners", false);
            let half = attr_b(n, "half_pixel_centers", false);
            let bilinear = n.op == "ResizeBilinear";
            let (coordinate_transformation_mode, nearest_mode) = match (align, half, bilinear) {
                (true, _, true) => (CoordinateTransform::AlignCorners, NearestMode::Floor),
                (true, _, false) => (
                    CoordinateTransform::AlignCorners,
                    NearestMode::RoundPreferCeil,
                ),
                (false, true, true) => (CoordinateTransform::HalfPixel, NearestMode::Floor),
                (false, true, false) => (CoordinateTransform::TfHalfPixelForNn, NearestMode::Floor),
                (false, false, _) => (CoordinateTransform::Asymmetric, NearestMode::Floor),
            };
            let op = Op::Resize {
                antialias: false,
                axes: vec![2, 3],
                coordinate_transformation_mode,
                cubic_coeff_a: -0.75,
                exclude_outside: false,
                extrapolation_value: 0.0,
                keep_aspect_ratio_policy: KeepAspectRatio::Stretch,
                mode: if bilinear {
                    ResizeMode::Linear
                } else {
                    ResizeMode::Nearest
                },
                nearest_mode,
            };
            let sizes = b.as_i64_1d(&format!("{name}/sizes"), input(ins, 1)?)?;
            let x = input(ins, 0)?;
            one(b.in_nchw(name, x, false, |b, xt| {
                let r = b.add(op, name, &[Some(xt), None, None, Some(sizes)], 1)?;
                r.first()
                    .copied()
                    .ok_or_else(|| IrError::msg("Resize produced no output"))
            })?)
        }
        _ => return Ok(None),
    };
    r.map(Some)
}

/// StridedSlice with every mask: a Slice over the input dims, then Squeeze of the shrunk
/// dims and Unsqueeze of the new axes.
fn strided_slice(b: &mut Builder, n: &NodeDef, ins: &[Value]) -> Result<Vec<Value>> {
    let name = n.name.as_str();
    let x = input(ins, 0)?;
    let begin = b.const_ints(input(ins, 1)?, "StridedSlice's begin")?;
    let end = b.const_ints(input(ins, 2)?, "StridedSlice's end")?;
    let strides = b.const_ints(input(ins, 3)?, "StridedSlice's strides")?;
    if begin.len() != end.len() || begin.len() != strides.len() || begin.len() > 64 {
        return Err(IrError::msg(
            "StridedSlice's begin, end and strides differ in length",
        ));
    }
    let bit = |key: &str, i: usize| (attr_i(n, key, 0) >> i) & 1 == 1;
    let rank = b.rank_of(x)?;
    let spec = begin.len();
    let explicit = (0..spec)
        .filter(|&i| !bit("new_axis_mask", i) && !bit("ellipsis_mask", i))
        .count();
    let (mut starts, mut ends, mut axes, mut steps) = (vec![], vec![], vec![], vec![]);
    let mut shrink = vec![];
    // The output's dims in order: Some(input dim) kept, None a new axis.
    let mut layout: Vec<Option<usize>> = vec![];
    let mut dim = 0usize;
    let mut saw_ellipsis = false;
    for i in 0..spec {
        if bit("ellipsis_mask", i) && !saw_ellipsis {
            saw_ellipsis = true;
            let fill = rank.saturating_sub(explicit);
            for _ in 0..fill {
                layout.push(Some(dim));
                dim += 1;
            }
            continue;
        }
        if bit("new_axis_mask", i) {
            layout.push(None);
            continue;
        }
        if dim >= rank {
            return Err(IrError::msg(
                "StridedSlice indexes more dims than the input has",
            ));
        }
        let step = strides[i];
        if step == 0 {
            return Err(IrError::msg("StridedSlice has a zero stride"));
        }
        if bit("shrink_axis_mask", i) {
            let s = begin[i];
            starts.push(s);
            ends.push(if s == -1 {
                i64::MAX
            } else {
                s.saturating_add(1)
            });
            steps.push(1);
            axes.push(dim as i64);
            shrink.push(dim as i64);
        } else {
            let s = if bit("begin_mask", i) {
                if step > 0 {
                    0
                } else {
                    i64::MAX
                }
            } else {
                begin[i]
            };
            let e = if bit("end_mask", i) {
                if step > 0 {
                    i64::MAX
                } else {
                    i64::MIN
                }
            } else {
                end[i]
            };
            starts.push(s);
            ends.push(e);
            steps.push(step);
            axes.push(dim as i64);
            layout.push(Some(dim));
        }
        dim += 1;
    }
    let mut v = x;
    if !axes.is_empty() {
        let s = b.i64s(&format!("{name}/starts"), &starts);
        let e = b.i64s(&format!("{name}/ends"), &ends);
        let a = b.i64s(&format!("{name}/axes"), &axes);
        let st = b.i64s(&format!("{name}/steps"), &steps);
        v = b.add1(Op::Slice, &format!("{name}/slice"), &[v, s, e, a, st])?;
    }
    if !shrink.is_empty() {
        let a = b.i64s(&format!("{name}/shrink"), &shrink);
        v = b.add1(Op::Squeeze, &format!("{name}/squeeze"), &[v, a])?;
    }
    let new_axes: Vec<i64> = layout
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_none())
        .map(|(i, _)| i as i64)
        .collect();
    if !new_axes.is_empty() {
        let a = b.i64s(&format!("{name}/new_axes"), &new_axes);
        v = b.add1(Op::Unsqueeze, &format!("{name}/unsqueeze"), &[v, a])?;
    }
    if v == x {
        v = b.add1(Op::Unary(UnaryOp::Identity), name, &[x])?;
    }
    Ok(vec![v])
}
