//! The bridges' in-memory entry points (what the Python package hands over): a frozen
//! GraphDef's bytes read like its file, and a Keras config with weights given by layer name.

use kiln_bridges::keras::load_config;
use kiln_bridges::tensorflow::{load_frozen, load_frozen_bytes};
use kiln_ir::text::{print, Weights};
use kiln_ir::Tensor;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

fn fixture(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name)
}

#[test]
fn frozen_graph_bytes_load_as_the_file_does() {
    for name in ["ops.pb", "more_ops.pb", "rnn.pb"] {
        let path = fixture("tf", name);
        let from_file = load_frozen(&path).unwrap();
        let from_bytes = load_frozen_bytes(&std::fs::read(&path).unwrap(), name, &[], &[]).unwrap();
        assert_eq!(
            print(&from_bytes, Weights::Inline),
            print(&from_file, Weights::Inline),
            "{name}"
        );
    }
}

#[test]
fn truncated_graph_bytes_name_the_label() {
    let bytes = std::fs::read(fixture("tf", "ops.pb")).unwrap();
    let e = load_frozen_bytes(&bytes[..bytes.len() / 2], "<tf.function f>", &[], &[]).unwrap_err();
    assert_eq!(e.file, "<tf.function f>");
    assert!(e.message.contains("not a valid TensorFlow GraphDef"), "{e}");
}

fn config_json(archive: &str) -> String {
    let file = std::fs::File::open(fixture("keras", archive)).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let mut s = String::new();
    zip.by_name("config.json")
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn keras_config_without_weights_names_the_layer() {
    let e = load_config(
        &config_json("seq_cnn.keras"),
        HashMap::new(),
        "<keras.Model seq>",
    )
    .unwrap_err();
    assert_eq!(e.file, "<keras.Model seq>");
    assert!(e.node.is_some(), "{e}");
    assert_eq!(e.message, "no weights were given for this layer");
}

#[test]
fn keras_config_with_weights_computes_the_layer() {
    // A Dense layer y = relu(x W + b), written as Keras serializes it.
    let config = r#"{"module": "keras", "class_name": "Sequential", "config": {"name": "seq",
        "layers": [
          {"module": "keras.layers", "class_name": "InputLayer",
           "config": {"batch_shape": [null, 2], "dtype": "float32", "name": "x"}},
          {"module": "keras.layers", "class_name": "Dense",
           "config": {"name": "dense", "units": 2, "activation": "relu", "use_bias": true}}
        ]}}"#;
    let w = Tensor::new(vec![2, 2], vec![1.0f32, -1.0, 2.0, 0.5]).unwrap();
    let b = Tensor::new(vec![2], vec![0.5f32, -3.0]).unwrap();
    let weights = HashMap::from([("dense".to_string(), vec![w, b])]);
    let g = load_config(config, weights, "<keras.Model seq>").unwrap();
    let x = Tensor::new(vec![1, 2], vec![1.0f32, 2.0]).unwrap();
    let out = kiln_ir::eval::run_graph(&g, &[x]).unwrap();
    // [1, 2] W = [5, 0]; + b = [5.5, -3]; relu = [5.5, 0].
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[5.5, 0.0]);
}
