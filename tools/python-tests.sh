#!/usr/bin/env bash
# Builds the Python package (`pip install ./python`, maturin) into a venv and runs its tests
# (python/tests, pytest). The venv is target/venv-zoo when tools/make-zoo.sh made one (it
# already holds tensorflow-cpu), else target/venv-python; $KILN_PY_VENV overrides.
# Spark's tests need Java 17 (Debian: openjdk-17-jre-headless). Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${KILN_PY_VENV:-}
if [ -z "$venv" ]; then
    if [ -x "$here/target/venv-zoo/bin/python" ]; then venv=$here/target/venv-zoo; else venv=$here/target/venv-python; fi
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q maturin pytest numpy onnx tensorflow-cpu pyspark ray pandas pyarrow
# The extension builds in the workspace's target dir so kiln's crates compile once for both.
CARGO_TARGET_DIR=$here/target "$venv/bin/pip" install -q --force-reinstall --no-deps "$here/python"
# From target/: run in python/, `import kiln` would find the source folder, not the build.
cd "$here/target"
"$venv/bin/pytest" -q -p no:cacheprovider "$here/python/tests" "$@"
