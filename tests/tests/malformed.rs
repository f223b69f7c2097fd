//! The malformed-model corpus (tests/malformed/files, written by
//! tests/malformed/make_corpus.py): every file ends in an error, never a panic, and the error
//! names the file and what is wrong. Each message is snapshotted, so a change in wording is a
//! reviewed change.
//!
//! A case is a file in the corpus folder, or a folder: a folder holding `model.*` is that
//! model with its companion files (external data, `.kir.bin`), any other folder is a
//! SavedModel. `.npy` files go through the `.npy` reader; everything else through
//! `kiln_runtime::load` and, should that succeed, `compile` on REFERENCE.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const CORPUS: &str = "malformed/files";

/// The corpus's cases, sorted, as paths relative to this crate (so that the snapshotted
/// messages do not depend on where the repository is checked out).
fn cases() -> Vec<(String, PathBuf)> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(CORPUS)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let rel = Path::new(CORPUS).join(&name);
        let path = if rel.is_dir() {
            let model = std::fs::read_dir(&rel)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_stem().is_some_and(|s| s == "model") && p.extension().is_some_and(|e| e != "bin"));
            model.unwrap_or(rel)
        } else {
            rel
        };
        cases.push((name, path));
    }
    cases.sort();
    cases
}

/// What loading (and, if that succeeds, compiling) the file ends in.
fn outcome(path: &Path) -> Result<String, String> {
    if path.extension().is_some_and(|e| e == "npy") {
        return match kiln_runtime::npy::read(path) {
            Ok(t) => Err(format!("read a tensor of shape {:?}", t.shape())),
            Err(e) => Ok(e),
        };
    }
    let model = match kiln_runtime::load(path) {
        Ok(m) => m,
        Err(e) => return Ok(e.to_string()),
    };
    match kiln_runtime::compile(&model, "REFERENCE") {
        Ok(_) => Err("loaded and compiled without an error".into()),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn every_malformed_file_ends_in_an_error_that_names_it() {
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    let mut messages = Vec::new();
    for (name, path) in &cases {
        match catch_unwind(AssertUnwindSafe(|| outcome(path))) {
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(|s| s.as_str())
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?");
                failures.push(format!("{name}: panicked: {what}"));
            }
            Ok(Err(what)) => failures.push(format!("{name}: {what}")),
            Ok(Ok(message)) => {
                if !message.contains(name.as_str()) {
                    failures.push(format!("{name}: the error does not name the file: {message}"));
                }
                messages.push((name.clone(), message));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    for (name, message) in messages {
        insta::assert_snapshot!(name, message);
    }
}
