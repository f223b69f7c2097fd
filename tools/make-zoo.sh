#!/usr/bin/env bash
# Builds the model zoo (Keras, TensorFlow and ONNX models with reference outputs) with
# ../shared/models/make_models.py into target/zoo (or $1). Needs about 700 MB of pip packages.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/zoo}
shared=${KILN_SHARED:-$here/../shared}
venv=$here/target/venv-zoo
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r "$shared/models/requirements.txt"
"$venv/bin/python" "$shared/models/make_models.py" "$out" "${@:2}"
