"""kiln: compile a deep-learning model from any framework and run it on kiln's devices.

    import kiln
    compiled = kiln.compile("model.onnx")          # a path, bytes, an onnx.ModelProto,
    y = compiled(x)                                 # a keras.Model, a tf.function, a kiln.Model

`compiled(...)` takes numpy arrays positionally (in the model's input order) or one dict
by input name, and returns a numpy array when the model has one output, else a list of
arrays in the model's output order.
"""

import os
import threading

import numpy as np

from . import _kiln
from ._kiln import KilnError, Model, devices
from ._frameworks import to_model

__all__ = [
    "KilnError",
    "Model",
    "CompiledModel",
    "Future",
    "AsyncInferQueue",
    "load",
    "compile",
    "devices",
    "jit",
]


def load(source, *, format=None, signature=None, input_shapes=None, label=None):
    """Loads a model into kiln's IR without compiling it.

    `source` is a path (`.onnx`, `.pb`, a SavedModel folder, `.keras`, `.h5`, `.kir`), the
    bytes of a serialized model (`format` names it, else it is sniffed), or any framework
    object `compile` takes. `input_shapes` maps input names to shapes that fix unknown dims.
    """
    return to_model(source, format=format, signature=signature,
                    input_shapes=input_shapes, label=label)


def compile(obj, device="CPU", *, input_shapes=None, level=2, threads=0, profile=False,
            format=None, signature=None, label=None):
    """Compiles `obj` for `device` ("CPU" or "REFERENCE"; `kiln.devices()` lists them).

    Options: `input_shapes` ({name: shape}, fixes unknown dims), `level` (0, 1 or 2: how far
    the passes optimize, as -O), `threads` (the device's worker threads; 0: one per core),
    `profile` (keep per-kernel timings of the last call for `CompiledModel.profile()`).
    """
    if isinstance(obj, CompiledModel):
        raise KilnError("the model is already compiled")
    model = to_model(obj, format=format, signature=signature,
                     input_shapes=input_shapes, label=label)
    native = _kiln.compile(model, device, level=level, threads=threads, profile=profile)
    return CompiledModel(native)


class CompiledModel:
    """A model compiled for a device; call it on numpy arrays.

    Thread-safe: any number of Python threads may call one compiled model at once. The GIL
    is released while kiln computes, so the calls run in parallel.
    """

    def __init__(self, native, structure=None):
        self._native = native
        # Why: a tf.function that returns one tensor should give back one array even when
        # kiln lists it as a one-element output list; `structure` is "single" or "list".
        self._structure = structure
        self._input_names = [name for name, _, _ in native.inputs]
        self._input_dtypes = [np.dtype(dtype) if dtype != "bfloat16" else None
                              for _, dtype, _ in native.inputs]

    @property
    def inputs(self):
        """`[(name, dtype, shape)]`; a dim is an int, a symbol's name, or None."""
        return self._native.inputs

    @property
    def outputs(self):
        return self._native.outputs

    @property
    def device(self):
        return self._native.device

    def _ordered(self, args, kwargs):
        if kwargs:
            if args:
                raise KilnError("give the inputs either by position or by name, not both")
            args = (kwargs,)
        if len(args) == 1 and isinstance(args[0], dict):
            given = args[0]
            for name in given:
                if name not in self._input_names:
                    raise KilnError("the model has no input `{}`; its inputs are {}".format(
                        name, ", ".join("`{}`".format(n) for n in self._input_names)))
            missing = [n for n in self._input_names if n not in given]
            if missing:
                raise KilnError("input `{}` was not given".format(missing[0]))
            args = [given[n] for n in self._input_names]
        elif len(args) == 1 and isinstance(args[0], (list, tuple)) and len(self._input_names) > 1:
            args = list(args[0])
        if len(args) != len(self._input_names):
            raise KilnError("the model takes {} inputs, {} were given".format(
                len(self._input_names), len(args)))
        return [_as_array(x, dtype) for x, dtype in zip(args, self._input_dtypes)]

    def _shape_outputs(self, outs):
        if self._structure == "list":
            return outs
        return outs[0] if len(outs) == 1 else outs

    def __call__(self, *args, **kwargs):
        """Runs once: `compiled(x)`, `compiled(x, y)` or `compiled({"name": x})`."""
        return self._shape_outputs(self._native.infer(self._ordered(args, kwargs)))

    def infer(self, *args, **kwargs):
        """Like calling the model, but always returns the list of outputs."""
        return self._native.infer(self._ordered(args, kwargs))

    def start(self, *args, **kwargs):
        """Starts a run on kiln's own thread and returns a `Future` at once."""
        return Future(self._native.start(self._ordered(args, kwargs)), self._shape_outputs)

    def profile(self):
        """Per-kernel timings of the last call, when compiled with `profile=True`: a list of
        dicts `{"kind", "nodes", "device", "ms"}` in run order."""
        return self._native.profile()

    def __repr__(self):
        return repr(self._native)


class Future:
    """A run in flight, from `CompiledModel.start`."""

    def __init__(self, pending, shape):
        self._pending = pending
        self._shape = shape

    def wait(self):
        """Blocks until the run ends and returns its outputs (or raises its `KilnError`)."""
        return self._shape(self._pending.wait())

    result = wait

    def done(self):
        return self._pending.done()


class AsyncInferQueue:
    """Up to `jobs` runs in flight on one compiled model (OpenVINO's AsyncInferQueue).

    `start_async(inputs, userdata)` blocks while all `jobs` are busy; when a run ends the
    callback set with `set_callback` gets `(outputs, userdata)` on a worker thread.
    `wait_all()` blocks until every run has called back, then raises the first error a run
    or a callback raised, if any.
    """

    def __init__(self, compiled, jobs=0):
        if not isinstance(compiled, CompiledModel):
            raise TypeError("AsyncInferQueue takes a kiln.CompiledModel")
        self._compiled = compiled
        self._jobs = jobs or os.cpu_count() or 1
        self._free = threading.Semaphore(self._jobs)
        self._callback = None
        self._lock = threading.Lock()
        self._running = 0
        self._idle = threading.Condition(self._lock)
        self._errors = []

    def __len__(self):
        return self._jobs

    def set_callback(self, callback):
        self._callback = callback

    def start_async(self, inputs, userdata=None):
        if isinstance(inputs, (list, tuple)):
            args = list(inputs)
        else:
            args = [inputs]
        arrays = self._compiled._ordered(args, {})
        self._free.acquire()
        with self._lock:
            self._running += 1
        threading.Thread(target=self._run, args=(arrays, userdata), daemon=True).start()

    def _run(self, arrays, userdata):
        try:
            outs = self._compiled._shape_outputs(self._compiled._native.infer(arrays))
            if self._callback is not None:
                self._callback(outs, userdata)
        except BaseException as e:  # kept for wait_all: a worker thread has no caller
            with self._lock:
                self._errors.append(e)
        finally:
            self._free.release()
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._idle.notify_all()

    def is_ready(self):
        with self._lock:
            return self._running < self._jobs

    def wait_all(self):
        with self._lock:
            while self._running:
                self._idle.wait()
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]


def _as_array(x, dtype):
    if isinstance(x, np.ndarray):
        return x
    # Python lists and scalars, and framework tensors (TensorFlow's, via __array__).
    if hasattr(x, "__array__") or dtype is None:
        return np.asarray(x)
    return np.asarray(x, dtype=dtype)


from .jit import jit  # noqa: E402  (jit builds on compile)
