//! Convolution on the CPU device (patches packed straight into the GEMM's panels) against
//! REFERENCE (`ir::eval`): pads (symmetric, asymmetric, auto), strides 1 and 2, dilation,
//! groups, 1-D, batches, depths that are not a multiple of 16, sizes that cut into several
//! k blocks, position chunks and row parts, and the fused bias + residual + relu epilogue;
//! each case on the detected kernel and on the portable one (which also copies patches
//! without vector masks).
//!
//! Tolerance (as tests/gemm.rs): f32 sums in another order differ by about
//! K·eps·Σ|w||x|; we allow 1e-5 · (Σ|w||x| + |bias| + |residual| + 1e-6), with Σ|w||x|
//! computed by the reference as the convolution of |x| with |w|.

use kiln_backends::{Backend, CompileOptions, Program};
use kiln_cpu::gemm::Kernel;
use kiln_cpu::Cpu;
use kiln_ir::{AutoPad, BinaryOp, DType, Graph, Op, Tensor, TensorType, UnaryOp};

mod common;
use common::Rng;

fn abs(t: &Tensor) -> Tensor {
    let v = t
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.abs())
        .collect();
    Tensor::new(t.shape().to_vec(), v).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Activation {
    None,
    Relu,
    Clip(f32, f32),
}

#[derive(Clone, Debug)]
struct Case {
    /// x: [n, c, (h,) w]
    x: Vec<usize>,
    /// Output channels.
    m: usize,
    kernel: Vec<usize>,
    group: usize,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    pads: Vec<i64>,
    auto_pad: AutoPad,
    bias: bool,
    /// Add a run-time tensor of the output's shape (the resnet block's skip connection).
    residual: bool,
    /// Last, a relu or a clip (relu6).
    activation: Activation,
    /// The input's first element is NaN (it must reach the outputs it touches, through
    /// the relu or clip too).
    nan: bool,
    /// The weights as a graph input instead of a constant.
    runtime_weights: bool,
}

fn case(x: &[usize], m: usize, kernel: &[usize]) -> Case {
    let n = kernel.len();
    Case {
        x: x.to_vec(),
        m,
        kernel: kernel.to_vec(),
        group: 1,
        strides: vec![1; n],
        dilations: vec![1; n],
        pads: vec![0; 2 * n],
        auto_pad: AutoPad::NotSet,
        bias: true,
        residual: false,
        activation: Activation::None,
        nan: false,
        runtime_weights: false,
    }
}

impl Case {
    fn stride(mut self, s: i64) -> Self {
        self.strides = vec![s; self.kernel.len()];
        self
    }
    fn pad(mut self, p: i64) -> Self {
        self.pads = vec![p; 2 * self.kernel.len()];
        self
    }
    fn pads(mut self, p: &[i64]) -> Self {
        self.pads = p.to_vec();
        self
    }
    fn dilation(mut self, d: i64) -> Self {
        self.dilations = vec![d; self.kernel.len()];
        self
    }
    fn group(mut self, g: usize) -> Self {
        self.group = g;
        self
    }
    /// Residual add then relu: the resnet block's epilogue.
    fn residual(mut self) -> Self {
        self.residual = true;
        self.activation = Activation::Relu;
        self
    }
    fn add(mut self) -> Self {
        self.residual = true;
        self
    }
    fn relu(mut self) -> Self {
        self.activation = Activation::Relu;
        self
    }
    fn clip(mut self, lo: f32, hi: f32) -> Self {
        self.activation = Activation::Clip(lo, hi);
        self
    }
    fn nan(mut self) -> Self {
        self.nan = true;
        self
    }

    /// The kind of the one step the CPU plan should have.
    fn kind(&self) -> String {
        let add = if self.residual { "+add" } else { "" };
        let act = match self.activation {
            Activation::None => "",
            Activation::Relu => "+relu",
            Activation::Clip(..) => "+clip",
        };
        let how = if self.direct() { "direct" } else { "gemm" };
        format!("conv{add}{act} ({how})")
    }

