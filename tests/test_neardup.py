"""Near-duplicates and decontamination, on real photographs copied the way the web copies them
(crop, rescale, brightness, JPEG re-encode)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image, ImageEnhance

from webli_io import WebLIStream
from webli_io._core import DEFAULT_NEAR_RADIUS, Blocklist, fingerprints


def jpeg(img, quality=90):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def web_copy(photo, crop=(0.04, 0.02, 0.03, 0.05), scale=0.7, bright=1.08, quality=40):
    w, h = photo.size
    img = photo.crop((int(crop[0] * w), int(crop[1] * h), int(w - crop[2] * w), int(h - crop[3] * h)))
    img = img.resize((int(img.width * scale), int(img.height * scale)), Image.BICUBIC)
    return jpeg(ImageEnhance.Brightness(img).enhance(bright), quality)


def write(tmp_path, name, rows):
    import webdataset as wds

    path = str(tmp_path / name)
    with wds.TarWriter(path) as w:
        for key, img in rows:
            w.write({"__key__": key, "jpg": img, "txt": key})
    return path


def test_fingerprints_match_copies_not_other_photos(photos):
    rp, rd = DEFAULT_NEAR_RADIUS
    bl = Blocklist()
    for i, p in enumerate(photos[:4]):
        bl.add(fingerprints(jpeg(p), variants=True), i)
    assert len(bl) == 4 * 36
    for i, p in enumerate(photos[:4]):
        ph, dh = fingerprints(web_copy(p))[0]
        assert bl.find(ph, dh) == i
    for p in photos[4:]:
        ph, dh = fingerprints(jpeg(p))[0]
        assert bl.find(ph, dh) is None


def test_index_eval_and_decontaminated_stream(tmp_path, photos):
    evaldir = tmp_path / "eval"
    evaldir.mkdir()
    for i, p in enumerate(photos[:3]):
        p.save(evaldir / f"eval{i}.png")
    (evaldir / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    idx = str(tmp_path / "evalset.idx")
    r = subprocess.run([sys.executable, "-m", "webli_io", "index-eval", str(evaldir), "-o", idx, "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["images"] == 3 and summary["fingerprints"] == 108 and len(summary["failed"]) == 1
    rows = [(f"copy{i}", web_copy(p)) for i, p in enumerate(photos[:3])]
    rows += [(f"other{i}", jpeg(p, 80)) for i, p in enumerate(photos[3:])]
    shard = write(tmp_path, "web.tar", rows)
    s = WebLIStream(shard, batch_size=16, image_size=32, blocklist=idx)
    kept = [k for b in s for k in b["keys"]]
    assert kept == [k for k, _ in rows if k.startswith("other")]
    assert s.stats()["skipped_blocklisted"] == 3
    assert [k for b in WebLIStream(shard, batch_size=16, image_size=32) for k in b["keys"]] == [k for k, _ in rows]
    with pytest.raises(ValueError, match="blocklist: file not found") as e:
        WebLIStream(shard, blocklist=str(tmp_path / "none.idx"))
    assert e.value.setting == "blocklist"
    (tmp_path / "bad.idx").write_bytes(b"not a blocklist at all")
    with pytest.raises(ValueError, match="not a webli-io blocklist"):
        next(iter(WebLIStream(shard, blocklist=str(tmp_path / "bad.idx"))))


def test_near_dedup_keeps_the_first_of_each_group(tmp_path, photos):
    rows = [("a", jpeg(photos[0])), ("b", jpeg(photos[1])), ("a-copy", web_copy(photos[0])), ("c", jpeg(photos[2])),
            ("b-copy", web_copy(photos[1], crop=(0, 0, 0, 0), scale=1.5, quality=70))]
    shard = write(tmp_path, "nd.tar", rows)
    s = WebLIStream(shard, batch_size=8, image_size=32, near_dedup=True, num_threads=2)
    assert [k for b in s for k in b["keys"]] == ["a", "b", "c"]
    assert s.stats()["skipped_near_duplicate"] == 2
    with pytest.raises(ValueError, match="pHash bits <= 11"):
        WebLIStream(shard, near_dedup=True, near_dedup_radius=(20, 12))
