"""Writes the ONNX backend node conformance cases from the installed onnx package, in the
layout the ONNX test runner uses: OUT/node/<case>/model.onnx and
OUT/node/<case>/test_data_set_N/{input,output}_K.pb.

Usage: python tools/gen_onnx_node_tests.py OUT   (needs onnx==1.23.2 and numpy)
"""
import os
import shutil
import sys

import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node as node_cases


def to_proto(value, info):
    t = info.type
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, info.name)
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, info.name)
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, info.name)
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(value, info.name)


def main(out):
    written = skipped = 0
    for case in node_cases.collect_testcases():
        folder = os.path.join(out, "node", case.name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        with open(os.path.join(folder, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        try:
            for n, (inputs, outputs) in enumerate(case.data_sets):
                data = os.path.join(folder, f"test_data_set_{n}")
                os.makedirs(data)
                graph = case.model.graph
                for kind, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
                    for k, value in enumerate(values):
                        with open(os.path.join(data, f"{kind}_{k}.pb"), "wb") as f:
                            f.write(to_proto(value, infos[k]).SerializeToString())
            written += 1
        except Exception as e:  # a case whose data the helpers cannot serialise
            skipped += 1
            print("skipped", case.name, e, file=sys.stderr)
            shutil.rmtree(folder)
    with open(os.path.join(out, "GENERATED_BY"), "w") as f:
        f.write(f"onnx=={onnx.__version__}\n")
    print(f"wrote {written} node cases to {out}, skipped {skipped}")


if __name__ == "__main__":
    main(sys.argv[1])