    /// Whether the conv should run as the direct loop for shallow kernels
    /// (kernels/conv_direct.rs): constant weights, one group, 2 to 480 taps, output rows of
    /// at least 16 that leave at most an eighth of the last 16 idle, and AVX-512F.
    fn direct(&self) -> bool {
        let taps: usize = self.kernel.iter().product();
        let ow = self.out_shape().last().copied().unwrap_or(0);
        let idle = ow.div_ceil(16) * 16 - ow;
        let avx512 = cfg!(target_arch = "x86_64") && {
            #[cfg(target_arch = "x86_64")]
            let has = Kernel::detect() == Kernel::Avx2Fma && std::is_x86_feature_detected!("avx512f");
            #[cfg(not(target_arch = "x86_64"))]
            let has = false;
            has
        };
        avx512
            && !self.runtime_weights
            && self.group == 1
            && taps > 1
            && self.x[1] * taps <= 480
            && ow >= 16
            && 8 * idle <= ow
    }

    fn out_shape(&self) -> Vec<usize> {
        let mut rng = Rng(0);
        let (x, w) = (rng.tensor(&self.x), rng.tensor(&self.w_shape()));
        kiln_ir::eval::run_graph(&self.bare(), &[x, w]).unwrap()[0].shape().to_vec()
    }
    fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
    fn runtime_weights(mut self) -> Self {
        self.runtime_weights = true;
        self
    }
    fn auto_pad(mut self, a: AutoPad) -> Self {
        self.auto_pad = a;
        self.pads = vec![];
        self
    }

    fn op(&self) -> Op {
        Op::Conv {
            auto_pad: self.auto_pad,
            dilations: self.dilations.clone(),
            group: self.group as i64,
            kernel_shape: self.kernel.iter().map(|&k| k as i64).collect(),
            pads: self.pads.clone(),
            strides: self.strides.clone(),
        }
    }

    fn w_shape(&self) -> Vec<usize> {
        let mut s = vec![self.m, self.x[1] / self.group];
        s.extend(&self.kernel);
        s
    }

    /// The convolution alone over x and w (both inputs): the reference's Σ|w||x|.
    fn bare(&self) -> Graph {
        let mut g = Graph::new("bare");
        let x = g.add_input("x", TensorType::known(DType::F32, &self.x));
        let w = g.add_input("w", TensorType::known(DType::F32, &self.w_shape()));
        let y = g.add1(self.op(), "conv", &[x, w]).unwrap();
        g.add_output("y", y);
        g
    }

    /// The graph under test and its inputs; the residual's shape is the output's.
    fn build(&self, rng: &mut Rng) -> (Graph, Vec<Tensor>, Tensor, Option<Tensor>) {
        let wt = rng.tensor(&self.w_shape());
        let out_shape = {
            let y =
                kiln_ir::eval::run_graph(&self.bare(), &[rng.tensor(&self.x), wt.clone()]).unwrap();
            y[0].shape().to_vec()
        };
        let mut g = Graph::new("conv");
        let x = g.add_input("x", TensorType::known(DType::F32, &self.x));
        let mut x0 = rng.tensor(&self.x);
        if self.nan {
            let mut v = x0.as_slice::<f32>().unwrap().to_vec();
            v[0] = f32::NAN;
            x0 = Tensor::new(self.x.clone(), v).unwrap();
        }
        let mut inputs = vec![x0];
        let w = if self.runtime_weights {
            inputs.push(wt.clone());
            g.add_input("w", TensorType::known(DType::F32, &self.w_shape()))
        } else {
            g.add_const("w", wt.clone())
        };
        let mut args = vec![x, w];
        let bias = self.bias.then(|| rng.tensor(&[self.m]));
        if let Some(b) = &bias {
            args.push(g.add_const("b", b.clone()));
        }
        let mut y = g.add1(self.op(), "conv", &args).unwrap();
        let mut residual = None;
        if self.residual {
            let r = rng.tensor(&out_shape);
            let rv = g.add_input("r", TensorType::known(DType::F32, &out_shape));
            inputs.push(r.clone());
            residual = Some(r);
            y = g.add1(Op::Binary(BinaryOp::Add), "add", &[y, rv]).unwrap();
        }
        match self.activation {
            Activation::None => {}
            Activation::Relu => y = g.add1(Op::Unary(UnaryOp::Relu), "relu", &[y]).unwrap(),
            Activation::Clip(lo, hi) => {
                let lo = g.add_const("lo", Tensor::scalar(lo));
                let hi = g.add_const("hi", Tensor::scalar(hi));
                y = g.add1(Op::Clip, "clip", &[y, lo, hi]).unwrap();
            }
        }
        g.add_output("y", y);
        (g, inputs, wt, residual)
    }
}

