"""Running one whole batch of rows through a compiled model, shared by the Spark and Ray
helpers, with a per-process cache so each worker process compiles a model once."""

import hashlib
import os
import threading

import numpy as np

_COMPILED = {}
_LOCK = threading.Lock()


def portable(model):
    """What can travel to another process: an absolute path (workers may run in another
    folder) or the serialized bytes. An `onnx.ModelProto` is serialized here, on the driver."""
    if isinstance(model, (str, os.PathLike)):
        return os.path.abspath(os.fspath(model))
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if type(model).__module__.startswith("onnx") and hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise TypeError(
        "a distributed helper needs the model as a path or bytes (or an onnx.ModelProto), "
        "not a {}: executors load it themselves".format(type(model).__name__))


def compiled(model, device, options):
    """The process's compiled model for (model, device, options), compiling it on first use."""
    import kiln

    what = model if isinstance(model, str) else hashlib.sha256(model).hexdigest()
    key = (what, device, repr(sorted(options.items())))
    hit = _COMPILED.get(key)
    if hit is not None:
        return hit
    with _LOCK:
        if key not in _COMPILED:
            _COMPILED[key] = kiln.compile(model, device, **options)
        return _COMPILED[key]


def cache_size():
    """How many models this process has compiled (one per distinct model and options)."""
    return len(_COMPILED)


def features(columns, shape, dtype):
    """Stacks feature columns into one batch array: a single column of per-row arrays
    becomes (rows, *shape); several scalar columns become (rows, len(columns))."""
    if len(columns) == 1:
        col = columns[0]
        if isinstance(col, np.ndarray) and col.dtype != object:
            x = col
        else:
            x = np.stack([np.asarray(v) for v in col]) if len(col) else np.empty((0,))
    else:
        x = np.stack([np.asarray(c) for c in columns], axis=1)
    x = np.ascontiguousarray(x, dtype=dtype)
    if shape is not None:
        x = x.reshape((len(x),) + tuple(shape))
    return x


def run(model, x, output):
    """The model's output `output` (an index) for a batch `x` of rows. A model whose batch
    dim is fixed (b) runs in chunks of b, the last one padded."""
    _, _, in_shape = model.inputs[0]
    fixed = in_shape[0] if in_shape and isinstance(in_shape[0], int) else None
    if fixed is None or fixed == len(x):
        return model.infer(x)[output]
    parts = []
    for start in range(0, len(x), fixed):
        chunk = x[start:start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n,) + chunk.shape[1:], chunk.dtype)])
        parts.append(model.infer(chunk)[output][:n])
    return np.concatenate(parts) if parts else np.empty((0,))


def model_shape(model, shape):
    """The per-row shape of the model's first input, when the caller gave none."""
    if shape is not None:
        return tuple(shape)
    _, _, in_shape = model.inputs[0]
    if in_shape and all(isinstance(d, int) for d in in_shape[1:]):
        return tuple(in_shape[1:])
    return None


def output_index(model, output):
    names = [n for n, _, _ in model.outputs]
    if output is None:
        return 0
    if output not in names:
        import kiln
        raise kiln.KilnError("the model has no output `{}`; its outputs are {}".format(
            output, ", ".join("`{}`".format(n) for n in names)))
    return names.index(output)
