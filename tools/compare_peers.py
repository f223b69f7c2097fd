#!/usr/bin/env python3
"""Runs onnxruntime, OpenVINO and tract on an ONNX model and inputs, then `kiln bench` on the
same model and inputs, in the same run, and prints each one's median latency and kiln's
ratio to it (below 1.0: kiln is faster).

    python tools/compare_peers.py MODEL.onnx [--input input_0.npy ...] [--device CPU]
        [--threads 2] [--niter 50] [--kiln target/release/kiln]

Needs: pip install onnxruntime openvino tract numpy (tools/peers-venv.sh makes a venv).
Inputs default to MODEL's folder's input_K.npy files, else random (floats in [-1, 1),
integers in [0, 10)). A peer that cannot load or run the model is reported, not fatal.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def load_inputs(model_path, given):
    if given:
        return [np.load(p) for p in given]
    folder = os.path.dirname(os.path.abspath(model_path))
    found = []
    k = 0
    while os.path.exists(os.path.join(folder, f"input_{k}.npy")):
        found.append(np.load(os.path.join(folder, f"input_{k}.npy")))
        k += 1
    return found


def random_inputs(model_path):
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    out = []
    for vi in model.graph.input:
        if vi.name in init:
            continue
        t = vi.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.integer):
            out.append(rng.integers(0, 10, size=shape).astype(dtype))
        elif dtype == np.bool_:
            out.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            out.append(rng.uniform(-1, 1, size=shape).astype(dtype))
    return out


def timed(run, niter):
    run()  # the first run pays for lazy initialisation in every runtime
    times = []
    for _ in range(niter):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def onnxruntime_median(model, inputs, threads, niter):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {i.name: x for i, x in zip(s.get_inputs(), inputs)}
    return timed(lambda: s.run(None, feed), niter)


# OpenVINO computes in bf16 by default on CPUs with AVX512_BF16 or AMX (this machine's
# Zen 4 has AVX512_BF16): about half the f32 time on resnet50, at bf16's 3 significant
# digits. kiln and onnxruntime compute in f32, so OpenVINO is pinned to f32 unless asked.
OPENVINO_PRECISION = "f32"


def openvino_median(model, inputs, threads, niter):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if OPENVINO_PRECISION != "default":
        config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISION
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return timed(lambda: request.infer(inputs), niter)


def tract_median(model, inputs, threads, niter):
    import tract

    runnable = tract.onnx().load(model).into_model().into_runnable()
    return timed(lambda: runnable.run(inputs), niter)


def kiln_median(kiln, model, inputs, device, threads, niter):
    with tempfile.TemporaryDirectory() as d:
        args = [kiln, "bench", model, "-d", device, "--threads", str(threads), "--niter", str(niter)]
        import onnx

        # kiln takes inputs by name: the model's graph inputs that are not initializers
        m = onnx.load(model, load_external_data=False)
        init = {i.name for i in m.graph.initializer}
        names = [vi.name for vi in m.graph.input if vi.name not in init]
        for k, (name, x) in enumerate(zip(names, inputs)):
            p = os.path.join(d, f"input_{k}.npy")
            np.save(p, x)
            args += ["--input", f"{name}={p}"]
        out = subprocess.run(args, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or out.stdout.strip())
        m = re.search(r"median ([0-9.]+) ms", out.stdout)
        if not m:
            raise RuntimeError("no median in kiln bench's output:\n" + out.stdout)
        return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--input", action="append", default=[])
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--niter", type=int, default=50)
    ap.add_argument("--kiln", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "kiln"))
    ap.add_argument("--peers", default="onnxruntime,openvino,tract")
    ap.add_argument("--openvino-precision", default="f32",
                    help="OpenVINO's INFERENCE_PRECISION_HINT: f32 (default, as kiln computes), "
                         "or 'default' for OpenVINO's own choice (bf16 on CPUs with AVX512_BF16 or AMX)")
    a = ap.parse_args()
    global OPENVINO_PRECISION
    OPENVINO_PRECISION = a.openvino_precision

    inputs = load_inputs(a.model, a.input) or random_inputs(a.model)
    results = {}
    runners = {"onnxruntime": onnxruntime_median, "openvino": openvino_median, "tract": tract_median}
    for name in a.peers.split(","):
        label = f"openvino {a.openvino_precision}" if name == "openvino" else name
        try:
            results[label] = runners[name](a.model, inputs, a.threads, a.niter)
        except Exception as e:  # a peer failing on a model is a result, not a crash
            results[label] = f"failed: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
    try:
        results[f"kiln {a.device}"] = kiln_median(a.kiln, a.model, inputs, a.device, a.threads, a.niter)
    except Exception as e:
        results[f"kiln {a.device}"] = f"failed: {str(e).splitlines()[0][:200]}"

    kiln_ms = results[f"kiln {a.device}"]
    print(f"{os.path.basename(os.path.dirname(os.path.abspath(a.model)))}/{os.path.basename(a.model)}: "
          f"median ms at batch as given, {a.threads} threads, {a.niter} runs")
    for name, v in results.items():
        if isinstance(v, float):
            ratio = f"kiln/{name} = {kiln_ms / v:.2f}" if isinstance(kiln_ms, float) and not name.startswith("kiln") else ""
            print(f"  {name:<16} {v:10.2f}  {ratio}")
        else:
            print(f"  {name:<16} {v}")
    return 0 if isinstance(kiln_ms, float) else 1


if __name__ == "__main__":
    sys.exit(main())
