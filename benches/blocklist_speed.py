"""Lookups/s of the decontamination blocklist (multi-index Hamming search), one core.

    python benches/blocklist_speed.py [--entries 1000000] [--queries 200000] [--real 100000]

Two blocklists: `--entries` uniform random fingerprints (the size the issue asks for), and
`--real` fingerprints of crop variants of real photographs (clustered, as real pHashes are:
buckets are uneven, so lookups cost more). Queries: half random, half near-copies of entries
(a few bits flipped), at the default radii.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np

from webli_io._core import DEFAULT_NEAR_RADIUS, Blocklist, fingerprints
from webli_io.bench import load_photos


def flip(h: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    out = h.copy()
    for _ in range(bits):
        out ^= np.left_shift(np.uint64(1), rng.integers(0, 64, len(h)).astype(np.uint64))
    return out


def measure(bl: Blocklist, entries: np.ndarray, n: int, rng: np.random.Generator) -> dict:
    half = n // 2
    rand = rng.integers(0, 2**63, (half, 2), dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    pick = entries[rng.integers(0, len(entries), n - half)]
    near = np.stack([flip(pick[:, 0], 3, rng), flip(pick[:, 1], 4, rng)], axis=1)
    out = {}
    for name, q in (("random", rand), ("near_copies", near)):
        queries = np.ascontiguousarray(q, dtype=np.uint64)
        bl.count_matches(queries[:1000])  # build the frozen index first: not a lookup
        t = time.perf_counter()
        hits = bl.count_matches(queries)
        dt = time.perf_counter() - t
        out[name] = {"lookups_per_second": round(len(queries) / dt), "matched": hits, "queries": len(queries)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=200_000)
    p.add_argument("--real", type=int, default=100_000, help="real-photo fingerprints (0: skip)")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    result = {"radius": list(DEFAULT_NEAR_RADIUS)}
    uniform = rng.integers(0, 2**63, (a.entries, 2), dtype=np.int64).astype(np.uint64) * np.uint64(2)
    bl = Blocklist()
    t = time.perf_counter()
    for i, (ph, dh) in enumerate(uniform):
        bl.add([(int(ph), int(dh))], i)
    result["uniform"] = {"entries": len(bl), "build_seconds": round(time.perf_counter() - t, 1),
                         "memory_mb": round(bl.memory_bytes() / 1e6, 1), **measure(bl, uniform, a.queries, rng)}
    if a.real:
        photos, _ = load_photos()
        real, bl2 = [], Blocklist()
        while len(real) < a.real:
            ph = photos[int(rng.integers(len(photos)))]
            w, h = ph.size
            cw, ch = int(w * rng.uniform(0.3, 1)), int(h * rng.uniform(0.3, 1))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            buf = io.BytesIO()
            ph.crop((x, y, x + cw, y + ch)).save(buf, format="JPEG", quality=90)
            fps = fingerprints(buf.getvalue(), variants=True)
            bl2.add(fps, len(real))
            real.extend(fps)
        arr = np.array(real, dtype=np.uint64)
        result["real"] = {"entries": len(bl2), "memory_mb": round(bl2.memory_bytes() / 1e6, 1), **measure(bl2, arr, a.queries, rng)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
