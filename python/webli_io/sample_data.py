"""A small built-in dataset: WebDataset shards of locally made pictures with multilingual
captions, written the way img2dataset writes them (``{key}.jpg``, ``{key}.txt``, ``{key}.json``).

Nothing is downloaded: the pictures are drawn here (sky, hills, sun, texture; JPEG, PNG and
WebP, 320–1024 px) and the captions come from a short list in 14 languages, including the
paper's low-resource ones. A couple of deliberately bad samples (a corrupt JPEG, a pair without
caption) show how the stream skips and counts them.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from typing import List, Optional, Tuple

import numpy as np

# (language, caption) pairs: short alt-text-like sentences.
CAPTIONS: List[Tuple[str, str]] = [
    ("en", "A quiet lake below green hills at sunset"),
    ("en", "Mountain landscape with a bright sun and a few clouds"),
    ("es", "Un lago tranquilo bajo colinas verdes al atardecer"),
    ("fr", "Paysage de montagne avec un soleil éclatant"),
    ("de", "Ruhiger See unter grünen Hügeln bei Sonnenuntergang"),
    ("pt", "Paisagem de montanha com sol forte e algumas nuvens"),
    ("zh", "日落时分绿色山丘下宁静的湖泊"),
    ("ja", "夕暮れの緑の丘の下にある静かな湖"),
    ("ar", "بحيرة هادئة تحت تلال خضراء عند غروب الشمس"),
    ("ru", "Тихое озеро под зелёными холмами на закате"),
    ("hi", "सूर्यास्त के समय हरी पहाड़ियों के नीचे एक शांत झील"),
    ("bn", "সূর্যাস্তের সময় সবুজ পাহাড়ের নিচে একটি শান্ত হ্রদ"),
    ("te", "సూర్యాస్తమయ సమయంలో పచ్చని కొండల క్రింద ప్రశాంతమైన సరస్సు"),
    ("he", "אגם שקט מתחת לגבעות ירוקות בשקיעה"),
    ("sw", "Ziwa tulivu chini ya milima ya kijani wakati wa machweo"),
    ("fil", "Isang tahimik na lawa sa ilalim ng luntiang burol sa paglubog ng araw"),
    ("mi", "He roto mārie i raro i ngā puke kākāriki i te tōnga o te rā"),
]


def draw_picture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A landscape-like RGB picture (uint8 ``[H, W, 3]``): smooth sky, hills, a sun, texture."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    sky_top, sky_bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = (sky_top[None, None, :] * (1 - y[..., None]) + sky_bottom[None, None, :] * y[..., None]).repeat(width, axis=1)
    # A sun.
    cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.4), rng.uniform(0.03, 0.12)
    sun = ((x - cx) ** 2 * (width / height) ** 2 + (y - cy) ** 2) < r * r
    img[sun] = rng.uniform(200, 255, 3)
    # Two or three ranges of hills, each a sum of sines, nearer ones darker.
    for layer in range(rng.integers(2, 4)):
        base = 0.45 + 0.15 * layer + rng.uniform(-0.05, 0.05)
        ridge = base + sum(rng.uniform(0.01, 0.06) * np.sin(2 * np.pi * (rng.uniform(1, 6) * x + rng.uniform(0, 1))) for _ in range(3))
        mask = np.broadcast_to(y, (height, width)) > ridge
        color = rng.uniform(20, 160, 3) * (1.0 - 0.2 * layer)
        img[mask] = color
    # Texture: fine noise and a little grain, as in photographs.
    coarse = rng.normal(0, 12, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width]
    img = img + coarse + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """Encode ``[H, W, 3]`` uint8 pixels as ``jpg``, ``png`` or ``webp`` with Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=quality)
    else:
        raise ValueError(f"format must be jpg, png or webp, not {fmt!r}")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_sample_dataset(
    out_dir: str,
    num_shards: int = 4,
    samples_per_shard: int = 100,
    seed: int = 0,
    min_side: int = 320,
    max_side: int = 1024,
    bad_samples: bool = True,
    progress: Optional[object] = None,
) -> List[str]:
    """Write ``num_shards`` WebDataset shards to ``out_dir`` and return their paths.

    Keys follow img2dataset (``{shard:05d}{index:04d}``); each sample has an image (90% JPEG,
    5% PNG, 5% WebP), a ``.txt`` caption and a ``.json`` with ``key``, ``caption``,
    ``language``, ``url``, ``width`` and ``height``. With ``bad_samples``, the last shard also
    holds one corrupt JPEG and one pair without a caption.
    """
    if num_shards < 1 or samples_per_shard < 1:
        raise ValueError("num_shards and samples_per_shard must be at least 1")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(num_shards):
        path = os.path.join(out_dir, f"shard-{s:06d}.tar")
        tmp = path + ".tmp"
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for i in range(samples_per_shard):
                key = f"{s:05d}{i:04d}"
                long_side = int(rng.integers(min_side, max_side + 1))
                aspect = float(rng.uniform(0.6, 1.0))
                w, h = (long_side, int(long_side * aspect)) if rng.random() < 0.7 else (int(long_side * aspect), long_side)
                fmt = rng.choice(["jpg", "png", "webp"], p=[0.9, 0.05, 0.05])
                image = encode(draw_picture(rng, w, h), str(fmt), quality=int(rng.integers(75, 96)))
                lang, caption = CAPTIONS[int(rng.integers(len(CAPTIONS)))]
                meta = {"key": key, "caption": caption, "language": lang, "url": f"https://example.org/{key}.{fmt}", "width": w, "height": h, "status": "success"}
                _add(tar, f"{key}.{fmt}", image)
                _add(tar, f"{key}.txt", caption.encode())
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())
                if progress is not None:
                    progress.update(1)  # type: ignore[attr-defined]
            if bad_samples and s == num_shards - 1:
                _add(tar, f"{s:05d}9998.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg")
                _add(tar, f"{s:05d}9998.txt", b"a corrupt image")
                _add(tar, f"{s:05d}9999.jpg", encode(draw_picture(rng, 64, 64), "jpg"))
        os.replace(tmp, path)
        paths.append(path)
    return paths
