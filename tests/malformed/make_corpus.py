"""Writes the malformed-model corpus into tests/malformed/files/: hand-made bad files in every
format kiln reads, each a few KB at most. Every one must end in an error that names the file
(and the node, where there is one) and what is wrong; none may panic, hang or allocate more
than its bytes justify. tests/tests/malformed.rs loads each and snapshots the messages.

Usage: python3 tests/malformed/make_corpus.py     (standard library only; run from anywhere)

Protobuf messages (ONNX, TensorFlow) are written by hand with the few encoders below, so no
onnx or tensorflow package is needed. Field numbers are those of onnx.proto3 and TF's
graph.proto / tensor.proto / saved_model.proto.
"""
import io
import json
import os
import shutil
import struct
import sys
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "files")
FIXTURES = os.path.join(ROOT, "bridges", "tests", "fixtures")

# ---- protobuf wire format -------------------------------------------------------------


def varint(n):
    n &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def vint(field, n):
    return key(field, 0) + varint(n)


def ld(field, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return key(field, 2) + varint(len(payload)) + payload


def f32(field, x):
    return key(field, 5) + struct.pack("<f", x)


def packed_ints(field, xs):
    return ld(field, b"".join(varint(x) for x in xs))


def packed_floats(field, xs):
    return ld(field, b"".join(struct.pack("<f", x) for x in xs))


# ---- ONNX (onnx.proto3) ---------------------------------------------------------------

FLOAT, INT64, STRING, COMPLEX64 = 1, 7, 8, 14
A_FLOAT, A_INT, A_GRAPH, A_INTS = 1, 2, 5, 7


def onnx_dim(d):
    return ld(1, vint(1, d) if isinstance(d, int) else ld(2, d))


def value_info(name, dims, elem=FLOAT):
    shape = ld(2, b"".join(onnx_dim(d) for d in dims))
    tensor_type = ld(1, vint(1, elem) + shape)
    return ld(1, name) + ld(2, tensor_type)


def node(op, inputs, outputs, name, attrs=()):
    out = b"".join(ld(1, i) for i in inputs) + b"".join(ld(2, o) for o in outputs)
    return out + ld(3, name) + ld(4, op) + b"".join(ld(5, a) for a in attrs)


def attr_ints(name, xs):
    return ld(1, name) + vint(20, A_INTS) + packed_ints(8, xs)


def attr_graph(name, g):
    return ld(1, name) + vint(20, A_GRAPH) + ld(6, g)


def tensor(name, dims, elem=FLOAT, floats=None, raw=None, external=None):
    out = packed_ints(1, dims) + vint(2, elem) + ld(8, name)
    if floats is not None:
        out += packed_floats(4, floats)
    if raw is not None:
        out += ld(9, raw)
    if external is not None:
        out += b"".join(ld(13, ld(1, k) + ld(2, v)) for k, v in external) + vint(14, 1)
    return out


def graph(nodes, inputs, outputs, inits=(), name="bad"):
    out = b"".join(ld(1, n) for n in nodes) + ld(2, name)
    out += b"".join(ld(5, t) for t in inits)
    out += b"".join(ld(11, v) for v in inputs) + b"".join(ld(12, v) for v in outputs)
    return out


def onnx_model(g, opset=17):
    return vint(1, 8) + ld(8, ld(1, "") + vint(2, opset)) + ld(7, g)


X2 = value_info("x", [2])
Y2 = value_info("y", [2])


def simple(nodes, inits=(), inputs=(X2,), outputs=(Y2,)):
    return onnx_model(graph(nodes, inputs, outputs, inits))


def nested_if(depth):
    """An If whose then-branch holds an If whose then-branch holds an If... `depth` deep."""
    leaf = graph([node("Identity", ["x"], ["r0"], "leaf")], [], [value_info("r0", [2])], name="leaf")
    body = leaf
    for level in range(depth):
        branch = node("If", ["c"], [f"r{level + 1}"], f"if{level}", [attr_graph("then_branch", body), attr_graph("else_branch", leaf)])
        body = graph([branch], [], [value_info(f"r{level + 1}", [2])], name=f"level{level}")
    top = node("If", ["c"], ["y"], "top", [attr_graph("then_branch", body), attr_graph("else_branch", leaf)])
    return onnx_model(graph([top], [X2, value_info("c", [], elem=9)], [Y2]))


def write_onnx():
    relu = simple([node("Relu", ["x"], ["y"], "relu")])
    put("onnx_truncated.onnx", relu[: len(relu) // 2])
    put("onnx_not_protobuf.onnx", b"this is not a protobuf message at all\xff\xff\xff")
    # field 7 (graph) is a message; here it arrives as a varint
    put("onnx_graph_as_varint.onnx", vint(1, 8) + vint(7, 5))
    put("onnx_no_graph.onnx", vint(1, 8) + ld(8, ld(1, "") + vint(2, 17)))
    put("onnx_cycle.onnx", simple([
        node("Add", ["x", "b"], ["a"], "first"),
        node("Relu", ["a"], ["b"], "second"),
        node("Identity", ["a"], ["y"], "out"),
    ]))
    put("onnx_self_loop.onnx", simple([node("Add", ["x", "y"], ["y"], "loop")]))
    put("onnx_dangling_input.onnx", simple([node("Relu", ["nowhere"], ["y"], "relu")]))
    put("onnx_output_never_made.onnx", simple([node("Relu", ["x"], ["z"], "relu")]))
    put("onnx_two_producers.onnx", simple([node("Relu", ["x"], ["y"], "relu"), node("Neg", ["x"], ["y"], "neg")]))
    put("onnx_mismatched_shapes.onnx", simple(
        [node("Add", ["x", "w"], ["y"], "add")], [tensor("w", [3], floats=[1.0, 2.0, 3.0])]))
    put("onnx_matmul_wrong_rank.onnx", simple(
        [node("MatMul", ["x", "w"], ["y"], "mm")], [tensor("w", [3, 3], floats=[0.0] * 9)]))
    put("onnx_negative_dim_initializer.onnx", simple(
        [node("Add", ["x", "w"], ["y"], "add")], [tensor("w", [-1, -2], floats=[1.0, 2.0])]))
    put("onnx_negative_dim_input.onnx", simple([node("Relu", ["x"], ["y"], "relu")], inputs=[value_info("x", [-3])]))
    put("onnx_2pow60_elements.onnx", simple(
        [node("Add", ["x", "w"], ["y"], "add")], [tensor("w", [1 << 30, 1 << 30])]))
    put("onnx_2pow60_elements_raw.onnx", simple(
        [node("Add", ["x", "w"], ["y"], "add")], [tensor("w", [1 << 30, 1 << 30], raw=b"\0" * 8)]))
    put("onnx_raw_data_short.onnx", simple(
        [node("Add", ["x", "w"], ["y"], "add")], [tensor("w", [1000], raw=b"\0" * 8)]))
    put("onnx_float_data_short.onnx", simple(
        [node("Add", ["x", "w"], ["y"], "add")], [tensor("w", [1000], floats=[1.0, 2.0])]))
    put("onnx_complex_initializer.onnx", simple(
        [node("Add", ["x", "w"], ["y"], "add")], [tensor("w", [2], elem=COMPLEX64, raw=b"\0" * 16)]))
    put("onnx_unknown_op.onnx", simple([node("Frobnicate", ["x"], ["y"], "frob")]))
    put("onnx_attr_wrong_type.onnx", simple([node("Transpose", ["x"], ["y"], "tr",
                                                  [ld(1, "perm") + vint(20, A_FLOAT) + f32(2, 1.5)])]))
    put("onnx_huge_attribute_list.onnx", simple([node("Transpose", ["x"], ["y"], "tr", [attr_ints("perm", [0] * 4000)])]))
    put("onnx_nested_if_deep.onnx", nested_if(100))
    put("onnx_nested_if_70.onnx", nested_if(70))
    loop_body = graph([node("Identity", ["v"], ["v_out"], "id")], [value_info("i", [], INT64)], [value_info("v_out", [2])], name="body")
    put("onnx_loop_body_wrong_arity.onnx", simple([node("Loop", ["", "", "x"], ["y"], "loop", [attr_graph("body", loop_body)])]))
    ext = lambda loc: simple([node("Add", ["x", "w"], ["y"], "add")],
                              [tensor("w", [2], external=[("location", loc)])])
    put("onnx_external_dotdot.onnx", ext("../../../../../../etc/passwd"))
    put("onnx_external_absolute.onnx", ext("/etc/passwd"))
    put("onnx_external_missing.onnx", ext("no_such_file.bin"))
    put("onnx_external_symlink/model.onnx", ext("weights.bin"))
    link = os.path.join(OUT, "onnx_external_symlink", "weights.bin")
    os.symlink("/etc/passwd", link)
    put("onnx_external_short/model.onnx", simple([node("Add", ["x", "w"], ["y"], "add")],
                                                 [tensor("w", [1000], external=[("location", "weights.bin")])]))
    put("onnx_external_short/weights.bin", b"\0" * 16)
    put("onnx_external_past_end/model.onnx", simple([node("Add", ["x", "w"], ["y"], "add")],
                                                    [tensor("w", [2], external=[("location", "weights.bin"), ("offset", "1099511627776"), ("length", "8")])]))
    put("onnx_external_past_end/weights.bin", b"\0" * 16)


# ---- TensorFlow (graph.proto, node_def.proto, attr_value.proto, tensor.proto) ----------

DT_FLOAT, DT_INT32 = 1, 3


def tf_shape(dims):
    return b"".join(ld(2, vint(1, d)) for d in dims)


def tf_attr(name, value):
    return ld(5, ld(1, name) + ld(2, value))


def tf_node(name, op, inputs=(), attrs=()):
    return ld(1, name) + ld(2, op) + b"".join(ld(3, i) for i in inputs) + b"".join(tf_attr(k, v) for k, v in attrs)


def tf_placeholder(name, dims):
    return tf_node(name, "Placeholder", attrs=[("dtype", vint(6, DT_FLOAT)), ("shape", ld(7, tf_shape(dims)))])


def tf_const(name, dims, content):
    t = vint(1, DT_FLOAT) + ld(2, tf_shape(dims)) + ld(4, content)
    return tf_node(name, "Const", attrs=[("dtype", vint(6, DT_FLOAT)), ("value", ld(8, t))])


def tf_graph(nodes):
    return b"".join(ld(1, n) for n in nodes) + ld(4, vint(1, 1087))


def tf_binary(name, op, a, b):
    return tf_node(name, op, [a, b], [("T", vint(6, DT_FLOAT))])


def tf_unary(name, op, a):
    return tf_node(name, op, [a], [("T", vint(6, DT_FLOAT))])


def write_tf():
    good = tf_graph([tf_placeholder("x", [2]), tf_unary("y", "Relu", "x")])
    put("tf_truncated.pb", good[: len(good) - 7])
    put("tf_not_protobuf.pb", b"\x0a\xff\xff\xff\xff\x0f not a graph")
    put("tf_cycle.pb", tf_graph([tf_placeholder("x", [2]), tf_binary("a", "AddV2", "x", "b"),
                                 tf_unary("b", "Relu", "a"), tf_unary("y", "Identity", "a")]))
    put("tf_self_loop.pb", tf_graph([tf_placeholder("x", [2]), tf_binary("y", "AddV2", "x", "y")]))
    put("tf_missing_input.pb", tf_graph([tf_placeholder("x", [2]), tf_binary("y", "AddV2", "x", "nowhere")]))
    put("tf_huge_shape.pb", tf_graph([tf_placeholder("x", [2]), tf_const("w", [1 << 31, 1 << 31], b"\0" * 8),
                                      tf_binary("y", "AddV2", "x", "w")]))
    put("tf_content_short.pb", tf_graph([tf_placeholder("x", [2]), tf_const("w", [1000], b"\0" * 8),
                                         tf_binary("y", "AddV2", "x", "w")]))
    put("tf_negative_dim_const.pb", tf_graph([tf_placeholder("x", [2]), tf_const("w", [-5], b"\0" * 8),
                                             tf_binary("y", "AddV2", "x", "w")]))
    put("tf_unknown_op.pb", tf_graph([tf_placeholder("x", [2]), tf_unary("y", "Frobnicate", "x")]))
    saved = os.path.join(FIXTURES, "tf", "tiny_saved_model")
    pb = open(os.path.join(saved, "saved_model.pb"), "rb").read()
    put("tf_saved_model_truncated/saved_model.pb", pb[:2000])
    put("tf_saved_model_missing_shard/saved_model.pb", pb)
    put("tf_saved_model_missing_shard/variables/variables.index",
        open(os.path.join(saved, "variables", "variables.index"), "rb").read())
    data = open(os.path.join(saved, "variables", "variables.data-00000-of-00001"), "rb").read()
    put("tf_saved_model_short_shard/saved_model.pb", pb)
    put("tf_saved_model_short_shard/variables/variables.index",
        open(os.path.join(saved, "variables", "variables.index"), "rb").read())
    put("tf_saved_model_short_shard/variables/variables.data-00000-of-00001", data[:20])


# ---- Keras (.keras zip archives, legacy .h5) --------------------------------------------


def zip_bytes(members, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def lie_about_size(archive, member, size):
    """Rewrites `member`'s uncompressed size in both its local header and the central
    directory: a tiny archive that declares gigabytes."""
    b = bytearray(archive)
    name = member.encode()
    i = 0
    while True:
        i = b.find(b"PK\x03\x04", i)
        if i < 0:
            break
        n, m = struct.unpack_from("<HH", b, i + 26)
        if bytes(b[i + 30:i + 30 + n]) == name:
            struct.pack_into("<I", b, i + 22, size)
        i += 4
    i = 0
    while True:
        i = b.find(b"PK\x01\x02", i)
        if i < 0:
            break
        n = struct.unpack_from("<H", b, i + 28)[0]
        if bytes(b[i + 46:i + 46 + n]) == name:
            struct.pack_into("<I", b, i + 24, size)
        i += 4
    return bytes(b)


def write_keras():
    fixture = zipfile.ZipFile(os.path.join(FIXTURES, "keras", "time_distributed.keras"))
    config = fixture.read("config.json")
    weights = fixture.read("model.weights.h5")
    meta = fixture.read("metadata.json")
    put("keras_zip_bomb_declared.keras", lie_about_size(
        zip_bytes([("metadata.json", meta), ("config.json", config), ("model.weights.h5", b"\0" * 100000)]),
        "model.weights.h5", 0xFFFFFFF0))
    put("keras_zip_bomb_config.keras", lie_about_size(
        zip_bytes([("config.json", b" " * 100000)]), "config.json", 0xFFFFFFF0))
    # really inflates: 4 MB of zeros in a few KB, which is no HDF5 file
    put("keras_zip_inflates.keras", zip_bytes([("config.json", config), ("model.weights.h5", b"\0" * (4 << 20))]))
    put("keras_missing_config.keras", zip_bytes([("metadata.json", meta), ("model.weights.h5", weights)]))
    put("keras_config_not_json.keras", zip_bytes([("config.json", b"{\"class_name\": \"Functional\", "), ("model.weights.h5", weights)]))
    put("keras_config_wrong_types.keras", zip_bytes([("config.json", json.dumps({"class_name": 5, "config": [1, 2]})), ("model.weights.h5", weights)]))
    put("keras_not_zip.keras", b"PK\x03\x04 this is not really a zip archive")
    wrong = json.loads(config)
    conv = wrong["config"]["layers"][1]["config"]["layer"]["config"]
    conv["filters"] = 3  # the weights in the archive hold 2 filters
    put("keras_wrong_weight_shape.keras", zip_bytes([("metadata.json", meta), ("config.json", json.dumps(wrong)), ("model.weights.h5", weights)]))
    unknown = json.loads(config)
    unknown["config"]["layers"][1]["config"]["layer"]["class_name"] = "Frobnicate"
    put("keras_unknown_layer.keras", zip_bytes([("config.json", json.dumps(unknown)), ("model.weights.h5", weights)]))
    put("keras_no_weights.keras", zip_bytes([("config.json", config)]))
    h5 = open(os.path.join(FIXTURES, "keras", "time_distributed.h5"), "rb").read()
    put("h5_truncated.h5", h5[:4096])
    put("h5_superblock_only.h5", h5[:96])
    put("h5_broken_root_offset.h5", h5_superblock(root_header=0x7FFF_FFFF_FFF0, eof=96))
    put("h5_eof_lies.h5", h5_superblock(root_header=96, eof=1 << 50) + b"\x01\0\x01\0" + b"\xff" * 60)


def h5_superblock(root_header, eof):
    """A version-0 HDF5 superblock whose root group's object header is at `root_header`."""
    undef = 0xFFFF_FFFF_FFFF_FFFF
    sb = b"\x89HDF\r\n\x1a\n" + bytes([0, 0, 0, 0, 0, 8, 8, 0]) + struct.pack("<HHI", 4, 16, 0)
    sb += struct.pack("<QQQQ", 0, undef, eof, undef)
    sb += struct.pack("<QQII", 0, root_header, 0, 0) + b"\0" * 16
    return sb


# ---- kiln's saved IR (.kir + .kir.bin) and .npy -----------------------------------------


def write_kir():
    put("kir_bad_syntax.kir", b"graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %0 = relu(%x : f32[2]\n  return %0\n}\n")
    put("kir_unknown_op.kir", b"graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %0 = frobnicate(%x) : f32[2] \"frob\"\n  return %0\n}\n")
    put("kir_undefined_ref.kir", b"graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %0 = relu(%7) : f32[2] \"relu\"\n  return %0\n}\n")
    put("kir_wrong_type.kir", b"graph g(%x: f32[2]) -> (%y: f32[3]) {\n  %0 = relu(%x) : f32[3] \"relu\"\n  return %0\n}\n")
    put("kir_not_utf8.kir", b"graph g(%x: f32[2]) \xff\xfe -> (%y: f32[2]) {}\n")
    put("kir_bin_short/model.kir",
        b"graph g(%x: f32[16]) -> (%y: f32[16]) {\n  @w = f32[16] bin(0, 64)\n  %0 = add(%x, @w) : f32[16] \"add\"\n  return %0\n}\n")
    put("kir_bin_short/model.kir.bin", b"\0" * 20)
    put("kir_bin_missing/model.kir",
        b"graph g(%x: f32[16]) -> (%y: f32[16]) {\n  @w = f32[16] bin(0, 64)\n  %0 = add(%x, @w) : f32[16] \"add\"\n  return %0\n}\n")
    put("kir_huge_const/model.kir",
        b"graph g(%x: f32[2]) -> (%y: f32[2]) {\n  @w = f32[1073741824,1073741824] bin(0, 4611686018427387904)\n  %0 = add(%x, @w) : f32[2] \"add\"\n  return %0\n}\n")
    put("kir_huge_const/model.kir.bin", b"\0" * 64)
    put("kir_inline_count_wrong.kir",
        b"graph g(%x: f32[4]) -> (%y: f32[4]) {\n  @w = f32[4] [1, 2]\n  %0 = add(%x, @w) : f32[4] \"add\"\n  return %0\n}\n")
    deep = b"graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %0 = relu(" * 1 + b"(" * 5000 + b"\n"
    put("kir_deep_parens.kir", deep)


def npy(header, data):
    h = header.encode()
    pad = (64 - (10 + len(h) + 1) % 64) % 64
    h += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


def write_npy():
    put("npy_bad_magic.npy", b"\x93NUMPX\x01\x00" + b"\0" * 60)
    put("npy_bad_header.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", b"\0" * 8))
    put("npy_lying_shape.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", b"\0" * 8))
    put("npy_huge_shape.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", b"\0" * 8))
    put("npy_header_len_past_end.npy", b"\x93NUMPY\x01\x00\xff\xff{'descr'")
    put("npy_object_dtype.npy", npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b"\0" * 16))


# ---------------------------------------------------------------------------------------


def put(rel, data):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    write_onnx()
    write_tf()
    write_keras()
    write_kir()
    write_npy()
    largest = max((os.path.getsize(os.path.join(d, f)), f) for d, _, fs in os.walk(OUT) for f in fs
                  if not os.path.islink(os.path.join(d, f)))
    print(f"wrote {len(os.listdir(OUT))} cases to {OUT}; the largest file is {largest[1]} ({largest[0]} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
