#!/usr/bin/env bash
# The wheel works where nothing can build it: installed into a fresh virtual environment and run
# with a PATH that holds that environment alone (no cargo, no cmake, no nasm, no compiler),
# `import webli_io` works and a small stream decodes real JPEGs. numpy and torch are borrowed
# from the active environment (a .pth file; pip would download torch's 3 GB again), the wheel
# itself is installed without them (--no-deps) and imported from the fresh environment.
#
#   bash scripts/check_wheel.sh [WHEEL]     # default: the one in dist/
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
wheel="${1:-$(ls dist/webli_io-*.whl | head -n 1)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== auditwheel show $wheel"
if [ "$(uname -s)" = "Linux" ]; then
    report=$("$PY" -m auditwheel show "$wheel")
    echo "$report" | head -n 3
    # auditwheel wraps its lines: join them before looking for the tag.
    echo "$report" | tr '\n' ' ' | grep -q 'platform tag: "manylinux_2_28_\(x86_64\|aarch64\)"' \
        || { echo "not a manylinux_2_28 wheel" >&2; exit 1; }
fi
echo "== check $wheel in a fresh environment without build tools"
"$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps "$wheel"
borrowed=$("$PY" -c 'import os, numpy, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$borrowed" > "$site/borrowed-numpy-torch.pth"
# A small shard of real JPEGs, written here with the test environment's Pillow.
"$PY" - "$work/shard.tar" <<'PYEOF'
import io, sys, tarfile
from PIL import Image
with tarfile.open(sys.argv[1], "w") as t:
    for i in range(10):
        buf = io.BytesIO()
        Image.new("RGB", (320 + 16 * i, 240), (20 * i, 100, 200)).save(buf, format="JPEG", quality=92)
        for name, data in ((f"{i:04d}.jpg", buf.getvalue()), (f"{i:04d}.txt", f"caption {i}".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
PYEOF
env -i HOME="$work" PATH="$work/venv/bin" "$work/venv/bin/python" - "$work" "$(basename "$wheel")" <<'PYEOF'
import os, shutil, sys
work = sys.argv[1]
missing = [tool for tool in ("cargo", "rustc", "cmake", "nasm", "cc", "gcc") if shutil.which(tool)]
assert not missing, f"build tools on the PATH: {missing}"
import webli_io
assert webli_io.__file__.startswith(os.path.join(work, "venv")), webli_io.__file__
from webli_io import WebLIStream
batches = list(WebLIStream(os.path.join(work, "shard.tar"), batch_size=4, image_size=64))
n = sum(len(b["keys"]) for b in batches)
assert n == 10 and batches[0]["images"].shape == (4, 64, 64, 3), n
print(f"ok: webli-io {webli_io.__version__} from {sys.argv[2]}: {n} images streamed, no build tools on the PATH")
PYEOF
