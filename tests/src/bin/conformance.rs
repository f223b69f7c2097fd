//! Runs the ONNX node conformance cases by hand:
//! `conformance [--device D] [--filter SUBSTRING] [--update] [--quiet]`.
//! Prints each case's outcome, then the totals; `--update` rewrites the device's
//! expected-failures file from this run (only with no filter).

use kiln_tests::conformance::*;

fn main() {
    let mut device = "REFERENCE".to_string();
    let mut filter = None;
    let mut update = false;
    let mut verbose = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" | "-d" => device = args.next().expect("--device takes a name"),
            "--filter" | "-f" => filter = Some(args.next().expect("--filter takes a substring")),
            "--update" => update = true,
            "--quiet" | "-q" => verbose = false,
            other => {
                eprintln!("unknown argument {other}; usage: conformance [--device D] [--filter S] [--update] [--quiet]");
                std::process::exit(2);
            }
        }
    }
    let root = data_root().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let list = cases(&root, filter.as_deref()).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let summary = run_all(&list, &device, verbose);
    let path = expected_failures_path(&device);
    let expected = read_expected(&path);
    let problems = check_against_expected(&summary, &expected, filter.is_none());
    println!("{device}: {} passed, {} failed, {} not plain tensors", summary.passed.len(), summary.failed.len(), summary.not_plain);
    if update {
        if filter.is_some() {
            eprintln!("--update needs a run over every case (no --filter)");
            std::process::exit(2);
        }
        write_expected(&path, &device, &summary.failed).expect("writing the expected-failures file");
        println!("wrote {}", path.display());
    } else {
        for p in &problems {
            println!("  {p}");
        }
    }
}