/// Runs the case on CPU and REFERENCE and compares; returns the CPU plan's step kinds.
fn check(c: &Case, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let (g, inputs, wt, residual) = c.build(&mut rng);
    kiln_ir::verify(&g).unwrap();
    let want = kiln_ir::eval::run_graph(&g, &inputs).unwrap();
    let bound = kiln_ir::eval::run_graph(&c.bare(), &[abs(&inputs[0]), abs(&wt)]).unwrap();
    // The detected kernel (with this CPU's vector patch copies) and the portable one.
    for cpu in [Cpu::new(), Cpu::with_kernel(Kernel::Portable)] {
        let exe = cpu
            .compile(&Program::new(g.clone()), &CompileOptions::default())
            .unwrap();
        let got = exe.run(&inputs, None).unwrap();
        assert_eq!(got[0].shape(), want[0].shape(), "{c:?}");
        let (a, b) = (
            got[0].as_slice::<f32>().unwrap(),
            want[0].as_slice::<f32>().unwrap(),
        );
        let bound = bound[0].as_slice::<f32>().unwrap();
        let r = residual.as_ref().map(|r| r.as_slice::<f32>().unwrap());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            if y.is_nan() {
                assert!(x.is_nan(), "{c:?}: element {i} is {x}, expected NaN");
                continue;
            }
            // |bias| ≤ 1 (uniform in [-1, 1]).
            let terms = 1.0 + r.map_or(0.0, |r| r[i].abs());
            let tol = 1e-5 * (bound[i] + terms + 1e-6);
            assert!(
                (x - y).abs() <= tol,
                "{c:?}: element {i} is {x}, expected {y} (tolerance {tol})"
            );
        }
    }
    kiln_cpu::program::compile(&g).unwrap().kinds()
}

#[test]
fn windows_pads_strides_and_dilation() {
    let cases = [
        case(&[1, 5, 9, 11], 7, &[3, 3]).pad(1),
        case(&[1, 5, 9, 11], 7, &[3, 3]),
        case(&[1, 5, 9, 11], 7, &[3, 3]).pad(1).stride(2),
        case(&[1, 3, 10, 13], 8, &[3, 3]).stride(2),
        case(&[1, 4, 12, 12], 5, &[3, 3]).pad(2).dilation(2),
        case(&[1, 3, 11, 9], 6, &[2, 4]).pads(&[0, 1, 2, 3]),
        case(&[1, 3, 23, 23], 16, &[7, 7]).pad(3).stride(2),
        case(&[1, 6, 7, 8], 9, &[3, 3]).auto_pad(AutoPad::SameUpper),
        case(&[1, 6, 7, 8], 9, &[2, 2])
            .auto_pad(AutoPad::SameLower)
            .stride(2),
        case(&[1, 6, 7, 8], 9, &[3, 3])
            .auto_pad(AutoPad::Valid)
            .no_bias(),
        // A window wider than the padded input on one side only.
        case(&[1, 2, 3, 2], 3, &[3, 3]).pad(1),
        // Output rows of one position, and positions spanning many output rows per panel.
        case(&[1, 4, 9, 1], 5, &[3, 1]).pad(1),
        case(&[1, 4, 1, 40], 5, &[1, 3]).pad(1),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(check(c, 100 + i as u64), [c.kind()], "{c:?}");
    }
}

