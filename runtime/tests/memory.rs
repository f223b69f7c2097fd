//! Models from bytes: the format named or sniffed, the same model as from the file, and
//! errors that name the label.

use kiln_runtime::{load, load_bytes, Format, LoadOptions};
use std::path::Path;

fn small_cnn() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/small_cnn/model.onnx")
}

#[test]
fn onnx_bytes_are_sniffed_and_load_as_the_file_does() {
    let bytes = std::fs::read(small_cnn()).unwrap();
    assert_eq!(Format::sniff(&bytes), Some(Format::Onnx));
    let from_bytes = load_bytes(bytes, None, "<bytes>", &LoadOptions::default()).unwrap();
    let from_file = load(small_cnn()).unwrap();
    assert_eq!(from_bytes.format, Format::Onnx);
    assert_eq!(from_bytes.inputs(), from_file.inputs());
    assert_eq!(from_bytes.outputs(), from_file.outputs());
    assert_eq!(from_bytes.path, Path::new("<bytes>"));
}

#[test]
fn sniffing_tells_the_formats_apart() {
    assert_eq!(Format::sniff(b"PK\x03\x04"), Some(Format::Keras));
    assert_eq!(Format::sniff(b"\x89HDF\r\n\x1a\n"), Some(Format::KerasH5));
    assert_eq!(Format::sniff(b"graph main {"), Some(Format::Kir));
    assert_eq!(Format::sniff(b"\x0a\x05"), Some(Format::TfFrozen));
    assert_eq!(Format::sniff(b""), None);
    assert_eq!(Format::from_name("ONNX").unwrap(), Format::Onnx);
    assert_eq!(Format::from_name(".pb").unwrap(), Format::TfFrozen);
    assert!(Format::from_name("tflite")
        .unwrap_err()
        .to_string()
        .contains("unknown model format `tflite`"));
}

#[test]
fn bad_bytes_name_the_label() {
    let cases: [(&[u8], &str); 3] = [
        (&[0, 1, 2], "<upload>: cannot tell the model format"),
        (b"\x08\x07\x12\xff", "<upload>: not a valid ONNX model"),
        (b"PK\x03\x04junk", "<upload>: not a valid .keras archive"),
    ];
    for (bytes, expected) in cases {
        let e = load_bytes(bytes.to_vec(), None, "<upload>", &LoadOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with(expected), "{e}");
    }
}

#[test]
fn input_shapes_apply_to_bytes() {
    let bytes = std::fs::read(small_cnn()).unwrap();
    let options = LoadOptions {
        signature: None,
        input_shapes: vec![("input_1".into(), vec![1, 32, 32, 3])],
    };
    let e = load_bytes(bytes, Some(Format::Onnx), "<bytes>", &options).unwrap_err();
    assert!(
        e.to_string()
            .contains("the model has no input `input_1`; its inputs are `input_0`"),
        "{e}"
    );
}
