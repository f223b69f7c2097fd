//! Requests in flight at once give exactly what sequential runs give.

use kiln_ir::Tensor;
use std::sync::{Arc, Mutex};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/model.onnx");

/// Inputs that differ per request: the shipped input scaled by 1 + k/8.
fn inputs(k: usize) -> Vec<Tensor> {
    let x = kiln_runtime::npy::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/small_cnn/input_0.npy").as_ref()).unwrap();
    let v: Vec<f32> = x.as_slice::<f32>().unwrap().iter().map(|&a| a * (1.0 + k as f32 / 8.0)).collect();
    vec![Tensor::new(x.shape().to_vec(), v).unwrap()]
}

#[test]
fn eight_requests_in_flight_equal_sequential_runs() {
    let model = kiln_runtime::load(MODEL).unwrap();
    let compiled = kiln_runtime::compile(&model, "REFERENCE").unwrap();
    let sequential: Vec<_> = (0..8).map(|k| compiled.request().infer_ordered(&inputs(k)).unwrap()).collect();
    let pending: Vec<_> = (0..8).map(|k| compiled.start(inputs(k))).collect();
    let parallel: Vec<_> = pending.into_iter().map(|p| p.wait().unwrap()).collect();
    assert_eq!(parallel, sequential);
    // the inputs differ, so the outputs must too: the comparison above is not vacuous
    assert_ne!(sequential[0], sequential[1]);
}

#[test]
fn an_async_queue_calls_back_once_per_request_with_its_tag() {
    let model = kiln_runtime::load(MODEL).unwrap();
    let compiled = kiln_runtime::compile(&model, "REFERENCE").unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let mut queue = kiln_runtime::AsyncQueue::new(&compiled, 3, move |tag: usize, r| sink.lock().unwrap().push((tag, r.unwrap())));
    for k in 0..10 {
        queue.start(inputs(k), k);
    }
    queue.wait_all();
    let mut got = got.lock().unwrap().clone();
    got.sort_by_key(|(k, _)| *k);
    assert_eq!(got.len(), 10);
    for (k, outputs) in got {
        assert_eq!(outputs, compiled.request().infer_ordered(&inputs(k)).unwrap());
    }
}

#[test]
fn a_bad_request_in_flight_ends_in_an_error() {
    let model = kiln_runtime::load(MODEL).unwrap();
    let compiled = kiln_runtime::compile(&model, "REFERENCE").unwrap();
    let e = compiled.start(vec![]).wait().unwrap_err();
    assert!(e.to_string().contains("takes 1 inputs"), "{e}");
}
