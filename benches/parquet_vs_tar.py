"""The same pairs as tar shards and as Parquet shards, streamed alike: img/s of each and the ratio.

    python benches/parquet_vs_tar.py TAR_DIR PARQUET_DIR [--threads 2] [--rounds 3]

Both formats go through the same decode and resize; the difference is the reading: tar
members copied out of the file by the Rust reader, or Parquet row groups read by pyarrow and
imported through the Arrow C data interface with the image column shared, not copied.
Alternating rounds, so the noise of a shared machine falls on both.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from webli_io import WebLIStream


def rate(shards, threads: int) -> float:
    s = WebLIStream(shards, batch_size=256, image_size=224, num_threads=threads)
    t, n = time.perf_counter(), 0
    for b in s:
        n += len(b["keys"])
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tar_dir")
    p.add_argument("parquet_dir")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    tars = sorted(glob.glob(os.path.join(a.tar_dir, "*.tar")))
    pqs = sorted(glob.glob(os.path.join(a.parquet_dir, "*.parquet")))
    out = {"tar": [], "parquet": []}
    for _ in range(a.rounds):
        out["tar"].append(round(rate(tars, a.threads)))
        out["parquet"].append(round(rate(pqs, a.threads)))
    out["ratio_parquet_over_tar"] = [round(q / t, 3) for q, t in zip(out["parquet"], out["tar"])]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
