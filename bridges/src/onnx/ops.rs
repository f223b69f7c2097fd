//! The one place that maps ONNX op types to IR ops. Attribute defaults follow the ONNX
//! spec; attributes that ONNX later moved to inputs, and other old-opset semantics, are
//! rewritten in `legacy`; If, Loop and Scan are built in `control`.

use super::attrs::{missing, Attrs};
use super::graph::Builder;
use super::tensor::{dtype_from_onnx, tensor_from_proto};
use super::{control, legacy, opset6};
use kiln_ir::*;
use onnx_protobuf::NodeProto;

/// One ONNX node on its way into the IR.
pub(crate) struct NodeCx<'a> {
    pub node: &'a NodeProto,
    /// The IR name of the node (the ONNX name, or its first output's).
    pub name: String,
    /// The default-domain opset the op type is read against.
    pub opset: i64,
    pub attrs: Attrs<'a>,
    /// Resolved inputs; `None` for an absent optional input (empty name).
    pub inputs: Vec<Option<Value>>,
}

impl NodeCx<'_> {
    pub fn input(&self, i: usize) -> Option<Value> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn req(&self, i: usize) -> Result<Value> {
        self.input(i)
            .ok_or_else(|| IrError::msg(format!("{} needs input {i}", self.node.op_type)))
    }

    /// Inputs `0..k`, absent ones `None`.
    pub fn first(&self, k: usize) -> Vec<Option<Value>> {
        (0..k).map(|i| self.input(i)).collect()
    }

    /// How many outputs the node declares (trailing optional ones may be left out).
    pub fn n_out(&self) -> usize {
        self.node.output.len()
    }

    /// A name for a helper node this ONNX node lowers into.
    pub fn sub(&self, what: &str) -> String {
        format!("{}/{what}", self.name)
    }
}

/// Parses a string attribute into a word enum, case-insensitively.
pub(crate) fn word<E>(
    a: &Attrs,
    attr: &str,
    default: &str,
    parse: fn(&str) -> Option<E>,
) -> Result<E> {
    let s = a.string(attr, default)?;
    parse(&s.to_ascii_lowercase())
        .ok_or_else(|| IrError::msg(format!("attribute `{attr}` has unsupported value `{s}`")))
}

pub(crate) fn dtype_attr(code: i64, what: &str) -> Result<DType> {
    let code = i32::try_from(code)
        .map_err(|_| IrError::msg(format!("{what}: type code {code} is out of range")))?;
    dtype_from_onnx(code).map_err(|e| IrError::msg(format!("{what}: {}", e.message)))
}

fn unary(op_type: &str) -> Option<UnaryOp> {
    use UnaryOp::*;
    Some(match op_type {
        "Identity" => Identity,
        "Abs" => Abs,
        "Neg" => Neg,
        "Exp" => Exp,
        "Log" => Log,
        "Sqrt" => Sqrt,
        "Reciprocal" => Reciprocal,
        "Floor" => Floor,
        "Ceil" => Ceil,
        "Round" => Round,
        "Sign" => Sign,
        "Sin" => Sin,
        "Cos" => Cos,
        "Tan" => Tan,
        "Asin" => Asin,
        "Acos" => Acos,
        "Atan" => Atan,
        "Sinh" => Sinh,
        "Cosh" => Cosh,
        "Asinh" => Asinh,
        "Acosh" => Acosh,
        "Atanh" => Atanh,
        "Erf" => Erf,
        "Relu" => Relu,
        "Sigmoid" => Sigmoid,
        "Tanh" => Tanh,
        "Softplus" => Softplus,
        "Softsign" => Softsign,
        "Mish" => Mish,
        "HardSwish" => HardSwish,
        "Not" => Not,
        "BitwiseNot" => BitwiseNot,
        "IsNaN" => IsNaN,
        _ => return None,
    })
}

