//! The TensorFlow bridge against tiny fixtures made by TensorFlow itself
//! (tests/fixtures/tf/make_fixtures.py): a frozen graph of NHWC conv/pool, strided slices
//! with every mask, pads, packs; a SavedModel with resource variables behind a function call.

use kiln_bridges::tensorflow::{load_frozen, load_frozen_with, load_saved_model};
use kiln_ir::eval::run_graph;
use kiln_ir::Tensor;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tf")
        .join(name)
}

fn f32s(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn assert_close(got: &Tensor, want: &[f32]) {
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len(), "element count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let w = f64::from(*w);
        assert!(
            (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
            "element {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn frozen_graph_matches_tensorflow() {
    let g = load_frozen(&fixture("ops.pb")).unwrap();
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.outputs.len(), 1);
    let x = Tensor::new(vec![1, 6, 6, 2], f32s("ops.x.f32")).unwrap();
    let y = run_graph(&g, &[x]).unwrap();
    assert_close(&y[0], &f32s("ops.y.f32"));
}

#[test]
fn more_ops_match_tensorflow() {
    // Conv2DBackpropInput, resizes, FusedBatchNormV3, MirrorPad, SplitV, Tile, Fill, Range,
    // ArgMax, SelectV2, Slice, FloorDiv, Elu/Selu/LeakyRelu, Softplus/Softsign, LogSoftmax.
    let g = load_frozen(&fixture("more_ops.pb")).unwrap();
    let x = Tensor::new(vec![1, 4, 4, 2], f32s("more_ops.x.f32")).unwrap();
    let y = run_graph(&g, &[x]).unwrap();
    assert_close(&y[0], &f32s("more_ops.y.f32"));
}

#[test]
fn frozen_graph_with_named_outputs() {
    let g = load_frozen_with(&fixture("ops.pb"), &["x:0"], &["Identity:0"]).unwrap();
    assert_eq!(g.outputs[0].0, "Identity");
    let x = Tensor::new(vec![1, 6, 6, 2], f32s("ops.x.f32")).unwrap();
    let y = run_graph(&g, &[x]).unwrap();
    assert_close(&y[0], &f32s("ops.y.f32"));
}

#[test]
fn saved_model_reads_variables_through_calls() {
    let g = load_saved_model(&fixture("tiny_saved_model"), None).unwrap();
    assert_eq!(g.outputs[0].0, "out");
    let x = Tensor::new(vec![2, 4], f32s("tiny_saved_model.x.f32")).unwrap();
    let y = run_graph(&g, &[x]).unwrap();
    assert_close(&y[0], &f32s("tiny_saved_model.y.f32"));
}

#[test]
fn saved_model_unknown_signature_is_named() {
    let e = load_saved_model(&fixture("tiny_saved_model"), Some("nope")).unwrap_err();
    assert!(
        e.message.contains("nope") && e.message.contains("serving_default"),
        "{e}"
    );
}

#[test]
fn truncated_graph_is_an_error() {
    let bytes = std::fs::read(fixture("ops.pb")).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-tf-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("truncated.pb");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_frozen(&path).unwrap_err();
    assert!(e.file.ends_with("truncated.pb"), "{e}");
}

#[test]
fn missing_variables_shard_is_an_error() {
    let dir = std::env::temp_dir().join(format!("kiln-tf-noshard-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("variables")).unwrap();
    let src = fixture("tiny_saved_model");
    std::fs::copy(src.join("saved_model.pb"), dir.join("saved_model.pb")).unwrap();
    std::fs::copy(
        src.join("variables/variables.index"),
        dir.join("variables/variables.index"),
    )
    .unwrap();
    let e = load_saved_model(&dir, None).unwrap_err();
    assert!(e.message.contains("variables.data-00000-of-00001"), "{e}");
    assert!(e.node.is_some(), "{e}");
}


/// Every truncation and a sweep of byte corruptions of the fixtures load or fail cleanly
/// (no panic).
#[test]
fn corrupted_files_never_panic() {
    let dir = std::env::temp_dir().join(format!("kiln-tf-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sm/variables")).unwrap();
    let pb = std::fs::read(fixture("ops.pb")).unwrap();
    let path = dir.join("g.pb");
    let mut cases: Vec<Vec<u8>> = (0..pb.len()).step_by(7).map(|n| pb[..n].to_vec()).collect();
    for i in (0..pb.len()).step_by(13) {
        let mut c = pb.clone();
        c[i] ^= 0xff;
        cases.push(c);
    }
    for c in cases {
        std::fs::write(&path, &c).unwrap();
        let _ = load_frozen(&path);
    }
    let src = fixture("tiny_saved_model");
    let sm = std::fs::read(src.join("saved_model.pb")).unwrap();
    let index = std::fs::read(src.join("variables/variables.index")).unwrap();
    std::fs::copy(
        src.join("variables/variables.data-00000-of-00001"),
        dir.join("sm/variables/variables.data-00000-of-00001"),
    )
    .unwrap();
    std::fs::write(dir.join("sm/saved_model.pb"), &sm).unwrap();
    for i in 0..index.len() {
        let mut c = index.clone();
        c[i] ^= 0x5a;
        std::fs::write(dir.join("sm/variables/variables.index"), &c).unwrap();
        let _ = load_saved_model(&dir.join("sm"), None);
        std::fs::write(dir.join("sm/variables/variables.index"), &index[..i]).unwrap();
        let _ = load_saved_model(&dir.join("sm"), None);
    }
    std::fs::write(dir.join("sm/variables/variables.index"), &index).unwrap();
    for n in (0..sm.len()).step_by(11) {
        std::fs::write(dir.join("sm/saved_model.pb"), &sm[..n]).unwrap();
        let _ = load_saved_model(&dir.join("sm"), None);
        let mut c = sm.clone();
        c[n] ^= 0xff;
        std::fs::write(dir.join("sm/saved_model.pb"), &c).unwrap();
        let _ = load_saved_model(&dir.join("sm"), None);
    }
}

/// Keras LSTM (return_sequences: one output per step) feeding a Keras GRU, both as a TF2
/// SavedModel (While + TensorList loops) and frozen (TF1 loop frames).
#[test]
fn keras_lstm_and_gru_loops() {
    let x = Tensor::new(vec![1, 5, 3], f32s("rnn.x.f32")).unwrap();
    let want = f32s("rnn.y.f32");
    let frozen = load_frozen(&fixture("rnn.pb")).unwrap();
    assert_close(
        &run_graph(&frozen, std::slice::from_ref(&x)).unwrap()[0],
        &want,
    );
    let saved = load_saved_model(&fixture("rnn_saved_model"), None).unwrap();
    assert_close(&run_graph(&saved, &[x]).unwrap()[0], &want);
}
