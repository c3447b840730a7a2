"""The WebDataset sample rules exist once, in the core: `prepare` and `index-eval` read shards
through `_core.TarSamples`, so they group and number samples exactly as the stream does
(macOS `._` dot-files, `__key__`-style entries, multi-dot extensions, upper-case extensions)."""

from __future__ import annotations

import json

from _helpers import write_tar

from webli_io import WebLIStream, _core
from webli_io.prepare import prepare


def test_prepare_and_stream_read_the_same_samples(tmp_path, web_images):
    jpg = next(b for b in web_images if b[:2] == b"\xff\xd8")
    members = []
    for i in range(4):
        k = f"dir/{i:04d}"
        members += [(f"{k}.JPG", jpg), (f"{k}.txt", f"caption {i}".encode()), (f"{k}.json", json.dumps({"language": "en"}).encode())]
        # AppleDouble files that macOS tar adds beside each member: not samples of the stream.
        members += [(f"dir/._{i:04d}.jpg", b"\x00\x05\x16\x07 mac metadata")]
    members += [("dir/0009.seg.jpg", jpg), ("dir/0009.seg.txt", b"multi-dot")]
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "s.tar", members)

    core = [(key, [ext for ext, _ in ms]) for key, ms in _core.TarSamples(str(src / "s.tar"))]
    assert [k for k, _ in core] == ["dir/0000", "dir/0001", "dir/0002", "dir/0003", "dir/0009"]
    assert core[0][1] == ["jpg", "txt", "json"] and core[-1][1] == ["seg.jpg", "seg.txt"]

    streamed = [k for b in WebLIStream(str(src / "s.tar"), batch_size=8, image_size=16) for k in b["keys"]]
    manifest = prepare([str(src / "s.tar")], str(tmp_path / "out"), progress=False)
    assert manifest["samples"] == len(core) == 5
    out = sorted(str(p) for p in (tmp_path / "out").glob("*.tar"))
    prepared = [k for b in WebLIStream(out, batch_size=8, image_size=16) for k in b["keys"]]
    assert prepared == streamed == [k for k, _ in core]


def test_tar_samples_reports_damage(tmp_path, web_images):
    jpg = next(b for b in web_images if b[:2] == b"\xff\xd8")
    write_tar(tmp_path / "s.tar", [(f"{i:03d}.jpg", jpg) for i in range(3)])
    data = (tmp_path / "s.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    samples = _core.TarSamples(str(tmp_path / "cut.tar"))
    keys = [k for k, _ in samples]
    assert keys == ["000"] or keys == ["000", "001"]
    assert samples.stats()["shard_truncated"] == 1
    assert samples.problems()[0]["reason"] == "shard_truncated"
