//! The GEMM against a naive triple loop in f64, over awkward and real shapes, every
//! epilogue, beta 0 and 1, both kernels, packed and in-place A, one thread and the pool;
//! each case twice: B packed whole (`gemm_with`) and B packed per block by the caller
//! (`gemm_source` with `RowMajor`, the path of 1×1 convolutions), the latter also with A
//! packed whole ahead of the call (`gemm_source_packed`, constant convolution weights:
//! where m ≤ 32 the AVX2 path reads B's whole panels in place, not packed), and
//! at beta 0 into a C treated as uninitialised (`gemm_source_uninit`, a conv's output).
//!
//! Tolerance: f32 sums in another order differ by about k·eps·Σ|a||b|; we allow
//! 1e-5 · (Σ|a||b| + |every added term|), which also covers the fused additions.

use kiln_cpu::gemm::threads::Pool;
use kiln_cpu::gemm::{
    gemm, gemm_source, gemm_source_packed, gemm_source_uninit, gemm_with, Bias, Epilogue, Kernel,
    Options, PackedA, PackedB, RowMajor, SourceA,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum BiasKind {
    None,
    Col,
    Row,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    bias: BiasKind,
    residual: bool,
    clip: Option<(f32, f32)>,
}

impl Case {
    fn plain(m: usize, n: usize, k: usize) -> Case {
        Case {
            m,
            n,
            k,
            accumulate: false,
            bias: BiasKind::None,
            residual: false,
            clip: None,
        }
    }
}

/// Runs one case with row strides padded by `pad` (to catch stride bugs) and checks it.
fn check(case: Case, options: &Options, pad: usize) {
    let Case { m, n, k, .. } = case;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (m * 131 + n * 7 + k) as u64);
    let (lda, ldb, ldc, ldr) = (k + pad, n + pad, n + pad, n + 2 * pad);
    let a = rng.vec(m * lda);
    let b = rng.vec(k * ldb);
    let c0 = rng.vec(m * ldc);
    let bias = rng.vec(m.max(n));
    let res = rng.vec(m * ldr);
    let packed = PackedB::new(k, n, &b, ldb).unwrap();
    let epilogue = Epilogue {
        bias: match case.bias {
            BiasKind::None => None,
            BiasKind::Col => Some(Bias::PerCol(&bias[..n])),
            BiasKind::Row => Some(Bias::PerRow(&bias[..m])),
        },
        residual: case.residual.then_some((&res[..], ldr)),
        clip: case.clip,
    };
    let mut c = c0.clone();
    gemm_with(
        options,
        m,
        &a,
        lda,
        &packed,
        &mut c,
        ldc,
        case.accumulate,
        &epilogue,
    )
    .unwrap();
    let mut c_source = c0.clone();
    gemm_source(
        options,
        m,
        &a,
        lda,
        k,
        n,
        &RowMajor::new(&b, k, n, ldb).unwrap(),
        &mut c_source,
        ldc,
        case.accumulate,
        &epilogue,
    )
    .unwrap();
    let mut c_packed_a = c0.clone();
    gemm_source_packed(
        options,
        &PackedA::new(m, k, &a, lda).unwrap(),
        n,
        &RowMajor::new(&b, k, n, ldb).unwrap(),
        &mut c_packed_a,
        ldc,
        case.accumulate,
        &epilogue,
    )
    .unwrap();
    let mut paths = vec![
        ("packed B", c),
        ("B per block", c_source),
        ("A packed ahead, B per block", c_packed_a),
    ];
    // Into memory the GEMM must treat as uninitialised: the m×n block starts as NaN, which
    // any element left unwritten (or read before written) would leave in the result.
    if !case.accumulate {
        let packed_a = PackedA::new(m, k, &a, lda).unwrap();
        for (path, a_source) in [
            (
                "uninit C, A in place",
                SourceA::InPlace { m, k, a: &a, lda },
            ),
            ("uninit C, A packed ahead", SourceA::Packed(&packed_a)),
        ] {
            let mut c_uninit = c0.clone();
            for i in 0..m {
                c_uninit[i * ldc..i * ldc + n].fill(f32::NAN);
            }
            // SAFETY: the pointer and length are the Vec's own, borrowed for the call.
            unsafe {
                gemm_source_uninit(
                    options,
                    a_source,
                    n,
                    &RowMajor::new(&b, k, n, ldb).unwrap(),
                    c_uninit.as_mut_ptr(),
                    c_uninit.len(),
                    ldc,
                    &epilogue,
                )
            }
            .unwrap();
            paths.push((path, c_uninit));
        }
    }
    for (path, c) in &paths {
        verify(
            case,
            options,
            path,
            c,
            &c0,
            &a,
            &b,
            &bias,
            &res,
            (lda, ldb, ldc, ldr),
        );
    }
}

