//! The Keras bridge against Keras itself: tiny models (made by fixtures/keras/make_fixtures.py)
//! saved as `.keras` and legacy `.h5`, run on the reference evaluator and compared with the
//! outputs Keras computed; and malformed files. (The zoo models in every format are the `zoo` suite's job.)

use kiln_bridges::keras;
use kiln_ir::Tensor;
use std::io::Write;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras")
}

fn npy(path: &Path) -> Tensor {
    kiln_runtime::npy::read(path).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

fn check_model(model: &Path, inputs: &[PathBuf], output: &Path) {
    let graph = keras::load(model).unwrap_or_else(|e| panic!("{e}"));
    kiln_ir::verify(&graph).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let ins: Vec<Tensor> = inputs.iter().map(|p| npy(p)).collect();
    let outs = kiln_ir::eval::run_graph(&graph, &ins)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    assert_close(&model.display().to_string(), &outs[0], &npy(output));
}

fn check_fixture(name: &str) {
    let dir = fixtures();
    let inputs: Vec<PathBuf> = (0..)
        .map(|i| dir.join(format!("{name}.in{i}.npy")))
        .take_while(|p| p.exists())
        .collect();
    for ext in ["keras", "h5"] {
        check_model(
            &dir.join(format!("{name}.{ext}")),
            &inputs,
            &dir.join(format!("{name}.out.npy")),
        );
    }
}

#[test]
fn sequential_cnn_layers() {
    check_fixture("seq_cnn");
}

#[test]
fn functional_shared_and_nested() {
    check_fixture("func_shared");
}

#[test]
fn recurrent_layers() {
    check_fixture("rnn");
}

#[test]
fn embedding_and_attention() {
    check_fixture("attention");
}

// ── Malformed files ─────────────────────────────────────────────────────────────────────

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-keras-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A `.keras` archive with the given members.
fn archive(name: &str, members: &[(&str, &[u8])]) -> PathBuf {
    let path = tmp(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (n, data) in members {
        z.start_file(
            *n,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
    path
}

fn member(path: &Path, name: &str) -> Vec<u8> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    z.by_name(name).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn load_err(path: &Path) -> String {
    match keras::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn archive_without_weights_names_the_layer() {
    let src = fixtures().join("seq_cnn.keras");
    let p = archive(
        "noweights.keras",
        &[("config.json", &member(&src, "config.json"))],
    );
    let e = load_err(&p);
    assert!(
        e.contains("noweights.keras") && e.contains("no model.weights.h5") && e.contains("conv2d"),
        "{e}"
    );
}

#[test]
fn unknown_layer_class_is_named() {
    let src = fixtures().join("seq_cnn.keras");
    let config = String::from_utf8(member(&src, "config.json"))
        .unwrap()
        .replace("\"LeakyReLU\"", "\"FancyLayer\"");
    let p = archive(
        "unknown.keras",
        &[
            ("config.json", config.as_bytes()),
            ("model.weights.h5", &member(&src, "model.weights.h5")),
        ],
    );
    let e = load_err(&p);
    assert!(
        e.contains("unknown.keras") && e.contains("leaky_re_lu") && e.contains("FancyLayer"),
        "{e}"
    );
}

#[test]
fn custom_object_is_named() {
    let src = fixtures().join("seq_cnn.keras");
    let config = String::from_utf8(member(&src, "config.json"))
        .unwrap()
        .replace("\"class_name\": \"LeakyReLU\"", "\"class_name\": \"MyBlock\", \"module\": \"my_pkg.layers\", \"registered_name\": \"Custom>MyBlock\"");
    let p = archive(
        "custom.keras",
        &[
            ("config.json", config.as_bytes()),
            ("model.weights.h5", &member(&src, "model.weights.h5")),
        ],
    );
    let e = load_err(&p);
    assert!(e.contains("MyBlock"), "{e}");
}

#[test]
fn weight_of_the_wrong_shape() {
    // The Dense layer of one fixture with the weights of another: shapes disagree.
    let cfg_src = fixtures().join("seq_cnn.keras");
    let config = String::from_utf8(member(&cfg_src, "config.json"))
        .unwrap()
        .replace("\"units\": 5", "\"units\": 7");
    let p = archive(
        "shape.keras",
        &[
            ("config.json", config.as_bytes()),
            ("model.weights.h5", &member(&cfg_src, "model.weights.h5")),
        ],
    );
    let e = load_err(&p);
    assert!(
        e.contains("shape.keras") && e.contains("dense") && e.contains("kernel has shape"),
        "{e}"
    );
}

#[test]
fn garbage_files_are_errors() {
    let p = tmp("garbage.keras");
    std::fs::write(&p, b"hello").unwrap();
    assert!(load_err(&p).contains("not a Keras model"));
    let p = tmp("truncated.keras");
    let bytes = std::fs::read(fixtures().join("seq_cnn.keras")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert!(load_err(&p).contains("truncated.keras"));
    let p = archive("badjson.keras", &[("config.json", b"{\"class_name\": ")]);
    assert!(load_err(&p).contains("not valid JSON"));
    let p = tmp("truncated.h5");
    let bytes = std::fs::read(fixtures().join("seq_cnn.h5")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let _ = keras::load(&p); // must not panic
    assert!(load_err(&tmp("missing.h5")).contains("cannot read"));
}

#[test]
fn preprocessing_activations_and_1d_layers() {
    check_fixture("misc");
}

#[test]
fn recurrent_states_and_merge_modes() {
    check_fixture("rnn_states");
}

#[test]
fn time_distributed_layers() {
    check_fixture("time_distributed");
}

#[test]
fn masking_is_refused() {
    let src = fixtures().join("attention.keras");
    let config = String::from_utf8(member(&src, "config.json"))
        .unwrap()
        .replace("\"mask_zero\": false", "\"mask_zero\": true");
    let p = archive(
        "mask.keras",
        &[
            ("config.json", config.as_bytes()),
            ("model.weights.h5", &member(&src, "model.weights.h5")),
        ],
    );
    let e = load_err(&p);
    assert!(
        e.contains("mask.keras") && e.contains("embedding") && e.contains("masking"),
        "{e}"
    );
}
