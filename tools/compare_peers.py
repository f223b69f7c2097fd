#!/usr/bin/env python3
"""Runs onnxruntime, OpenVINO and tract on an ONNX model and inputs, then `kiln bench` on the
same model and inputs, in the same run, and prints each one's median latency and kiln's
ratio to it (below 1.0: kiln is faster).

    python tools/compare_peers.py MODEL.onnx [--input input_0.npy ...] [--device CPU]
        [--threads 2] [--niter 50] [--rounds 1] [--kiln target/release/kiln]

Needs: pip install onnxruntime openvino tract numpy (tools/peers-venv.sh makes a venv).
Inputs default to MODEL's folder's input_K.npy files, else random (floats in [-1, 1),
integers in [0, 10)). A peer that cannot load or run the model is reported, not fatal.

On a shared machine one round can land in a slow spell for one runtime and not the other.
`--rounds R` repeats the measurement R times, kiln first in every other round, each peer
loaded once; the summary gives kiln's best median over each peer's best, the median of the
same-round ratios, and their range.
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


def onnxruntime_runner(model, inputs, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {i.name: x for i, x in zip(s.get_inputs(), inputs)}
    return lambda: s.run(None, feed)


# OpenVINO computes in bf16 by default on CPUs with AVX512_BF16 or AMX (this machine's
# Zen 4 has AVX512_BF16): about half the f32 time on resnet50, at bf16's 3 significant
# digits. kiln and onnxruntime compute in f32, so OpenVINO is pinned to f32 unless asked.
OPENVINO_PRECISION = "f32"


def openvino_runner(model, inputs, threads):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if OPENVINO_PRECISION != "default":
        config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISION
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return lambda: request.infer(inputs)


def tract_runner(model, inputs, threads):
    import tract

    runnable = tract.onnx().load(model).into_model().into_runnable()
    return lambda: runnable.run(inputs)


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


def failure(e, width=120):
    first = str(e).splitlines()[0][:width] if str(e) else type(e).__name__
    return f"failed: {first}"


def print_round(title, results, kiln_label):
    kiln_ms = results.get(kiln_label)
    print(title)
    for name, v in results.items():
        if isinstance(v, float):
            ratio = f"kiln/{name} = {kiln_ms / v:.2f}" if isinstance(kiln_ms, float) and name != kiln_label else ""
            print(f"  {name:<16} {v:10.2f}  {ratio}")
        else:
            print(f"  {name:<16} {v}")


def print_summary(rounds, kiln_label):
    """Best over best, and the same-round ratios, per peer, over the rounds both ran in."""
    print(f"summary of {len(rounds)} rounds (kiln best / peer best, then the same-round ratios)")
    for name in rounds[0]:
        if name == kiln_label:
            continue
        pairs = [(r[kiln_label], r[name]) for r in rounds
                 if isinstance(r.get(kiln_label), float) and isinstance(r.get(name), float)]
        if not pairs:
            print(f"  {name:<16} no round with both")
            continue
        best = min(k for k, _ in pairs) / min(p for _, p in pairs)
        same = sorted(k / p for k, p in pairs)
        print(f"  kiln/{name:<16} best {best:.2f}  same-round median {statistics.median(same):.2f}"
              f"  range {same[0]:.2f}-{same[-1]:.2f}  ({len(pairs)} rounds)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--input", action="append", default=[])
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--niter", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the measurement, kiln first in every other round, and summarise")
    ap.add_argument("--kiln", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "kiln"))
    ap.add_argument("--peers", default="onnxruntime,openvino,tract")
    ap.add_argument("--openvino-precision", default="f32",
                    help="OpenVINO's INFERENCE_PRECISION_HINT: f32 (default, as kiln computes), "
                         "or 'default' for OpenVINO's own choice (bf16 on CPUs with AVX512_BF16 or AMX)")
    a = ap.parse_args()
    if a.rounds < 1 or a.niter < 1:
        ap.error("--rounds and --niter take a positive count")
    global OPENVINO_PRECISION
    OPENVINO_PRECISION = a.openvino_precision

    inputs = load_inputs(a.model, a.input) or random_inputs(a.model)
    kiln_label = f"kiln {a.device}"
    makers = {"onnxruntime": onnxruntime_runner, "openvino": openvino_runner, "tract": tract_runner}
    # Each peer is loaded once; a peer that fails to load or run stays failed in every round.
    peers = {}
    for name in a.peers.split(","):
        label = f"openvino {a.openvino_precision}" if name == "openvino" else name
        try:
            peers[label] = makers[name](a.model, inputs, a.threads)
        except Exception as e:  # a peer failing on a model is a result, not a crash
            peers[label] = failure(e)

    def measure_peers(results):
        for label, run in peers.items():
            if isinstance(run, str):
                results[label] = run
                continue
            try:
                results[label] = timed(run, a.niter)
            except Exception as e:
                peers[label] = results[label] = failure(e)

    def measure_kiln(results):
        try:
            results[kiln_label] = kiln_median(a.kiln, a.model, inputs, a.device, a.threads, a.niter)
        except Exception as e:
            results[kiln_label] = failure(e, 200)

    where = f"{os.path.basename(os.path.dirname(os.path.abspath(a.model)))}/{os.path.basename(a.model)}"
    rounds = []
    for r in range(a.rounds):
        results = {}
        if r % 2 == 0:
            measure_peers(results)
            measure_kiln(results)
        else:
            measure_kiln(results)
            measure_peers(results)
        # Peers first, kiln last, whatever order they ran in.
        results = {k: results[k] for k in [*peers, kiln_label]}
        rounds.append(results)
        round_of = f", round {r + 1} of {a.rounds}" if a.rounds > 1 else ""
        print_round(f"{where}: median ms at batch as given, {a.threads} threads, {a.niter} runs{round_of}",
                    results, kiln_label)
    if a.rounds > 1:
        print_summary(rounds, kiln_label)
    return 0 if any(isinstance(r[kiln_label], float) for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
