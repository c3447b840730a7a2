"""Hostile shards (issue 12): damage at a block boundary, an empty shard, many members under one
key, an endless sample, and `json` that Python writes but JSON forbids. Each is counted by its
reason, nothing is lost silently, and a metadata filter fails closed."""

from __future__ import annotations

import io
import json
import tarfile

from _helpers import write_tar

from webli_io import WebLIStream


def a_jpeg(web_images):
    return next(b for b in web_images if b[:2] == b"\xff\xd8")


def pairs(n, jpg, json_of=lambda i: {"language": "en"}):
    out = []
    for i in range(n):
        out += [(f"{i:04d}.jpg", jpg), (f"{i:04d}.txt", b"a caption"), (f"{i:04d}.json", json.dumps(json_of(i)).encode())]
    return out


def stream_all(path, **kw):
    s = WebLIStream(str(path), batch_size=4, image_size=16, **kw)
    return [k for b in s for k in b["keys"]], s.stats(), s.problems()


def test_a_tar_cut_at_a_block_boundary_is_truncated_not_ended(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    write_tar(tmp_path / "whole.tar", pairs(6, jpg))
    data = (tmp_path / "whole.tar").read_bytes()
    # Find the header offsets: cut exactly before the header of sample 3's first member.
    with tarfile.open(tmp_path / "whole.tar") as t:
        offset = next(m.offset for m in t.getmembers() if m.name == "0003.jpg")
    for cut in (offset, offset - offset % 4096 if offset % 4096 else offset):
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        keys, stats, problems = stream_all(tmp_path / "cut.tar")
        assert stats["shard_truncated"] == 1, cut
        assert len(keys) <= 3 and all(k < "0003" for k in keys)
        assert any(p["reason"] == "shard_truncated" for p in problems)


def test_an_empty_shard_is_counted(tmp_path):
    (tmp_path / "empty.tar").write_bytes(b"")
    keys, stats, problems = stream_all(tmp_path / "empty.tar")
    assert keys == [] and stats["shard_truncated"] == 1 and "empty" in problems[0]["message"]


def test_names_with_many_dots_are_one_key_and_the_rest_is_counted(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    members = []
    for i in range(200):
        members += [(f"img.{i:04d}.jpg", jpg), (f"img.{i:04d}.txt", f"caption {i}".encode())]
    write_tar(tmp_path / "dots.tar", members)
    keys, stats, problems = stream_all(tmp_path / "dots.tar")
    # webdataset's key rule: all 400 members have the key "img": one sample, the other 199
    # images and 199 captions counted, not dropped silently.
    assert keys == ["img"]
    assert stats["skipped_repeated_member"] == 398
    assert any(p["reason"] == "skipped_repeated_member" and "398 more" in p["message"] for p in problems)


def test_an_endless_sample_is_bounded_and_skipped(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    blob = bytes(64 * 1024)
    members = [(f"k.part{i:05d}.bin", blob) for i in range(200)] + pairs(2, jpg)  # 12.8 MB under key "k"
    write_tar(tmp_path / "endless.tar", members)
    keys, stats, _ = stream_all(tmp_path / "endless.tar", max_member_bytes=1 << 20)
    assert keys == ["0000", "0001"]
    assert stats["skipped_member_too_large"] == 1


def test_json_with_nan_is_read_and_a_flag_filter_still_drops(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    members = []
    for i in range(4):
        meta = {"NSFW": "NSFW" if i % 2 else "UNLIKELY", "clip_score": float("nan") if i == 3 else 0.3}
        members += [(f"{i:04d}.jpg", jpg), (f"{i:04d}.txt", b"x"), (f"{i:04d}.json", json.dumps(meta).encode())]  # NaN as Python writes it
    # A json that does not parse at all, with a filter on: dropped (fail closed).
    members += [("0009.jpg", jpg), ("0009.txt", b"x"), ("0009.json", b'{"NSFW": "NSFW", ')]
    write_tar(tmp_path / "nan.tar", members)
    keys, stats, _ = stream_all(tmp_path / "nan.tar", drop_if={"NSFW": ["NSFW"]})
    assert keys == ["0000", "0002"], "NSFW samples dropped though their json has NaN; unreadable json fails closed"
    assert stats["repaired_bad_json"] == 2 and stats["skipped_filtered"] == 3
    keys, _, _ = stream_all(tmp_path / "nan.tar", min_score={"clip_score": 0.2})
    assert keys == ["0000", "0001", "0002"], "a NaN score passes no minimum"
    keys, _, _ = stream_all(tmp_path / "nan.tar")
    assert len(keys) == 5, "no filter: every sample, the unreadable json as meta = {}"


def test_a_shard_cut_before_a_samples_json_leaves_that_sample_out(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    write_tar(tmp_path / "whole.tar", pairs(3, jpg, json_of=lambda i: {"NSFW": "NSFW"}))
    with tarfile.open(tmp_path / "whole.tar") as t:
        offset = next(m.offset for m in t.getmembers() if m.name == "0002.json")
    (tmp_path / "cut.tar").write_bytes((tmp_path / "whole.tar").read_bytes()[:offset])
    keys, stats, problems = stream_all(tmp_path / "cut.tar")
    assert keys == ["0000", "0001"], "0002 lost its json: left out, not yielded with meta = {}"
    assert stats["shard_truncated"] == 1
    assert any('"0002"' in p["message"] and "left out" in p["message"] for p in problems)


def test_gzipped_tar_shards_are_read_and_prepared_as_plain_tars(tmp_path, web_images):
    import gzip

    from webli_io.prepare import prepare

    jpg = a_jpeg(web_images)
    write_tar(tmp_path / "plain.tar", pairs(5, jpg))
    src = tmp_path / "in"
    src.mkdir()
    (src / "s.tar.gz").write_bytes(gzip.compress((tmp_path / "plain.tar").read_bytes()))
    keys, stats, _ = stream_all(src / "s.tar.gz")
    assert keys == [f"{i:04d}" for i in range(5)] and stats["shard_corrupt"] == 0
    # equal_batches counts a compressed shard by reading it through.
    s = WebLIStream(str(src / "s.tar.gz"), batch_size=2, image_size=16, equal_batches="drop")
    assert sum(len(b["keys"]) for b in s) == 4
    manifest = prepare([str(src / "s.tar.gz")], str(tmp_path / "out"), progress=False)
    assert manifest["samples"] == 5
    out = tmp_path / "out" / "s.tar"
    assert out.exists() and not (tmp_path / "out" / "s.tar.gz").exists()
    assert tarfile.is_tarfile(out)


def test_exif_orientation_is_applied_on_request(tmp_path):
    import numpy as np
    from PIL import Image, ImageOps

    # Stored 96x48: left half red, right half blue; EXIF says "turn 90 degrees clockwise".
    img = Image.new("RGB", (96, 48), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 48, 48))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (48, 96)
    write_tar(tmp_path / "e.tar", [("0000.jpg", data), ("0000.txt", b"x")])

    def tile(**kw):
        (b,) = list(WebLIStream(str(tmp_path / "e.tar"), batch_size=1, image_size=16, **kw))
        return np.asarray(b["images"][0], dtype=int)

    stored, shown = tile(), tile(exif_transpose=True)
    # As stored (the default, like Pillow's open and torchvision's decode_jpeg): red on the left.
    assert stored[:, :6, 0].mean() > 200 and stored[:, -6:, 2].mean() > 200
    # As displayed: red on top, blue below.
    assert shown[:6, :, 0].mean() > 200 and shown[-6:, :, 2].mean() > 200
