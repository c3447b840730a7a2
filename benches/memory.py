"""RSS over a long stream: does memory stay flat, epoch after epoch?

    python benches/memory.py --samples 200000 [--shards DIR] [--threads 2] [--workers 0]

Streams the bench shards (written by `webli-io bench`'s generator when --shards is not given)
epoch after epoch, in this process or in DataLoader workers (their RSS summed), and prints RSS
at the first and every later epoch end: flat within +-10% after the first epoch is the goal.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def tree_rss(pid: int) -> float:
    total = rss_mb(pid)
    for child in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            kids = open(child).read().split()
        except OSError:  # the thread ended meanwhile
            continue
        for c in kids:
            try:
                total += rss_mb(int(c))
            except OSError:
                pass
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--shards", default=None, help="folder of .tar shards (default: generate bench shards)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args(argv)
    from torch.utils.data import DataLoader

    from webli_io import WebLIStream
    from webli_io.bench import write_bench_shards

    if a.shards:
        paths = sorted(glob.glob(os.path.join(a.shards, "*.tar")))
    else:
        paths, _ = write_bench_shards("webli-bench", 8, 250)
    stream = WebLIStream(paths, batch_size=a.batch_size, image_size=a.image_size, num_threads=a.threads)
    n, epoch, points = 0, 0, []
    start = time.perf_counter()
    points.append({"epoch": 0, "samples": 0, "rss_mb": round(tree_rss(os.getpid()), 1)})
    while n < a.samples:
        stream.set_epoch(epoch)
        loader = DataLoader(stream, batch_size=None, num_workers=a.workers, persistent_workers=False)
        peak = 0.0
        for b in loader:
            n += len(b["keys"])
            peak = max(peak, tree_rss(os.getpid()))
        epoch += 1
        points.append({"epoch": epoch, "samples": n, "rss_mb": round(tree_rss(os.getpid()), 1), "peak_mb": round(peak, 1)})
    first = points[1]["peak_mb"]
    later = [pt["peak_mb"] for pt in points[2:]] or [first]
    result = {
        "samples": n, "epochs": epoch, "seconds": round(time.perf_counter() - start, 1), "threads": a.threads,
        "workers": a.workers, "rss_mb_before": points[0]["rss_mb"], "peak_mb_epoch_1": first,
        "peak_mb_later_min": min(later), "peak_mb_later_max": max(later),
        "drift_vs_epoch_1": round(max(abs(x - first) for x in later) / first, 4),
        "per_epoch": points,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
