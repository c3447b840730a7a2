"""Speed of `webli-io prepare`: LID captions/s per core and samples/s end to end, on shards of
untagged samples with captions in many languages (every caption goes through fastText).

    python benches/prepare_speed.py [--samples 40000] [--shards 8] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time

from PIL import Image

from webli_io.prepare import prepare
from webli_io.sample_data import CAPTIONS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=40_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", type=int, default=None)
    a = p.parse_args(argv)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 200)).save(buf, format="JPEG")
    jpg = buf.getvalue()
    with tempfile.TemporaryDirectory() as d:
        per = a.samples // a.shards
        paths = []
        for s in range(a.shards):
            path = os.path.join(d, f"in-{s:04d}.tar")
            with tarfile.open(path, "w") as t:
                for i in range(per):
                    lang, text = CAPTIONS[(s * per + i) % len(CAPTIONS)]
                    for ext, data in (("jpg", jpg), ("txt", f"{text} ({i})".encode()), ("json", b"{}")):
                        info = tarfile.TarInfo(f"{s:05d}{i:05d}.{ext}")
                        info.size = len(data)
                        t.addfile(info, io.BytesIO(data))
            paths.append(path)
        start = time.perf_counter()
        m = prepare(paths, os.path.join(d, "out"), workers=a.workers, progress=False)
        elapsed = time.perf_counter() - start
    right = sum(n for lang, n in m["languages"].items())
    print(json.dumps({
        "samples": m["samples"], "workers": a.workers or os.cpu_count(), "seconds": round(elapsed, 2),
        "samples_per_second": round(m["samples"] / elapsed, 1),
        "lid_captions_per_second_per_core": m["lid_captions_per_second_per_core"],
        "languages": m["languages"], "lid_und": m["lid_und"], "counted": right,
    }, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
