"""A small built-in dataset: WebDataset shards of locally made pictures with multilingual
captions, written the way img2dataset writes them (``{key}.jpg``, ``{key}.txt``, ``{key}.json``).

Nothing is downloaded: the pictures are drawn here (sky, hills, sun, texture; JPEG, PNG and
WebP, 320–1024 px) and the captions come from a short list in 17 languages, including the
paper's low-resource ones, each followed by the colour of the picture's sky in that language (so
the captions describe the pictures, and the demo's model has something to learn). A couple of deliberately bad samples (a corrupt JPEG, a pair without
caption) show how the stream skips and counts them.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from ._extras import require

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


#: Sky colours of the drawn pictures, and how each language says "under a ... sky": the captions
#: describe the pictures, so the demo's trained model has something to learn and to retrieve.
SKIES: List[Tuple[str, Tuple[int, int, int]]] = [
    ("red", (200, 40, 30)), ("blue", (40, 80, 210)), ("green", (40, 170, 60)), ("yellow", (230, 200, 40)),
]
SKY_PHRASES: Dict[str, Dict[str, str]] = {
    "en": {"red": "under a red sky", "blue": "under a blue sky", "green": "under a green sky", "yellow": "under a yellow sky"},
    "es": {"red": "bajo un cielo rojo", "blue": "bajo un cielo azul", "green": "bajo un cielo verde", "yellow": "bajo un cielo amarillo"},
    "fr": {"red": "sous un ciel rouge", "blue": "sous un ciel bleu", "green": "sous un ciel vert", "yellow": "sous un ciel jaune"},
    "de": {"red": "unter einem roten Himmel", "blue": "unter einem blauen Himmel", "green": "unter einem grünen Himmel", "yellow": "unter einem gelben Himmel"},
    "pt": {"red": "sob um céu vermelho", "blue": "sob um céu azul", "green": "sob um céu verde", "yellow": "sob um céu amarelo"},
    "zh": {"red": "在红色的天空下", "blue": "在蓝色的天空下", "green": "在绿色的天空下", "yellow": "在黄色的天空下"},
    "ja": {"red": "赤い空の下", "blue": "青い空の下", "green": "緑の空の下", "yellow": "黄色い空の下"},
    "ar": {"red": "تحت سماء حمراء", "blue": "تحت سماء زرقاء", "green": "تحت سماء خضراء", "yellow": "تحت سماء صفراء"},
    "ru": {"red": "под красным небом", "blue": "под синим небом", "green": "под зелёным небом", "yellow": "под жёлтым небом"},
    "hi": {"red": "लाल आसमान के नीचे", "blue": "नीले आसमान के नीचे", "green": "हरे आसमान के नीचे", "yellow": "पीले आसमान के नीचे"},
    "bn": {"red": "লাল আকাশের নিচে", "blue": "নীল আকাশের নিচে", "green": "সবুজ আকাশের নিচে", "yellow": "হলুদ আকাশের নিচে"},
    "te": {"red": "ఎరుపు ఆకాశం కింద", "blue": "నీలి ఆకాశం కింద", "green": "ఆకుపచ్చ ఆకాశం కింద", "yellow": "పసుపు ఆకాశం కింద"},
    "he": {"red": "תחת שמיים אדומים", "blue": "תחת שמיים כחולים", "green": "תחת שמיים ירוקים", "yellow": "תחת שמיים צהובים"},
    "sw": {"red": "chini ya anga jekundu", "blue": "chini ya anga la buluu", "green": "chini ya anga la kijani", "yellow": "chini ya anga la njano"},
    "fil": {"red": "sa ilalim ng pulang langit", "blue": "sa ilalim ng asul na langit", "green": "sa ilalim ng berdeng langit", "yellow": "sa ilalim ng dilaw na langit"},
    "mi": {"red": "i raro i te rangi whero", "blue": "i raro i te rangi kikorangi", "green": "i raro i te rangi kākāriki", "yellow": "i raro i te rangi kōwhai"},
}


def draw_picture(rng: np.random.Generator, width: int, height: int, sky: Optional[Tuple[int, int, int]] = None) -> np.ndarray:
    """A landscape-like RGB picture (uint8 ``[H, W, 3]``): smooth sky (of colour `sky`, random
    if None), hills, a sun, texture."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    if sky is None:
        sky_top, sky_bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    else:
        sky_top = np.clip(np.array(sky, dtype=np.float64) + rng.normal(0, 15, 3), 0, 255)
        sky_bottom = np.clip(sky_top * 0.6 + 255 * 0.4 + rng.normal(0, 10, 3), 0, 255)
    img = (sky_top[None, None, :] * (1 - y[..., None]) + sky_bottom[None, None, :] * y[..., None]).repeat(width, axis=1)
    # A sun.
    cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.4), rng.uniform(0.03, 0.12)
    sun = ((x - cx) ** 2 * (width / height) ** 2 + (y - cy) ** 2) < r * r
    img[sun] = rng.uniform(200, 255, 3)
    # Two or three ranges of hills, each a sum of sines, nearer ones darker.
    for layer in range(rng.integers(2, 4)):
        base = 0.55 + 0.12 * layer + rng.uniform(-0.05, 0.05)
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
    Image = require("PIL.Image", "Pillow (to write the sample images)", "cli")

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
                sky_name, sky_rgb = SKIES[int(rng.integers(len(SKIES)))]
                image = encode(draw_picture(rng, w, h, sky_rgb), str(fmt), quality=int(rng.integers(75, 96)))
                lang, caption = CAPTIONS[int(rng.integers(len(CAPTIONS)))]
                caption = f"{SKY_PHRASES[lang][sky_name]}: {caption}"  # first: byte tokens are cut at 64
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


