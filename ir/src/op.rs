//! The closed set of operations. Semantics follow the newest ONNX opset that defines the op
//! (broadcasting, padding, rounding, integer division); bridges map older opsets and other
//! frameworks onto these. Where ONNX moved an attribute to an input (Reduce axes, Squeeze
//! axes, Split sizes, Clip bounds, Pad pads), the IR takes the input: constant folding makes
//! it static again, and a run-time value still works.
//!
//! Every op is declared once in the table below; its text name, its typed attributes and
//! their text I/O all come from that one line.

use crate::attr::{Attr, AttrValue};
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::word_enum;

word_enum!(
    /// Elementwise functions of one tensor.
    UnaryOp {
        Identity = "identity", Abs = "abs", Neg = "neg", Exp = "exp", Log = "log", Sqrt = "sqrt",
        Reciprocal = "reciprocal", Floor = "floor", Ceil = "ceil",
        /// Round half to even.
        Round = "round", Sign = "sign",
        Sin = "sin", Cos = "cos", Tan = "tan", Asin = "asin", Acos = "acos", Atan = "atan",
        Sinh = "sinh", Cosh = "cosh", Asinh = "asinh", Acosh = "acosh", Atanh = "atanh",
        Erf = "erf", Relu = "relu", Sigmoid = "sigmoid", Tanh = "tanh", Softplus = "softplus",
        Softsign = "softsign", Mish = "mish",
        /// x * relu6(x + 3) / 6
        HardSwish = "hard_swish",
        /// Logical not (bool).
        Not = "not", BitwiseNot = "bitwise_not", IsNaN = "is_nan",
    }
);

word_enum!(
    /// Elementwise functions of two tensors, with ONNX (numpy) broadcasting.
    BinaryOp {
        Add = "add", Sub = "sub", Mul = "mul",
        /// Integer division truncates toward zero, as ONNX Div does.
        Div = "div", Pow = "pow",
        /// Integer modulo with the sign of the divisor (ONNX Mod fmod=0, Python's %).
        Mod = "mod",
        /// C fmod: the sign of the dividend (ONNX Mod fmod=1).
        FMod = "fmod",
        Min = "min", Max = "max",
        And = "and", Or = "or", Xor = "xor",
        Equal = "equal", Less = "less", LessOrEqual = "less_equal", Greater = "greater", GreaterOrEqual = "greater_equal",
        BitShiftLeft = "shl", BitShiftRight = "shr", BitwiseAnd = "bitwise_and", BitwiseOr = "bitwise_or", BitwiseXor = "bitwise_xor",
        /// x if x >= 0 else slope * x; the slope broadcasts.
        PRelu = "prelu",
    }
);

