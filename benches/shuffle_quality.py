"""How well a reader mixes its shards: webli-io vs webdataset configured as OpenCLIP configures it.

Both run as one reader (one DataLoader worker of one rank) over the same img2dataset-sized
shards (10,000 samples each), with the same sample memory: OpenCLIP's sample shuffle buffer of
5,000 (``wds.shuffle(5000, initial=1000)`` after a ``detshuffle(2000, initial=500)`` of the shard
list) against webli-io's ``shuffle_buffer=5000`` with ``shards_in_flight`` shards read at once
(their samples taken in turn into that buffer; each shard in flight holds 32 more samples).

Reported, per batch of 256 and over the epoch:

- ``distinct_shards``: mean number of shards in a batch (contrastive negatives from more shards
  are more varied: img2dataset shards hold neighbouring URLs of one crawl slice);
- ``within_shard_spearman``: mean Spearman correlation, over the shards, between a sample's
  place in its shard and its place in the output (1: the shard comes out in order; 0: no trace
  of it);
- ``global_spearman``: Spearman correlation between the input order (shard list, then place in
  shard) and the output order.

Only keys are compared, so images are 8 x 8 pixels: this measures order, not speed::

    python benches/shuffle_quality.py --shards 8 --per-shard 10000          # a table
    python benches/shuffle_quality.py --json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tarfile
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np

OPENCLIP = {"shard_shuffle": (2000, 500), "sample_shuffle": (5000, 1000)}


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def write_shards(folder: str, shards: int, per_shard: int) -> List[str]:
    """``shards`` tars of ``per_shard`` samples, key ``SSSSSIIIII`` (shard, index)."""
    jpg, paths = tiny_jpeg(), []
    os.makedirs(folder, exist_ok=True)
    for s in range(shards):
        path = os.path.join(folder, f"{s:05d}.tar")
        paths.append(path)
        if os.path.exists(path):
            continue
        with tarfile.open(path + ".tmp", "w") as t:
            for i in range(per_shard):
                for ext, data in (("jpg", jpg), ("txt", b"a caption")):
                    info = tarfile.TarInfo(f"{s:05d}{i:05d}.{ext}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        os.replace(path + ".tmp", path)
    return paths


def order_webli(paths: Sequence[str], batch: int, buffer: int, in_flight: int, seed: int = 0) -> List[List[str]]:
    from webli_io import WebLIStream

    stream = WebLIStream(list(paths), batch_size=batch, image_size=8, shuffle=True, shuffle_buffer=buffer,
                         shards_in_flight=in_flight, seed=seed, drop_last=True)
    return [list(b["keys"]) for b in stream]


def order_openclip(paths: Sequence[str], batch: int, seed: int = 0) -> List[List[str]]:
    import webdataset as wds

    (shard_buf, shard_init), (sample_buf, sample_init) = OPENCLIP["shard_shuffle"], OPENCLIP["sample_shuffle"]
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(list(paths)),
        wds.detshuffle(bufsize=shard_buf, initial=shard_init, seed=seed, epoch=0),
        wds.split_by_node,
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.shuffle(bufsize=sample_buf, initial=sample_init, rng=random.Random(seed)),
        wds.to_tuple("__key__"),
        wds.batched(batch, partial=False),
    )
    return [list(keys) for (keys,) in pipeline]


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def metrics(batches: List[List[str]]) -> Dict[str, float]:
    keys = [k for b in batches for k in b]
    distinct = float(np.mean([len({k[:5] for k in b}) for b in batches])) if batches else 0.0
    by_shard: Dict[str, List[Tuple[int, int]]] = {}
    for pos, k in enumerate(keys):
        by_shard.setdefault(k[:5], []).append((int(k[5:]), pos))
    within = [_spearman([i for i, _ in v], [p for _, p in v]) for v in by_shard.values() if len(v) > 1]
    glob = _spearman([int(k) for k in keys], list(range(len(keys))))
    return {"batches": len(batches), "samples": len(keys), "distinct_shards": round(distinct, 2),
            "within_shard_spearman": round(float(np.nanmean(within)), 4), "global_spearman": round(glob, 4)}


def run(paths: Sequence[str], batch: int = 256, buffer: int = 5000, in_flight: Sequence[int] = (1, 4, 8), seed: int = 0) -> Dict:
    out: Dict[str, Dict] = {"webdataset (OpenCLIP's shuffles)": metrics(order_openclip(paths, batch, seed))}
    for k in in_flight:
        out[f"webli-io (shards_in_flight={k})"] = metrics(order_webli(paths, batch, buffer, k, seed))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--buffer", type=int, default=5000, help="sample memory of both (OpenCLIP's shuffle buffer)")
    p.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--data", default=None, help="folder for the shards (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    folder = args.data or tempfile.mkdtemp(prefix="webli-shuffle-")
    os.makedirs(folder, exist_ok=True)
    paths = write_shards(folder, args.shards, args.per_shard)
    result = run(paths, args.batch, args.buffer, args.in_flight)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.shards} shards x {args.per_shard} samples, batch {args.batch}, buffer {args.buffer}, one reader")
    print(f"{'pipeline':<36} {'distinct shards/batch':>22} {'within-shard rho':>17} {'global rho':>11}")
    for name, m in result.items():
        print(f"{name:<36} {m['distinct_shards']:>22} {m['within_shard_spearman']:>17} {m['global_spearman']:>11}")


if __name__ == "__main__":
    main()
