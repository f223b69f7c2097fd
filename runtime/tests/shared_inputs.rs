//! Inputs that read a caller's buffer in place (`Tensor::from_shared`, how the Python
//! package passes numpy arrays) give exactly what owned inputs give, on every device.

use kiln_runtime::ir::Tensor;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/model.onnx");

#[test]
fn shared_inputs_give_what_owned_inputs_give() {
    let model = kiln_runtime::load(MODEL).unwrap();
    let owned = kiln_runtime::npy::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/input_0.npy").as_ref()).unwrap();
    let elems: Vec<f32> = owned.as_slice::<f32>().unwrap().to_vec();
    let address = elems.as_ptr();
    let shared = Tensor::from_shared(owned.shape().to_vec(), elems).unwrap();
    assert_eq!(shared.as_slice::<f32>().unwrap().as_ptr(), address);
    for device in ["REFERENCE", "CPU"] {
        let compiled = kiln_runtime::compile(&model, device).unwrap();
        let want = compiled.request().infer_ordered(&[owned.clone()]).unwrap();
        let got = compiled.request().infer_ordered(&[shared.clone()]).unwrap();
        assert_eq!(got, want, "{device}");
    }
}