/// Checks one result of [`check`] against the f64 product.
#[allow(clippy::too_many_arguments)]
fn verify(
    case: Case,
    options: &Options,
    path: &str,
    c: &[f32],
    c0: &[f32],
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    res: &[f32],
    (lda, ldb, ldc, ldr): (usize, usize, usize, usize),
) {
    let Case { m, n, k, .. } = case;
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut scale) = (0f64, 0f64);
            for p in 0..k {
                let x = a[i * lda + p] as f64 * b[p * ldb + j] as f64;
                want += x;
                scale += x.abs();
            }
            let mut add = |v: f32| {
                want += v as f64;
                scale += v.abs() as f64;
            };
            if case.accumulate {
                add(c0[i * ldc + j]);
            }
            match case.bias {
                BiasKind::None => {}
                BiasKind::Col => add(bias[j]),
                BiasKind::Row => add(bias[i]),
            }
            if case.residual {
                add(res[i * ldr + j]);
            }
            if let Some((lo, hi)) = case.clip {
                want = want.clamp(lo as f64, hi as f64);
            }
            let got = c[i * ldc + j] as f64;
            let tol = 1e-5 * scale + 1e-30;
            assert!(
                (got - want).abs() <= tol,
                "{case:?} {path} kernel {:?} pack {} at ({i}, {j}): got {got}, want {want} (tol {tol})",
                options.kernel,
                options.pack_a
            );
        }
        // The padding between rows of C is never written.
        for j in n..ldc {
            assert_eq!(
                c[i * ldc + j],
                c0[i * ldc + j],
                "{case:?} wrote padding at ({i}, {j})"
            );
        }
    }
}

fn all_options() -> Vec<Options<'static>> {
    let mut out = Vec::new();
    for kernel in [Kernel::detect(), Kernel::Portable] {
        for pack_a in [true, false] {
            for pool in [None, Some(Pool::global())] {
                out.push(Options {
                    kernel,
                    pool,
                    pack_a,
                });
            }
        }
    }
    out
}

/// Small and awkward shapes: partial tiles on every side, every row count of the last tile
/// (each has its own kernel), k blocks with a short tail.
const SMALL: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 13, 5),
    (6, 16, 4),
    (5, 17, 3),
    (13, 33, 257),
    (12, 32, 256),
    (145, 31, 9),
    (2, 3, 600),
    (64, 64, 64),
    (31, 47, 513),
    (3, 20, 77),
    (10, 40, 1030),
    // A last panel of 2 columns with an odd depth (the narrow edge path's tail step).
    (9, 18, 71),
    // A last panel of 4 columns (the narrow path's rows of 4 on vectors: xception's
    // 10×10 convs) over several k blocks and every row count of the last tile.
    (13, 36, 600),
    // B's rows read in place (m ≤ 32, whole panels) by the 2-row kernel of that kind.
    (8, 48, 40),
];