#[test]
fn pointwise_convolutions() {
    let cases = [
        // A plain matrix product over the input rows (k = 16, mobilenet's expand conv).
        case(&[1, 16, 9, 13], 24, &[1, 1]),
        case(&[1, 19, 5, 7], 5, &[1, 1]).no_bias(),
        // Stride 2 and padding go through the patches.
        case(&[1, 8, 9, 9], 12, &[1, 1]).stride(2),
        case(&[1, 8, 4, 5], 3, &[1, 1]).pad(1),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(check(c, 200 + i as u64), [c.kind()], "{c:?}");
    }
}

#[test]
fn groups_batches_one_dimension_and_runtime_weights() {
    let cases = [
        case(&[1, 6, 8, 9], 4, &[3, 3]).pad(1).group(2),
        case(&[2, 6, 8, 9], 9, &[3, 3]).pad(1).group(3).stride(2),
        case(&[3, 5, 6, 7], 4, &[3, 3]).pad(1),
        case(&[2, 4, 30], 6, &[5]).pad(2),
        case(&[1, 4, 31], 6, &[3]).stride(2).dilation(2),
        case(&[2, 4, 9, 9], 6, &[3, 3]).pad(1).runtime_weights(),
        case(&[1, 16, 9, 9], 8, &[1, 1]).runtime_weights(),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(check(c, 300 + i as u64), [c.kind()], "{c:?}");
    }
}

/// Sizes that cut the work every way: several k blocks (k = 576 = 3 × 192), several
/// chunks of positions with a partial last panel, rows not a multiple of 6, few
/// positions with many channels (rows split over the threads), the fused epilogue.
#[test]
fn large_shapes_cut_into_blocks_chunks_and_row_parts() {
    let cases = [
        case(&[1, 64, 20, 21], 70, &[3, 3]).pad(1).residual(),
        case(&[1, 64, 20, 21], 70, &[3, 3]).pad(1),
        case(&[1, 40, 4, 4], 130, &[3, 3]).pad(1).residual(),
        case(&[1, 300, 7, 7], 33, &[1, 1]).residual(),
        case(&[1, 33, 30, 30], 17, &[3, 3]).stride(2).pad(1),
        case(&[2, 17, 33, 35], 20, &[1, 1]).residual(),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(check(c, 400 + i as u64), [c.kind()], "{c:?}");
    }
}

