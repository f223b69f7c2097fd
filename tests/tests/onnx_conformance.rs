//! The ONNX node conformance suite on REFERENCE, checked against
//! `tests/expected-failures/onnx-node-reference.txt`, after the passes at `$KILN_OPT`
//! (default 2), each case also checked against its own -O0 run.

use kiln_tests::conformance::*;

fn main() {
    let target = Target::from_env().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
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
    let summary = run_all(&all, &target, false);
    let expected = read_expected(&expected_failures_path("node", &target.device));
    let problems = check_against_expected(&summary, &expected, true);
    println!(
        "ONNX node conformance on {target} ({}): {} passed, {} failed ({} listed as expected failures); {} cases with non-tensor inputs or outputs not counted",
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
