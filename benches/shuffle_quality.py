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
- ``global_spearman``: |Spearman correlation| between the input order (shard list, then place
  in shard) and the output order (0: no trace of the input order).

Each figure is the mean over ``--seeds`` seeds (the shard order's shuffle makes one seed noisy).
Only keys are compared, so images are 8 x 8 pixels: this measures order, not speed::

    python benches/shuffle_quality.py --shards 16 --per-shard 10000 --seeds 10   # a table
    python benches/shuffle_quality.py --json

Measured (16 shards x 10,000, batch 256, buffer 5,000, 10 seeds, 2026-11-30): OpenCLIP's
webdataset 3.70 shards/batch, |global rho| 0.250, within-shard rho 0.593; webli-io with
``shards_in_flight=4`` (the default with ``shuffle``) 5.76, 0.160, 0.928; with 8: 9.00, 0.129,
0.979. More shards per batch and less of the input order overall; but each shard's own order
survives more, as its samples are spread over k times as many outputs as the buffer can mix.
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


def order_openclip(paths: Sequence[str], batch: int, buffer: int = 5000, seed: int = 0) -> List[List[str]]:
    """OpenCLIP's pipeline; its sample buffer is `buffer` (OpenCLIP's: 5000, started at 1000:
    the same 1/5 ratio is kept for other sizes)."""
    import webdataset as wds

    (shard_buf, shard_init) = OPENCLIP["shard_shuffle"]
    sample_buf, sample_init = buffer, max(1, buffer * OPENCLIP["sample_shuffle"][1] // OPENCLIP["sample_shuffle"][0])
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


def run(paths: Sequence[str], batch: int = 256, buffer: int = 5000, in_flight: Sequence[int] = (1, 4, 8), seeds: int = 5) -> Dict:
    """Each pipeline's metrics, the mean over `seeds` seeds (|global rho| as an absolute value)."""
    runs: Dict[str, List[Dict[str, float]]] = {}
    for seed in range(seeds):
        runs.setdefault("webdataset (OpenCLIP's shuffles)", []).append(metrics(order_openclip(paths, batch, buffer, seed)))
        for k in in_flight:
            runs.setdefault(f"webli-io (shards_in_flight={k})", []).append(metrics(order_webli(paths, batch, buffer, k, seed)))
    out: Dict[str, Dict] = {}
    for name, ms in runs.items():
        out[name] = {"seeds": len(ms), "distinct_shards": round(float(np.mean([m["distinct_shards"] for m in ms])), 2),
                     "within_shard_spearman": round(float(np.mean([m["within_shard_spearman"] for m in ms])), 3),
                     "global_spearman": round(float(np.mean([abs(m["global_spearman"]) for m in ms])), 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--buffer", type=int, default=5000, help="sample memory of both (OpenCLIP's shuffle buffer)")
    p.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--seeds", type=int, default=5, help="runs of each pipeline, with seeds 0.., averaged")
    p.add_argument("--data", default=None, help="folder for the shards (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    folder = args.data or tempfile.mkdtemp(prefix="webli-shuffle-")
    os.makedirs(folder, exist_ok=True)
    paths = write_shards(folder, args.shards, args.per_shard)
    result = run(paths, args.batch, args.buffer, args.in_flight, args.seeds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.shards} shards x {args.per_shard} samples, batch {args.batch}, buffer {args.buffer}, one reader, "
          f"mean of {args.seeds} seeds")
    print(f"{'pipeline':<36} {'distinct shards/batch':>22} {'within-shard rho':>17} {'|global rho|':>13}")
    for name, m in result.items():
        print(f"{name:<36} {m['distinct_shards']:>22} {m['within_shard_spearman']:>17} {m['global_spearman']:>13}")


if __name__ == "__main__":
    main()
