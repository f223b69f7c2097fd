#!/usr/bin/env bash
# Generates the ONNX node conformance cases into target/onnx-node-tests (or $1) from the
# onnx==1.23.2 pip package, for a machine without ../shared/onnx-node-tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/onnx-node-tests}
venv=$here/target/venv-onnx
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q "onnx==1.23.2" numpy
"$venv/bin/python" "$here/tools/gen_onnx_node_tests.py" "$out"