pub(crate) fn binary(op_type: &str) -> Option<BinaryOp> {
    use BinaryOp::*;
    Some(match op_type {
        "Add" => Add,
        "Sub" => Sub,
        "Mul" => Mul,
        "Div" => Div,
        "Pow" => Pow,
        "And" => And,
        "Or" => Or,
        "Xor" => Xor,
        "Equal" => Equal,
        "Less" => Less,
        "LessOrEqual" => LessOrEqual,
        "Greater" => Greater,
        "GreaterOrEqual" => GreaterOrEqual,
        "BitwiseAnd" => BitwiseAnd,
        "BitwiseOr" => BitwiseOr,
        "BitwiseXor" => BitwiseXor,
        "PRelu" => PRelu,
        _ => return None,
    })
}

fn reduce_kind(op_type: &str) -> Option<ReduceKind> {
    use ReduceKind::*;
    Some(match op_type {
        "ReduceSum" => Sum,
        "ReduceMean" => Mean,
        "ReduceMax" => Max,
        "ReduceMin" => Min,
        "ReduceProd" => Prod,
        "ReduceL1" => L1,
        "ReduceL2" => L2,
        "ReduceLogSum" => LogSum,
        "ReduceLogSumExp" => LogSumExp,
        "ReduceSumSquare" => SumSquare,
        _ => return None,
    })
}

/// Why an op kiln has no IR op for is refused.
fn refusal(op_type: &str) -> String {
    let why = if op_type.starts_with("Sequence")
        || op_type.contains("ToSequence")
        || op_type.contains("FromSequence")
    {
        "sequence types are not supported"
    } else if op_type.starts_with("Optional") {
        "optional types are not supported"
    } else if op_type.starts_with("String")
        || op_type == "RegexFullMatch"
        || op_type == "TfIdfVectorizer"
    {
        "string tensors are not supported"
    } else if op_type.starts_with("Random") || op_type == "Bernoulli" || op_type == "Multinomial" {
        "random number generation is not supported"
    } else {
        "kiln has no IR op for it"
    };
    format!("op {op_type} is not supported: {why}")
}

