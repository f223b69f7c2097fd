"""Writes models that no one on the kiln team made, in the zoo layout the `zoo` runner reads
(OUT/<name>/model.onnx, input_K.npy, output_K.npy, meta.json): the "light" versions of the
ONNX model zoo's architectures (AlexNet, DenseNet-121, Inception v1/v2, ResNet-50,
ShuffleNet, SqueezeNet, VGG-19, ZFNet-512) that ship inside the onnx pip package. Inputs are
seeded random; reference outputs come from onnxruntime.

Usage: python tools/make_foreign_models.py OUT   (needs onnx, numpy, onnxruntime)
"""
import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

DTYPES = {1: np.float32, 7: np.int64, 6: np.int32, 11: np.float64}


def main(out):
    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    rng = np.random.default_rng(20261124)
    for path in sorted(glob.glob(os.path.join(light, "light_*.onnx"))):
        name = os.path.basename(path)[len("light_"):-len(".onnx")]
        model = onnx.load(path)
        inits = {i.name for i in model.graph.initializer}
        feeds = {}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            shape = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
            feeds[vi.name] = rng.standard_normal(shape).astype(DTYPES[tt.elem_type])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs = sess.run(None, feeds)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(model, os.path.join(d, "model.onnx"))
        for k, x in enumerate(feeds.values()):
            np.save(os.path.join(d, f"input_{k}.npy"), x)
        for k, y in enumerate(outs):
            np.save(os.path.join(d, f"output_{k}.npy"), y)
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"name": name, "source": "onnx " + onnx.__version__ + " backend test data (light model zoo)",
                       "reference": "onnxruntime " + ort.__version__,
                       "opset": [(o.domain, o.version) for o in model.opset_import]}, f, indent=1)
        print("wrote", d)


if __name__ == "__main__":
    main(sys.argv[1])
