//! TensorFlow ops and loops beyond tests/tensorflow.rs, against fixtures made by TensorFlow
//! itself (tests/fixtures/tf_more/make_fixtures.py): ReverseV2, a transposed conv whose
//! output shape is computed at run time from a dynamic batch, and a Keras SimpleRNN loop.

use kiln_bridges::tensorflow::{load_frozen, load_saved_model};
use kiln_ir::eval::run_graph;
use kiln_ir::{Op, Tensor};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tf_more").join(name)
}

fn f32s(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn assert_close(got: &Tensor, want: &[f32]) {
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len(), "element count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let w = f64::from(*w);
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "element {i}: got {g}, want {w}");
    }
}

fn ops(g: &kiln_ir::Graph) -> Vec<&'static str> {
    g.nodes.node_weights().map(|n| n.op.name()).collect()
}

#[test]
fn reverse_and_a_run_time_output_shape_match_tensorflow() {
    let g = load_saved_model(&fixture("deconv_saved_model"), None).unwrap();
    kiln_ir::verify(&g).unwrap();
    // the batch stays symbolic; the spatial output size was known at load time
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[N,6,6,4]");
    let deconv = g.nodes.node_weights().find(|n| matches!(n.op, Op::ConvTranspose { .. })).unwrap();
    let Op::ConvTranspose { output_shape, .. } = &deconv.op else { unreachable!() };
    assert_eq!(output_shape, &vec![6, 6]);
    // ReverseV2 is a Slice with step -1 over both axes
    assert!(ops(&g).contains(&"slice"));
    let x = Tensor::new(vec![2, 3, 3, 2], f32s("deconv.x.f32")).unwrap();
    let y = run_graph(&g, &[x]).unwrap();
    assert_eq!(y[0].shape(), &[2, 6, 6, 4]);
    assert_close(&y[0], &f32s("deconv.y.f32"));
}

#[test]
fn keras_simple_rnn_loop_becomes_one_rnn() {
    let g = load_frozen(&fixture("simple_rnn.pb")).unwrap();
    kiln_ir::verify(&g).unwrap();
    let rnn: Vec<_> = g.nodes.node_weights().filter(|n| matches!(n.op, Op::Rnn { .. })).collect();
    assert_eq!(rnn.len(), 1);
    let Op::Rnn { kind, activations, .. } = &rnn[0].op else { unreachable!() };
    assert_eq!((kind.word(), activations.as_slice()), ("rnn", &["Relu".to_string()][..]));
    assert!(!ops(&g).contains(&"loop"));
    let x = Tensor::new(vec![1, 5, 3], f32s("simple_rnn.x.f32")).unwrap();
    let y = run_graph(&g, &[x]).unwrap();
    assert_close(&y[0], &f32s("simple_rnn.y.f32"));
}