#: Pseudo-regions the evaluation set's pictures are spread over (for per-group numbers).
REGIONS = ("north", "south", "east", "west")


def write_eval_sets(out_dir: str, per_sky: int = 8, seed: int = 1) -> Dict[str, str]:
    """Evaluation data with known answers, in the benchmarks' layouts: pictures drawn under a sky
    of a known colour (the class), captioned in every language of ``SKY_PHRASES`` (the caption
    says the sky's colour), spread over ``REGIONS``.

    - ``classify/<colour>/*.jpg`` and ``classnames.txt`` (ImageNet's layout, ``folder<TAB>name``);
    - ``eval.tar``: ``json`` with ``captions`` {language: caption} (Crossmodal-3600's layout),
      ``label`` (the colour phrase in English) and ``region`` (Dollar Street / GeoDE style).
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(out_dir, "classify")
    shard = os.path.join(out_dir, "eval.tar")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(out_dir, "classnames.txt"), "w", encoding="utf-8") as f:
        for sky_name, _ in SKIES:
            f.write(f"{sky_name}\t{SKY_PHRASES['en'][sky_name]}\n")
    with tarfile.open(shard + ".tmp", "w", format=tarfile.GNU_FORMAT) as tar:
        i = 0
        for sky_name, sky_rgb in SKIES:
            os.makedirs(os.path.join(folder, sky_name), exist_ok=True)
            for j in range(per_sky):
                image = encode(draw_picture(rng, 320, 240, sky_rgb), "jpg", quality=90)
                with open(os.path.join(folder, sky_name, f"{j:03d}.jpg"), "wb") as out:
                    out.write(image)
                key = f"eval{i:05d}"
                captions = {lang: phrases[sky_name] for lang, phrases in SKY_PHRASES.items()}
                meta = {"captions": captions, "label": SKY_PHRASES["en"][sky_name], "region": REGIONS[i % len(REGIONS)]}
                _add(tar, f"{key}.jpg", image)
                _add(tar, f"{key}.txt", captions["en"].encode())
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())
                i += 1
    os.replace(shard + ".tmp", shard)
    return {"folder": folder, "classnames": os.path.join(out_dir, "classnames.txt"), "shard": shard}
