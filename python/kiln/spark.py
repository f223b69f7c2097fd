"""Batch inference on a PySpark DataFrame with kiln.

    from kiln.spark import predict
    scored = predict(df, "model.onnx", features="pixels", output_col="scores")

`predict` adds one column (the model's output per row, flattened to an array) through
`DataFrame.mapInPandas`: each executor's Python worker compiles the model once (a
module-level cache keyed by the model's path or bytes and the options) and runs each Arrow
batch as one batch array. The model travels as its path (which executors must be able to
read) or its bytes; an `onnx.ModelProto` is serialized on the driver.
"""

import numpy as np

from . import _batch

_SPARK_TYPES = {
    "float32": "FloatType",
    "float64": "DoubleType",
    "int32": "IntegerType",
    "int64": "LongType",
    "int8": "ByteType",
    "int16": "ShortType",
    "bool": "BooleanType",
}


def predict(df, model, features, output_col="prediction", *, shape=None, output=None,
            device="CPU", **options):
    """Returns `df` with `output_col` added: the model applied to each row.

    `features`: one column holding each row's input as an array (reshaped to `shape`, or
    the model's per-row input shape when it is known), or a list of scalar columns stacked
    into a (rows, columns) batch. `output`: which model output (default the first).
    `options` go to `kiln.compile` (input_shapes, level, threads).
    """
    import pyspark.sql.types as T

    import kiln

    portable = _batch.portable(model)
    cols = [features] if isinstance(features, str) else list(features)
    # Compiling on the driver checks the model and the output name before any job runs,
    # and gives the output's element type for the schema.
    probe = _batch.compiled(portable, device, options)
    out_index = _batch.output_index(probe, output)
    out_dtype = probe.outputs[out_index][1]
    if out_dtype not in _SPARK_TYPES:
        raise kiln.KilnError("output `{}` is {}, which has no Spark column type here".format(
            probe.outputs[out_index][0], out_dtype))
    element = getattr(T, _SPARK_TYPES[out_dtype])()
    schema = T.StructType(df.schema.fields + [T.StructField(output_col, T.ArrayType(element))])
    in_dtype = np.dtype(probe.inputs[0][1])

    def score(batches):
        compiled = _batch.compiled(portable, device, options)
        row_shape = _batch.model_shape(compiled, shape)
        for pdf in batches:
            x = _batch.features([pdf[c].to_numpy() for c in cols], row_shape if len(cols) == 1 else shape, in_dtype)
            y = _batch.run(compiled, x, out_index)
            out = pdf.copy()
            out[output_col] = list(y.reshape(len(pdf), -1))
            yield out

    return df.mapInPandas(score, schema)
