"""Shared fixtures: real photographs (scikit-image's bundled data) turned into web-like files,
and real WebDataset shards written by the `webdataset` package."""

from __future__ import annotations

import io
import json
import os
from typing import Callable, Dict, List

import numpy as np
import pytest
from PIL import Image

# Real photographs shipped inside the scikit-image wheel (no download).
PHOTO_FILES = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
]

CAPTIONS = [
    ("en", "an astronaut in a white suit"),
    ("es", "un gato atigrado mirando a la cámara"),
    ("hi", "एक कप कॉफी मेज पर"),
    ("bn", "আকাশে একটি রকেট"),
    ("he", "אופנוע אדום בחניה"),
    ("te", "రాత్రి ఆకాశంలో నక్షత్రాలు"),
    ("sw", "picha ya jicho la mwanadamu"),
    ("zh", "显微镜下的组织切片"),
]


def _photo_dir() -> str:
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


@pytest.fixture(scope="session")
def photos() -> List[Image.Image]:
    """The real photographs, as RGB PIL images."""
    out = []
    for name in PHOTO_FILES:
        img = Image.open(os.path.join(_photo_dir(), name))
        out.append(img.convert("RGB"))
    return out


def web_like(img: Image.Image, long_side: int, fmt: str = "JPEG", quality: int = 85) -> bytes:
    """Resize a photo to `long_side` px on its long side and encode it as the web does."""
    w, h = img.size
    scale = long_side / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(buf, format="WEBP", quality=quality)
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def web_images(photos) -> List[bytes]:
    """Web-like JPEG, PNG and WebP files (300–900 px) made from the real photographs."""
    rng = np.random.default_rng(0)
    out = []
    for p in photos:
        for fmt in ("JPEG", "PNG", "WEBP"):
            out.append(web_like(p, int(rng.integers(300, 900)), fmt, quality=int(rng.integers(70, 96))))
    return out


EXT = {b"\xff\xd8": "jpg", b"\x89P": "png", b"RI": "webp"}


def ext_of(data: bytes) -> str:
    return EXT[data[:2]]


@pytest.fixture
def make_shards(tmp_path, web_images) -> Callable[..., Dict]:
    """Write `shards` shards of `per_shard` samples with webdataset's ShardWriter.

    Returns a dict: `pattern` (brace pattern of the shards), `paths`, `samples` (key → (text, meta)).
    """

    def make(shards: int = 4, per_shard: int = 10, prefix: str = "shard", subdir: str = "data") -> Dict:
        import webdataset as wds

        d = tmp_path / subdir
        d.mkdir(exist_ok=True)
        samples = {}
        pattern = str(d / f"{prefix}-%06d.tar")
        with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
            for i in range(shards * per_shard):
                key = f"{i // per_shard:05d}{i % per_shard:04d}"  # img2dataset-style keys
                lang, text = CAPTIONS[i % len(CAPTIONS)]
                img = web_images[i % len(web_images)]
                meta = {"key": key, "language": lang, "url": f"https://example.org/{i}", "status": "success", "i": i}
                sink.write({"__key__": key, ext_of(img): img, "txt": text, "json": json.dumps(meta).encode()})
                samples[key] = (text, meta)
        paths = sorted(str(p) for p in d.glob(f"{prefix}-*.tar"))
        assert len(paths) == shards
        return {
            "pattern": str(d / f"{prefix}-{{000000..{shards - 1:06d}}}.tar"),
            "paths": paths,
            "samples": samples,
            "dir": d,
        }

    return make


@pytest.fixture
def server():
    """A loopback HTTP server for remote shards (see `_helpers.ShardServer`)."""
    from _helpers import ShardServer

    s = ShardServer()
    yield s
    s.close()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("WEBLI_IO_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("WEBLI_IO_RETRIES", "3")


@pytest.fixture
def clean_cloud_env(monkeypatch, tmp_path):
    """No credentials or endpoints from the machine: every variable a cloud chain reads is unset,
    and HOME is empty (no ~/.aws, no gcloud application-default credentials)."""
    import os

    for k in list(os.environ):
        if k.startswith(("AWS_", "GOOGLE_", "AZURE_")) or k == "STORAGE_EMULATOR_HOST":
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


I2D_SCRIPT = """
import sys
from img2dataset import download

if __name__ == "__main__":
    urls, out, fmt = sys.argv[1:4]
    download(url_list=urls, input_format="parquet", url_col="url", caption_col="caption", save_additional_columns=["language"],
             output_folder=out, output_format=fmt, image_size=64, resize_mode="center_crop", processes_count=1,
             thread_count=4, number_sample_per_shard=5, distributor="multiprocessing", timeout=5, retries=0,
             enable_wandb=False)
"""


@pytest.fixture(scope="session")
def img2dataset_out(tmp_path_factory, photos) -> Dict:
    """The output of the real `img2dataset` package, both formats (`webdataset`, `parquet`), from
    a loopback HTTP server: 12 real photographs (every third with a language tag, the rest left
    to LID) and one URL that answers 404. Returns the folders and the captions by URL."""
    import subprocess
    import sys

    import pandas as pd
    from _helpers import ShardServer

    d = tmp_path_factory.mktemp("img2dataset")
    server = ShardServer()
    rows = []
    try:
        for i in range(12):
            lang, caption = CAPTIONS[i % len(CAPTIONS)]
            server.files[f"/p{i}.jpg"] = web_like(photos[i % len(photos)], 200 + 20 * i)
            rows.append({"url": f"{server.url}/p{i}.jpg", "caption": caption, "language": lang if i % 3 == 0 else None})
        rows.append({"url": f"{server.url}/gone.jpg", "caption": "a missing picture", "language": "en"})
        pd.DataFrame(rows).to_parquet(d / "urls.parquet")
        (d / "run.py").write_text(I2D_SCRIPT)
        out = {}
        for fmt in ("webdataset", "parquet"):
            out[fmt] = d / fmt
            r = subprocess.run([sys.executable, str(d / "run.py"), str(d / "urls.parquet"), str(out[fmt]), fmt], cwd=d,
                               capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})
            assert r.returncode == 0, r.stderr[-3000:]
    finally:
        server.close()
    return {**out, "rows": rows, "url": server.url}
