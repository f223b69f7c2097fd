//! Loads every `model.onnx` under a folder of ONNX node cases (default
//! `../shared/onnx-node-tests/node`) and tallies what loads and why the rest fail.
//! Run by hand: `cargo run --release -p kiln-bridges --example load_node_suite [DIR] [-v]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let dir = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/onnx-node-tests/node"
            ))
        });
    let mut cases: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path().join("model.onnx")))
            .filter(|p| p.exists())
            .collect(),
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            std::process::exit(2);
        }
    };
    cases.sort();
    let mut ok = 0;
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &cases {
        let case = p
            .parent()
            .and_then(|d| d.file_name())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        match kiln_bridges::onnx::load(p) {
            Ok(g) => match kiln_ir::verify(&g) {
                Ok(()) => ok += 1,
                Err(e) => reasons
                    .entry(format!("verify: {}", e.message))
                    .or_default()
                    .push(case),
            },
            Err(e) => {
                // Group by message with the file prefix and quoted names stripped.
                let key: String = e
                    .message
                    .split('`')
                    .enumerate()
                    .map(|(i, s)| if i % 2 == 1 { "_" } else { s })
                    .collect();
                if verbose {
                    println!("{case}: {e}");
                }
                reasons.entry(key).or_default().push(case);
            }
        }
    }
    let mut by_count: Vec<_> = reasons.into_iter().collect();
    by_count.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (reason, v) in &by_count {
        println!(
            "{:5}  {}   e.g. {}",
            v.len(),
            reason,
            v.iter().take(3).cloned().collect::<Vec<_>>().join(" ")
        );
    }
    println!("loaded and verified {ok} of {}", cases.len());
}
