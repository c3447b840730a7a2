"""The shard index (`webli-io index`): counts without reading sample data, resumes that seek
instead of re-reading what was consumed, stale indexes detected, on local and loopback-HTTP
shards written by webdataset."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter

import pytest

from webli_io import WebLIStream, _core
from webli_io.cli import main
from webli_io.index import build_index
from webli_io.stream import ShardError

SMALL = dict(batch_size=8, image_size=32)


def serve(server, paths):
    """Serve local shards on the loopback server; their URLs."""
    urls = []
    for p in paths:
        name = os.path.basename(p)
        with open(p, "rb") as f:
            server.files[f"/d/{name}"] = f.read()
        urls.append(f"{server.url}/d/{name}")
    return urls


def tar_bytes(server):
    return sum(len(v) for k, v in server.files.items() if k.endswith(".tar"))


def keys(batches):
    return [k for b in batches for k in b["keys"]]


def test_index_writes_a_checked_file_per_shard_and_does_not_redo_fresh_ones(make_shards, capsys):
    m = make_shards(shards=3, per_shard=7)
    assert main(["index", m["pattern"], "--field", "status"]) == 0
    assert "3 shards indexed now" in capsys.readouterr().out
    for p in m["paths"]:
        with open(p[: -len(".tar")] + ".index.json") as f:
            ix = json.load(f)
        assert ix["format"] == "webli-io shard index" and ix["version"] == 1 and ix["complete"] and ix["seekable"]
        assert ix["size"] == os.path.getsize(p) and ix["samples_read"] == 7
        assert len(ix["samples"]["key"]) == 7 and "status" in ix["fields"] and "language" in ix["fields"]
        assert all(set(meta) <= set(ix["fields"]) for meta in ix["samples"]["meta"])
        # Every byte range holds its sample: read alone, it is that key.
        with open(p, "rb") as f:
            data = f.read()
        for key, start, end in zip(ix["samples"]["key"], ix["samples"]["offset"], ix["samples"]["end"]):
            with tarfile.open(fileobj=io.BytesIO(data[start:end] + b"\0" * 1024)) as t:
                names = t.getnames()
            assert names and all(n.split(".")[0] == key for n in names), (key, names)
    summary = json.loads((m["dir"] / "index.json").read_text())
    assert {k: v["samples_read"] for k, v in summary["shards"].items()} == {os.path.basename(p): 7 for p in m["paths"]}
    assert main(["index", m["pattern"], "--field", "status", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["indexed"], r["fresh"]) == (0, 3), "a fresh index is not rebuilt"
    # A new field to keep: rebuilt.
    r = build_index(m["pattern"], fields=["url"], progress=False)
    assert r["indexed"] == 3


def test_remote_index_needs_an_output_folder(server, make_shards, capsys):
    urls = serve(server, make_shards(shards=1, per_shard=3)["paths"])
    assert main(["index", *urls]) == 1
    assert "-o DIR" in capsys.readouterr().err


def test_equal_batches_on_http_shards_need_an_index_and_then_read_no_sample_data(server, make_shards, tmp_path):
    m = make_shards(shards=6, per_shard=9)
    urls = serve(server, m["paths"])
    with pytest.raises(ShardError, match="webli-io index"):
        WebLIStream(urls, equal_batches="pad", **SMALL)
    server.log.clear()
    with pytest.raises(ShardError, match="webli-io index"):
        WebLIStream(urls, equal_batches="drop", subset=0.5, **SMALL)
    assert server.sent(".tar") == 0, "no silent download of the dataset"
    ix = str(tmp_path / "ix")
    r = build_index(urls, ix, progress=False)
    assert r["indexed"] == 6 and not r["failed"]
    for sel in ({}, {"subset": 0.5}, {"dedup": True}, {"min_score": {"i": 20}}):
        if "min_score" in sel:
            build_index(urls, ix, fields=["i"], progress=False)
        server.log.clear()
        remote = WebLIStream(urls, equal_batches="pad", index=ix, rank=0, world_size=2, **SMALL, **sel)
        assert server.sent(".tar") == 0, f"counting read sample data ({sel})"
        local = WebLIStream(m["paths"], equal_batches="pad", rank=0, world_size=2, **SMALL, **sel)
        assert remote._counts == local._counts, sel
    # The stream runs: every rank the same number of batches.
    per_rank = [len(list(WebLIStream(urls, equal_batches="pad", index=ix, rank=r, world_size=2, **SMALL))) for r in (0, 1)]
    assert per_rank[0] == per_rank[1] > 0


def test_an_index_without_a_filter_field_is_not_trusted(server, make_shards, tmp_path):
    urls = serve(server, make_shards(shards=2, per_shard=5)["paths"])
    ix = str(tmp_path / "ix")
    build_index(urls, ix, progress=False)
    with pytest.raises(ShardError, match="lacks the fields"):
        WebLIStream(urls, equal_batches="pad", index=ix, min_score={"i": 3}, **SMALL)


def _consume(stream, n_batches):
    it = iter(stream)
    got = [next(it) for _ in range(n_batches)]
    state = stream.state_dict()
    it.close()
    return got, state


@pytest.mark.parametrize("selection", [{}, {"subset": 0.7, "dedup": True}])
def test_a_resume_seeks_over_http_instead_of_rereading_and_stays_exact(server, make_shards, tmp_path, selection):
    m = make_shards(shards=16, per_shard=10)
    urls = serve(server, m["paths"])
    ix = str(tmp_path / "ix")
    build_index(urls, ix, progress=False)
    opts = dict(shuffle=True, seed=3, shuffle_buffer=24, index=ix, **SMALL, **selection)
    whole = keys(WebLIStream(urls, **opts))
    consumed_batches = int(len(whole) / 8 * 0.8)
    got, state = _consume(WebLIStream(urls, **opts), consumed_batches)
    consumed = keys(got)
    assert consumed == whole[: len(consumed)]
    epoch_bytes = tar_bytes(server)

    # The same layout: exactly the batches an uninterrupted run gives, reading far less.
    server.log.clear()
    again = WebLIStream(urls, **opts)
    again.load_state_dict(state)
    rest = keys(again)
    assert consumed + rest == whole
    assert server.sent(".tar") <= 0.5 * epoch_bytes, (server.sent(".tar"), epoch_bytes)
    assert again.stats()["index_passed"] > 0

    # Another layout (2 ranks): exactly the samples not seen, none twice, and still little read.
    server.log.clear()
    parts = []
    for rank in (0, 1):
        # equal_batches=None: no padding (the DDP default pads), so "none twice" is checkable.
        s = WebLIStream(urls, rank=rank, world_size=2, equal_batches=None, **opts)
        s.load_state_dict(state)
        parts += keys(s)
    assert Counter(consumed) + Counter(parts) == Counter(whole)
    assert server.sent(".tar") <= 0.5 * epoch_bytes, (server.sent(".tar"), epoch_bytes)

    # Without the index the resume reads what was consumed, and gives the same batches.
    server.log.clear()
    plain = WebLIStream(urls, **{**opts, "index": str(tmp_path / "none")})
    plain.load_state_dict(state)
    assert keys(plain) == rest
    assert server.sent(".tar") > 0.5 * epoch_bytes


def test_a_changed_shard_is_detected_and_read_without_its_index(make_shards, tmp_path):
    m = make_shards(shards=4, per_shard=10)
    build_index(m["paths"], progress=False)
    opts = dict(shuffle=True, seed=1, shuffle_buffer=10, **SMALL)
    whole = keys(WebLIStream(m["paths"], **opts))
    got, state = _consume(WebLIStream(m["paths"], **opts), 3)
    # The same bytes, written again: the modification time says the index may be stale.
    p = m["paths"][0]
    data = open(p, "rb").read()
    os.utime(p, ns=(os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns + 10**9))
    with open(p, "wb") as f:
        f.write(data)
    again = WebLIStream(m["paths"], **opts)
    again.load_state_dict(state)
    rest = keys(again)
    assert keys(got) + rest == whole
    assert again.stats()["index_stale"] >= 1
    assert any(p_["reason"] == "index_stale" and "webli-io index" in p_["message"] for p_ in again.problems())


def test_a_damaged_index_file_is_counted_and_not_used(make_shards):
    m = make_shards(shards=2, per_shard=6)
    build_index(m["paths"], progress=False)
    with open(m["paths"][1][: -len(".tar")] + ".index.json", "w") as f:
        f.write('{"format": "webli-io shard index", "version": 1, "garbage": true}')
    opts = dict(shuffle=True, seed=2, shuffle_buffer=4, **SMALL)
    whole = keys(WebLIStream(m["paths"], **opts))
    got, state = _consume(WebLIStream(m["paths"], **opts), 1)
    again = WebLIStream(m["paths"], **opts)
    again.load_state_dict(state)
    assert keys(got) + keys(again) == whole
    assert again.stats()["index_unusable"] >= 1


def test_count_samples_reads_the_index_or_the_headers(make_shards, tmp_path):
    m = make_shards(shards=2, per_shard=4)
    opts = _core.Options()
    assert _core.count_samples(m["paths"], opts) == [4, 4]
    build_index(m["paths"], str(tmp_path / "ix"), progress=False)
    assert _core.count_samples(m["paths"], _core.Options(index=str(tmp_path / "ix"))) == [4, 4]
    with pytest.raises(FileNotFoundError):
        _core.count_samples([str(tmp_path / "missing.tar")], opts)


def test_train_on_http_shards_two_torchrun_ranks_then_resume_on_one(server, make_shards, tmp_path):
    """The documented multi-node command on remote shards: it needs the index, then starts,
    checkpoints both ranks' positions, and resumes on another world size."""
    import subprocess
    import sys

    from _helpers import train_two_ranks_then_resume

    ds = make_shards(shards=4, per_shard=8)
    urls = serve(server, ds["paths"])
    ix = str(tmp_path / "ix")
    out = tmp_path / "run"
    no_index = subprocess.run([sys.executable, "-m", "webli_io", "train", *urls, "--model", "tiny", "--image-size", "32",
                               "--batch-size", "4", "--out", str(out), "--no-eval", "--steps", "1"],
                              capture_output=True, text=True, timeout=300)
    assert no_index.returncode != 0 and "webli-io index" in no_index.stderr, no_index.stderr[-2000:]
    assert "FileNotFoundError" not in no_index.stderr
    build_index(urls, ix, progress=False)
    train_two_ranks_then_resume(urls, out, "--index", ix)


