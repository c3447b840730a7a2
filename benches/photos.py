"""Web-like JPEG shards made from real photographs, for the benchmarks.

Synthetic gradients decode and resize unlike photographs, so the benches use real ones: the
photos bundled in scikit-image's wheel, and the 12 nature photos of Debian's `mate-backgrounds`
package when they have been extracted (see `--photos`). Each output image is a random crop of a
photo, resized to 300–1600 px on its long side and re-encoded at JPEG quality 70–95, like images
on web pages.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import List, Optional

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]


def load_photos(extra_dir: Optional[str] = None) -> List[Image.Image]:
    import skimage

    d = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = [Image.open(os.path.join(d, n)).convert("RGB") for n in SKIMAGE_PHOTOS]
    if extra_dir and os.path.isdir(extra_dir):
        for root, _, files in os.walk(extra_dir):
            for f in sorted(files):
                if f.lower().endswith((".jpg", ".jpeg", ".png")):
                    photos.append(Image.open(os.path.join(root, f)).convert("RGB"))
    return photos


def web_jpeg(photo: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = photo.size
    # A random crop of 60–100% of each side, then a resize to 300–1600 px on the long side.
    cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = photo.crop((x, y, x + cw, y + ch))
    long_side = int(rng.integers(300, 1601))
    s = long_side / max(cw, ch)
    img = img.resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    return buf.getvalue()


def write_shards(out_dir: str, num_shards: int, per_shard: int, seed: int = 0, extra_dir: Optional[str] = None) -> List[str]:
    """Write `num_shards` WebDataset shards of web-like JPEGs; reuse them if already there."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"bench-{i:06d}.tar") for i in range(num_shards)]
    if all(os.path.exists(p) for p in paths):
        return paths
    photos = load_photos(extra_dir)
    rng = np.random.default_rng(seed)
    for s, path in enumerate(paths):
        with tarfile.open(path + ".tmp", "w") as t:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                for ext, data in (("jpg", web_jpeg(photos[int(rng.integers(len(photos)))], rng)), ("txt", f"photo {key}".encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        os.replace(path + ".tmp", path)
    return paths
