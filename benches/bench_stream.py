"""images/s of webli-io against the Python pipelines users run today, on the same shards, the
same number of DataLoader workers, in one run (report ratios: the machines are shared and noisy).

  (a) webli-io          DataLoader(WebLIStream(...), batch_size=None, num_workers=W)
  (b) wds + PIL + tv    webdataset .decode("pil") + torchvision Resize + PILToTensor, batched
  (c) wds + PIL draft   the same with Pillow's Image.draft() (DCT-domain downscale) before resize

Usage: python benches/bench_stream.py [--workers 2] [--shards 8] [--per-shard 250] [--json]
(needs the bench extras: pip install '.[bench]').
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from photos import write_shards  # noqa: E402


def run_loader(loader, limit_s: float = 1e9) -> tuple:
    n = 0
    it = iter(loader)
    first = next(it)
    n += len(first["keys"]) if isinstance(first, dict) else len(first[1])
    start = time.perf_counter()  # timing starts after the first batch: worker start-up excluded
    m = 0
    for batch in it:
        m += len(batch["keys"]) if isinstance(batch, dict) else len(batch[1])
        if time.perf_counter() - start > limit_s:
            break
    return m, time.perf_counter() - start


def webli(paths, size, batch, workers):
    from webli_io import WebLIStream

    return DataLoader(WebLIStream(paths, batch_size=batch, image_size=size), batch_size=None, num_workers=workers)


def _pil_decoder(size: int, draft: bool):
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    def decode(data: bytes):
        img = Image.open(io.BytesIO(data))
        if draft:
            img.draft("RGB", (size, size))  # lets libjpeg decode at 1/2, 1/4, 1/8 scale
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
        return pil_to_tensor(img)

    return decode


def wds_pil(paths, size, batch, workers, draft=False):
    import webdataset as wds

    decode = _pil_decoder(size, draft)

    def collate(samples):
        imgs, texts = zip(*samples)
        return torch.stack(imgs), list(texts)

    ds = (
        wds.WebDataset(paths, shardshuffle=False, workersplitter=wds.split_by_worker, empty_check=False)
        .to_tuple("jpg", "txt")
        .map_tuple(decode, lambda b: b.decode())
        .batched(batch, collation_fn=collate)
    )
    return DataLoader(ds, batch_size=None, num_workers=workers)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="bench-data", help="folder for the bench shards (reused)")
    p.add_argument("--photos", default=None, help="extra folder of real photos (e.g. mate-backgrounds)")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=250)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeat", type=int, default=2, help="runs of each pipeline, interleaved; the best counts")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    paths = write_shards(a.data, a.shards, a.per_shard, extra_dir=a.photos)
    sizes = []
    for path in paths[:1]:
        import tarfile

        from PIL import Image

        with tarfile.open(path) as t:
            for m in t.getmembers():
                if m.name.endswith(".jpg"):
                    sizes.append(Image.open(t.extractfile(m)).size)
    mp = float(np.mean([w * h for w, h in sizes])) / 1e6
    pipelines = {
        "webli-io": lambda: webli(paths, a.image_size, a.batch_size, a.workers),
        "wds + PIL + torchvision": lambda: wds_pil(paths, a.image_size, a.batch_size, a.workers),
        "wds + PIL draft()": lambda: wds_pil(paths, a.image_size, a.batch_size, a.workers, draft=True),
    }
    best = {k: 0.0 for k in pipelines}
    for _ in range(a.repeat):
        for name, make in pipelines.items():
            n, dt = run_loader(make())
            best[name] = max(best[name], n / dt)
    base = best["wds + PIL + torchvision"]
    result = {
        "images": a.shards * a.per_shard,
        "mean_megapixels": round(mp, 3),
        "workers": a.workers,
        "cpus": os.cpu_count(),
        "images_per_second": {k: round(v, 1) for k, v in best.items()},
        "ratio_vs_pil_torchvision": {k: round(v / base, 2) for k, v in best.items()},
    }
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['images']} web-like JPEGs from real photos (mean {mp:.2f} MP) -> {a.image_size}px, "
              f"{a.workers} DataLoader workers, {os.cpu_count()} CPUs, best of {a.repeat}")
        print(f"{'pipeline':<28}{'images/s':>10}{'ratio':>8}")
        for k, v in best.items():
            print(f"{k:<28}{v:>10.1f}{v / base:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