def test_without_selection_a_resume_passes_whole_shards_by_their_count(server, make_shards, tmp_path):
    """The index itself served over http: a resume at ~80% loads the summary and the index files
    of the few shards it stops in, not one per shard it passes."""
    m = make_shards(shards=40, per_shard=5)
    urls = serve(server, m["paths"])
    ix = tmp_path / "ix"
    build_index(urls, str(ix), progress=False)
    for f in ix.iterdir():
        server.files[f"/ix/{f.name}"] = f.read_bytes()
    opts = dict(shuffle=True, seed=4, shuffle_buffer=10, index=server.url + "/ix/", **SMALL)
    whole = keys(WebLIStream(urls, **opts))
    got, state = _consume(WebLIStream(urls, **opts), int(len(whole) / 8 * 0.8))
    server.log.clear()
    again = WebLIStream(urls, **opts)
    again.load_state_dict(state)
    rest = keys(again)
    assert keys(got) + rest == whole
    loaded = [p for p, r, _ in server.log if p.endswith(".index.json")]
    assert 0 < len(loaded) <= 12, f"{len(loaded)} index files loaded for a resume over 40 shards"
    assert again.stats()["index_passed"] >= len(keys(got))


def test_ray_engine_writes_the_same_index(make_shards, tmp_path, capsys):
    """`webli-io index --engine ray`: a Ray Data task per shard (a local Ray here), the same files
    as the local engine, and a bad shard reported, not fatal."""
    m = make_shards(shards=3, per_shard=4)
    bad = tmp_path / "data" / "bad.tar"
    bad.write_bytes(b"")
    build_index(m["paths"], str(tmp_path / "local"), progress=False)
    assert main(["index", *m["paths"], str(bad), "-o", str(tmp_path / "ray"), "--engine", "ray", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["indexed"] == 4 and not r["failed"], r  # an empty tar indexes to no samples
    for p in m["paths"]:
        name = os.path.basename(p)[: -len(".tar")] + ".index.json"
        assert json.loads((tmp_path / "ray" / name).read_text()) == json.loads((tmp_path / "local" / name).read_text())
    summary = json.loads((tmp_path / "ray" / "index.json").read_text())
    assert summary["shards"]["bad.tar"]["samples"] == 0


def test_a_million_remote_names_are_a_run_dealt_exactly_once_per_epoch():
    """Issue 27: a brace pattern of remote names is one run (a pickle of bytes, not of a million
    strings), and the epoch's random-access order deals every shard to exactly one reader."""
    import pickle

    stream = WebLIStream("s3://bucket/webli/{0000000..0999999}.tar", shuffle=True, seed=3)
    assert len(stream.shards) == 1_000_000 and stream.shards[123] == "s3://bucket/webli/0000123.tar"
    assert stream.shards[-1] == "s3://bucket/webli/0999999.tar"
    assert len(pickle.dumps(stream)) < 20_000
    again = pickle.loads(pickle.dumps(stream.shards))
    assert again == stream.shards and again.digest() == stream.shards.digest()
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        shares = [stream.shards_for(rank, 4, worker, 2) for rank in range(4) for worker in range(2)]
        dealt = [name for share in shares for name in share]
        assert len(dealt) == 1_000_000 and len(set(dealt)) == 1_000_000
        if epoch == 0:
            first = shares[0][:5]
    assert shares[0][:5] != first, "another epoch, another order"
    # The inverse: where a shard stands in the epoch's order.
    n, seed = len(stream.shards), stream._order_seed()
    order = _core.order_at(n, seed, True, 0, 1, 1000)
    assert [_core.position_of(n, seed, True, i) for i in order] == list(range(1000))
    # The same names given one by one make the same list (and digest: a state resumes either way).
    few = WebLIStream("s3://b/{00..09}.tar")
    assert few.shards == [f"s3://b/{i:02d}.tar" for i in range(10)]
    assert few.shards.digest() == _core.ShardNames.from_names([f"s3://b/{i:02d}.tar" for i in range(10)]).digest()
