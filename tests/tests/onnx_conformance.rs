//! The ONNX node conformance suite on REFERENCE, checked against
//! `tests/expected-failures/onnx-node-reference.txt`.

use kiln_tests::conformance::*;

fn main() {
    let device = std::env::var("KILN_CONFORMANCE_DEVICE").unwrap_or_else(|_| "REFERENCE".into());
    let root = match data_root() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let all = cases(&root, "node", None).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let summary = run_all(&all, &device, false);
    let expected = read_expected(&expected_failures_path("node", &device));
    let problems = check_against_expected(&summary, &expected, true);
    println!(
        "ONNX node conformance on {device} ({}): {} passed, {} failed ({} listed as expected failures); {} cases with non-tensor inputs or outputs not counted",
        root.display(),
        summary.passed.len(),
        summary.failed.len(),
        expected.len(),
        summary.not_plain
    );
    for p in &problems {
        println!("  {p}");
    }
    if !problems.is_empty() {
        std::process::exit(1);
    }
}