pub(crate) fn map_node(b: &mut Builder, n: &NodeCx) -> Result<Vec<Value>> {
    let a = &n.attrs;
    let t = n.node.op_type.as_str();
    if n.opset < 7 {
        if let Some(r) = opset6::map(b, n) {
            return r;
        }
    }
    if let Some(u) = unary(t) {
        return b.emit(Op::Unary(u), &n.name, &n.first(1), n.n_out());
    }
    if let Some(op) = binary(t) {
        return b.emit(Op::Binary(op), &n.name, &n.first(2), n.n_out());
    }
    if let Some(kind) = reduce_kind(t) {
        return legacy::reduce(b, n, kind);
    }
    let conv_attrs = || -> Result<(AutoPad, Vec<i64>, i64, Vec<i64>, Vec<i64>, Vec<i64>)> {
        Ok((
            word(a, "auto_pad", "notset", auto_pad)?,
            a.ints("dilations")?,
            a.int("group", 1)?,
            a.ints("kernel_shape")?,
            a.ints("pads")?,
            a.ints("strides")?,
        ))
    };
    let op = match t {
        // ── Structure and elementwise with parameters ──────────────────────────────────
        "Constant" => return Ok(vec![constant(b, n)?]),
        "Cast" => Op::Cast {
            to: dtype_attr(a.req_int("to")?, "Cast `to`")?,
        },
        "CastLike" => {
            let to = b.ty(n.req(1)?).dtype;
            return b.emit(Op::Cast { to }, &n.name, &n.first(1), 1);
        }
        "BitCast" => Op::BitCast {
            to: dtype_attr(a.req_int("to")?, "BitCast `to`")?,
        },
        "Clip" if n.opset < 11 => return legacy::clip(b, n),
        "Clip" => Op::Clip,
        "Where" => Op::Where,
        "IsInf" => Op::IsInf {
            detect_positive: a.bool("detect_positive", true)?,
            detect_negative: a.bool("detect_negative", true)?,
        },
        "LeakyRelu" => Op::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        },
        "Elu" => Op::Elu {
            alpha: a.float("alpha", 1.0)?,
        },
        "Selu" => Op::Selu {
            alpha: a.float("alpha", 1.673_263_2)?,
            gamma: a.float("gamma", 1.050_701)?,
        },
        "Celu" => Op::Celu {
            alpha: a.float("alpha", 1.0)?,
        },
        "ThresholdedRelu" => Op::ThresholdedRelu {
            alpha: a.float("alpha", 1.0)?,
        },
        "HardSigmoid" => Op::HardSigmoid {
            alpha: a.float("alpha", 0.2)?,
            beta: a.float("beta", 0.5)?,
        },
        "Shrink" => Op::Shrink {
            bias: a.float("bias", 0.0)?,
            lambd: a.float("lambd", 0.5)?,
        },
        "Gelu" => Op::Gelu {
            approximate: word(a, "approximate", "none", GeluApproximation::from_word)?,
        },
        "Swish" => Op::Swish {
            alpha: a.float("alpha", 1.0)?,
        },
        "Mod" => {
            let op = if a.bool("fmod", false)? {
                BinaryOp::FMod
            } else {
                BinaryOp::Mod
            };
            Op::Binary(op)
        }
        "BitShift" => {
            let op = match a
                .string_opt("direction")?
                .ok_or_else(|| missing("direction"))?
                .as_str()
            {
                "LEFT" => BinaryOp::BitShiftLeft,
                "RIGHT" => BinaryOp::BitShiftRight,
                other => {
                    return Err(IrError::msg(format!(
                        "attribute `direction` has unsupported value `{other}`"
                    )))
                }
            };
            Op::Binary(op)
        }
        "Sum" => return legacy::variadic(b, n, BinaryOp::Add, false),
        "Mean" => return legacy::variadic(b, n, BinaryOp::Add, true),
        "Max" => return legacy::variadic(b, n, BinaryOp::Max, false),
        "Min" => return legacy::variadic(b, n, BinaryOp::Min, false),

        // ── Reductions and normalizations ──────────────────────────────────────────────
        "ArgMax" | "ArgMin" => Op::ArgReduce {
            max: t == "ArgMax",
            axis: a.int("axis", 0)?,
            keepdims: a.bool("keepdims", true)?,
            select_last_index: a.bool("select_last_index", false)?,
        },
        "Softmax" | "LogSoftmax" | "Hardmax" if n.opset < 13 => return legacy::flat_softmax(b, n),
        "Softmax" => Op::Softmax {
            axis: a.int("axis", -1)?,
        },
        "LogSoftmax" => Op::LogSoftmax {
            axis: a.int("axis", -1)?,
        },
        "Hardmax" => Op::Hardmax {
            axis: a.int("axis", -1)?,
        },
        "CumSum" => Op::CumSum {
            exclusive: a.bool("exclusive", false)?,
            reverse: a.bool("reverse", false)?,
        },
        "CumProd" => Op::CumProd {
            exclusive: a.bool("exclusive", false)?,
            reverse: a.bool("reverse", false)?,
        },
        "TopK" => return legacy::topk(b, n),
        "LpNormalization" => Op::LpNormalization {
            axis: a.int("axis", -1)?,
            p: a.int("p", 2)?,
        },
        "BatchNormalization" => return legacy::batch_norm(b, n),
        "InstanceNormalization" => Op::InstanceNorm {
            epsilon: a.float("epsilon", 1e-5)?,
        },
        "LayerNormalization" => Op::LayerNorm {
            axis: a.int("axis", -1)?,
            epsilon: a.float("epsilon", 1e-5)?,
            stash_type: dtype_attr(a.int("stash_type", 1)?, "stash_type")?,
        },
        "GroupNormalization" if n.opset < 21 => return legacy::group_norm_per_group(b, n),
        "GroupNormalization" => Op::GroupNorm {
            epsilon: a.float("epsilon", 1e-5)?,
            num_groups: a.req_int("num_groups")?,
            stash_type: dtype_attr(a.int("stash_type", 1)?, "stash_type")?,
        },
        "RMSNormalization" => Op::RmsNorm {
            axis: a.int("axis", -1)?,
            epsilon: a.float("epsilon", 1e-5)?,
            stash_type: dtype_attr(a.int("stash_type", 1)?, "stash_type")?,
        },
        "LRN" => Op::Lrn {
            alpha: a.float("alpha", 1e-4)?,
            beta: a.float("beta", 0.75)?,
            bias: a.float("bias", 1.0)?,
            size: a.req_int("size")?,
        },
        "MeanVarianceNormalization" => Op::MeanVarianceNormalization {
            axes: a.ints_opt("axes")?.unwrap_or_else(|| vec![0, 2, 3]),
        },
        "NegativeLogLikelihoodLoss" => Op::NegativeLogLikelihoodLoss {
            reduction: word(a, "reduction", "mean", LossReduction::from_word)?,
            ignore_index: a.int_opt("ignore_index")?,
        },
        "SoftmaxCrossEntropyLoss" => Op::SoftmaxCrossEntropyLoss {
            reduction: word(a, "reduction", "mean", LossReduction::from_word)?,
            ignore_index: a.int_opt("ignore_index")?,
        },

        // ── Linear algebra, convolution, pooling, recurrence ───────────────────────────
        "MatMul" => Op::MatMul,
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.bool("transA", false)?,
            trans_b: a.bool("transB", false)?,
        },
        "Einsum" => Op::Einsum {
            equation: a
                .string_opt("equation")?
                .ok_or_else(|| missing("equation"))?,
        },
        "MatMulInteger" => Op::MatMulInteger,
        "QLinearMatMul" => Op::QLinearMatMul,
        "Conv" => {
            let (auto_pad, dilations, group, kernel_shape, pads, strides) = conv_attrs()?;
            Op::Conv {
                auto_pad,
                dilations,
                group,
                kernel_shape,
                pads,
                strides,
            }
        }
        "ConvInteger" => {
            let (auto_pad, dilations, group, kernel_shape, pads, strides) = conv_attrs()?;
            Op::ConvInteger {
                auto_pad,
                dilations,
                group,
                kernel_shape,
                pads,
                strides,
            }
        }
        "QLinearConv" => {
            let (auto_pad, dilations, group, kernel_shape, pads, strides) = conv_attrs()?;
            Op::QLinearConv {
                auto_pad,
                dilations,
                group,
                kernel_shape,
                pads,
                strides,
            }
        }
        "ConvTranspose" => {
            let (auto_pad, dilations, group, kernel_shape, pads, strides) = conv_attrs()?;
            let output_padding = a.ints("output_padding")?;
            let output_shape = a.ints("output_shape")?;
            Op::ConvTranspose {
                auto_pad,
                dilations,
                group,
                kernel_shape,
                output_padding,
                output_shape,
                pads,
                strides,
            }
        }
        "DeformConv" => Op::DeformConv {
            dilations: a.ints("dilations")?,
            group: a.int("group", 1)?,
            kernel_shape: a.ints("kernel_shape")?,
            offset_group: a.int("offset_group", 1)?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
        },
        "MaxPool" | "AveragePool" | "LpPool" => {
            let kind = match t {
                "MaxPool" => PoolKind::Max,
                "AveragePool" => PoolKind::Average,
                _ => PoolKind::Lp,
            };
            Op::Pool {
                kind,
                auto_pad: word(a, "auto_pad", "notset", auto_pad)?,
                ceil_mode: a.bool("ceil_mode", false)?,
                count_include_pad: a.bool("count_include_pad", false)?,
                dilations: a.ints("dilations")?,
                kernel_shape: a
                    .ints_opt("kernel_shape")?
                    .ok_or_else(|| missing("kernel_shape"))?,
                pads: a.ints("pads")?,
                strides: a.ints("strides")?,
                storage_order: a.int("storage_order", 0)?,
                p: a.int("p", 2)?,
            }
        }
        "GlobalAveragePool" => Op::GlobalPool {
            kind: PoolKind::Average,
            p: 2,
        },
        "GlobalMaxPool" => Op::GlobalPool {
            kind: PoolKind::Max,
            p: 2,
        },
        "GlobalLpPool" => Op::GlobalPool {
            kind: PoolKind::Lp,
            p: a.int("p", 2)?,
        },
        "MaxUnpool" => Op::MaxUnpool {
            kernel_shape: a
                .ints_opt("kernel_shape")?
                .ok_or_else(|| missing("kernel_shape"))?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
        },
        "RNN" | "LSTM" | "GRU" => return legacy::rnn(b, n),
        "Attention" => {
            let softmax_precision = match a.int_opt("softmax_precision")? {
                Some(c) => Some(dtype_attr(c, "softmax_precision")?),
                None => None,
            };
            let op = Op::Attention {
                is_causal: a.bool("is_causal", false)?,
                kv_num_heads: a.int_opt("kv_num_heads")?,
                q_num_heads: a.int_opt("q_num_heads")?,
                qk_matmul_output_mode: a.int("qk_matmul_output_mode", 0)?,
                scale: a.float_opt("scale")?,
                softcap: a.float("softcap", 0.0)?,
                softmax_precision,
                left_window_size: a.int("left_window_size", -1)?,
                right_window_size: a.int("right_window_size", -1)?,
            };
            return b.emit(op, &n.name, &n.first(7), n.n_out());
        }
        "RotaryEmbedding" => Op::RotaryEmbedding {
            interleaved: a.bool("interleaved", false)?,
            num_heads: a.int_opt("num_heads")?,
            rotary_embedding_dim: a.int("rotary_embedding_dim", 0)?,
        },

        // ── Shape and data movement ────────────────────────────────────────────────────
        "Reshape" => Op::Reshape {
            allowzero: a.bool("allowzero", false)?,
        },
        "Transpose" => Op::Transpose {
            perm: a.ints_opt("perm")?,
        },
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1)?,
        },
        "Squeeze" | "Unsqueeze" => return legacy::squeeze(b, n),
        "Concat" => Op::Concat {
            axis: a.req_int("axis")?,
        },
        "Split" => return legacy::split(b, n),
        "Slice" if n.opset < 10 => return legacy::slice(b, n),
        "Slice" => Op::Slice,
        "Gather" => Op::Gather {
            axis: a.int("axis", 0)?,
        },
        "GatherElements" => Op::GatherElements {
            axis: a.int("axis", 0)?,
        },
        "GatherND" => Op::GatherNd {
            batch_dims: a.int("batch_dims", 0)?,
        },
        "ScatterElements" | "Scatter" => Op::ScatterElements {
            axis: a.int("axis", 0)?,
            reduction: word(a, "reduction", "none", ScatterReduction::from_word)?,
        },
        "ScatterND" => Op::ScatterNd {
            reduction: word(a, "reduction", "none", ScatterReduction::from_word)?,
        },
        "Pad" if n.opset < 11 => return legacy::pad(b, n),
        "Pad" => Op::Pad {
            mode: word(a, "mode", "constant", PadMode::from_word)?,
        },
        "Tile" => Op::Tile,
        "Expand" => Op::Expand,
        "Shape" => Op::Shape {
            start: a.int("start", 0)?,
            end: a.int_opt("end")?,
        },
        "Size" => Op::Size,
        "ConstantOfShape" => {
            let value = match a.tensor_opt("value")? {
                Some(t) => tensor_from_proto(t, b.base_dir)?,
                None => Tensor::new(vec![1], vec![0f32])?,
            };
            Op::ConstantOfShape { value }
        }
        "Range" => Op::Range,
        "OneHot" => Op::OneHot {
            axis: a.int("axis", -1)?,
        },
        "NonZero" => Op::NonZero,
        "Compress" => Op::Compress {
            axis: a.int_opt("axis")?,
        },
        "Unique" => Op::Unique {
            axis: a.int_opt("axis")?,
            sorted: a.bool("sorted", true)?,
        },
        "ReverseSequence" => Op::ReverseSequence {
            batch_axis: a.int("batch_axis", 1)?,
            time_axis: a.int("time_axis", 0)?,
        },
        "DepthToSpace" => Op::DepthToSpace {
            blocksize: a.req_int("blocksize")?,
            mode: word(a, "mode", "DCR", DepthToSpaceMode::from_word)?,
        },
        "SpaceToDepth" => Op::SpaceToDepth {
            blocksize: a.req_int("blocksize")?,
            mode: word(a, "mode", "DCR", DepthToSpaceMode::from_word)?,
        },
        "Trilu" => Op::Trilu {
            upper: a.bool("upper", true)?,
        },
        "EyeLike" => {
            let dtype = match a.int_opt("dtype")? {
                Some(c) => Some(dtype_attr(c, "EyeLike `dtype`")?),
                None => None,
            };
            Op::EyeLike {
                dtype,
                k: a.int("k", 0)?,
            }
        }
        "Upsample" => return legacy::upsample(b, n),
        "Resize" if n.opset < 11 => return legacy::upsample(b, n),
        "Resize" => Op::Resize {
            antialias: a.bool("antialias", false)?,
            axes: a.ints("axes")?,
            coordinate_transformation_mode: word(
                a,
                "coordinate_transformation_mode",
                "half_pixel",
                CoordinateTransform::from_word,
            )?,
            cubic_coeff_a: a.float("cubic_coeff_a", -0.75)?,
            exclude_outside: a.bool("exclude_outside", false)?,
            extrapolation_value: a.float("extrapolation_value", 0.0)?,
            keep_aspect_ratio_policy: word(
                a,
                "keep_aspect_ratio_policy",
                "stretch",
                KeepAspectRatio::from_word,
            )?,
            mode: word(a, "mode", "nearest", ResizeMode::from_word)?,
            nearest_mode: word(
                a,
                "nearest_mode",
                "round_prefer_floor",
                NearestMode::from_word,
            )?,
        },
        "CenterCropPad" => Op::CenterCropPad {
            axes: a.ints("axes")?,
        },
        "GridSample" => Op::GridSample {
            align_corners: a.bool("align_corners", false)?,
            // Opset 16 spelled the modes bilinear and bicubic.
            mode: word(
                a,
                "mode",
                if n.opset < 20 { "bilinear" } else { "linear" },
                |s| match s {
                    "bilinear" => Some(GridSampleMode::Linear),
                    "bicubic" => Some(GridSampleMode::Cubic),
                    s => GridSampleMode::from_word(s),
                },
            )?,
            padding_mode: word(a, "padding_mode", "zeros", GridPaddingMode::from_word)?,
        },
        "AffineGrid" => Op::AffineGrid {
            align_corners: a.bool("align_corners", false)?,
        },
        "RoiAlign" => Op::RoiAlign {
            // Opset 10 had no attribute and no half-pixel shift ("output_half_pixel").
            coordinate_transformation_mode: word(
                a,
                "coordinate_transformation_mode",
                if n.opset < 16 {
                    "output_half_pixel"
                } else {
                    "half_pixel"
                },
                |s| match s {
                    "output_half_pixel" => Some(CoordinateTransform::OutputHalfPixel),
                    "half_pixel" => Some(CoordinateTransform::HalfPixel),
                    _ => None,
                },
            )?,
            mode: word(a, "mode", "avg", |s| match s {
                "avg" => Some(RoiPoolMode::Average),
                "max" => Some(RoiPoolMode::Max),
                _ => None,
            })?,
            output_height: a.int("output_height", 1)?,
            output_width: a.int("output_width", 1)?,
            sampling_ratio: a.int("sampling_ratio", 0)?,
            spatial_scale: a.float("spatial_scale", 1.0)?,
        },
        "Col2Im" => Op::Col2Im {
            dilations: a.ints("dilations")?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
        },
        "NonMaxSuppression" => Op::NonMaxSuppression {
            center_point_box: a.bool("center_point_box", false)?,
        },

        // ── Quantization ───────────────────────────────────────────────────────────────
        "QuantizeLinear" => {
            if a.int("precision", 0)? != 0 {
                return Err(IrError::msg(
                    "QuantizeLinear attribute `precision` is not supported",
                ));
            }
            Op::QuantizeLinear {
                axis: a.int("axis", 1)?,
                block_size: a.int("block_size", 0)?,
                saturate: a.bool("saturate", true)?,
                output_dtype: output_dtype(a)?,
            }
        }
        "DequantizeLinear" => Op::DequantizeLinear {
            axis: a.int("axis", 1)?,
            block_size: a.int("block_size", 0)?,
            output_dtype: output_dtype(a)?,
        },
        "DynamicQuantizeLinear" => Op::DynamicQuantizeLinear,

        // ── Signal processing ──────────────────────────────────────────────────────────
        "DFT" if n.opset < 20 => return legacy::dft(b, n),
        "DFT" => Op::Dft {
            inverse: a.bool("inverse", false)?,
            onesided: a.bool("onesided", false)?,
        },
        "STFT" => Op::Stft {
            onesided: a.bool("onesided", true)?,
        },
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => Op::Window {
            kind: match t {
                "HannWindow" => WindowKind::Hann,
                "HammingWindow" => WindowKind::Hamming,
                _ => WindowKind::Blackman,
            },
            periodic: a.bool("periodic", true)?,
            output_dtype: dtype_attr(a.int("output_datatype", 1)?, "output_datatype")?,
        },
        "MelWeightMatrix" => Op::MelWeightMatrix {
            output_dtype: dtype_attr(a.int("output_datatype", 1)?, "output_datatype")?,
        },
        "Det" => Op::Det,
        "Dropout" => return legacy::dropout(b, n),

        // ── Control flow ───────────────────────────────────────────────────────────────
        "If" => return control::if_(b, n),
        "Loop" => return control::loop_(b, n),
        "Scan" => return control::scan(b, n),

        _ => return Err(IrError::msg(refusal(t))),
    };
    b.emit(op, &n.name, &n.inputs, n.n_out())
}

