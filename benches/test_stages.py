"""pytest-benchmark cases for the stages, against the strongest Python baselines, on web-like
JPEGs made from real photographs. Run: pip install '.[bench]' && pytest benches --benchmark-only

(`webli-io bench` is the end-to-end comparison in DataLoaders; these time single stages.)
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from webli_io import WebLIStream, decode_resize
from webli_io.bench import load_photos, web_jpeg, write_bench_shards

SIZE = 224


@pytest.fixture(scope="session")
def jpegs():
    photos, _ = load_photos()
    rng = np.random.default_rng(0)
    return [web_jpeg(photos[i % len(photos)], rng) for i in range(64)]


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    paths, _ = write_bench_shards(str(tmp_path_factory.mktemp("bench")), 2, 200)
    return paths


def run_all(fn, items):
    for x in items:
        fn(x)


def test_webli_decode_resize_scaled(benchmark, jpegs):
    benchmark(run_all, lambda d: decode_resize(d, SIZE), jpegs)


def test_webli_decode_resize_full(benchmark, jpegs):
    benchmark(run_all, lambda d: decode_resize(d, SIZE, scaled_decode=False), jpegs)


def test_pil_draft_resize(benchmark, jpegs):
    from PIL import Image

    def f(d):
        img = Image.open(io.BytesIO(d))
        img.draft("RGB", (SIZE, SIZE))
        return np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))

    benchmark(run_all, f, jpegs)


def test_simplejpeg_scaled_pil_resize(benchmark, jpegs):
    import simplejpeg
    from PIL import Image

    def f(d):
        a = simplejpeg.decode_jpeg(d, colorspace="RGB", min_height=SIZE, min_width=SIZE)
        return np.asarray(Image.fromarray(a).resize((SIZE, SIZE), Image.BILINEAR))

    benchmark(run_all, f, jpegs)


def test_simplejpeg_full_decode_only(benchmark, jpegs):
    import simplejpeg

    benchmark(run_all, lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"), jpegs)


@pytest.mark.parametrize("threads", [1, 2])
def test_webli_stream(benchmark, shards, threads):
    def stream():
        return sum(len(b["keys"]) for b in WebLIStream(shards, batch_size=64, image_size=SIZE, num_threads=threads))

    assert benchmark.pedantic(stream, rounds=3) == 400
