fn main() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/small_cnn/model.onnx");
    kiln_build::Build::new(model, "small_cnn").compile().unwrap_or_else(|e| panic!("{e}"));
}
