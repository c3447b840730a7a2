#!/usr/bin/env bash
# The test command (README, command 2; CI runs it through .ci/run in a fresh virtual
# environment): install webli-io with its test extras from this checkout into the active Python
# (one release build of the extension), check the guardrails (rustfmt, clippy, ruff, stubtest),
# then run the Rust tests (the pipeline stages, without Python) and the Python tests (real
# shards, real DataLoader workers, real launchers). Extra arguments go to pytest.
#
# It installs into the Python that `python3` finds (or $PYTHON): make and activate a virtual
# environment first (README shows how), so that nothing installed by hand takes part.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${WEBLI_IO_ANY_PYTHON:-}" ]; then
    echo "note: no virtual environment is active; installing into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
fi
bash scripts/install.sh test
echo "== guardrails"
bash scripts/lint.sh
echo "== cargo test"
cargo test --locked
echo "== pytest"
"$PY" -m pytest tests "$@"
echo "== the wheel without build tools"
bash scripts/check_wheel.sh
