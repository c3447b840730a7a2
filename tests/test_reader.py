"""Reading real WebDataset shards: grouping, specs (lists, globs, braces), batch contents."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from webli_io import ConfigError, WebLIStream, expand_shards


def collect(stream):
    keys, texts, metas, shapes = [], [], [], []
    for b in stream:
        keys += b["keys"]
        texts += b["texts"]
        metas += b["meta"]
        shapes.append(tuple(b["images"].shape))
        assert b["images"].dtype == np.uint8
    return keys, texts, metas, shapes


def test_shardwriter_shards_read_unchanged(make_shards):
    ds = make_shards(shards=3, per_shard=7)
    stream = WebLIStream(ds["pattern"], batch_size=5, image_size=32)
    keys, texts, metas, shapes = collect(stream)
    assert sorted(keys) == sorted(ds["samples"])
    assert len(set(keys)) == len(keys)
    for k, t, m in zip(keys, texts, metas):
        assert t == ds["samples"][k][0]
        assert m == ds["samples"][k][1]
    assert shapes[0] == (5, 32, 32, 3)
    assert sum(s[0] for s in shapes) == 21
    st = stream.stats()
    assert st["samples_read"] == 21 and st["samples_yielded"] == 21 and st["shards_opened"] == 3


def test_specs_list_glob_brace_agree(make_shards):
    ds = make_shards(shards=3, per_shard=4)
    by_brace = expand_shards([ds["pattern"]])
    by_glob = expand_shards([str(ds["dir"] / "shard-*.tar")])
    assert by_brace == by_glob == ds["paths"]
    k1 = collect(WebLIStream(ds["paths"], batch_size=4, image_size=16))[0]
    k2 = collect(WebLIStream(str(ds["dir"] / "shard-*.tar"), batch_size=4, image_size=16))[0]
    assert k1 == k2 and len(k1) == 12


def test_tarwriter_with_every_image_format_and_extension(tmp_path, web_images):
    import webdataset as wds

    path = tmp_path / "mixed.tar"
    exts = ["jpg", "jpeg", "png", "webp"]
    with wds.TarWriter(str(path)) as sink:
        for i, img in enumerate(web_images[:8]):
            # The member name does not need to match the format: it is sniffed from the bytes.
            sink.write({"__key__": f"dir/sample{i}", exts[i % 4]: img, "txt": f"caption {i}"})
    keys, texts, metas, _ = collect(WebLIStream(str(path), batch_size=3, image_size=24))
    assert keys == [f"dir/sample{i}" for i in range(8)]
    assert texts == [f"caption {i}" for i in range(8)]
    assert metas == [{}] * 8


def test_img2dataset_layout(tmp_path, web_images):
    """img2dataset writes {shard:05d}{i:04d}.jpg/.txt/.json members (through webdataset's
    TarWriter) plus a parquet and a _stats.json beside each shard."""
    import webdataset as wds

    d = tmp_path / "out"
    d.mkdir()
    with wds.TarWriter(str(d / "00000.tar")) as sink:
        for i in range(5):
            key = f"00000{i:04d}"
            meta = {"url": f"http://x/{i}.jpg", "caption": f"cap {i}", "key": key, "status": "success",
                    "error_message": None, "width": 256, "height": 256, "original_width": 640, "original_height": 480,
                    "exif": "{}", "sha256": "ab" * 32}
            sink.write({"__key__": key, "jpg": web_images[0], "txt": f"cap {i}", "json": json.dumps(meta).encode()})
    (d / "00000_stats.json").write_text("{}")
    (d / "00000.parquet").write_bytes(b"PAR1")
    keys, texts, metas, _ = collect(WebLIStream(str(d / "{00000..00000}.tar"), batch_size=2, image_size=16))
    assert keys == [f"00000{i:04d}" for i in range(5)]
    assert metas[3]["original_width"] == 640 and metas[3]["error_message"] is None


def test_caption_from_json_when_no_txt(tmp_path, web_images):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as t:
        for name, data in [("k1.jpg", web_images[0]), ("k1.json", json.dumps({"caption": "from json"}).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    keys, texts, _, _ = collect(WebLIStream(str(path), batch_size=2, image_size=16))
    assert texts == ["from json"]


def test_layout_nchw_matches_nhwc(make_shards):
    ds = make_shards(shards=1, per_shard=4)
    a = next(iter(WebLIStream(ds["paths"], batch_size=4, image_size=20)))["images"]
    b = next(iter(WebLIStream(ds["paths"], batch_size=4, image_size=20, layout="NCHW")))["images"]
    assert b.shape == (4, 3, 20, 20)
    np.testing.assert_array_equal(a.transpose(0, 3, 1, 2), b)


def test_images_are_handed_over_without_copy(make_shards):
    ds = make_shards(shards=1, per_shard=3)
    img = next(iter(WebLIStream(ds["paths"], batch_size=3, image_size=16)))["images"]
    # The array is a view on the Vec the Rust batcher filled (held by the numpy crate's
    # PySliceContainer), not a copy made by NumPy.
    assert not img.flags["OWNDATA"] and img.flags["C_CONTIGUOUS"]
    owner = img
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert type(owner).__name__ == "PySliceContainer"


def test_drop_last(make_shards):
    ds = make_shards(shards=1, per_shard=7)
    sizes = [len(b["keys"]) for b in WebLIStream(ds["paths"], batch_size=3, image_size=16, drop_last=True)]
    assert sizes == [3, 3]


def test_missing_shard_and_bad_arguments(make_shards, tmp_path):
    ds = make_shards(shards=2, per_shard=2)
    with pytest.raises(FileNotFoundError, match="shard-000002.tar"):
        WebLIStream(str(ds["dir"] / "shard-{000000..000002}.tar"))
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        WebLIStream(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(ValueError, match="bad shard pattern"):
        WebLIStream(str(ds["dir"] / "shard-{0..x}.tar"))
    with pytest.raises(ValueError, match="shards is empty"):
        WebLIStream([])
    # A bad setting is a ConfigError (a ValueError) that names it and says what it accepts.
    for kw, setting, says in [
        ({"resize": "stretch"}, "resize", "expected one of `squash`, `center_crop`, `shortest`, `random_resized_crop`, `letterbox`"),
        ({"interpolation": "cubic"}, "interpolation", "expected one of `bilinear`, `bicubic`, `area`"),
        ({"batch_size": 0}, "batch_size", "must be between 1 and"),
        ({"image_size": 224.0}, "image_size", "invalid type: floating point"),
        ({"layout": "HWC"}, "layout", "must be 'NHWC' or 'NCHW'"),
        ({"rank": 0}, "rank", "give both rank and world_size"),
        ({"rank": 2, "world_size": 2}, "rank", r"must be an int in \[0, 2\)"),
    ]:
        with pytest.raises(ConfigError, match=f"^{setting}: .*{says}") as e:
            WebLIStream(ds["paths"], **kw)
        assert e.value.setting == setting and isinstance(e.value, ValueError)
