//! Runs the ONNX node conformance cases by hand:
//! `conformance [--device D] [--root DIR] [--suite node|simple|pytorch-converted|pytorch-operator]
//! [--filter SUBSTRING] [-O LEVEL] [--update] [--quiet]`. `-O` (default 2) is the passes'
//! level; above 0 every case is also checked against its own -O0 run (see `Target`). `--root` defaults to the node cases' root
//! (see `data_root`); the other suites ship inside the onnx pip package
//! (`onnx/backend/test/data`): models exported by PyTorch, which no one here made.
//! Prints each case's outcome, then the totals; `--update` rewrites the device's
//! expected-failures file from this run (only with no filter).

use kiln_tests::conformance::*;

fn main() {
    let mut device = "REFERENCE".to_string();
    let mut filter = None;
    let mut update = false;
    let mut verbose = true;
    let mut root = None;
    let mut suite = "node".to_string();
    let mut level = kiln_runtime::Level::O2;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" | "-d" => device = args.next().expect("--device takes a name"),
            "--filter" | "-f" => filter = Some(args.next().expect("--filter takes a substring")),
            "--update" => update = true,
            "--root" => root = Some(std::path::PathBuf::from(args.next().expect("--root takes a folder"))),
            "--suite" => suite = args.next().expect("--suite takes a name"),
            "--quiet" | "-q" => verbose = false,
            "-O" | "--opt" => level = args.next().expect("-O takes 0, 1 or 2").parse().unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            }),
            l if l.starts_with("-O") => level = l.parse().unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            }),
            other => {
                eprintln!("unknown argument {other}; usage: conformance [--device D] [--root DIR] [--suite S] [--filter S] [-O N] [--update] [--quiet]");
                std::process::exit(2);
            }
        }
    }
    let root = root.map(Ok).unwrap_or_else(data_root).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let list = cases(&root, &suite, filter.as_deref()).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let target = Target::new(&device, level);
    let summary = run_all(&list, &target, verbose);
    let path = expected_failures_path(&suite, &device);
    let expected = read_expected(&path);
    let problems = check_against_expected(&summary, &expected, filter.is_none());
    println!("{suite} on {target}: {} passed, {} failed, {} not plain tensors", summary.passed.len(), summary.failed.len(), summary.not_plain);
    if update {
        if filter.is_some() {
            eprintln!("--update needs a run over every case (no --filter)");
            std::process::exit(2);
        }
        write_expected(&path, &suite, &device, &summary.failed).expect("writing the expected-failures file");
        println!("wrote {}", path.display());
    } else {
        for p in &problems {
            println!("  {p}");
        }
        if !problems.is_empty() {
            std::process::exit(1);
        }
    }
}
