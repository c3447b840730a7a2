"""Bad input never crashes the stream and is never lost silently: each case is skipped (or
repaired) and counted by reason, the good samples around it still arrive."""

from __future__ import annotations

import io
import json
import struct
import tarfile

import pytest
from _helpers import write_tar
from PIL import Image
from torch.utils.data import DataLoader

from webli_io import WebLIStream, decode_resize


def jpeg_bomb(real_jpeg: bytes, width: int = 30000, height: int = 30000) -> bytes:
    """A real JPEG whose frame header (SOF0) declares `width x height`: what a decompression bomb
    looks like to a decoder before it allocates."""
    data = bytearray(real_jpeg)
    i = 2
    while i < len(data):
        assert data[i] == 0xFF
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def good(web_images):
    return [b for b in web_images if b[:2] == b"\xff\xd8"]


def run(paths, **kw):
    stream = WebLIStream(paths, batch_size=4, image_size=16, **kw)
    keys = [k for b in stream for k in b["keys"]]
    return keys, stream.stats(), stream.problems()


def test_every_bad_case_is_skipped_and_counted(tmp_path, good, photos):
    jpg = good[0]
    bad_png = bytearray(png_bytes(photos[2].resize((64, 48))))
    bad_png[len(bad_png) // 2] ^= 0xFF  # breaks an IDAT chunk's CRC / data
    members = [
        ("ok1.jpg", jpg), ("ok1.txt", b"fine"),
        ("corrupt.jpg", b"\xff\xd8\xff\xe0 not a jpeg at all"), ("corrupt.txt", b"x"),
        ("half.jpg", jpg[: len(jpg) // 2]), ("half.txt", b"cut in half"),
        ("badcrc.png", bytes(bad_png)), ("badcrc.txt", b"bad crc"),
        ("zero.jpg", b""), ("zero.txt", b"zero bytes"),
        ("nocap.jpg", jpg), ("nocap.json", json.dumps({"url": "u"}).encode()),
        ("onlycap.txt", b"a caption with no image"),
        ("bomb.jpg", jpeg_bomb(jpg)), ("bomb.txt", b"30000 x 30000"),
        ("garbage.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 garbage"), ("garbage.txt", b"g"),
        ("notimage.png", b"hello world, not an image"), ("notimage.txt", b"n"),
        ("wrongext.jpg", png_bytes(photos[0].resize((40, 40)))), ("wrongext.txt", b"a png named jpg"),
        ("badutf8.jpg", jpg), ("badutf8.txt", b"caf\xe9 au lait"),
        ("badjson.jpg", jpg), ("badjson.txt", b"json broken"), ("badjson.json", b"{not json"),
        ("ok2.jpg", jpg), ("ok2.txt", b"fine too"),
    ]
    keys, st, problems = run(write_tar(tmp_path / "bad.tar", members))
    assert keys == ["ok1", "wrongext", "badutf8", "badjson", "ok2"]
    assert st["samples_read"] == 14
    reasons = {p["key"]: p["reason"] for p in problems}
    for key in ("corrupt", "half", "badcrc", "garbage"):
        assert reasons[key] == "skipped_corrupt_image", key
    # Bytes that no decoder recognises at all.
    assert reasons["notimage"] == "skipped_unsupported_image"
    assert st["skipped_corrupt_image"] == 4 and st["skipped_unsupported_image"] == 1
    assert st["skipped_empty_image"] == 1
    assert st["skipped_missing_caption"] == 1
    assert st["skipped_missing_image"] == 1
    assert st["skipped_too_large"] == 1
    assert st["repaired_invalid_utf8_caption"] == 1
    assert st["repaired_bad_json"] == 1
    assert st["samples_yielded"] == 5
    assert reasons["bomb"] == "skipped_too_large" and reasons["zero"] == "skipped_empty_image"
    assert all(p["shard"].endswith("bad.tar") for p in problems)


def test_repaired_caption_and_meta(tmp_path, good):
    members = [("a.jpg", good[0]), ("a.txt", b"caf\xe9"), ("a.json", b"[1, 2]")]
    stream = WebLIStream(write_tar(tmp_path / "r.tar", members), batch_size=2, image_size=16)
    batch = next(iter(stream))
    assert batch["texts"] == ["caf\ufffd"] and batch["meta"] == [{}]


def test_bomb_is_rejected_on_its_header(good):
    bomb = jpeg_bomb(good[0])
    with pytest.raises(ValueError, match="skipped_too_large"):
        decode_resize(bomb, 32)
    # A user-set limit applies to ordinary images too.
    with pytest.raises(ValueError, match="over the limit of 1000"):
        decode_resize(good[0], 32, max_pixels=1000)


def test_png_bomb_under_a_lower_limit(tmp_path, good):
    # A real 12000 x 12000 PNG of one colour: 430 MB of pixels in ~400 KB of file.
    bomb = png_bytes(Image.new("L", (12000, 12000)))
    assert len(bomb) < 1_000_000
    members = [("b.png", bomb), ("b.txt", b"bomb"), ("ok.jpg", good[1]), ("ok.txt", b"ok")]
    keys, st, _ = run(write_tar(tmp_path / "b.tar", members), max_pixels=50_000_000)
    assert keys == ["ok"] and st["skipped_too_large"] == 1


@pytest.mark.parametrize("cut_from_end", [700, 3000, 20000])
def test_truncated_tar_keeps_what_came_before(tmp_path, good, cut_from_end):
    members = []
    for i in range(6):
        members += [(f"s{i}.jpg", good[i % len(good)]), (f"s{i}.txt", f"caption {i}".encode())]
    path = write_tar(tmp_path / "t.tar", members)
    with tarfile.open(path) as t:
        last = t.getmembers()[-1]
        content_end = last.offset_data + last.size  # tarfile pads the rest with zero blocks
    data = open(path, "rb").read()
    open(path, "wb").write(data[: content_end - cut_from_end])
    other = write_tar(tmp_path / "u.tar", [("u.jpg", good[0]), ("u.txt", b"next shard")])
    keys, st, problems = run([path, other])
    assert keys[-1] == "u", "the next shard is still read"
    assert 1 <= len(keys) - 1 <= 5 and keys[: len(keys) - 1] == [f"s{i}" for i in range(len(keys) - 1)]
    assert st["shard_truncated"] == 1
    assert any(p["reason"] == "shard_truncated" for p in problems)


def test_garbage_tar_header(tmp_path, good):
    members = [("a.jpg", good[0]), ("a.txt", b"a"), ("b.jpg", good[1]), ("b.txt", b"b")]
    path = write_tar(tmp_path / "g.tar", members)
    data = bytearray(open(path, "rb").read())
    # The header of b.jpg follows a.jpg's header + data and a.txt's header + data.
    off = 512 + (len(good[0]) + 511) // 512 * 512 + 512 + 512
    data[off : off + 512] = b"\x13" * 512
    open(path, "wb").write(bytes(data))
    keys, st, problems = run(path)
    # "a" came before the damage, but a corrupt header may have hidden more of its members (its
    # json, say): it is left out and named, never yielded incomplete.
    assert keys == [] and st["shard_corrupt"] == 1
    assert '"a", may be incomplete and is left out' in problems[0]["message"]


def test_not_a_tar_at_all(tmp_path, good):
    path = tmp_path / "junk.tar"
    path.write_bytes(b"this is not a tar file" * 100)
    other = write_tar(tmp_path / "ok.tar", [("k.jpg", good[0]), ("k.txt", b"k")])
    keys, st, _ = run([str(path), other])
    assert keys == ["k"] and st["shard_corrupt"] + st["shard_truncated"] == 1


def test_stats_are_summed_over_dataloader_workers(tmp_path, good):
    paths = []
    for s in range(4):
        members = [(f"{s}good{i}.jpg", good[i % len(good)]) for i in range(3)]
        members = [m for i, m in enumerate(members) for m in (m, (f"{s}good{i}.txt", b"c"))]
        members += [(f"{s}bad.jpg", b"\xff\xd8junk"), (f"{s}bad.txt", b"bad"), (f"{s}nocap.jpg", good[0])]
        paths.append(write_tar(tmp_path / f"w{s}.tar", members))
    stream = WebLIStream(paths, batch_size=2, image_size=16, num_threads=1)
    n = sum(len(b["keys"]) for b in DataLoader(stream, batch_size=None, num_workers=2))
    st = stream.stats()
    assert n == 12 == st["samples_yielded"]
    assert st["skipped_unsupported_image"] == 4 and st["skipped_missing_caption"] == 4
    assert st["samples_read"] == 20 and st["shards_opened"] == 4
    # A second epoch adds to the counters; reset_stats() zeroes them.
    n2 = sum(len(b["keys"]) for b in DataLoader(stream, batch_size=None, num_workers=2))
    assert n2 == 12 and stream.stats()["samples_yielded"] == 24
    stream.reset_stats()
    assert stream.stats()["samples_yielded"] == 0
