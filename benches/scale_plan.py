"""The numbers behind docs/SCALE.md: what 1B, 10B and 100B pairs ask of webli-io's hosts.

    python benches/scale_plan.py [--hosts 64] [--chips-per-host 4] [--mfu 0.4] [--json]

Four parts, each either measured here or simulated, never just asserted:

1. Memory of the exact-dedup index and of the decontamination blocklist. The blocklist's bytes
   per hash are *measured* on the real structure (``_core.Blocklist`` at 1 M random
   fingerprints); the dedup set's (16.5 B/hash) is measured by
   ``cargo test --release memory_per_million -- --nocapture``. The global dedup of
   ``prepare --dedup`` partitions hashes over the hosts (Ray's groupby): the per-host share is
   *simulated* by hashing 2 M keys into the partitions and taking the fullest.
2. Throughput each host must feed for a 32k batch at the step rate of the paper's models: step
   time from FLOPs (ViT image tower + a text tower of the same width, 64 tokens, ×3 for
   forward + backward) at a given MFU on TPUv4 chips; the cores it takes at webli-io's measured
   per-core decode rate (``--per-core``, from ``webli-io bench``).
3. Shards per host and input bandwidth, at img2dataset's shard size.
4. Uneven shards: ``equal_batches="drop"`` vs ``"pad"``, *simulated* over hosts × workers with
   shard sizes as img2dataset leaves them (10,000 URLs per shard, a success rate that varies per
   shard), so the loss or repetition at each scale is a measured fraction, not a guess.

The paper does not publish its step rate or chip count: the defaults (256 TPUv4 chips, 4 per
host, 40% MFU) are assumptions, printed with the results; pass your own.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

SCALES = {"1B": 1e9, "10B": 1e10, "100B": 1e11}
# Forward GFLOPs per image at 224 px (ViT paper / timm), and text-tower parameters (same width).
MODELS = {"B/16": (17.6, 86e6), "L/16": (61.6, 303e6), "H/14": (167.4, 632e6)}
TPU_V4_PEAK = 275e12  # bf16 FLOP/s per chip
BATCH = 32768
TEXT_TOKENS = 64
DEDUP_BYTES_PER_HASH = 16.5  # cargo test --release memory_per_million (10-21 B as the table fills)


def measure_blocklist_bytes_per_hash(n: int = 1_000_000) -> float:
    from webli_io._core import Blocklist

    rng = np.random.default_rng(0)
    fps = rng.integers(0, 2**63, (n, 2), dtype=np.int64)
    bl = Blocklist()
    for i in range(0, n, 36):  # 36 crop variants per evaluation image
        bl.add([(int(a), int(b)) for a, b in fps[i:i + 36]], i // 36)
    return bl.memory_bytes() / n


def partition_imbalance(hosts: int, n: int = 2_000_000, seed: int = 0) -> float:
    """Fullest partition / mean, when n uniform 64-bit hashes go to `hosts` partitions."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64)
    counts = np.bincount(h % hosts, minlength=hosts)
    return float(counts.max() / counts.mean())


def shard_sizes(n_shards: int, rng: np.random.Generator) -> np.ndarray:
    """img2dataset: 10,000 URLs a shard, a download success rate that varies per shard
    (mean 0.8, sd 0.05: sites go down, rate limits), binomial within a shard."""
    rate = np.clip(rng.normal(0.8, 0.05, n_shards), 0.3, 0.99)
    return rng.binomial(10_000, rate)


