"""`webli-io prepare --dedup` on the local engine and on a real local Ray cluster: the same
exact duplicates dropped across shards, the same output."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest

from webli_io.prepare import prepare


def images_by_key(shard: str) -> Dict[str, bytes]:
    out = {}
    with tarfile.open(shard) as t:
        for m in t.getmembers():
            name = m.name.rsplit("/", 1)[-1]
            if name.split(".", 1)[1] in ("jpg", "png", "webp"):
                out[name.split(".", 1)[0]] = t.extractfile(m).read()
    return out


@pytest.fixture
def shards_with_copies(make_shards, tmp_path):
    """4 shards; the last repeats images of the first two under new keys, and the data cycles
    through a small set of photos, so copies sit within and across shards."""
    import webdataset as wds

    made = make_shards(shards=3, per_shard=8)
    first = images_by_key(made["paths"][0])
    second = images_by_key(made["paths"][1])
    extra = str(Path(made["dir"]) / "shard-000003.tar")
    with wds.TarWriter(extra) as sink:
        for j, img in enumerate(list(first.values())[:3] + list(second.values())[:2]):
            ext = "png" if img[:4] == b"\x89PNG" else "webp" if img[:4] == b"RIFF" else "jpg"
            sink.write({"__key__": f"copy{j:04d}", ext: img, "txt": "a copy", "json": json.dumps({"language": "en"}).encode()})
    return made["paths"] + [extra]


def expected_kept(paths: List[str]) -> List[str]:
    seen, kept = set(), []
    for p in paths:
        for key, img in images_by_key(p).items():
            h = hashlib.sha256(img).hexdigest()
            if h not in seen:
                seen.add(h)
                kept.append(key)
    return kept


def output_keys(out: Path) -> List[str]:
    return [k for p in sorted(out.glob("shard-*.tar")) for k in images_by_key(str(p))]


def test_dedup_local_and_ray_agree(shards_with_copies, tmp_path):
    want = expected_kept(shards_with_copies)
    total = sum(len(images_by_key(p)) for p in shards_with_copies)
    assert total - len(want) >= 5  # the fixture really has duplicates
    local = prepare(shards_with_copies, str(tmp_path / "local"), dedup=True, workers=2, progress=False)
    ray_m = prepare(shards_with_copies, str(tmp_path / "ray"), dedup=True, engine="ray", workers=2, progress=False)
    for m, out in ((local, tmp_path / "local"), (ray_m, tmp_path / "ray")):
        assert m["duplicates_dropped"] == total - len(want)
        assert m["samples"] == len(want)
        assert sorted(output_keys(out)) == sorted(want)
        imgs = [hashlib.sha256(i).digest() for p in sorted(out.glob("shard-*.tar")) for i in images_by_key(str(p)).values()]
        assert len(imgs) == len(set(imgs))  # no image twice in the whole output
    assert local["languages"] == ray_m["languages"] and ray_m["engine"] == "ray"
    # Without --dedup nothing is dropped, and a rerun with other settings redoes the shards.
    again = prepare(shards_with_copies, str(tmp_path / "local"), dedup=False, workers=2, progress=False)
    assert again["duplicates_dropped"] == 0 and again["samples"] == total and again["shards_done_now"] == 4