/// Few output positions (at most 64), at least 64 output channels and a depth of at least
/// 256 run as the transposed product `Cᵀ = patchesᵀ · Wᵀ` (kernels/conv_small_p.rs):
/// positions 49, 64, 40, 9 and 1 (row tiles of 6 with a partial last one), channels not
/// a multiple of 16 (a partial last panel of Wᵀ), several k blocks, 1×1 (the input's
/// rows) and 3×3, 1×3, 3×1 and 1-D kernels with padding, stride and dilation (gathered
/// patches), batches, and every epilogue the copy into NCHW applies: bias, residual,
/// relu, clip, none, and NaN passing through them. The neighbours of the thresholds (63
/// channels, 81 positions, depth 255) take the untransposed path.
#[test]
fn few_positions_many_channels_run_transposed() {
    let cases = [
        case(&[1, 512, 7, 7], 72, &[1, 1]).residual(),
        case(&[1, 600, 7, 7], 130, &[1, 1]).clip(0.0, 6.0),
        case(&[1, 70, 7, 7], 80, &[3, 3]).pad(1).relu(),
        case(&[1, 64, 7, 7], 64, &[3, 3]).pad(1).add().no_bias(),
        case(&[1, 60, 5, 5], 65, &[3, 3])
            .pad(1)
            .stride(2)
            .add()
            .clip(-0.5, 0.5),
        case(&[1, 60, 9, 9], 64, &[3, 3]).pad(1).dilation(2).relu(),
        case(&[1, 520, 3, 3], 64, &[1, 1]),
        case(&[1, 512, 1, 1], 65, &[1, 1]).residual(),
        case(&[1, 60, 1, 1], 96, &[3, 3]).pad(1).relu(),
        case(&[2, 60, 7, 7], 70, &[3, 3]).pad(1).residual(),
        case(&[2, 512, 8, 8], 70, &[1, 1]).add(),
        case(&[1, 512, 7, 7], 72, &[1, 1]).residual().nan(),
        case(&[1, 60, 7, 7], 66, &[3, 3])
            .pad(1)
            .clip(0.0, 6.0)
            .nan(),
        case(&[1, 60, 7, 7], 80, &[3, 3]).pad(1).nan(),
        // Resnet's stride-2 shortcut (1×1 on 13×13 → 7×7) and 3×3 stride 2 on 15×15.
        case(&[1, 512, 13, 13], 64, &[1, 1]).stride(2).add(),
        case(&[1, 64, 15, 15], 96, &[3, 3]).pad(1).stride(2).relu(),
        // Inception's 8×8 1×3 and 3×1 convs, and a 1-D conv.
        case(&[1, 192, 8, 8], 64, &[1, 3])
            .pads(&[0, 1, 0, 1])
            .relu(),
        case(&[1, 192, 8, 8], 70, &[3, 1]).pads(&[1, 0, 1, 0]),
        case(&[1, 200, 40], 64, &[3]).pad(1).residual(),
        // Just outside: 63 channels, 81 positions, depth 255.
        case(&[1, 64, 7, 7], 63, &[3, 3]).pad(1).residual(),
        case(&[1, 512, 9, 9], 64, &[1, 1]).relu(),
        case(&[1, 255, 7, 7], 64, &[1, 1]).relu(),
        // Just inside: depth 256.
        case(&[1, 256, 7, 7], 64, &[1, 1]).relu(),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(check(c, 500 + i as u64), [c.kind()], "{c:?}");
    }
}

/// Stride 1, one group, more than one tap, rows of at least 7, and 16 or 32 output
/// channels (or 48 or 64 from at least 64 input channels) run as a sum over the taps of
/// products reading a padded copy of the input in place (kernels/conv_taps.rs):
/// densenet's 3×3 128→32, several k blocks, even and one-sided kernels, asymmetric pads,
/// dilation, auto padding, batches, and every epilogue the copy into NCHW applies (bias,
/// residual, relu, clip, none, and NaN through them). The neighbours of the thresholds
/// (20 and 80 channels, 64 from 32 input channels, 6-wide rows, stride 2) take
/// `W · patches`.
#[test]
fn few_channels_at_stride_one_run_per_tap() {
    let cases = [
        case(&[1, 128, 14, 14], 32, &[3, 3]).pad(1),
        case(&[1, 20, 9, 11], 16, &[3, 3]).pad(1).residual(),
        case(&[1, 300, 8, 9], 32, &[3, 3]).pad(1).clip(0.0, 6.0),
        case(&[1, 64, 12, 12], 64, &[3, 3]).pad(2).dilation(2).add(),
        case(&[1, 70, 9, 9], 48, &[3, 3]).pad(1).relu(),
        case(&[1, 5, 10, 12], 16, &[2, 4]).pads(&[0, 1, 2, 3]).relu(),
        case(&[1, 4, 11, 10], 16, &[5, 5]).pad(2).nan(),
        case(&[1, 4, 11, 10], 32, &[3, 3]).pad(1).relu().nan(),
        case(&[1, 4, 12, 9], 16, &[1, 3]).pads(&[0, 1, 0, 1]).no_bias(),
        case(&[2, 8, 16, 12], 32, &[3, 3]).pad(1).residual(),
        case(&[1, 6, 9, 8], 16, &[3, 3]).auto_pad(AutoPad::SameLower),
        case(&[1, 8, 10, 10], 16, &[3, 3]),
        // Just outside.
        case(&[1, 8, 10, 10], 20, &[3, 3]).pad(1),
        case(&[1, 64, 10, 10], 80, &[3, 3]).pad(1),
        case(&[1, 32, 10, 10], 64, &[3, 3]).pad(1),
        case(&[1, 8, 10, 6], 16, &[3, 3]).pad(1),
        case(&[1, 8, 10, 10], 16, &[3, 3]).pad(1).stride(2),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(check(c, 600 + i as u64), [c.kind()], "{c:?}");
    }
}

