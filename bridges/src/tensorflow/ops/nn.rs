//! Convolution, pooling and normalization (NHWC, wrapped in transposes to NCHW), and
//! linear algebra.

use super::*;

pub(super) fn convert(b: &mut Builder, n: &NodeDef, ins: &[Value]) -> Result<Option<Vec<Value>>> {
    let name = n.name.as_str();
    let one = |v: Value| -> Result<Vec<Value>> { Ok(vec![v]) };
    let r = match n.op.as_str() {
        // ── Convolution, pooling, normalization (NHWC) ──
        "Conv2D" | "DepthwiseConv2dNative" => {
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let strides = spatial(&attr_ints(n, "strides"), is_nchw, "strides")?;
            let dilations = spatial(&attr_ints(n, "dilations"), is_nchw, "dilations")?;
            let (auto_pad, pads) = padding(n, is_nchw)?;
            let x = input(ins, 0)?;
            let f = input(ins, 1)?;
            let fshape =
                b.g.value_type(f)
                    .shape
                    .concrete()
                    .ok_or_else(|| IrError::msg("the filter's shape must be known"))?;
            if fshape.len() != 4 {
                return Err(IrError::msg("the filter must be 4-D"));
            }
            let (w, group) = if n.op == "Conv2D" {
                // HWIO → OIHW; grouped when the input has more channels than the filter.
                let w = b.transpose(&format!("{name}/filter"), f, &[3, 2, 0, 1])?;
                let cin =
                    b.g.value_type(x)
                        .shape
                        .dims()
                        .and_then(|d| d.get(if is_nchw { 1 } else { 3 }))
                        .and_then(|d| d.known());
                let group = match cin {
                    Some(c) if fshape[2] > 0 && c % fshape[2] == 0 => (c / fshape[2]) as i64,
                    _ => 1,
                };
                (w, group)
            } else {
                // [H, W, C, M] → [C*M, 1, H, W], one group per input channel.
                let cm = fshape[2]
                    .checked_mul(fshape[3])
                    .ok_or_else(|| IrError::msg("the filter is too large"))?
                    as i64;
                let shape = b.i64s(
                    &format!("{name}/filter_shape"),
                    &[fshape[0] as i64, fshape[1] as i64, 1, cm],
                );
                let r = b.add1(
                    Op::Reshape { allowzero: false },
                    &format!("{name}/filter_flat"),
                    &[f, shape],
                )?;
                (
                    b.transpose(&format!("{name}/filter"), r, &[3, 2, 0, 1])?,
                    fshape[2] as i64,
                )
            };
            let op = Op::Conv {
                auto_pad,
                dilations,
                group,
                kernel_shape: vec![fshape[0] as i64, fshape[1] as i64],
                pads,
                strides,
            };
            one(b.in_nchw(name, x, is_nchw, |b, xt| b.add1(op, name, &[xt, w]))?)
        }
        "Conv2DBackpropInput" => {
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let strides = spatial(&attr_ints(n, "strides"), is_nchw, "strides")?;
            let dilations = spatial(&attr_ints(n, "dilations"), is_nchw, "dilations")?;
            let (auto_pad, pads) = padding(n, is_nchw)?;
            // Keras builds input_sizes at run time from Shape(x); only the spatial entries
            // matter here, and they are known whenever x's spatial dims are.
            let sizes = b.known_elements(input(ins, 0)?).unwrap_or_default();
            if sizes.len() != 4 {
                return Err(IrError::msg("Conv2DBackpropInput's input_sizes must have 4 entries known at load time"));
            }
            let hw = if is_nchw { [2, 3] } else { [1, 2] };
            let out_hw = hw
                .iter()
                .map(|&i| sizes[i])
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| {
                    IrError::msg(
                        "Conv2DBackpropInput's output height and width (input_sizes) are not known at load time; give the input a known shape",
                    )
                })?;
            let f = input(ins, 1)?;
            let fshape =
                b.g.value_type(f)
                    .shape
                    .concrete()
                    .ok_or_else(|| IrError::msg("the filter's shape must be known"))?;
            if fshape.len() != 4 {
                return Err(IrError::msg("the filter must be 4-D"));
            }
            // [H, W, out, in] → [in, out, H, W]
            let w = b.transpose(&format!("{name}/filter"), f, &[3, 2, 0, 1])?;
            let op = Op::ConvTranspose {
                auto_pad: if auto_pad == AutoPad::Valid {
                    AutoPad::NotSet
                } else {
                    auto_pad
                },
                dilations,
                group: 1,
                kernel_shape: vec![fshape[0] as i64, fshape[1] as i64],
                output_padding: vec![],
                output_shape: out_hw,
                pads,
                strides,
            };
            let x = input(ins, 2)?;
            one(b.in_nchw(name, x, is_nchw, |b, xt| b.add1(op, name, &[xt, w]))?)
        }
        "AvgPool" | "MaxPool" => {
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let strides = spatial(&attr_ints(n, "strides"), is_nchw, "strides")?;
            let kernel_shape = spatial(&attr_ints(n, "ksize"), is_nchw, "ksize")?;
            let (auto_pad, pads) = padding(n, is_nchw)?;
            let op = Op::Pool {
                kind: if n.op == "MaxPool" {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                },
                auto_pad,
                ceil_mode: false,
                count_include_pad: false,
                dilations: vec![],
                kernel_shape,
                pads,
                strides,
                storage_order: 0,
                p: 2,
            };
            one(b.in_nchw(name, input(ins, 0)?, is_nchw, |b, xt| {
                b.add1(op, name, &[xt])
            })?)
        }
        "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => {
            if attr_b(n, "is_training", false) {
                return Err(IrError::msg("training-mode batch norm is not supported"));
            }
            let is_nchw = nchw(&attr_s(n, "data_format", "NHWC"))?;
            let op = Op::BatchNorm {
                epsilon: attr_f(n, "epsilon", 1e-4),
            };
            let rest = [
                input(ins, 1)?,
                input(ins, 2)?,
                input(ins, 3)?,
                input(ins, 4)?,
            ];
            one(b.in_nchw(name, input(ins, 0)?, is_nchw, |b, xt| {
                b.add1(op, name, &[xt, rest[0], rest[1], rest[2], rest[3]])
            })?)
        }
        "BiasAdd" | "BiasAddV1" => {
            let x = input(ins, 0)?;
            let mut bias = input(ins, 1)?;
            if nchw(&attr_s(n, "data_format", "NHWC"))? {
                let r = b.rank_of(x)?;
                let mut shape = vec![-1i64];
                shape.extend(std::iter::repeat_n(1, r.saturating_sub(2)));
                let s = b.i64s(&format!("{name}/bias_shape"), &shape);
                bias = b.add1(
                    Op::Reshape { allowzero: false },
                    &format!("{name}/bias"),
                    &[bias, s],
                )?;
            }
            one(b.add1(Op::Binary(BinaryOp::Add), name, &[x, bias])?)
        }

        // ── Linear algebra ──
        "MatMul" => {
            let op = Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: attr_b(n, "transpose_a", false),
                trans_b: attr_b(n, "transpose_b", false),
            };
            one(b.add1(op, name, &[input(ins, 0)?, input(ins, 1)?])?)
        }
        "BatchMatMul" | "BatchMatMulV2" | "BatchMatMulV3" => {
            let mut x = input(ins, 0)?;
            let mut y = input(ins, 1)?;
            for (key, v) in [("adj_x", &mut x), ("adj_y", &mut y)] {
                if attr_b(n, key, false) {
                    let r = b.rank_of(*v)?;
                    if r < 2 {
                        return Err(IrError::msg("BatchMatMul inputs need rank 2 or more"));
                    }
                    let mut perm: Vec<i64> = (0..r as i64).collect();
                    perm.swap(r - 2, r - 1);
                    *v = b.transpose(&format!("{name}/{key}"), *v, &perm)?;
                }
            }
            one(b.add1(Op::MatMul, name, &[x, y])?)
        }
        "Einsum" => {
            let equation = attr_s(n, "equation", "");
            one(b.add1(Op::Einsum { equation }, name, ins)?)
        }

        _ => return Ok(None),
    };
    r.map(Some)
}
