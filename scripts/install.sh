#!/usr/bin/env bash
# Install webli-io from this checkout: the system tools its JPEG decoder builds with, then the
# package, as users get it: the wheel scripts/build_wheel.sh makes (one release build of the Rust
# extension; on Linux the manylinux_2_28 wheel a release publishes), installed with its extras.
#
#   bash scripts/install.sh          # the package with every optional part (webli-io[all])
#   bash scripts/install.sh test     # with the test extras (what scripts/test.sh uses)
#   bash scripts/install.sh bench    # with the benchmark baselines
#
# libjpeg-turbo is compiled from the source vendored in the `turbojpeg` crate: it needs CMake,
# and NASM for its SIMD code (without NASM it still builds, several times slower). Both come
# from the system's package manager when missing; `pip install .` alone also works (CMake comes
# from PyPI then), just without SIMD if NASM is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v nasm >/dev/null || missing+=(nasm)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
    if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
        echo "== installing ${missing[*]} (apt-get)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    elif command -v brew >/dev/null; then
        brew install "${missing[@]}"
    else
        echo "warning: ${missing[*]} not found and no way to install them; install them for a fast JPEG decoder" >&2
    fi
fi
extra="all"
[ $# -gt 0 ] && extra="$1"
echo "== build the wheel (scripts/build_wheel.sh)"
wheel=$(bash scripts/build_wheel.sh | tail -n 1)
echo "== pip install $wheel[$extra]"
"$PY" -m pip install --disable-pip-version-check --progress-bar off -q --force-reinstall --no-deps "$wheel"
"$PY" -m pip install --disable-pip-version-check --progress-bar off -q "$wheel[$extra]"
