"""Load, compile and run the repository's small CNN every way kiln takes a model; errors."""

import numpy as np
import pytest

import kiln
from conftest import mlp_onnx, mlp_reference

RTOL, ATOL = 1e-4, 1e-5


def test_path_bytes_proto_and_model_give_the_reference(small_cnn):
    import onnx

    path, x, y = small_cnn
    sources = [str(path), path, path.read_bytes(), onnx.load(str(path)), kiln.load(path)]
    for source in sources:
        compiled = kiln.compile(source)
        np.testing.assert_allclose(compiled(x), y, rtol=RTOL, atol=ATOL)


def test_metadata_and_call_forms(small_cnn):
    path, x, y = small_cnn
    compiled = kiln.compile(path, device="CPU")
    assert compiled.inputs == [("input_0", "float32", [1, 32, 32, 3])]
    assert compiled.outputs == [("dense", "float32", [1, 10])]
    assert compiled.device == "CPU"
    np.testing.assert_allclose(compiled({"input_0": x}), y, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(compiled(input_0=x), y, rtol=RTOL, atol=ATOL)
    outs = compiled.infer(x)
    assert isinstance(outs, list) and len(outs) == 1
    np.testing.assert_allclose(outs[0], y, rtol=RTOL, atol=ATOL)


def test_reference_device_and_levels_agree(small_cnn):
    path, x, y = small_cnn
    for device in ["REFERENCE", "CPU"]:
        for level in [0, 1, 2]:
            out = kiln.compile(path, device, level=level, threads=1)(x)
            np.testing.assert_allclose(out, y, rtol=RTOL, atol=ATOL)


def test_non_contiguous_input_is_read_in_logical_order(small_cnn):
    path, x, y = small_cnn
    strided = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))).transpose(0, 2, 3, 1)
    assert not strided.flags.c_contiguous
    np.testing.assert_allclose(kiln.compile(path)(strided), y, rtol=RTOL, atol=ATOL)


def test_symbolic_batch_runs_any_batch_size():
    compiled = kiln.compile(mlp_onnx())
    assert compiled.inputs == [("x", "float32", ["N", 16])]
    rng = np.random.default_rng(0)
    for n in [1, 3, 64]:
        x = rng.standard_normal((n, 16)).astype(np.float32)
        np.testing.assert_allclose(compiled(x), mlp_reference(x), rtol=RTOL, atol=ATOL)
    fixed = kiln.compile(mlp_onnx(), input_shapes={"x": [5, 16]})
    assert fixed.inputs == [("x", "float32", [5, 16])]


def test_start_wait_and_async_queue(small_cnn):
    path, x, y = small_cnn
    compiled = kiln.compile(path)
    futures = [compiled.start(x * k) for k in range(1, 5)]
    for k, f in enumerate(futures, 1):
        np.testing.assert_allclose(f.wait(), compiled(x * k), rtol=RTOL, atol=ATOL)
        assert f.done()

    results = {}
    queue = kiln.AsyncInferQueue(compiled, jobs=2)
    queue.set_callback(lambda out, k: results.__setitem__(k, out))
    for k in range(8):
        queue.start_async(x * (k + 1), userdata=k)
    queue.wait_all()
    assert sorted(results) == list(range(8))
    for k, out in results.items():
        np.testing.assert_allclose(out, compiled(x * (k + 1)), rtol=RTOL, atol=ATOL)


def test_async_queue_reports_errors_at_wait_all(small_cnn):
    path, x, _ = small_cnn
    queue = kiln.AsyncInferQueue(kiln.compile(path), jobs=2)
    queue.start_async(x.astype(np.float64), userdata=0)
    with pytest.raises(kiln.KilnError, match="input `input_0` must be f32, was given f64"):
        queue.wait_all()


def test_profile_lists_each_kernel(small_cnn):
    path, x, _ = small_cnn
    compiled = kiln.compile(path, profile=True)
    assert compiled.profile() == []
    compiled(x)
    profile = compiled.profile()
    assert profile and all(set(p) == {"kind", "nodes", "device", "ms"} for p in profile)
    assert any("conv" in p["kind"] for p in profile)
    assert all(p["device"] == "CPU" and p["ms"] >= 0 for p in profile)


def test_errors_are_kiln_errors_with_kiln_messages(small_cnn, tmp_path):
    path, x, _ = small_cnn
    compiled = kiln.compile(path)
    with pytest.raises(kiln.KilnError, match=r"input `input_0` must be f32, was given f64"):
        compiled(x.astype(np.float64))
    with pytest.raises(kiln.KilnError, match=r"input `input_0` must have shape \[1,32,32,3\], was given \[2, 32, 32, 3\]"):
        compiled(np.concatenate([x, x]))
    with pytest.raises(kiln.KilnError, match="the model has no input `image`; its inputs are `input_0`"):
        compiled({"image": x})
    with pytest.raises(kiln.KilnError, match="the model takes 1 inputs, 2 were given"):
        compiled(x, x)
    with pytest.raises(kiln.KilnError, match="no such device; this build has"):
        kiln.compile(path, device="TPU")
    missing = tmp_path / "missing.onnx"
    with pytest.raises(kiln.KilnError, match="missing.onnx: cannot read the file"):
        kiln.load(missing)
    with pytest.raises(kiln.KilnError, match=r"<bytes>: not a valid ONNX model \(protobuf decoding failed"):
        kiln.load(b"\x08\x07\x12\xff\xff\xff")
    with pytest.raises(kiln.KilnError, match="cannot tell the model format from its first bytes"):
        kiln.load(b"\x00\x01\x02")
    truncated = path.read_bytes()[:2000]
    with pytest.raises(kiln.KilnError):
        kiln.compile(truncated)
    assert issubclass(kiln.KilnError, Exception)


def test_element_types_kiln_lacks_are_errors_not_crashes(small_cnn):
    path, x, _ = small_cnn
    compiled = kiln.compile(path)
    with pytest.raises(kiln.KilnError, match="input `input_0` has dtype complex64, which kiln has no element type for"):
        compiled(np.zeros((1, 32, 32, 3), dtype=np.complex64))
    with pytest.raises(kiln.KilnError, match="input `input_0` must be a numpy array"):
        compiled._native.infer(["not an array"])
    try:
        import ml_dtypes
    except ImportError:
        return
    bf16 = np.zeros((1, 32, 32, 3), dtype=ml_dtypes.bfloat16)
    with pytest.raises(kiln.KilnError, match="input `input_0` must be f32, was given bf16"):
        compiled(bf16)


def test_unsupported_objects_are_refused():
    with pytest.raises(TypeError, match="kiln cannot compile a int"):
        kiln.compile(3)
