"""`@kiln.jit`: run a function of TensorFlow ops on kiln.

The first call with a new input signature (each argument's dtype and shape) traces the
function with TensorFlow (`tf.function` → concrete function → GraphDef with the variables
folded in) and compiles it with kiln; later calls with that signature run on kiln only.
"""

import functools
import threading

import numpy as np


def jit(fn=None, *, device="CPU", **options):
    """Decorator: `@kiln.jit` or `@kiln.jit(device="CPU", level=2, threads=0)`.

    Arguments are taken positionally and converted with `np.asarray`; the result is one
    numpy array, or a list of them when the function returns a tuple or list.
    `wrapped.signatures()` lists the signatures compiled so far.
    """
    if fn is None:
        return lambda f: jit(f, device=device, **options)

    import tensorflow as tf

    from . import compile as kiln_compile

    traced = tf.function(fn)
    cache = {}
    lock = threading.Lock()

    def compiled_for(arrays):
        key = tuple((a.dtype.str, a.shape) for a in arrays)
        hit = cache.get(key)
        if hit is not None:
            return hit
        with lock:
            if key not in cache:
                specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype), name="arg{}".format(i))
                         for i, a in enumerate(arrays)]
                concrete = traced.get_concrete_function(*specs)
                many = isinstance(concrete.structured_outputs, (list, tuple))
                compiled = kiln_compile(concrete, device, label="<kiln.jit {}>".format(
                    getattr(fn, "__name__", "function")), **options)
                compiled._structure = "list" if many else None
                cache[key] = compiled
            return cache[key]

    @functools.wraps(fn)
    def wrapper(*args):
        arrays = [np.asarray(a) for a in args]
        return compiled_for(arrays)(*arrays)

    wrapper.signatures = lambda: list(cache)
    return wrapper