/// Shallow kernels (2 to 480 taps `C·kh·kw`, one group, constant weights) with output rows
/// of at least 16 that leave at most an eighth of the last 16 idle run as a direct loop
/// over a padded copy of the input rows split into the stride's phases
/// (kernels/conv_direct.rs), where the CPU has AVX-512F: mobilenet's and resnet's stems
/// (3×3 stride 2 with Keras' one-sided pad, 7×7 stride 2), output channels that leave
/// partial tiles of 8 (1, 7, 9, 20), rows with a partial last tile and rows split over
/// the threads, stride 3 with dilation, even and one-sided kernels, auto padding, 1-D,
/// batches, the deepest kernel taken (477 taps), and every epilogue (bias or none,
/// residual, relu, clip, NaN through them). The neighbours of the thresholds (486 taps,
/// rows of 15 and 17, a 1×1 kernel, two groups, run-time weights) take the other paths.
#[test]
fn shallow_kernels_run_direct() {
    let cases = [
        case(&[1, 3, 64, 64], 32, &[3, 3])
            .stride(2)
            .pads(&[0, 0, 1, 1])
            .clip(0.0, 6.0),
        case(&[1, 3, 64, 64], 32, &[3, 3])
            .stride(2)
            .pads(&[0, 0, 1, 1])
            .clip(0.0, 6.0)
            .nan(),
        case(&[1, 3, 20, 62], 20, &[7, 7]).stride(2).pad(3).relu(),
        case(&[1, 3, 9, 30], 16, &[3, 3]).pad(1).residual().nan(),
        case(&[1, 2, 5, 47], 1, &[3, 3]).pad(1),
        case(&[1, 2, 5, 47], 7, &[3, 3]).pad(1).no_bias(),
        case(&[1, 2, 5, 47], 9, &[3, 3]).pad(1).add(),
        case(&[1, 4, 20, 95], 8, &[3, 3]).stride(3).dilation(2).pad(2),
        case(&[1, 3, 7, 30], 5, &[2, 4]).pads(&[0, 1, 2, 3]).relu(),
        case(&[1, 3, 12, 32], 6, &[5, 1]).pads(&[2, 0, 2, 0]),
        case(&[1, 3, 10, 64], 12, &[3, 3])
            .auto_pad(AutoPad::SameUpper)
            .stride(2),
        case(&[1, 3, 8, 258], 16, &[3, 3]).pad(1).clip(-0.5, 0.5),
        case(&[2, 3, 17, 62], 10, &[3, 3]).stride(2).pad(1).residual(),
        case(&[2, 4, 64], 6, &[5]).pad(2).relu(),
        case(&[1, 48, 6, 16], 8, &[3, 3]).pad(1),
        case(&[1, 53, 5, 16], 9, &[3, 3]).pad(1).relu(),
        // Just outside.
        case(&[1, 54, 5, 16], 9, &[3, 3]).pad(1),
        case(&[1, 3, 8, 15], 8, &[3, 3]).pad(1),
        case(&[1, 3, 8, 17], 8, &[3, 3]).pad(1),
        case(&[1, 3, 8, 32], 8, &[1, 1]),
        case(&[1, 4, 8, 32], 8, &[3, 3]).pad(1).group(2),
        case(&[1, 3, 8, 32], 8, &[3, 3]).pad(1).runtime_weights(),
    ];
    let mut direct = 0;
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(check(c, 700 + i as u64), [c.kind()], "{c:?}");
        direct += usize::from(c.direct());
    }
    if cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("avx512f") {
        assert_eq!(direct, 16, "the cases before 'just outside' run direct");
    }
}