pub(crate) fn auto_pad(s: &str) -> Option<AutoPad> {
    match s {
        "notset" | "" => Some(AutoPad::NotSet),
        "same_upper" => Some(AutoPad::SameUpper),
        "same_lower" => Some(AutoPad::SameLower),
        "valid" => Some(AutoPad::Valid),
        _ => None,
    }
}

/// QuantizeLinear/DequantizeLinear `output_dtype`: 0 (the default) means "from the inputs".
fn output_dtype(a: &Attrs) -> Result<Option<DType>> {
    match a.int("output_dtype", 0)? {
        0 => Ok(None),
        c => dtype_attr(c, "output_dtype").map(Some),
    }
}

/// A Constant node: exactly one of its value attributes.
fn constant(b: &mut Builder, n: &NodeCx) -> Result<Value> {
    let a = &n.attrs;
    let t = if let Some(t) = a.tensor_opt("value")? {
        tensor_from_proto(t, b.base_dir)?
    } else if let Some(f) = a.float_opt("value_float")? {
        Tensor::scalar(f)
    } else if let Some(v) = a.floats_opt("value_floats")? {
        Tensor::new(vec![v.len()], v)?
    } else if let Some(i) = a.int_opt("value_int")? {
        Tensor::scalar(i)
    } else if let Some(v) = a.ints_opt("value_ints")? {
        Tensor::new(vec![v.len()], v)?
    } else if a.has("value_string") || a.has("value_strings") {
        return Err(IrError::msg("string constants are not supported"));
    } else if a.has("sparse_value") {
        return Err(IrError::msg(
            "sparse constants (sparse_value) are not supported",
        ));
    } else {
        return Err(IrError::msg("Constant has no value attribute"));
    };
    Ok(b.constant(&n.name, t))
}
