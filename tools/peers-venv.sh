#!/usr/bin/env bash
# Makes target/venv-peers with the peers tools/compare_peers.py measures kiln against.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=$here/target/venv-peers
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q onnxruntime openvino tract numpy onnx
echo "$venv/bin/python $here/tools/compare_peers.py MODEL.onnx"