def equal_batches_sim(readers: int, shards_per_reader: int, batch: int, seed: int = 0) -> dict:
    """Fraction of samples dropped ("drop") or repeated ("pad") when every reader must yield
    the same number of full batches, with shards dealt round-robin as WebLIStream deals them."""
    rng = np.random.default_rng(seed)
    sizes = shard_sizes(readers * shards_per_reader, rng)
    per_reader = np.array([sizes[r::readers].sum() for r in range(readers)])
    batches = per_reader // batch
    total = per_reader.sum()
    drop = (total - batches.min() * batch * readers) / total
    pad = (batches.max() * batch * readers - total) / total
    return {"readers": readers, "shards_per_reader": shards_per_reader, "dropped_fraction": round(float(drop), 5),
            "padded_fraction": round(float(pad), 5)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chips", type=int, default=256, help="TPUv4 chips (assumed; the paper does not say)")
    p.add_argument("--chips-per-host", type=int, default=4)
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (assumed)")
    p.add_argument("--per-core", type=float, default=550.0,
                   help="webli-io img/s per core at 224 px (webli-io bench: 1090-1198 img/s on 2 cores)")
    p.add_argument("--image-kb", type=float, default=60.0, help="mean encoded image size, KB")
    p.add_argument("--eval-images", type=int, default=1_000_000, help="images in all decontamination eval sets")
    p.add_argument("--workers-per-host", type=int, default=1, help="DataLoader readers per host (num_workers or 1)")
    p.add_argument("--local-batch", type=int, default=0, help="per-reader batch (default: 32768 / hosts)")
    p.add_argument("--no-measure", action="store_true", help="skip the blocklist measurement (use 53 B/hash)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    hosts = max(1, a.chips // a.chips_per_host)
    out: dict = {"assumptions": {"chips": a.chips, "hosts": hosts, "mfu": a.mfu, "per_core_img_s": a.per_core,
                                 "image_kb": a.image_kb, "eval_images": a.eval_images, "batch": BATCH}}
    bl_bytes = 53.0 if a.no_measure else measure_blocklist_bytes_per_hash()
    imb = partition_imbalance(hosts)
    mem = {}
    for name, n in SCALES.items():
        total = n * DEDUP_BYTES_PER_HASH
        mem[name] = {"dedup_index_total_gb": round(total / 1e9, 1),
                     "dedup_index_per_host_gb": round(total / hosts * imb / 1e9, 2)}
    out["memory"] = {"dedup_bytes_per_hash": DEDUP_BYTES_PER_HASH, "blocklist_bytes_per_hash_measured": round(bl_bytes, 1),
                     "partition_imbalance": round(imb, 4), "by_scale": mem,
                     "blocklist_gb_per_process": round(a.eval_images * 36 * bl_bytes / 1e9, 2)}
    rows = []
    for model, (img_gf, text_params) in MODELS.items():
        pair_flops = 3 * (img_gf * 1e9 + 2 * text_params * TEXT_TOKENS)
        step_s = BATCH * pair_flops / (a.chips * TPU_V4_PEAK * a.mfu)
        per_host = BATCH / step_s / hosts
        rows.append({"model": model, "step_seconds": round(step_s, 3), "pairs_per_second_total": round(BATCH / step_s),
                     "pairs_per_second_per_host": round(per_host), "cores_per_host": round(per_host / a.per_core, 1),
                     "input_mb_per_second_per_host": round(per_host * a.image_kb / 1e3, 1),
                     "days_per_100B_pairs_seen": round(1e11 / (BATCH / step_s) / 86400, 1)})
    out["throughput"] = rows
    shards = {}
    for name, n in SCALES.items():
        n_shards = n / 8000  # ~8,000 pairs per img2dataset shard of 10,000 URLs
        shards[name] = {"shards": int(n_shards), "shards_per_host": int(n_shards / hosts)}
    out["shards"] = shards
    local_batch = a.local_batch or BATCH // hosts
    readers = hosts * a.workers_per_host
    sims = []
    for name, n in SCALES.items():
        per_reader = int(n / 8000 / readers)
        # Simulate a slice (the fractions depend on shards per reader, not on the absolute count).
        sims.append({"scale": name, **equal_batches_sim(readers, min(per_reader, 2000), local_batch)})
    sims.append({"scale": "tiny (1 shard/reader)", **equal_batches_sim(readers, 1, local_batch)})
    out["equal_batches"] = sims
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"assumptions: {out['assumptions']}")
    m = out["memory"]
    print(f"\nmemory: dedup {m['dedup_bytes_per_hash']} B/hash, blocklist {m['blocklist_bytes_per_hash_measured']} B/hash "
          f"(measured), hash partitions fullest/mean {m['partition_imbalance']}")
    for k, v in m["by_scale"].items():
        print(f"  {k:>5}: global dedup index {v['dedup_index_total_gb']:>8} GB in all, {v['dedup_index_per_host_gb']:>7} GB per host")
    print(f"  blocklist of {a.eval_images:,} eval images x 36 variants: {m['blocklist_gb_per_process']} GB per process")
    print("\nthroughput for a 32k batch:")
    for r in rows:
        print(f"  {r['model']}: {r['step_seconds']} s/step, {r['pairs_per_second_per_host']:,} pairs/s per host "
              f"= {r['cores_per_host']} cores, {r['input_mb_per_second_per_host']} MB/s in; "
              f"{r['days_per_100B_pairs_seen']} days per 100B seen")
    print("\nshards:", shards)
    print("\nequal_batches over", readers, "readers, batch", local_batch)
    for s in sims:
        print(f"  {s['scale']:>22}: drop loses {100 * s['dropped_fraction']:.3f}%, pad repeats {100 * s['padded_fraction']:.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
