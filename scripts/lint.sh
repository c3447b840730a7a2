#!/usr/bin/env bash
# The guardrails (scripts/test.sh runs them, so CI does): rustfmt, clippy with warnings as
# errors (with and without the PyO3 bindings), ruff, mypy on the package, and stubtest of
# `_core.pyi` against the built extension. Needs the test extras (ruff, mypy) and the package installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
echo "-- cargo fmt --check"
cargo fmt --check
echo "-- cargo clippy -D warnings (stages alone, then with the python feature)"
cargo clippy --locked --all-targets -q -- -D warnings
cargo clippy --locked --features python -q -- -D warnings
echo "-- the fuzz targets compile (cargo check; running them needs cargo-fuzz and nightly)"
cargo check --locked --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check -q
echo "-- ruff check"
"$PY" -m ruff check python tests benches
echo "-- mypy python/webli_io (the package, default mode; settings in pyproject.toml)"
"$PY" -m mypy python/webli_io
echo "-- stubtest webli_io._core"
"$PY" -m mypy.stubtest webli_io._core --allowlist scripts/stubtest-allowlist.txt
echo "-- workflow files: GitHub's schema, zizmor"
"$PY" -m check_jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
# zizmor is a binary, installed beside the Python it came with (the test extras).
"$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')/zizmor" --offline --config .github/zizmor.yml .github/workflows/
