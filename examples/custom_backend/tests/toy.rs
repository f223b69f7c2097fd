//! TOY runs what it says it runs, and the example runs the shipped small_cnn as
//! HETERO:TOY,CPU to the reference output.

use custom_backend::Toy;
use kiln_runtime::ir::{text, Tensor};
use kiln_runtime::{compile_in, CompileOptions, Format, Level, Model};
use std::process::Command;
use std::sync::Arc;

const SMALL_CNN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/small_cnn/model.onnx");

fn registry() -> kiln_runtime::Registry {
    let mut r = kiln_runtime::registry();
    r.register(Arc::new(Toy));
    r
}

fn run(model: &Model, device: &str, inputs: &[Tensor]) -> Vec<(String, Tensor)> {
    let options = CompileOptions { level: Level::O0, ..Default::default() };
    let compiled = compile_in(&registry(), model, device, &options).unwrap_or_else(|e| panic!("{device}: {e}"));
    compiled.request().infer_ordered(inputs).unwrap()
}

#[test]
fn toy_broadcasts_as_the_reference_does() {
    let graph = text::parse(
        r#"graph g(%x: f32[2,3], %col: f32[2,1], %row: f32[3]) -> (%y: f32[2,3], %z: f32[2,3]) {
          %0 = add(%x, %row) : f32[2,3]
          %1 = mul(%col, %row) : f32[2,3]
          %2 = sub(%0, %1) : f32[2,3]
          %3 = relu(%2) : f32[2,3]
          %4 = max(%3, %col) : f32[2,3]
          %5 = sigmoid(%4) : f32[2,3]
          return %3, %5
        }"#,
        None,
    )
    .unwrap();
    let model = Model { graph, path: "g.kir".into(), format: Format::Kir };
    let inputs = [
        Tensor::new(vec![2, 3], vec![1.0f32, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap(),
        Tensor::new(vec![2, 1], vec![0.5f32, -1.5]).unwrap(),
        Tensor::new(vec![3], vec![2.0f32, 0.0, -1.0]).unwrap(),
    ];
    let want = run(&model, "REFERENCE", &inputs);
    for (got, want) in run(&model, "TOY", &inputs).iter().zip(&want) {
        for (a, b) in got.1.to_f64_vec().iter().zip(want.1.to_f64_vec()) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{}: {a} vs {b}", got.0);
        }
    }
    // Checks the values above are not all clamped to one number.
    assert_eq!(want[0].1.as_slice::<f32>().unwrap(), &[2.0f32, 0.0, 2.5, 1.0, 5.0, 0.0]);
}

#[test]
fn toy_alone_refuses_a_convolution_by_name() {
    let model = kiln_runtime::load(SMALL_CNN).unwrap();
    let e = compile_in(&registry(), &model, "TOY", &CompileOptions::default()).err().unwrap().to_string();
    assert!(e.starts_with("TOY: node ") && e.contains("TOY has no loop for"), "{e}");
}

#[test]
fn the_example_runs_small_cnn_as_hetero_toy_cpu_to_the_reference_output() {
    let o = Command::new(env!("CARGO_BIN_EXE_custom-backend")).arg(SMALL_CNN).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("matches the reference"), "{out}");
    let counts = out.split("kernels run per device: ").nth(1).and_then(|rest| rest.lines().next()).unwrap_or_default();
    let ran = |device: &str| counts.split(", ").find_map(|c| c.trim().strip_prefix(&format!("{device} "))?.parse::<usize>().ok()).unwrap_or(0);
    assert!(ran("TOY") > 0 && ran("CPU") > 0, "{out}");
}
