#!/usr/bin/env bash
# Build webli-io's wheel into dist/ (the one release build of the extension; installing it is
# scripts/install.sh's job). On Linux: an abi3 wheel for CPython >= 3.9, manylinux_2_28,
# linked by zig (from PyPI's `ziglang`) against glibc 2.28, libjpeg-turbo compiled in with its
# SIMD code (needs CMake and NASM, which install.sh provides). Elsewhere: maturin's native wheel.
#
#   bash scripts/build_wheel.sh     # prints the wheel's path last
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install --disable-pip-version-check -q "maturin>=1.8,<2"
mkdir -p dist
rm -f dist/webli_io-*.whl
if [ "$(uname -s)" = "Linux" ]; then
    "$PY" -m pip install --disable-pip-version-check -q "ziglang>=0.11"
    # maturin looks for `zig` on the PATH: the one from the ziglang package.
    zigdir=$(mktemp -d)
    printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$("$PY" -c 'import sys; print(sys.executable)')" > "$zigdir/zig"
    chmod +x "$zigdir/zig"
    PATH="$zigdir:$PATH" "$PY" -m maturin build --release --zig --compatibility manylinux_2_28 -o dist >&2
    rm -rf "$zigdir"
else
    "$PY" -m maturin build --release -o dist >&2
fi
ls dist/webli_io-*.whl
