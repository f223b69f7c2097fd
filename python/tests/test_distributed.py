"""The Spark and Ray helpers on 10,000 rows give what calling the model directly gives."""

import os
import sys
import time

import numpy as np
import pytest

import kiln
from conftest import mlp_onnx

ROWS = 10_000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((ROWS, 16)).astype(np.float32)
    model = mlp_onnx().SerializeToString()
    direct = kiln.compile(model)(x)
    return model, x, direct


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    # The workers must run this venv's Python (with numpy and kiln), not the first on PATH.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (SparkSession.builder.master("local[2]").appName("kiln-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "2048")
               .getOrCreate())
    yield session
    session.stop()


def test_spark_array_column(spark, data):
    from kiln.spark import predict

    model, x, direct = data
    df = spark.createDataFrame([(i, x[i].tolist()) for i in range(ROWS)], "id long, features array<float>")
    start = time.perf_counter()
    rows = predict(df, model, features="features", output_col="probs").orderBy("id").collect()
    print("spark local[2], 10,000 rows (array column): {:.2f} s".format(time.perf_counter() - start))
    got = np.array([r["probs"] for r in rows], dtype=np.float32)
    assert got.shape == direct.shape
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def test_spark_scalar_columns(spark, data):
    from kiln.spark import predict

    model, x, direct = data
    cols = ["f{}".format(j) for j in range(16)]
    import pandas as pd

    pdf = pd.DataFrame(x, columns=cols)
    pdf.insert(0, "id", np.arange(ROWS))
    df = spark.createDataFrame(pdf)
    rows = predict(df, model, features=cols).orderBy("id").collect()
    got = np.array([r["prediction"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def test_spark_refuses_an_unknown_output(spark, data):
    from kiln.spark import predict

    model, x, _ = data
    df = spark.createDataFrame([(x[0].tolist(),)], "features array<float>")
    with pytest.raises(kiln.KilnError, match="the model has no output `logits`; its outputs are `probs`"):
        predict(df, model, features="features", output="logits")


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_DEDUP_LOGS": "0"}})
    yield ray
    ray.shutdown()


def test_ray_map_batches(ray_local, data):
    from kiln.ray import Predictor

    model, x, direct = data
    ds = ray_local.data.from_items([{"id": i, "features": x[i]} for i in range(ROWS)])
    start = time.perf_counter()
    out = ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"model": model, "features": "features", "output_col": "probs"},
        compute=ray_local.data.ActorPoolStrategy(size=2),
        batch_size=1024,
    ).take_all()
    print("ray local (2 actors), 10,000 rows: {:.2f} s".format(time.perf_counter() - start))
    out.sort(key=lambda r: r["id"])
    got = np.stack([np.asarray(r["probs"]) for r in out])
    assert got.shape == direct.shape
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


def test_fixed_batch_models_run_in_chunks(small_cnn):
    """A model whose batch dim is fixed at 1 (the repository's small CNN) still takes whole
    batches: the helpers cut them into chunks of its batch size."""
    from kiln import _batch

    path, x, _ = small_cnn
    compiled = _batch.compiled(os.fspath(path), "CPU", {})
    rng = np.random.default_rng(2)
    batch = rng.standard_normal((5, 32, 32, 3)).astype(np.float32)
    got = _batch.run(compiled, batch, 0)
    want = np.concatenate([compiled(batch[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert _batch.compiled(os.fspath(path), "CPU", {}) is compiled
