//! Every machine-code microkernel this CPU runs (AVX2+FMA, and AVX-512F where present),
//! in both forms (B a packed panel, B's rows in place), computes the same tile as the
//! portable kernel: every row count, every epilogue flag, depths around the unrolled loop's
//! step of 4, and NaN carried through the accumulate and the clip.
//!
//! Inputs are small multiples of 1/4, so every product and sum is exact whatever the order
//! of additions, and the tiles are compared bit for bit.

use cranelift_module::{Linkage, Module};
use kiln_cpu::gemm::module::{define_microkernels, signature};
use kiln_cpu::gemm::portable;
use kiln_cpu::gemm::{
    Isa, KernelFn, TileArgs, FLAG_BETA, FLAG_BIAS_COL, FLAG_BIAS_ROW, FLAG_CLIP, FLAG_RESIDUAL, MR,
    NR,
};

/// The kernel sets of the ISAs this CPU runs: (isa, packed kernels, rows_b kernels).
fn machine_kernels() -> Vec<(Isa, Vec<KernelFn>, Vec<KernelFn>)> {
    let mut isas = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            isas.push(Isa::X86_64Avx2Fma);
        }
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            isas.push(Isa::X86_64Avx512F);
        }
    }
    let builder =
        cranelift_jit::JITBuilder::new(cranelift_module::default_libcall_names()).unwrap();
    let mut module = cranelift_jit::JITModule::new(builder);
    let mut ids = Vec::new();
    for (n, &isa) in isas.iter().enumerate() {
        let packed =
            define_microkernels(&mut module, &format!("t{n}"), Linkage::Local, isa).unwrap();
        let rows = (1..=MR)
            .map(|mr| {
                let id = module
                    .declare_function(&format!("t{n}_rows_{mr}"), Linkage::Local, &signature())
                    .unwrap();
                module
                    .define_function_bytes(id, 64, &isa.rows_b(mr), &[])
                    .unwrap();
                id
            })
            .collect::<Vec<_>>();
        ids.push((isa, packed, rows));
    }
    module.finalize_definitions().unwrap();
    let f = |id| {
        // SAFETY: every id is a finalized kernel, whose ABI is KernelFn.
        unsafe { std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(id)) }
    };
    let kernels = ids
        .into_iter()
        .map(|(isa, packed, rows)| {
            (
                isa,
                packed.into_iter().map(f).collect(),
                rows.into_iter().map(f).collect(),
            )
        })
        .collect();
    // The code must outlive the test's calls.
    std::mem::forget(module);
    kernels
}

fn quarter(i: usize, modulo: usize) -> f32 {
    ((i % modulo) as f32 - (modulo / 2) as f32) * 0.25
}

#[test]
fn every_machine_kernel_matches_the_portable_one() {
    let kernels = machine_kernels();
    if kernels.is_empty() {
        eprintln!("no AVX2/FMA here: only the portable kernel runs, covered by tests/gemm.rs");
        return;
    }
    let flag_sets = [
        0,
        FLAG_BETA,
        FLAG_BIAS_COL | FLAG_CLIP,
        FLAG_BIAS_ROW | FLAG_RESIDUAL,
        FLAG_BETA | FLAG_BIAS_COL | FLAG_RESIDUAL | FLAG_CLIP,
    ];
    let (ldc, ldr, rs_b) = (NR + 3, NR + 5, NR + 7);
    let mut checked = 0;
    for k in [1, 3, 4, 5, 8, 9, 67] {
        // A packed as the rows_b kernels read it (rs_a 1, cs_a MR); the packed-B kernels
        // read the same panel through the strides.
        let a: Vec<f32> = (0..k * MR).map(|i| quarter(i * 5 + 1, 9)).collect();
        // B's rows at stride rs_b, and the same values packed (k rows of 16).
        let b_rows: Vec<f32> = (0..k * rs_b).map(|i| quarter(i * 3 + 2, 7)).collect();
        let b_packed: Vec<f32> = (0..k * NR)
            .map(|i| b_rows[(i / NR) * rs_b + i % NR])
            .collect();
        let bias: Vec<f32> = (0..NR).map(|j| quarter(j, 11)).collect();
        let residual: Vec<f32> = (0..MR * ldr).map(|i| quarter(i * 7, 13)).collect();
        let mut c0: Vec<f32> = (0..MR * ldc).map(|i| quarter(i * 11, 5)).collect();
        // NaN in the old C: the accumulate and the clip must keep it.
        c0[ldc + 3] = f32::NAN;
        for flags in flag_sets {
            for mr in 1..=MR {
                let args = TileArgs {
                    rs_a: 1,
                    cs_a: MR,
                    ldc,
                    flags,
                    bias: bias.as_ptr(),
                    residual: residual.as_ptr(),
                    ldr,
                    lo: -0.5,
                    hi: 1.25,
                    rs_b,
                };
                let run = |f: KernelFn, b: &[f32]| {
                    let mut c = c0.clone();
                    // SAFETY: A holds k·MR floats (rows < mr at stride 1, k at MR); B holds
                    // k rows of 16 at its stride; C and the residual hold MR rows of 16 at
                    // theirs; the bias 16 floats (≥ mr).
                    unsafe { f(k, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), &args) };
                    c
                };
                let want = run(portable::KERNELS[mr - 1], &b_packed);
                for (isa, packed, rows) in &kernels {
                    for (form, got) in [
                        ("packed", run(packed[mr - 1], &b_packed)),
                        ("rows_b", run(rows[mr - 1], &b_rows)),
                    ] {
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(w, g)| w.to_bits() == g.to_bits());
                        assert!(same, "{isa:?} {form} {mr}x16, k {k}, flags {flags:#b}:\n want {want:?}\n  got {got:?}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 7 * flag_sets.len() * MR * 2 * kernels.len());
}