word_enum!(ReduceKind { Sum = "sum", Mean = "mean", Max = "max", Min = "min", Prod = "prod", L1 = "l1", L2 = "l2", LogSum = "log_sum", LogSumExp = "log_sum_exp", SumSquare = "sum_square" });
word_enum!(AutoPad { NotSet = "explicit", SameUpper = "same_upper", SameLower = "same_lower", Valid = "valid" });
word_enum!(PadMode { Constant = "constant", Reflect = "reflect", Edge = "edge", Wrap = "wrap" });
word_enum!(PoolKind { Max = "max", Average = "average", Lp = "lp" });
word_enum!(RnnKind { Rnn = "rnn", Lstm = "lstm", Gru = "gru" });
word_enum!(Direction { Forward = "forward", Reverse = "reverse", Bidirectional = "bidirectional" });
word_enum!(ResizeMode { Nearest = "nearest", Linear = "linear", Cubic = "cubic" });
word_enum!(CoordinateTransform {
    HalfPixel = "half_pixel", HalfPixelSymmetric = "half_pixel_symmetric", PytorchHalfPixel = "pytorch_half_pixel",
    AlignCorners = "align_corners", Asymmetric = "asymmetric", TfCropAndResize = "tf_crop_and_resize",
    /// ONNX opset 11-12 Resize mode for old TF nearest resizes: x_in = (x_out + 0.5) / scale.
    TfHalfPixelForNn = "tf_half_pixel_for_nn",
    /// RoiAlign's legacy mode (ONNX `output_half_pixel`): no half-pixel shift of the rois.
    OutputHalfPixel = "output_half_pixel",
});
word_enum!(NearestMode { RoundPreferFloor = "round_prefer_floor", RoundPreferCeil = "round_prefer_ceil", Floor = "floor", Ceil = "ceil" });
word_enum!(KeepAspectRatio { Stretch = "stretch", NotLarger = "not_larger", NotSmaller = "not_smaller" });
word_enum!(ScatterReduction { None = "none", Add = "add", Mul = "mul", Max = "max", Min = "min" });
word_enum!(LossReduction { None = "none", Sum = "sum", Mean = "mean" });
word_enum!(DepthToSpaceMode { Dcr = "dcr", Crd = "crd" });
word_enum!(GridSampleMode { Linear = "linear", Nearest = "nearest", Cubic = "cubic" });
word_enum!(GridPaddingMode { Zeros = "zeros", Border = "border", Reflection = "reflection" });
word_enum!(RoiPoolMode { Average = "average", Max = "max" });
word_enum!(WindowKind { Hann = "hann", Hamming = "hamming", Blackman = "blackman" });
word_enum!(GeluApproximation { None = "none", Tanh = "tanh" });

