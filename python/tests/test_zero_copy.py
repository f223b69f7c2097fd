"""Inputs that are C-contiguous reach kiln without a copy; other layouts are copied and give
the same results. The proof is memory: during a run on a 400 MB input the process's resident
memory rises by far less than 400 MB, while with the same input in Fortran order (which kiln
must copy) it rises by about 400 MB, so the measurement would see a copy."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kiln
from conftest import mlp_onnx, mlp_reference

ROWS, FEATURES = 1_000_000, 100  # 400 MB of float32

# A fresh interpreter, so that nothing earlier tests allocated is in the way. A thread
# samples the resident memory while the call runs (kiln releases the GIL while it computes,
# and any copy of the input lives at least as long as the computation that reads it). Not
# ru_maxrss: imports can leave a peak above the input's, hiding a copy under it.
PROBE = textwrap.dedent("""
    import json, resource, sys, threading, time
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    import kiln

    rows, features, order = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    w = np.arange(features, dtype=np.float32).reshape(features, 1) / features
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "project",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w, "w")])
    compiled = kiln.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                            threads=1)
    compiled(np.ones((4, features), np.float32))   # kiln's own start-up memory, before measuring

    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    x = np.ones((rows, features), np.float32, order=order)   # every page touched
    x[::1000] = 2
    highest, samples, done = [0], [0], threading.Event()

    def sample():
        while not done.is_set():
            highest[0] = max(highest[0], resident())
            samples[0] += 1
            time.sleep(0.0005)

    before = resident()
    sampler = threading.Thread(target=sample)
    sampler.start()
    y = compiled(x)
    done.set()
    sampler.join()
    ok = bool(np.allclose(y, x @ w, rtol=1e-4))
    print(json.dumps({"rise": highest[0] - before, "samples": samples[0], "input": x.nbytes,
                      "ok": ok}))
""")


def peak_rise(order):
    run = subprocess.run([sys.executable, "-c", PROBE, str(ROWS), str(FEATURES), order],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ok"]
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_a_c_contiguous_input_is_not_copied_and_a_fortran_one_is():
    contiguous = peak_rise("C")
    fortran = peak_rise("F")
    mb = 1 << 20
    print("resident memory rise during a run on a {} MB input: C order {:.0f} MB ({} samples), "
          "Fortran order {:.0f} MB ({} samples)".format(
              contiguous["input"] // mb, contiguous["rise"] / mb, contiguous["samples"],
              fortran["rise"] / mb, fortran["samples"]))
    # The output (4 MB) and kiln's working memory fit well under a quarter of the input.
    assert contiguous["rise"] < contiguous["input"] / 4
    # The control: a copy of the input shows up in this measurement.
    assert fortran["rise"] > contiguous["input"] * 3 / 4


def test_layouts_kiln_copies_give_the_same_results():
    compiled = kiln.compile(mlp_onnx(), threads=1)
    x = np.random.default_rng(3).standard_normal((6, 16)).astype(np.float32)
    expected = mlp_reference(x)
    unaligned = np.frombuffer(bytearray(x.nbytes + 1), dtype=np.float32, offset=1,
                              count=x.size).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    wide = np.zeros((6, 32), np.float32)
    wide[:, ::2] = x
    for layout in [x, np.asfortranarray(x), wide[:, ::2], x[::-1][::-1], unaligned,
                   np.ascontiguousarray(x[:, :, None])[:, :, 0]]:
        np.testing.assert_allclose(compiled(layout), expected, rtol=1e-4, atol=1e-5)


def test_an_input_only_kiln_refers_to_stays_alive_for_the_run():
    compiled = kiln.compile(mlp_onnx(features=16), threads=1)
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2000, 16)).astype(np.float32) for _ in range(4)]
    expected = [mlp_reference(x) for x in xs]
    # Each copy's only reference is the run's.
    futures = [compiled.start(x.copy()) for x in xs]
    import gc
    gc.collect()
    for future, want in zip(futures, expected):
        np.testing.assert_allclose(future.wait(), want, rtol=1e-4, atol=1e-5)
