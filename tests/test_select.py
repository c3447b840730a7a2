"""Selection before decoding: nested subsets, exact dedup, filters (off by default), each drop
counted by reason; with real image files."""

from __future__ import annotations

import io
import json

import pytest
from torch.utils.data import DataLoader

from webli_io import WebLIStream
from webli_io._core import in_subset


def keys(stream, workers=0):
    return [k for b in DataLoader(stream, batch_size=None, num_workers=workers) for k in b["keys"]]


def test_subsets_are_nested_and_independent_of_workers(make_shards):
    ds = make_shards(shards=4, per_shard=50)
    everything = set(ds["samples"])
    ten = set(keys(WebLIStream(ds["paths"], batch_size=8, image_size=8, subset=0.3)))
    one = set(keys(WebLIStream(ds["paths"], batch_size=8, image_size=8, subset=0.1), workers=2))
    assert one < ten < everything
    assert 0.05 * 200 < len(one) < 0.15 * 200 and 0.2 * 200 < len(ten) < 0.4 * 200
    assert one == {k for k in everything if in_subset(k, 0.1)}
    shuffled = WebLIStream(ds["paths"], batch_size=8, image_size=8, subset=0.1, shuffle=True, seed=9)
    assert set(keys(shuffled, workers=2)) == one, "the stream seed does not change the subset"
    s = WebLIStream(ds["paths"], batch_size=8, image_size=8, subset=0.1)
    keys(s)
    assert s.stats()["skipped_out_of_subset"] == 200 - len(one)
    with pytest.raises(ValueError, match=r"subset: must be in \(0, 1\], not 10"):
        WebLIStream(ds["paths"], subset=10)


def write(tmp_path, rows):
    import webdataset as wds

    path = str(tmp_path / "sel.tar")
    with wds.TarWriter(path) as w:
        for key, img, meta in rows:
            w.write({"__key__": key, "jpg": img, "txt": key, "json": json.dumps(meta).encode()})
    return path


def jpeg(photo, size, quality=85):
    buf = io.BytesIO()
    photo.resize(size).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_exact_dedup_drops_repeated_bytes_only(tmp_path, photos):
    a, b = jpeg(photos[0], (120, 90)), jpeg(photos[1], (120, 90))
    a_again_other_quality = jpeg(photos[0], (120, 90), quality=60)
    path = write(tmp_path, [("k1", a, {}), ("k2", b, {}), ("k3", a, {}), ("k4", a_again_other_quality, {}), ("k5", b, {})])
    s = WebLIStream(path, batch_size=8, image_size=16, dedup=True)
    assert keys(s) == ["k1", "k2", "k4"]  # k4 is a near-duplicate, not an exact one
    assert s.stats()["skipped_duplicate"] == 2
    assert keys(WebLIStream(path, batch_size=8, image_size=16)) == ["k1", "k2", "k3", "k4", "k5"], "off by default"


def test_filters_are_opt_in_and_counted(tmp_path, photos):
    rows = [
        ("ok", jpeg(photos[0], (200, 150)), {"clip_score": 0.31, "NSFW": "UNLIKELY"}),
        ("low", jpeg(photos[1], (200, 150)), {"clip_score": 0.20}),
        ("noscore", jpeg(photos[2], (200, 150)), {}),
        ("nsfw", jpeg(photos[3], (200, 150)), {"clip_score": 0.5, "NSFW": "NSFW"}),
        ("small", jpeg(photos[4], (60, 50)), {"clip_score": 0.5}),
        ("wide", jpeg(photos[5], (400, 80)), {"clip_score": 0.5}),
    ]
    path = write(tmp_path, rows)
    assert len(keys(WebLIStream(path, batch_size=8, image_size=16))) == 6
    s = WebLIStream(path, batch_size=8, image_size=16, min_score={"clip_score": 0.28}, drop_if={"NSFW": ["NSFW", "UNSURE"]},
                    min_image_side=64, max_aspect_ratio=3.0)
    assert keys(s) == ["ok"]
    assert s.stats()["skipped_filtered"] == 5
    reasons = {p["key"]: p["message"] for p in s.problems()}
    assert "clip_score" in reasons["low"] and "NSFW" in reasons["nsfw"]
    assert "side under 64" in reasons["small"] and "aspect ratio" in reasons["wide"]
