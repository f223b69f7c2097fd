import importlib.util
import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parents[2]
SMALL_CNN = REPO / "examples" / "models" / "small_cnn"


@pytest.fixture(scope="session")
def small_cnn():
    """The small CNN shipped in the repository (ONNX) with TensorFlow's reference output."""
    return (SMALL_CNN / "model.onnx", np.load(SMALL_CNN / "input_0.npy"),
            np.load(SMALL_CNN / "output_0.npy"))


def have_tensorflow():
    try:
        import tensorflow  # noqa: F401
        return True
    except ImportError:
        return False


needs_tf = pytest.mark.skipif(not have_tensorflow(), reason="TensorFlow is not importable")


@pytest.fixture(scope="session")
def make_models():
    """../shared/models/make_models.py (or $KILN_SHARED/models/...): the zoo's builders."""
    shared = pathlib.Path(os.environ.get("KILN_SHARED", REPO.parent / "shared"))
    path = shared / "models" / "make_models.py"
    assert path.is_file(), "{} is missing: set KILN_SHARED to the shared folder".format(path)
    spec = importlib.util.spec_from_file_location("make_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mlp_onnx(features=16, hidden=32, classes=4, seed=7):
    """A small MLP as an ONNX model with a symbolic batch dim `N`, seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = (rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def mlp_reference(x, features=16, hidden=32, classes=4, seed=7):
    """What `mlp_onnx` computes, in numpy."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = (rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    logits = np.maximum(x @ w1 + b1, 0) @ w2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
