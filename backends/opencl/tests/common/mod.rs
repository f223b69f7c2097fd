//! The check shared by the OPENCL tests: a small IR-text graph run on OPENCL and on
//! REFERENCE, compared within the zoo's tolerance.

use kiln_backends::{Backend, CompileOptions, Program, Reference};
use kiln_ir::{text, Tensor};
use kiln_opencl::OpenCl;

/// Compiles `src` on both devices, runs both on `inputs`, and compares within the zoo's
/// tolerance (rtol 1e-3, atol 1e-4); integers and bools exactly.
pub fn check(src: &str, inputs: &[Tensor]) {
    let Some((got, want)) = run_both(src, inputs) else { return };
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "output {k} shape");
        assert_eq!(g.dtype(), w.dtype(), "output {k} dtype");
        if w.dtype().is_float() {
            for (i, (a, b)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
                let ok = (a.is_nan() && b.is_nan()) || a == &b || (a - b).abs() <= 1e-4 + 1e-3 * b.abs();
                assert!(ok, "output {k} element {i}: OPENCL {a}, REFERENCE {b}");
            }
        } else {
            assert_eq!(g.to_i64_vec(), w.to_i64_vec(), "output {k}");
        }
    }
}

/// Deterministic values in [-2, 2) with a few special ones.
pub fn data(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 250.0) - 2.0).collect();
    Tensor::new(shape.to_vec(), v).unwrap()
}

/// The outputs of `src` on OPENCL and on REFERENCE; None (printing why) when this machine
/// has no OpenCL platform.
#[allow(dead_code)] // backend.rs uses `check` only
pub fn run_both(src: &str, inputs: &[Tensor]) -> Option<(Vec<Tensor>, Vec<Tensor>)> {
    let graph = text::parse(src, None).expect("test graph parses");
    kiln_ir::verify(&graph).expect("test graph verifies");
    let program = Program::new(graph);
    let cl = match OpenCl::new().compile(&program, &CompileOptions::default()) {
        Ok(e) => e,
        Err(e) if e.message == kiln_opencl::NO_PLATFORM => {
            eprintln!("skipped: {e}");
            return None;
        }
        Err(e) => panic!("OPENCL refused: {e}"),
    };
    let want = Reference.compile(&program, &CompileOptions::default()).unwrap().run(inputs, None).unwrap();
    let got = cl.run(inputs, None).expect("OPENCL runs");
    Some((got, want))
}
