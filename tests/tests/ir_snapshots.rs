//! Snapshots of the IR text that the bridges make of real models. A change in a bridge or
//! in the text form shows up here as a reviewable diff.

use std::path::Path;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

#[test]
fn small_cnn_from_onnx() {
    let g = kiln_bridges::onnx::load(&repo("examples/models/small_cnn/model.onnx")).unwrap();
    kiln_ir::verify(&g).unwrap();
    insta::assert_snapshot!(kiln_ir::text::print(&g, kiln_ir::text::Weights::Elided));
}

#[test]
fn small_cnn_text_round_trips_exactly() {
    let g = kiln_bridges::onnx::load(&repo("examples/models/small_cnn/model.onnx")).unwrap();
    let text = kiln_ir::text::print(&g, kiln_ir::text::Weights::Inline);
    let back = kiln_ir::text::parse(&text, None).unwrap();
    assert_eq!(back, g);
    assert_eq!(kiln_ir::text::print(&back, kiln_ir::text::Weights::Inline), text);
}