/// Declares `Op` from one table. Each line: a variant (unit, or with typed attribute
/// fields) `=> "text name"`. Generates the enum, `name()`, `attrs()` and `from_parts()`.
macro_rules! ops {
    ( $( $(#[$m:meta])* $var:ident $( { $( $(#[$fm:meta])* $f:ident : $t:ty ),* $(,)? } )? => $name:literal ),* $(,)? ) => {
        /// An operation. Unary and binary elementwise ops are grouped so that a fused kernel's
        /// expression DAG can hold them directly.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            /// Elementwise op of one input.
            Unary(UnaryOp),
            /// Elementwise op of two broadcast inputs.
            Binary(BinaryOp),
            $( $(#[$m])* $var $( { $( $(#[$fm])* $f: $t ),* } )? ),*
        }

        impl Op {
            /// The name used in the text form and in op histograms.
            pub fn name(&self) -> &'static str {
                match self {
                    Op::Unary(u) => u.word(),
                    Op::Binary(b) => b.word(),
                    $( Op::$var { .. } => $name ),*
                }
            }

            /// Attributes in declaration order; absent optionals are left out.
            #[allow(unused_mut)]
            pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
                let mut out: Vec<(&'static str, AttrValue)> = Vec::new();
                match self {
                    Op::Unary(_) | Op::Binary(_) => {}
                    $( Op::$var $( { $( $f ),* } )? => {
                        $( $( if let Some(v) = Attr::to_attr($f) { out.push((stringify!($f), v)); } )* )?
                    } ),*
                }
                out
            }

            /// Every op name the text form knows.
            pub fn all_names() -> Vec<&'static str> {
                let mut v: Vec<&'static str> = UnaryOp::ALL.iter().map(|u| u.word()).collect();
                v.extend(BinaryOp::ALL.iter().map(|b| b.word()));
                v.extend([$($name),*]);
                v
            }

            /// Builds an op from its text name and attributes; errors on an unknown name, an
            /// unknown or missing attribute, or one of the wrong type.
            pub fn from_parts(name: &str, attrs: Vec<(String, AttrValue)>) -> Result<Op> {
                if let Some(u) = UnaryOp::from_word(name) {
                    no_attrs(name, &attrs)?;
                    return Ok(Op::Unary(u));
                }
                if let Some(b) = BinaryOp::from_word(name) {
                    no_attrs(name, &attrs)?;
                    return Ok(Op::Binary(b));
                }
                #[allow(unused_mut, unused_variables)]
                let mut attrs = attrs;
                match name {
                    $( $name => {
                        let op = Op::$var $( { $( $f: take::<$t>(name, &mut attrs, stringify!($f))? ),* } )?;
                        no_attrs(name, &attrs)?;
                        Ok(op)
                    } )*
                    _ => Err(IrError::msg(format!("unknown op `{name}`"))),
                }
            }
        }
    };
}

fn take<T: Attr>(op: &str, attrs: &mut Vec<(String, AttrValue)>, key: &str) -> Result<T> {
    let v = attrs.iter().position(|(k, _)| k == key).map(|i| attrs.remove(i).1);
    T::from_attr(v).map_err(|e| IrError::msg(format!("op `{op}`, attribute `{key}`: {}", e.message)))
}

fn no_attrs(op: &str, attrs: &[(String, AttrValue)]) -> Result<()> {
    match attrs.first() {
        None => Ok(()),
        Some((k, _)) => Err(IrError::msg(format!("op `{op}` has no attribute `{k}`"))),
    }
}

ops! {
    // ── Structure ──────────────────────────────────────────────────────────────────────
    /// A graph input; its name and type are the node's.
    Input => "input",
    /// A constant tensor (weights, shapes, scalars).
    Const { value: Tensor } => "const",

    // ── Elementwise with parameters ────────────────────────────────────────────────────
    Cast { to: DType } => "cast",
    /// Reinterprets the bytes of each element as `to` (same element size).
    BitCast { to: DType } => "bitcast",
    /// (x, min?, max?)
    Clip => "clip",
    /// (cond, x, y)
    Where => "where",
    IsInf { detect_positive: bool, detect_negative: bool } => "is_inf",
    LeakyRelu { alpha: f32 } => "leaky_relu",
    Elu { alpha: f32 } => "elu",
    Selu { alpha: f32, gamma: f32 } => "selu",
    Celu { alpha: f32 } => "celu",
    ThresholdedRelu { alpha: f32 } => "thresholded_relu",
    HardSigmoid { alpha: f32, beta: f32 } => "hard_sigmoid",
    Shrink { bias: f32, lambd: f32 } => "shrink",
    Gelu { approximate: GeluApproximation } => "gelu",
    /// x * sigmoid(alpha * x)
    Swish { alpha: f32 } => "swish",

    // ── Reductions and normalizations ──────────────────────────────────────────────────
    /// (data, axes?) — with no axes, all axes unless `noop_with_empty_axes`.
    Reduce { kind: ReduceKind, keepdims: bool, noop_with_empty_axes: bool } => "reduce",
    /// Index of the max (or min) along `axis`, as i64.
    ArgReduce { max: bool, axis: i64, keepdims: bool, select_last_index: bool } => "arg_reduce",
    Softmax { axis: i64 } => "softmax",
    LogSoftmax { axis: i64 } => "log_softmax",
    Hardmax { axis: i64 } => "hardmax",
    /// (x, axis) — a running sum along the axis given as a scalar input.
    CumSum { exclusive: bool, reverse: bool } => "cumsum",
    CumProd { exclusive: bool, reverse: bool } => "cumprod",
    /// (x, k) → (values, indices)
    TopK { axis: i64, largest: bool, sorted: bool } => "topk",
    LpNormalization { axis: i64, p: i64 } => "lp_normalization",
    /// Inference batch norm: (x, scale, bias, mean, var).
    BatchNorm { epsilon: f32 } => "batch_norm",
    /// (x, scale, bias)
    InstanceNorm { epsilon: f32 } => "instance_norm",
    /// (x, scale, bias?) → (y, mean?, inv_std_dev?)
    LayerNorm { axis: i64, epsilon: f32, stash_type: DType } => "layer_norm",
    /// (x, scale, bias)
    GroupNorm { epsilon: f32, num_groups: i64, stash_type: DType } => "group_norm",
    /// (x, scale)
    RmsNorm { axis: i64, epsilon: f32, stash_type: DType } => "rms_norm",
    Lrn { alpha: f32, beta: f32, bias: f32, size: i64 } => "lrn",
    MeanVarianceNormalization { axes: Vec<i64> } => "mean_variance_normalization",
    /// (input, target, weight?)
    NegativeLogLikelihoodLoss { reduction: LossReduction, ignore_index: Option<i64> } => "nll_loss",
    /// (scores, labels, weights?) → (loss, log_prob?)
    SoftmaxCrossEntropyLoss { reduction: LossReduction, ignore_index: Option<i64> } => "softmax_cross_entropy_loss",

    // ── Linear algebra, convolution, pooling, recurrence ───────────────────────────────
    MatMul => "matmul",
    /// (a, b, c?) → alpha·A'·B' + beta·C
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool } => "gemm",
    Einsum { equation: String } => "einsum",
    /// (a, b, a_zero_point?, b_zero_point?) → i32
    MatMulInteger => "matmul_integer",
    /// (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)
    QLinearMatMul => "qlinear_matmul",
    /// (x, w, b?). Empty `strides`, `dilations`, `pads` and `kernel_shape` take ONNX defaults.
    Conv { auto_pad: AutoPad, dilations: Vec<i64>, group: i64, kernel_shape: Vec<i64>, pads: Vec<i64>, strides: Vec<i64> } => "conv",
    /// (x, w, x_zero_point?, w_zero_point?) → i32
    ConvInteger { auto_pad: AutoPad, dilations: Vec<i64>, group: i64, kernel_shape: Vec<i64>, pads: Vec<i64>, strides: Vec<i64> } => "conv_integer",
    /// (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b?)
    QLinearConv { auto_pad: AutoPad, dilations: Vec<i64>, group: i64, kernel_shape: Vec<i64>, pads: Vec<i64>, strides: Vec<i64> } => "qlinear_conv",
    /// (x, w, b?)
    ConvTranspose { auto_pad: AutoPad, dilations: Vec<i64>, group: i64, kernel_shape: Vec<i64>, output_padding: Vec<i64>, output_shape: Vec<i64>, pads: Vec<i64>, strides: Vec<i64> } => "conv_transpose",
    /// (x, w, offset, b?, mask?), in ONNX's order
    DeformConv { dilations: Vec<i64>, group: i64, kernel_shape: Vec<i64>, offset_group: i64, pads: Vec<i64>, strides: Vec<i64> } => "deform_conv",
    /// Max: (x) → (y, indices?). `p` is used by Lp pooling only.
    Pool { kind: PoolKind, auto_pad: AutoPad, ceil_mode: bool, count_include_pad: bool, dilations: Vec<i64>, kernel_shape: Vec<i64>, pads: Vec<i64>, strides: Vec<i64>, storage_order: i64, p: i64 } => "pool",
    GlobalPool { kind: PoolKind, p: i64 } => "global_pool",
    /// (x, indices, output_shape?)
    MaxUnpool { kernel_shape: Vec<i64>, pads: Vec<i64>, strides: Vec<i64> } => "max_unpool",
    /// ONNX RNN/LSTM/GRU: (x, w, r, b?, sequence_lens?, initial_h?, initial_c?, p?) → (y?, y_h?, y_c?)
    Rnn { kind: RnnKind, direction: Direction, hidden_size: i64, activations: Vec<String>, activation_alpha: Vec<f32>, activation_beta: Vec<f32>, clip: Option<f32>, layout: i64, input_forget: bool, linear_before_reset: bool } => "rnn",
    /// ONNX Attention (opsets 23–25): (q, k, v, attn_mask?, past_key?, past_value?, nonpad_kv_seqlen?)
    /// → (y, present_key?, present_value?, qk_matmul_output?). A window size of -1 leaves that
    /// side of the sliding window unbounded (the ONNX default).
    Attention { is_causal: bool, kv_num_heads: Option<i64>, q_num_heads: Option<i64>, qk_matmul_output_mode: i64, scale: Option<f32>, softcap: f32, softmax_precision: Option<DType>, left_window_size: i64, right_window_size: i64 } => "attention",
    /// (x, cos_cache, sin_cache, position_ids?)
    RotaryEmbedding { interleaved: bool, num_heads: Option<i64>, rotary_embedding_dim: i64 } => "rotary_embedding",

    // ── Shape and data movement ────────────────────────────────────────────────────────
    /// (data, shape)
    Reshape { allowzero: bool } => "reshape",
    /// No `perm` reverses the axes.
    Transpose { perm: Option<Vec<i64>> } => "transpose",
    Flatten { axis: i64 } => "flatten",
    /// (data, axes?)
    Squeeze => "squeeze",
    /// (data, axes)
    Unsqueeze => "unsqueeze",
    /// Variadic.
    Concat { axis: i64 } => "concat",
    /// (data, split?) → as many outputs as the node has.
    Split { axis: i64 } => "split",
    /// (data, starts, ends, axes?, steps?)
    Slice => "slice",
    /// (data, indices)
    Gather { axis: i64 } => "gather",
    GatherElements { axis: i64 } => "gather_elements",
    GatherNd { batch_dims: i64 } => "gather_nd",
    /// (data, indices, updates)
    ScatterElements { axis: i64, reduction: ScatterReduction } => "scatter_elements",
    ScatterNd { reduction: ScatterReduction } => "scatter_nd",
    /// (data, pads, constant_value?, axes?)
    Pad { mode: PadMode } => "pad",
    /// (x, repeats)
    Tile => "tile",
    /// (x, shape)
    Expand => "expand",
    Shape { start: i64, end: Option<i64> } => "shape",
    Size => "size",
    /// (shape) → a tensor of that shape filled with `value` (a one-element tensor).
    ConstantOfShape { value: Tensor } => "constant_of_shape",
    /// (start, limit, delta)
    Range => "range",
    /// (indices, depth, values)
    OneHot { axis: i64 } => "one_hot",
    NonZero => "non_zero",
    /// (x, condition)
    Compress { axis: Option<i64> } => "compress",
    /// (x) → (y, indices, inverse_indices, counts)
    Unique { axis: Option<i64>, sorted: bool } => "unique",
    /// (x, sequence_lens)
    ReverseSequence { batch_axis: i64, time_axis: i64 } => "reverse_sequence",
    DepthToSpace { blocksize: i64, mode: DepthToSpaceMode } => "depth_to_space",
    /// `mode` (opset 28) orders the output channels as DepthToSpace's same mode reads them.
    SpaceToDepth { blocksize: i64, mode: DepthToSpaceMode } => "space_to_depth",
    /// (x, k?)
    Trilu { upper: bool } => "trilu",
    /// Identity matrix shaped like the input, of `dtype` (default: the input's).
    EyeLike { dtype: Option<DType>, k: i64 } => "eye_like",
    /// (x, roi?, scales?, sizes?)
    Resize { antialias: bool, axes: Vec<i64>, coordinate_transformation_mode: CoordinateTransform, cubic_coeff_a: f32, exclude_outside: bool, extrapolation_value: f32, keep_aspect_ratio_policy: KeepAspectRatio, mode: ResizeMode, nearest_mode: NearestMode } => "resize",
    /// (input, shape)
    CenterCropPad { axes: Vec<i64> } => "center_crop_pad",
    /// (x, grid)
    GridSample { align_corners: bool, mode: GridSampleMode, padding_mode: GridPaddingMode } => "grid_sample",
    /// (theta, size)
    AffineGrid { align_corners: bool } => "affine_grid",
    /// (x, rois, batch_indices)
    RoiAlign { coordinate_transformation_mode: CoordinateTransform, mode: RoiPoolMode, output_height: i64, output_width: i64, sampling_ratio: i64, spatial_scale: f32 } => "roi_align",
    /// (input, image_shape, block_shape)
    Col2Im { dilations: Vec<i64>, pads: Vec<i64>, strides: Vec<i64> } => "col2im",
    /// (boxes, scores, max_output_boxes_per_class?, iou_threshold?, score_threshold?)
    NonMaxSuppression { center_point_box: bool } => "non_max_suppression",

    // ── Quantization ───────────────────────────────────────────────────────────────────
    /// (x, y_scale, y_zero_point?) → `output_dtype` (default: the zero point's, else u8)
    QuantizeLinear { axis: i64, block_size: i64, saturate: bool, output_dtype: Option<DType> } => "quantize_linear",
    /// (x, x_scale, x_zero_point?)
    DequantizeLinear { axis: i64, block_size: i64, output_dtype: Option<DType> } => "dequantize_linear",
    /// (x) → (y: u8, y_scale, y_zero_point)
    DynamicQuantizeLinear => "dynamic_quantize_linear",

    // ── Signal processing and linear algebra ───────────────────────────────────────────
    /// (input, dft_length?, axis?)
    Dft { inverse: bool, onesided: bool } => "dft",
    /// (signal, frame_step, window?, frame_length?)
    Stft { onesided: bool } => "stft",
    /// (size)
    Window { kind: WindowKind, periodic: bool, output_dtype: DType } => "window",
    /// (num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz)
    MelWeightMatrix { output_dtype: DType } => "mel_weight_matrix",
    Det => "det",
    /// Inference: identity (plus an all-true mask when asked); (data, ratio?, training_mode?)
    Dropout { seed: Option<i64> } => "dropout",

    // ── Control flow: regions are closed graphs; the bridge passes captured outer values
    //    as extra inputs, after the op's own.
    /// (cond, captured…) → the taken branch's outputs. Both branches take the captured values.
    If { then_branch: Box<Graph>, else_branch: Box<Graph> } => "if",
    /// ONNX Loop: (max_trip_count?, cond?, carried…, captured…); the body takes
    /// (iteration, cond, carried…, captured…) and returns (cond, carried…, scan outputs…).
    /// The node's outputs are (final carried…, scan outputs stacked on a new axis 0).
    /// `num_captured` says where the carried values end: the input and output counts alone
    /// cannot tell a carried value from a captured one.
    Loop { body: Box<Graph>, num_captured: i64 } => "loop",
    /// ONNX Scan (opset 9+): (state…, scan inputs…, captured…); the body takes
    /// (state…, scan slices…, captured…) and returns (state…, scan output slices…).
    /// `num_captured` trailing inputs are passed whole to every iteration.
    Scan { body: Box<Graph>, num_scan_inputs: i64, num_captured: i64, scan_input_axes: Vec<i64>, scan_input_directions: Vec<i64>, scan_output_axes: Vec<i64>, scan_output_directions: Vec<i64> } => "scan",

    // ── Kernels made by the passes ─────────────────────────────────────────────────────
    /// A fused kernel: a closed graph holding at most one anchor op (conv, matmul, a
    /// reduction…) and the elementwise ops fused around it. The node's inputs are the body's
    /// inputs in order; its outputs are the body's outputs. Constants used only by the kernel
    /// (weights, scalars) live inside the body so that a backend sees them when it compiles.
    Fused { body: Box<Graph> } => "fused",
}

impl Op {
    /// The nested graphs this op holds (If branches, Loop and Scan bodies).
    pub fn subgraphs(&self) -> Vec<&Graph> {
        match self {
            Op::If { then_branch, else_branch } => vec![then_branch, else_branch],
            Op::Loop { body, .. } | Op::Scan { body, .. } | Op::Fused { body } => vec![body],
            _ => vec![],
        }
    }

    pub fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        match self {
            Op::If { then_branch, else_branch } => vec![then_branch, else_branch],
            Op::Loop { body, .. } | Op::Scan { body, .. } | Op::Fused { body } => vec![body],
            _ => vec![],
        }
    }

    /// True for ops whose result depends only on their inputs (safe to fold, dedupe, reorder).
    pub fn is_pure(&self) -> bool {
        !matches!(self, Op::Input | Op::Dropout { seed: Some(_) })
    }
}
