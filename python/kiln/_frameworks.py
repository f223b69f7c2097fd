"""Framework objects into kiln models, through each framework's own API, in memory.

- an `onnx.ModelProto`: its serialized bytes;
- a `keras.Model`: its config (what a `.keras` archive's config.json holds) and each
  layer's weights as numpy arrays;
- a `tf.function` (with an input signature) or a concrete function: TensorFlow folds the
  variables into constants (`convert_variables_to_constants_v2`) and kiln reads the
  GraphDef's bytes.

No temporary files are written; the framework is only needed here, not at inference time.
Frameworks are detected by type without importing them: kiln never imports TensorFlow or
Keras unless it is handed one of their objects.
"""

import json
import os
import sys

from . import _kiln


def _shapes(input_shapes):
    if input_shapes is None:
        return None
    if isinstance(input_shapes, dict):
        input_shapes = input_shapes.items()
    return [(str(name), [int(d) for d in shape]) for name, shape in input_shapes]


def _qualname(obj):
    return [c.__module__ + "." + c.__qualname__ for c in type(obj).__mro__]


def _is_keras_model(obj):
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(obj, keras.Model):
        return True
    return any(n.startswith(("keras.", "tf_keras.")) and n.endswith(".Model") for n in _qualname(obj))


def _is_tf_function(obj):
    return any(n.endswith(("polymorphic_function.Function", "def_function.Function"))
               for n in _qualname(obj))


def _is_concrete_function(obj):
    return any(n.endswith("ConcreteFunction") for n in _qualname(obj))


def to_model(obj, *, format=None, signature=None, input_shapes=None, label=None):
    shapes = _shapes(input_shapes)
    if isinstance(obj, _kiln.Model):
        return obj.with_input_shapes(shapes) if shapes else obj
    if isinstance(obj, (str, os.PathLike)):
        if format is not None:
            with open(obj, "rb") as f:
                return _kiln.load_bytes(f.read(), format=format, label=label or os.fspath(obj),
                                        input_shapes=shapes)
        return _kiln.load(os.fspath(obj), signature=signature, input_shapes=shapes)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _kiln.load_bytes(bytes(obj), format=format, label=label or "<bytes>",
                                input_shapes=shapes)
    if type(obj).__module__.startswith("onnx") and hasattr(obj, "SerializeToString"):
        name = getattr(getattr(obj, "graph", None), "name", "") or "model"
        return _kiln.load_bytes(obj.SerializeToString(), format="onnx",
                                label=label or "<onnx.ModelProto {}>".format(name),
                                input_shapes=shapes)
    if _is_keras_model(obj):
        return keras_model(obj, label=label, input_shapes=shapes)
    if _is_concrete_function(obj):
        return concrete_function(obj, label=label, input_shapes=shapes)
    if _is_tf_function(obj):
        if obj.input_signature is None:
            raise _kiln.KilnError(
                "a tf.function without an input_signature has no graph until it is traced: "
                "give it one (tf.function(input_signature=[...])), pass "
                "fn.get_concrete_function(...), or decorate it with @kiln.jit")
        return concrete_function(obj.get_concrete_function(), label=label, input_shapes=shapes)
    raise TypeError(
        "kiln cannot compile a {}: expected a path, bytes, an onnx.ModelProto, a keras.Model, "
        "a tf.function, a concrete function or a kiln.Model".format(type(obj).__name__))


def _layers(layer):
    """Every layer under `layer`, nested models included."""
    for sub in getattr(layer, "layers", []) or []:
        yield sub
        yield from _layers(sub)


def keras_model(model, *, label=None, input_shapes=None):
    import keras

    config = keras.saving.serialize_keras_object(model)
    weights = {}
    for layer in _layers(model):
        weights.setdefault(layer.name, [_numpy(w) for w in layer.weights])
    label = label or "<keras.Model {}>".format(model.name)
    return _kiln.load_keras(json.dumps(config), weights, label, input_shapes=input_shapes)


def _numpy(variable):
    import numpy as np

    value = variable.numpy() if hasattr(variable, "numpy") else variable
    return np.ascontiguousarray(value)


def concrete_function(fn, *, label=None, input_shapes=None):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(fn)
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    label = label or "<tf.function {}>".format(getattr(fn, "name", "function"))
    if isinstance(label, bytes):
        label = label.decode()
    model = _kiln.load_graphdef(graph_def.SerializeToString(), inputs, outputs, label,
                                input_shapes=input_shapes)
    return model
