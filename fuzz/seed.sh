#!/usr/bin/env bash
# Builds fuzz/corpus/<target>/ from the repository's fixtures, the shared ONNX node tests and,
# when present, the small files of the model zoos (/tmp/zoo, /tmp/more). Seeds stay under
# 1 MB each: libFuzzer mutates small inputs best, and big ones slow every execution.
# The corpora are not checked in (fuzz/.gitignore); rerun this script to rebuild them.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=..
SHARED=${KILN_SHARED:-$ROOT/../shared}
[ -d "$SHARED/onnx-node-tests" ] || SHARED=/work/shared
ZOOS="${KILN_ZOOS:-/tmp/zoo /tmp/more}"
MAX=$((1 << 20))

# add TARGET FILE [NAME]: copies FILE into the target's corpus when it is small enough.
add() {
    local target=$1 file=$2 name=${3:-}
    [ -f "$file" ] || return 0
    [ "$(stat -c %s "$file")" -lt $MAX ] || return 0
    mkdir -p "corpus/$target"
    [ -n "$name" ] || name=$(echo "$file" | sed 's|^[./]*||; s|/|_|g')
    cp "$file" "corpus/$target/$name"
}

zoo_files() { # zoo_files NAME: every zoo's file called NAME
    for z in $ZOOS; do [ -d "$z" ] && find "$z" -name "$1" -type f; done 2>/dev/null || true
}

# onnx: the bad-model fixtures, every ONNX node test's model, the zoos' small models.
for f in $ROOT/tests/fixtures/bad/*.onnx; do add onnx "$f"; done
if [ -d "$SHARED/onnx-node-tests/node" ]; then
    for d in "$SHARED"/onnx-node-tests/node/*/; do add onnx "$d/model.onnx" "$(basename "$d").onnx"; done
fi
for f in $(zoo_files model.onnx); do add onnx "$f"; done

# tf_graphdef and tf_savedmodel: the TensorFlow fixtures and the zoos'.
for f in $ROOT/bridges/tests/fixtures/tf*/*.pb $(zoo_files frozen.pb); do add tf_graphdef "$f"; done
for f in $(find $ROOT/bridges/tests/fixtures -name saved_model.pb) $(zoo_files saved_model.pb); do
    add tf_savedmodel "$f"
done

# keras_zip and keras_h5.
for f in $ROOT/bridges/tests/fixtures/keras/*.keras $(zoo_files model.keras); do add keras_zip "$f"; done
for f in $ROOT/bridges/tests/fixtures/keras/*.h5 $(zoo_files model.h5); do add keras_h5 "$f"; done

# npy: the fixtures' and zoos' arrays, and one small array of every dtype and byte order
# (written by hand: CI's Python has no numpy).
for f in $ROOT/bridges/tests/fixtures/keras/*.npy $(zoo_files 'input_0.npy'); do add npy "$f"; done
python3 - <<'EOF'
import os, struct
os.makedirs("corpus/npy", exist_ok=True)
def npy(name, descr, shape, payload, fortran=False):
    shp = "(" + "".join(f"{d}," for d in shape) + ")" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shp)
    pad = 64 - (10 + len(header) + 1) % 64
    header += " " * pad + "\n"
    with open(f"corpus/npy/{name}.npy", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload)
for d, size in [("f2", 2), ("f4", 4), ("f8", 8), ("i1", 1), ("i2", 2), ("i4", 4), ("i8", 8),
                ("u1", 1), ("u2", 2), ("u4", 4), ("u8", 8), ("b1", 1)]:
    for order in "<>":
        npy(f"{order.replace('<', 'le').replace('>', 'be')}_{d}", order + d, (2, 3), bytes(range(6 * size)))
npy("scalar", "<f4", (), struct.pack("<f", 1.5))
npy("empty", "<f4", (0, 3), b"")
npy("fortran", "<f4", (2, 2), bytes(16), fortran=True)
EOF

# kir_text and kir_bin: the saved IR of each small fixture, made by `kiln convert`. kir_bin
# seeds are the text, a NUL, then the .bin (the layout the target splits on).
KILN=${KILN:-}
if [ -z "$KILN" ]; then
    (cd $ROOT && cargo build --release --bin kiln -q)
    KILN=$ROOT/target/release/kiln
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
models=($ROOT/bridges/tests/fixtures/tf*/*.pb $ROOT/bridges/tests/fixtures/keras/*.keras)
for f in $(zoo_files model.onnx); do
    [ "$(stat -c %s "$f")" -lt $MAX ] && models+=("$f")
done
if [ -d "$SHARED/onnx-node-tests/node" ]; then
    for t in basic_conv_with_padding conv_with_strides_padding maxpool_2d_pads averagepool_2d_pads gemm_default_matrix_bias \
        matmul_4d reshape_negative_dim concat_2d_axis_0 transpose_all_permutations_1 softmax_axis_1 \
        batchnorm_example lstm_defaults gru_defaults loop11 if scan9_sum resize_upsample_scales_linear \
        einsum_batch_matmul gather_elements_0 slice_neg_steps; do
        models+=("$SHARED/onnx-node-tests/node/test_$t/model.onnx")
    done
fi
for m in "${models[@]}"; do
    [ -f "$m" ] || continue
    i=$((i + 1))
    out=$tmp/m$i
    "$KILN" convert "$m" --output "$out" >/dev/null 2>&1 || continue
    add kir_text "$out" "m$i.kir"
    { cat "$out"; printf '\0'; cat "$out.bin" 2>/dev/null || true; } > "$out.joined"
    add kir_bin "$out.joined" "m$i"
done

for t in corpus/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
