"""Batch inference on a Ray Dataset with kiln.

    import ray
    from kiln.ray import Predictor
    scored = ds.map_batches(Predictor, fn_constructor_kwargs={"model": "model.onnx",
                            "features": "pixels"},
                            compute=ray.data.ActorPoolStrategy(size=2), batch_size=1024)

Each actor compiles the model once in `__init__` and runs each batch as one batch array.
"""

import numpy as np

from . import _batch


class Predictor:
    """A callable class for `ray.data.Dataset.map_batches`: adds `output_col` (the model's
    output per row, flattened) to each batch. Arguments as in `kiln.spark.predict`."""

    def __init__(self, model, features, output_col="prediction", *, shape=None, output=None,
                 device="CPU", **options):
        self.compiled = _batch.compiled(_batch.portable(model), device, options)
        self.features = [features] if isinstance(features, str) else list(features)
        self.output_col = output_col
        self.shape = shape
        self.out_index = _batch.output_index(self.compiled, output)
        self.in_dtype = np.dtype(self.compiled.inputs[0][1])

    def __call__(self, batch):
        cols = [np.asarray(batch[c]) if not hasattr(batch[c], "to_numpy") else batch[c].to_numpy()
                for c in self.features]
        shape = _batch.model_shape(self.compiled, self.shape) if len(cols) == 1 else self.shape
        x = _batch.features(cols, shape, self.in_dtype)
        y = _batch.run(self.compiled, x, self.out_index)
        n = len(x)
        if hasattr(batch, "copy") and hasattr(batch, "columns"):  # a pandas batch
            out = batch.copy()
            out[self.output_col] = list(y.reshape(n, -1))
            return out
        out = dict(batch)
        out[self.output_col] = y.reshape(n, -1)
        return out
