//! Every input with which the `npy` fuzz target (fuzz/) crashed the `.npy` reader, replayed:
//! each must now fail with the message recorded here. A file in fuzz/regressions/npy/ without
//! an entry fails the test, so a new crash cannot be kept without saying what it should do.

use std::path::Path;

/// (file in fuzz/regressions/npy/, the error it must give)
const EXPECTED: &[(&str, &str)] = &[
    // The preamble declares a 4 GB (format 2) or 3.7 GB (format 3) header in a file of a few hundred bytes;
    // npyz allocated it before reading.
    (
        "header_len_4gb_v2",
        "not a valid .npy file: the header is declared 4294901878 bytes long, the file has 45 after the preamble",
    ),
    (
        "header_len_3gb_v3",
        "not a valid .npy file: the header is declared 3760201760 bytes long, the file has 255 after the preamble",
    ),
    // 74 unclosed `{` in the header: npyz's parser backtracks exponentially (a timeout).
    (
        "nested_header_braces",
        "not a valid .npy file: the header nests brackets 74 deep (a .npy header nests at most 4)",
    ),
];

#[test]
fn npy_regressions_fail_with_their_recorded_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/npy");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for file in &files {
        let expected = EXPECTED
            .iter()
            .find(|(f, _)| f == file)
            .unwrap_or_else(|| panic!("{file}: no expected error recorded in {}", file!()))
            .1;
        let bytes = std::fs::read(dir.join(file)).unwrap();
        match kiln_runtime::npy::from_bytes(&bytes) {
            Ok(t) => panic!("{file}: read as a tensor of shape {:?}", t.shape()),
            Err(e) => assert_eq!(e, expected, "{file}"),
        }
    }
    assert_eq!(files.len(), EXPECTED.len(), "an expected file is missing from {}", dir.display());
}
