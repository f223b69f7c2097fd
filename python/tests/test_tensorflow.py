"""Live TensorFlow and Keras objects compiled by kiln in memory match TensorFlow's outputs."""

import numpy as np
import pytest

import kiln
from conftest import needs_tf

pytestmark = needs_tf
RTOL, ATOL = 1e-4, 1e-5


def zoo_model(make_models, name, batch=1):
    """A zoo model built exactly as make_models.py builds it (same seeds, calibration),
    with inputs and Keras's own outputs."""
    import keras

    keras.utils.set_random_seed(1234)
    model = make_models.APPS[name]()
    rng = np.random.default_rng(42)
    make_models.calibrate(model, rng)
    xs = make_models.make_inputs(model, rng, batch=batch)
    ys = model(xs if len(xs) > 1 else xs[0], training=False)
    return model, xs, np.asarray(ys)


@pytest.mark.parametrize("name", ["small_cnn", "transformer_encoder"])
def test_live_keras_model_matches_keras(make_models, name):
    model, xs, ys = zoo_model(make_models, name, batch=2)
    compiled = kiln.compile(model)
    inputs = [layer.name for layer in model.layers if type(layer).__name__ == "InputLayer"]
    assert [n for n, _, _ in compiled.inputs] == inputs
    np.testing.assert_allclose(compiled(*xs), ys, rtol=RTOL, atol=ATOL)
    # The Keras model was handed over in memory; its weights are no longer needed.
    del model
    np.testing.assert_allclose(compiled(*xs), ys, rtol=RTOL, atol=ATOL)


def test_keras_model_with_fixed_batch_shape(make_models):
    model, xs, ys = zoo_model(make_models, "small_cnn", batch=3)
    compiled = kiln.compile(model, input_shapes={model.layers[0].name: [3, 32, 32, 3]})
    assert compiled.inputs[0][2] == [3, 32, 32, 3]
    np.testing.assert_allclose(compiled(xs[0]), ys, rtol=RTOL, atol=ATOL)


def scaled_mlp():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    w = tf.Variable(rng.standard_normal((16, 8)).astype(np.float32))
    b = tf.Variable(rng.standard_normal(8).astype(np.float32))

    def f(x):
        h = tf.nn.relu(tf.matmul(x, w) + b)
        return tf.nn.softmax(h * tf.reduce_mean(x, axis=1, keepdims=True)), tf.reduce_sum(h, axis=1)

    return f


def test_tf_function_and_concrete_function_match_tensorflow():
    import tensorflow as tf

    f = scaled_mlp()
    fn = tf.function(f, input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
    x = np.random.default_rng(4).standard_normal((5, 16)).astype(np.float32)
    want = [t.numpy() for t in fn(x)]
    for obj in [fn, fn.get_concrete_function()]:
        compiled = kiln.compile(obj)
        assert [n for n, _, _ in compiled.inputs] == ["x"]
        got = compiled(x)
        assert isinstance(got, list) and len(got) == 2
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_tf_function_without_signature_is_refused():
    import tensorflow as tf

    with pytest.raises(kiln.KilnError, match="without an input_signature"):
        kiln.compile(tf.function(lambda x: x * 2.0))


def test_jit_traces_once_per_signature_and_matches_tensorflow():
    import tensorflow as tf

    rng = np.random.default_rng(5)
    w = tf.Variable(rng.standard_normal((16, 4)).astype(np.float32))

    @kiln.jit
    def layer(x, scale):
        return tf.tanh(tf.matmul(x, w) * scale)

    def reference(x, scale):
        return np.tanh((x @ w.numpy()) * scale)

    x3 = rng.standard_normal((3, 16)).astype(np.float32)
    x7 = rng.standard_normal((7, 16)).astype(np.float32)
    s = np.float32(0.5)
    np.testing.assert_allclose(layer(x3, s), reference(x3, s), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer(x3 * 2, s), reference(x3 * 2, s), rtol=RTOL, atol=ATOL)
    assert len(layer.signatures()) == 1
    np.testing.assert_allclose(layer(x7, s), reference(x7, s), rtol=RTOL, atol=ATOL)
    assert len(layer.signatures()) == 2

    @kiln.jit(level=1)
    def pair(a, b):
        return a + b, a * b

    a, b = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
    out = pair(a, b)
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_allclose(out[0], a + b, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out[1], a * b, rtol=RTOL, atol=ATOL)
