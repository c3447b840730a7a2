"""`webli-io prepare` against hostile input (issue 12): it marks a shard done only when it read
the whole source, survives any sample's json, and fails clearly when a worker process dies (as
the out-of-memory killer does) — the next run does the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from _helpers import write_tar

from webli_io.prepare import DONE_DIR, PrepareError, prepare


def shard(path, jpg, n, json_of=lambda i: json.dumps({"language": "en"}).encode()):
    members = []
    for i in range(n):
        members += [(f"{i:04d}.jpg", jpg), (f"{i:04d}.txt", b"a red bicycle"), (f"{i:04d}.json", json_of(i))]
    write_tar(path, members)


@pytest.fixture
def jpg(web_images):
    return next(b for b in web_images if b[:2] == b"\xff\xd8")


def test_a_damaged_source_is_not_marked_done(tmp_path, jpg):
    src = tmp_path / "in"
    src.mkdir()
    shard(src / "a.tar", jpg, 4)
    shard(tmp_path / "whole.tar", jpg, 4)
    data = (tmp_path / "whole.tar").read_bytes()
    (src / "b.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(PrepareError, match=r"1 shard\(s\) could not be read whole .*b\.tar.*shard_truncated"):
        prepare([str(src / "*.tar")], str(tmp_path / "out"), progress=False)
    assert (tmp_path / "out" / DONE_DIR / "a.tar.json").exists()
    assert not (tmp_path / "out" / DONE_DIR / "b.tar.json").exists(), "redone by the next run"
    # The source mended: the next run does b alone.
    (src / "b.tar").write_bytes(data)
    m = prepare([str(src / "*.tar")], str(tmp_path / "out"), progress=False)
    assert m["shards_done_now"] == 1 and m["samples"] == 8
    # Accepting damage keeps the samples before it, and says so.
    (src / "b.tar").write_bytes(data[: len(data) // 2])
    m = prepare([str(src / "b.tar")], str(tmp_path / "out2"), progress=False, allow_damaged=True)
    (b,) = m["shards"]
    assert b["error"] and b["problems"]["shard_truncated"] == 1 and 0 < b["samples"] < 4


def test_any_json_is_survived_and_counted(tmp_path, jpg):
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    lone = b'{"language": "en", "title": "\\ud800 broken"}'
    nan = b'{"language": "en", "score": NaN}'
    bodies = [deep, lone, nan, b"{not json", json.dumps({"caption": "x"}).encode()]
    src = tmp_path / "in"
    src.mkdir()
    shard(src / "j.tar", jpg, len(bodies), json_of=lambda i: bodies[i])
    m = prepare([str(src / "j.tar")], str(tmp_path / "out"), progress=False)
    assert m["samples"] == 5
    (s,) = m["shards"]
    assert s["bad_json"] == 2  # the deep one and the garbage; the lone surrogate and NaN parse in Python
    out = tarfile.open(tmp_path / "out" / "j.tar")
    for member in out.getmembers():
        if member.name.endswith(".json"):
            meta = json.loads(out.extractfile(member).read())
            assert meta["language"] in ("en", "und")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _is_pool_worker(pid):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return False
    return "multiprocessing" in cmd and "resource_tracker" not in cmd


def test_a_killed_worker_fails_the_run_clearly_and_the_rerun_completes(tmp_path, jpg):
    src = tmp_path / "in"
    src.mkdir()
    for s in range(60):
        shard(src / f"s{s:03d}.tar", jpg, 40, json_of=lambda i: b"{}")  # no language: LID for every caption
    out = tmp_path / "out"
    script = (f"import sys; from webli_io.prepare import prepare, PrepareError\n"
              f"try:\n    prepare([{str(src / '*.tar')!r}], {str(out)!r}, workers=2, progress=False)\n"
              f"except PrepareError as e:\n    print('PrepareError:', e); sys.exit(3)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = threading.Event()

    def kill_a_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            done = list((out / DONE_DIR).glob("*.json")) if (out / DONE_DIR).exists() else []
            workers = [c for c in _children(proc.pid) if _is_pool_worker(c)]
            if done and workers:
                os.kill(workers[-1], signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.02)

    t = threading.Thread(target=kill_a_worker)
    t.start()
    stdout, stderr = proc.communicate(timeout=300)
    t.join()
    assert killed.is_set(), "the run ended before a worker could be killed"
    assert proc.returncode == 3, (stdout, stderr[-2000:])
    assert "worker process died" in stdout and "run the same command again" in stdout
    m = prepare([str(src / "*.tar")], str(out), workers=2, progress=False)
    assert m["samples"] == 60 * 40 and 0 < m["shards_done_now"] < 60


def test_prepare_reads_a_url_and_refuses_an_unreadable_one(tmp_path, jpg, monkeypatch):
    from _helpers import ShardServer

    monkeypatch.setenv("WEBLI_IO_RETRIES", "0")
    shard(tmp_path / "r.tar", jpg, 3)
    server = ShardServer()
    try:
        server.files["/r.tar"] = (tmp_path / "r.tar").read_bytes()
        m = prepare([f"{server.url}/r.tar?token=abc"], str(tmp_path / "out"), progress=False)
        assert m["samples"] == 3 and (tmp_path / "out" / "r.tar").exists()
        with pytest.raises(PrepareError, match="gone.tar.*shard_unreadable.*404"):
            prepare([f"{server.url}/gone.tar"], str(tmp_path / "out2"), progress=False)
        assert not (tmp_path / "out2" / DONE_DIR / "gone.tar.json").exists()
    finally:
        server.close()


def test_prepare_picks_each_samples_image_and_caption_by_the_streams_rule(tmp_path, jpg):
    """Issue 23, item 1: prepare re-picked a sample's image and caption its own way: a sample
    whose first image member is empty (the stream skips it) had its `.png` hashed, so
    `--dedup` dropped the only good copy of that image (the stream went from ['z'] to []); a
    sample with a blank caption (skipped too) was a first copy as well."""
    from webli_io import WebLIStream

    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "a.tar", [("a.jpg", b""), ("a.png", jpg), ("a.txt", b"an empty first image"),
                              ("b.jpg", jpg), ("b.txt", b"  "), ("b.json", b'{"caption": "not this one"}'),
                              ("z.jpg", jpg), ("z.txt", b"the good copy")])
    kw = dict(batch_size=4, image_size=16)
    before = [k for b in WebLIStream(str(src / "a.tar"), **kw) for k in b["keys"]]
    assert before == ["z"], "a: empty first image; b: a blank caption (not the json's)"
    prepare([str(src / "a.tar")], str(tmp_path / "out"), progress=False, dedup=True)
    after = [k for b in WebLIStream(str(tmp_path / "out" / "a.tar"), **kw) for k in b["keys"]]
    assert after == before
