"""Writes the hand-made malformed ONNX files in tests/fixtures/bad/ (each a few hundred
bytes). Each must end in a clear error naming the file and what is wrong, never a panic.

Usage: python tools/make_bad_models.py tests/fixtures/bad   (needs onnx)
"""
import os
import sys

import onnx
from onnx import TensorProto, helper


def model(nodes, inits=(), inputs=None, outputs=None, opset=17):
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    outputs = outputs if outputs is not None else [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    g = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def save(out, name, m):
    with open(os.path.join(out, name), "wb") as f:
        f.write(m.SerializeToString() if not isinstance(m, bytes) else m)


def main(out):
    os.makedirs(out, exist_ok=True)
    relu = model([helper.make_node("Relu", ["x"], ["y"], name="relu")])
    good = relu.SerializeToString()
    save(out, "truncated.onnx", good[: len(good) // 2])
    # field 7 (graph) is a message; here it arrives as a varint
    save(out, "wrong_field_type.onnx", bytes([0x08, 0x08, 0x38, 0x05]))
    save(out, "dangling_input.onnx", model([helper.make_node("Relu", ["nowhere"], ["y"], name="relu")]))
    save(out, "cycle.onnx", model([
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Identity", ["a"], ["y"], name="out"),
    ]))
    save(out, "self_loop.onnx", model([helper.make_node("Add", ["x", "y"], ["y"], name="loop")]))
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 30, 1 << 30])
    save(out, "huge_initializer.onnx", model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [huge]))
    neg = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    neg.dims[:] = [-1, -2]
    save(out, "negative_dim.onnx", model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [neg]))
    for name, location in (("external_escape.onnx", "../../../../etc/passwd"), ("external_absolute.onnx", "/etc/passwd")):
        t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2], data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value=location)
        save(out, name, model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [t]))
    save(out, "unknown_op.onnx", model([helper.make_node("Frobnicate", ["x"], ["y"], name="frob")]))
    save(out, "wrong_rank_input.onnx", model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                                            [helper.make_tensor("w", TensorProto.FLOAT, [3, 3], [0.0] * 9)]))


if __name__ == "__main__":
    main(sys.argv[1])