#[test]
fn small_shapes_every_epilogue_and_option() {
    let clips = [None, Some((0.0, f32::INFINITY)), Some((-0.5, 0.25))];
    for &(m, n, k) in SMALL {
        for options in all_options() {
            for accumulate in [false, true] {
                for bias in [BiasKind::None, BiasKind::Col, BiasKind::Row] {
                    for residual in [false, true] {
                        for clip in clips {
                            let case = Case {
                                m,
                                n,
                                k,
                                accumulate,
                                bias,
                                residual,
                                clip,
                            };
                            check(case, &options, if m % 2 == 0 { 0 } else { 3 });
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dense_layer_at_batch_one() {
    for options in all_options() {
        check(Case::plain(1, 1000, 2048), &options, 0);
    }
    let fused = Case {
        bias: BiasKind::Col,
        clip: Some((0.0, 6.0)),
        ..Case::plain(1, 1000, 2048)
    };
    check(fused, &Options::default(), 0);
}

#[test]
fn resnet_convolution_as_im2col() {
    // conv 3×3, 64 → 64 channels on 56×56: bias, residual, relu, as a fused resnet block.
    let case = Case {
        bias: BiasKind::Col,
        residual: true,
        clip: Some((0.0, f32::INFINITY)),
        ..Case::plain(3136, 64, 576)
    };
    check(case, &Options::default(), 0);
    check(
        Case::plain(3136, 64, 576),
        &Options {
            pack_a: false,
            ..Options::default()
        },
        0,
    );
}

#[test]
fn late_resnet_stage_shape() {
    check(Case::plain(49, 2048, 512), &Options::default(), 0);
    let case = Case {
        accumulate: true,
        bias: BiasKind::Row,
        ..Case::plain(49, 2048, 512)
    };
    check(
        case,
        &Options {
            kernel: Kernel::Portable,
            ..Options::default()
        },
        1,
    );
}

/// Position counts that do not divide among the threads: each thread takes the same whole
/// panels, and the panel left over is shared by rows (resnet's 3×3 256→256 on 14×14 as
/// im2col: 13 panels, the last of 4 columns; then 13 panels over rows that are not a
/// whole number of tiles).
#[test]
fn leftover_panels_split_by_rows() {
    let fused = Case {
        bias: BiasKind::Row,
        residual: true,
        clip: Some((0.0, f32::INFINITY)),
        ..Case::plain(256, 196, 2304)
    };
    check(fused, &Options::default(), 0);
    for options in all_options() {
        check(
            Case {
                accumulate: true,
                ..Case::plain(101, 200, 300)
            },
            &options,
            3,
        );
    }
}

#[test]
fn zero_depth_applies_only_the_epilogue() {
    let case = Case {
        accumulate: true,
        bias: BiasKind::Col,
        residual: true,
        clip: Some((-0.1, 0.1)),
        ..Case::plain(9, 20, 0)
    };
    for options in all_options() {
        check(case, &options, 0);
    }
}

#[test]
fn transposed_b_packs_the_same_matrix() {
    let (m, n, k) = (11, 37, 300);
    let mut rng = Rng(7);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
    let mut c1 = vec![0.0; m * n];
    let mut c2 = vec![0.0; m * n];
    let none = Epilogue::none();
    gemm(
        m,
        &a,
        k,
        &PackedB::new(k, n, &b, n).unwrap(),
        &mut c1,
        n,
        false,
        &none,
    )
    .unwrap();
    let packed_t = PackedB::from_transposed(k, n, &bt, k).unwrap();
    gemm(m, &a, k, &packed_t, &mut c2, n, false, &none).unwrap();
    assert_eq!(c1, c2);
}

#[test]
fn nan_survives_relu() {
    let b = PackedB::new(1, 1, &[1.0], 1).unwrap();
    let mut c = [0.0f32];
    for kernel in [Kernel::detect(), Kernel::Portable] {
        let options = Options {
            kernel,
            ..Options::default()
        };
        gemm_with(
            &options,
            1,
            &[f32::NAN],
            1,
            &b,
            &mut c,
            1,
            false,
            &Epilogue::relu(),
        )
        .unwrap();
        assert!(c[0].is_nan(), "{kernel:?}");
    }
}

#[test]
fn mismatched_buffers_are_errors_not_panics() {
    let b = PackedB::new(4, 5, &[0.0; 20], 5).unwrap();
    let none = Epilogue::none();
    let mut c = vec![0.0; 15];
    assert!(gemm(3, &[0.0; 11], 4, &b, &mut c, 5, false, &none).is_err());
    assert!(gemm(3, &[0.0; 12], 4, &b, &mut c[..14], 5, false, &none).is_err());
    assert!(gemm(3, &[0.0; 12], 3, &b, &mut c, 5, false, &none).is_err());
    let short_bias = Epilogue {
        bias: Some(Bias::PerCol(&[0.0; 4])),
        ..Epilogue::none()
    };
    assert!(gemm(3, &[0.0; 12], 4, &b, &mut c, 5, false, &short_bias).is_err());
    let short_res = Epilogue {
        residual: Some((&[0.0; 14], 5)),
        ..Epilogue::none()
    };
    assert!(gemm(3, &[0.0; 12], 4, &b, &mut c, 5, false, &short_res).is_err());
    assert!(PackedB::new(4, 5, &[0.0; 19], 5).is_err());
    assert!(gemm(3, &[0.0; 12], 4, &b, &mut c, 5, false, &none).is_ok());
}
