"""What a list of 1.25 M (10B pairs) and 12.5 M (100B pairs) shard names costs (docs/SCALE.md).

    python benches/shard_lists.py [--sizes 1250000 12500000] [--slots 512] [--json]

For each size, a brace pattern of remote names (no listing, no file touched) is turned into a
stream, and the bench times, in this process:

- building: ``WebLIStream(pattern)`` (the pattern kept as a run of numbers, ``_core.ShardNames``);
- its memory: the resident size before and after;
- dealing one epoch to one reader of ``--slots`` (``shards_for``: positions of the epoch's
  random-access permutation, O(the reader's share)), per epoch, in every reader;
- counting one epoch's equal share (``slot_sums`` over per-shard counts, in the core: O(all
  shards), done once per epoch per stream and shared with its workers);
- pickling the stream, as a spawned DataLoader worker receives it.

Measured, never asserted; the figures go to docs/SCALE.md.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from typing import Any, Dict


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def run(n: int, slots: int) -> Dict[str, Any]:
    from webli_io import WebLIStream, _core

    width = len(str(n - 1))
    before = rss_mb()
    t = time.perf_counter()
    stream = WebLIStream(f"s3://bucket/webli/{{{0:0{width}d}..{n - 1:0{width}d}}}.tar", shuffle=True, seed=0)
    build = time.perf_counter() - t
    after = rss_mb()
    t = time.perf_counter()
    for epoch in range(3):
        stream.set_epoch(epoch)
        mine = stream.shards_for(rank=slots // 2, world_size=slots, worker=0, num_workers=1)
    deal = (time.perf_counter() - t) / 3
    counts = [8000] * n
    t = time.perf_counter()
    sums = _core.slot_sums(counts, 1, True, slots)
    count = time.perf_counter() - t
    t = time.perf_counter()
    blob = pickle.dumps(stream)
    pickled = time.perf_counter() - t
    return {"shards": n, "build_s": round(build, 4), "names_mb": round(after - before, 1), "deal_epoch_s": round(deal, 3),
            "reader_shards": len(mine), "slot_sums_s": round(count, 3), "pickle_s": round(pickled, 4),
            "pickle_kb": round(len(blob) / 1e3, 1), "slots": slots, "check": sum(sums) == 8000 * n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_250_000, 12_500_000])
    ap.add_argument("--slots", type=int, default=512, help="readers (ranks x workers)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [run(n, args.slots) for n in args.sizes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'shards':>11} {'build s':>8} {'names MB':>9} {'deal/epoch s':>13} {'slot_sums s':>12} {'pickle s':>9} {'pickle KB':>10}")
    for r in rows:
        print(f"{r['shards']:>11,} {r['build_s']:>8} {r['names_mb']:>9} {r['deal_epoch_s']:>13} {r['slot_sums_s']:>12} "
              f"{r['pickle_s']:>9} {r['pickle_kb']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
