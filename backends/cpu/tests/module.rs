//! The microkernel's bytes placed in Cranelift modules, called from Cranelift code:
//! in a JITModule (called from Rust), and in an ObjectModule linked into a C program with
//! the system `cc` (the ahead-of-time path: the object must need nothing but libc).
//!
//! Inputs are small multiples of 1/4, so every product and sum is exact and the outputs can
//! be compared for equality.

use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_cpu::gemm::module::{define_microkernels, signature};
use kiln_cpu::gemm::{Isa, Kernel, TileArgs, FLAG_BIAS_COL, FLAG_CLIP, MR, NR};
use std::process::Command;

const K: usize = 9;

fn a_value(i: usize) -> f32 {
    ((i % 7) as f32 - 3.0) * 0.25
}

fn b_value(i: usize) -> f32 {
    ((i % 5) as f32 - 2.0) * 0.5
}

fn bias_value(j: usize) -> f32 {
    (j as f32 - 8.0) * 0.25
}

/// relu(A·B + bias) for A = 6×K row-major, B = one packed K×16 panel: what both tests expect.
fn expected() -> Vec<f32> {
    let mut c = vec![0.0f32; MR * NR];
    for i in 0..MR {
        for j in 0..NR {
            let dot: f32 = (0..K)
                .map(|p| a_value(i * K + p) * b_value(p * NR + j))
                .sum();
            c[i * NR + j] = (dot + bias_value(j)).max(0.0);
        }
    }
    c
}

/// Adds `kiln_test_tile`, a Cranelift function with the kernel's signature that calls it.
fn define_caller<M: Module>(module: &mut M, kernel: FuncId, linkage: Linkage) -> FuncId {
    let id = module
        .declare_function("kiln_test_tile", linkage, &signature())
        .unwrap();
    let mut ctx = module.make_context();
    ctx.func.signature = signature();
    let mut fbc = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    b.seal_block(block);
    let params = b.block_params(block).to_vec();
    let callee = module.declare_func_in_func(kernel, b.func);
    b.ins().call(callee, &params);
    b.ins().return_(&[]);
    b.finalize(module.isa().frontend_config());
    module.define_function(id, &mut ctx).unwrap();
    id
}

#[test]
fn jit_module_runs_the_kernel_called_from_cranelift_code() {
    if Kernel::detect() != Kernel::Avx2Fma {
        eprintln!("no AVX2/FMA here: the portable kernel is covered by tests/gemm.rs");
        return;
    }
    let builder =
        cranelift_jit::JITBuilder::new(cranelift_module::default_libcall_names()).unwrap();
    let mut module = cranelift_jit::JITModule::new(builder);
    let kernel = define_microkernels(
        &mut module,
        "kiln_sgemm",
        Linkage::Local,
        Isa::X86_64Avx2Fma,
    )
    .unwrap()[MR - 1];
    let caller = define_caller(&mut module, kernel, Linkage::Export);
    module.finalize_definitions().unwrap();
    let entry = module.get_finalized_function(caller);
    // SAFETY: the caller has the kernel's signature, which is KernelFn.
    let f: kiln_cpu::gemm::KernelFn = unsafe { std::mem::transmute(entry) };

    let a: Vec<f32> = (0..MR * K).map(a_value).collect();
    let b: Vec<f32> = (0..K * NR).map(b_value).collect();
    let bias: Vec<f32> = (0..NR).map(bias_value).collect();
    let mut c = vec![f32::NAN; MR * NR];
    let args = TileArgs {
        rs_a: K,
        cs_a: 1,
        ldc: NR,
        flags: FLAG_BIAS_COL | FLAG_CLIP,
        bias: bias.as_ptr(),
        residual: std::ptr::null(),
        ldr: 0,
        lo: 0.0,
        hi: f32::INFINITY,
        rs_b: 0,
    };
    // SAFETY: buffers sized for one 6×16 tile of depth K.
    unsafe { f(K, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), &args) };
    assert_eq!(c, expected());
}

const MAIN_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>

/* The kernel's argument block (kiln_cpu::gemm::TileArgs). */
struct tile_args {
    size_t rs_a, cs_a, ldc;
    uint64_t flags;
    const float *bias, *residual;
    size_t ldr;
    float lo, hi;
};

void kiln_test_tile(size_t k, const float *a, const float *b, float *c, const struct tile_args *args);

enum { MR = 6, NR = 16, K = 9 };

int main(void) {
    float a[MR * K], b[K * NR], bias[NR], c[MR * NR];
    for (int i = 0; i < MR * K; i++) a[i] = ((i % 7) - 3.0f) * 0.25f;
    for (int i = 0; i < K * NR; i++) b[i] = ((i % 5) - 2.0f) * 0.5f;
    for (int j = 0; j < NR; j++) bias[j] = (j - 8.0f) * 0.25f;
    struct tile_args args = { K, 1, NR, 2 | 16, bias, NULL, 0, 0.0f, 1.0f / 0.0f };
    kiln_test_tile(K, a, b, c, &args);
    for (int i = 0; i < MR * NR; i++) printf("%.9g\n", c[i]);
    return 0;
}
"#;

#[test]
fn object_module_links_into_a_c_program() {
    let mut flags = settings::builder();
    flags.set("is_pic", "true").unwrap();
    flags.set("opt_level", "speed").unwrap();
    let isa = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
        .unwrap()
        .finish(settings::Flags::new(flags))
        .unwrap();
    let builder = cranelift_object::ObjectBuilder::new(
        isa,
        "kiln_test",
        cranelift_module::default_libcall_names(),
    )
    .unwrap();
    let mut module = cranelift_object::ObjectModule::new(builder);
    let kernel = define_microkernels(
        &mut module,
        "kiln_sgemm",
        Linkage::Local,
        Isa::X86_64Avx2Fma,
    )
    .unwrap()[MR - 1];
    define_caller(&mut module, kernel, Linkage::Export);
    let object = module.finish().emit().unwrap();

    let dir = std::env::temp_dir().join(format!("kiln-cpu-object-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("tile.o");
    std::fs::write(&obj, object).unwrap();

    // Self-contained: the object needs no symbol from anywhere.
    let nm = Command::new("nm")
        .arg("-u")
        .arg(&obj)
        .output()
        .expect("running nm");
    assert!(
        nm.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&nm.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&nm.stdout),
        "",
        "undefined symbols in the object"
    );

    if Kernel::detect() != Kernel::Avx2Fma {
        eprintln!("no AVX2/FMA here: the object was checked but cannot run");
        return;
    }
    std::fs::write(dir.join("main.c"), MAIN_C).unwrap();
    let exe = dir.join("main");
    let cc = Command::new("cc")
        .arg(dir.join("main.c"))
        .arg(&obj)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("running cc");
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let got: Vec<f32> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(got, expected());
    std::fs::remove_dir_all(&dir).unwrap();
}
