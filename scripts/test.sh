#!/usr/bin/env bash
# The test command (README, command 2; CI runs it through .ci/run): install webli-io with its
# test extras from this checkout (one release build of the extension), then run the Rust tests
# (the pipeline stages, without Python) and the Python tests (real shards, real DataLoader workers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
bash scripts/install.sh test
echo "== cargo test"
cargo test --locked
echo "== pytest"
"$PY" -m pytest tests "$@"
