"""Hostile input, part of the threat model (issue 12): a shard name is data and never becomes a
command; a server's redirect cannot lead the reader off http(s) or end the epoch silently; no
secret (a presigned URL's signature or session token) reaches a message or a log."""

from __future__ import annotations

import logging
import os
import shutil
import sys

import pytest

from webli_io import WebLIStream, expand_shards


def test_a_file_named_like_a_pipe_is_a_path_never_a_command(make_shards, tmp_path, monkeypatch):
    ds = make_shards(shards=1, per_shard=3)
    d = tmp_path / "hostile"
    d.mkdir()
    evil = "pipe:echo INJECTED > PWNED.txt;.tar"
    shutil.copy(ds["paths"][0], d / evil)
    monkeypatch.chdir(d)
    monkeypatch.delenv("WEBLI_IO_ALLOW_PIPE", raising=False)
    stream = WebLIStream("*.tar", batch_size=2, image_size=16, allow_pipe=True)  # even when pipes are allowed
    assert stream.shards == [f"./{evil}"]
    assert len([k for b in stream for k in b["keys"]]) == 3  # read as the local tar it is
    assert not (d / "PWNED.txt").exists() and not os.path.exists("PWNED.txt")


def test_pipe_shards_need_consent(make_shards, monkeypatch, tmp_path):
    ds = make_shards(shards=1, per_shard=2)
    monkeypatch.delenv("WEBLI_IO_ALLOW_PIPE", raising=False)
    marker = tmp_path / "ran"
    spec = f"pipe:touch {marker}; cat {ds['paths'][0]}"
    with pytest.raises(ValueError, match="runs a shell command: pass allow_pipe=True"):
        WebLIStream(spec, batch_size=2, image_size=16)
    with pytest.raises(ValueError, match="allow_pipe"):
        expand_shards([spec])
    assert not marker.exists()
    assert len([k for b in WebLIStream(spec, batch_size=2, image_size=16, allow_pipe=True) for k in b["keys"]]) == 2
    assert marker.exists()
    monkeypatch.setenv("WEBLI_IO_ALLOW_PIPE", "1")
    assert expand_shards([spec]) == [spec]


def test_a_redirect_off_http_is_counted_and_the_epoch_goes_on(server, make_shards, fast_retries):
    ds = make_shards(shards=2, per_shard=3)
    for i, p in enumerate(ds["paths"]):
        server.files[f"/s{i}.tar"] = open(p, "rb").read()
    server.redirects["/evil.tar"] = "file:///etc/passwd"
    server.redirects["/hop.tar"] = "/s1.tar"  # a relative http redirect is followed
    stream = WebLIStream([f"{server.url}/evil.tar", f"{server.url}/s0.tar", f"{server.url}/hop.tar"], batch_size=2, image_size=16)
    keys = [k for b in stream for k in b["keys"]]
    assert len(keys) == 6, "the good shards after the bad one are read"
    stats = stream.stats()
    assert stats["shard_unreadable"] == 1 and stats["skipped_panic"] == 0
    (p,) = [p for p in stream.problems() if p["reason"] == "shard_unreadable"]
    assert "redirects to a file: URL" in p["message"]


def test_no_secret_reaches_a_message_or_the_log(server, fast_retries, caplog):
    secret = "X-Amz-Signature=0123456789abcdef&X-Amz-Security-Token=SESSIONTOKENSECRET"
    server.status["/forbidden.tar"] = 403
    server.status["/broken.tar"] = 500
    urls = [f"{server.url}/forbidden.tar?{secret}", f"{server.url}/broken.tar?{secret}",
            f"http://user:hunter2@127.0.0.1:1/refused.tar?{secret}"]
    with caplog.at_level(logging.DEBUG, logger="webli_io"):
        stream = WebLIStream(urls[1:], batch_size=2, image_size=16)
        assert list(stream) == []
        # A 403 ends the stream (issue 28): its message is redacted as well.
        with pytest.raises(PermissionError) as refused:
            list(WebLIStream(urls[:1], batch_size=2, image_size=16))
    text = " ".join(p["message"] + p["shard"] for p in stream.problems()) + caplog.text + str(refused.value)
    assert stream.stats()["shard_unreadable"] == 2
    assert "HTTP 403" in text and "HTTP 500" in text
    for leaked in ("0123456789abcdef", "SESSIONTOKENSECRET", "hunter2"):
        assert leaked not in text, leaked
    assert "?<redacted>" in text


def test_a_folder_or_a_fifo_is_not_a_missing_shard(tmp_path):
    with pytest.raises(ValueError, match="holds no shard"):
        WebLIStream(str(tmp_path), batch_size=2)
    os.mkfifo(tmp_path / "f.tar")
    with pytest.raises(ValueError, match="holds no shard"):
        WebLIStream(str(tmp_path), batch_size=2)  # a folder's FIFO is not a shard either
    with pytest.raises(ValueError, match="not a regular file"):
        WebLIStream(str(tmp_path / "f.tar"), batch_size=2)


def test_a_typo_in_a_mixture_is_a_config_error(make_shards):
    from webli_io import ConfigError

    ds = make_shards(shards=1, per_shard=2)
    with pytest.raises(ConfigError, match='mixture: "xx" is not a language code') as e:
        WebLIStream(ds["paths"], mixture={"xx": 0.5})
    assert e.value.setting == "mixture"


def test_a_stalled_server_neither_holds_break_nor_close(server, make_shards):
    import time

    ds = make_shards(shards=2, per_shard=8)
    server.files["/ok.tar"] = open(ds["paths"][0], "rb").read()
    server.files["/stall.tar"] = open(ds["paths"][1], "rb").read()
    server.stall["/stall.tar"] = 30
    stream = WebLIStream([f"{server.url}/ok.tar", f"{server.url}/stall.tar"], batch_size=2, image_size=16, num_threads=1)
    it = iter(stream)
    next(it)
    start = time.monotonic()
    del it  # the generator closes its native stream
    import gc

    gc.collect()
    assert time.monotonic() - start < 2.5, "close() came back while the server still stalls"


def test_ctrl_c_arrives_as_keyboard_interrupt_while_a_server_stalls(server, make_shards):
    import signal
    import threading
    import time

    ds = make_shards(shards=1, per_shard=4)
    server.files["/stall.tar"] = open(ds["paths"][0], "rb").read()
    server.stall["/stall.tar"] = 30
    stream = WebLIStream(f"{server.url}/stall.tar", batch_size=100, image_size=16, num_threads=1)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        list(stream)
    assert time.monotonic() - start < 2.5


def test_stalls_and_trickles_time_out_and_the_epoch_goes_on(server, make_shards, monkeypatch):
    import time

    monkeypatch.setenv("WEBLI_IO_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("WEBLI_IO_RETRIES", "1")
    monkeypatch.setenv("WEBLI_IO_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("WEBLI_IO_MIN_RATE", "2000")
    monkeypatch.setenv("WEBLI_IO_RATE_WINDOW", "0.5")
    ds = make_shards(shards=3, per_shard=4)
    for name, p in zip(("stall", "trickle", "ok"), ds["paths"]):
        server.files[f"/{name}.tar"] = open(p, "rb").read()
    server.stall["/stall.tar"] = 30
    server.trickle["/trickle.tar"] = 0.1  # one byte every 0.1 s: never a read timeout, far under the rate
    start = time.monotonic()
    stream = WebLIStream([f"{server.url}/{n}.tar" for n in ("stall", "trickle", "ok")], batch_size=2, image_size=16)
    keys = [k for b in stream for k in b["keys"]]
    assert time.monotonic() - start < 20
    assert len(keys) >= 4, "the good shard after the slow ones is read"
    stats = stream.stats()
    assert stats["shard_truncated"] + stats["shard_unreadable"] == 2, stats
    messages = " ".join(p["message"] for p in stream.problems())
    assert "minimum rate" in messages and "timed out" in messages.lower()


def test_strict_makes_a_lost_shard_an_error(server, make_shards, fast_retries):
    from webli_io.stream import ShardError

    ds = make_shards(shards=1, per_shard=3)
    server.files["/ok.tar"] = open(ds["paths"][0], "rb").read()
    urls = [f"{server.url}/ok.tar", f"{server.url}/gone-1.tar", f"{server.url}/gone-2.tar"]
    lenient = WebLIStream(urls, batch_size=2, image_size=16)
    assert len([k for b in lenient for k in b["keys"]]) == 3 and lenient.stats()["shard_unreadable"] == 2
    strict = WebLIStream(urls, batch_size=2, image_size=16, strict=True)
    with pytest.raises(ShardError, match="gone-1.tar: shard_unreadable .*HTTP 404"):
        list(strict)


def test_a_crafted_checkpoint_cannot_run_code(make_shards, tmp_path):
    import pickle

    from test_train import args_for

    from webli_io.train import train

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ds = make_shards(shards=2, per_shard=4)
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "checkpoint.pt", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        train(args_for(ds["paths"], out, "--steps", "1", "--resume"), log=lambda *a: None)
    assert not marker.exists()


def test_a_corrupt_parquet_shard_is_named(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(ValueError, match="bad.parquet"):
        WebLIStream(str(bad), batch_size=2, equal_batches="drop")


def test_index_eval_reads_images_a_few_at_a_time():
    from concurrent.futures import ThreadPoolExecutor

    from webli_io.evalset import bounded_map

    taken = []

    def items():
        for i in range(1000):
            taken.append(i)
            yield i

    with ThreadPoolExecutor(2) as ex:
        it = bounded_map(ex, lambda x: x * 2, items(), 8)
        assert [next(it) for _ in range(3)] == [0, 2, 4]
        assert len(taken) <= 8 + 3, "the input is read as the results are taken, not all at once"
        assert list(it)[-1] == 1998


def _two_versions(tmp_path, web_images):
    """A shard in two versions with the same keys: A's captions say "A", B's say "B" (and B's
    images are other photos), so a sample spliced from both would show it."""
    from _helpers import write_tar

    def version(tag, shift):
        members = []
        for i in range(12):
            members += [(f"k{i:03d}.jpg", web_images[(i + shift) % len(web_images)]), (f"k{i:03d}.txt", f"{tag} caption {i}".encode())]
        return open(write_tar(tmp_path / f"{tag}.tar", members), "rb").read()

    return version("A", 0), version("B", 1)


@pytest.mark.parametrize("honour_if_match", [True, False])
def test_a_resumed_read_never_splices_two_versions_of_an_object(server, tmp_path, web_images, fast_retries, honour_if_match):
    a, b = _two_versions(tmp_path, web_images)
    server.files["/s.tar"] = a
    server.drops["/s.tar"] = 1  # the first answer stops half-way ...
    server.replace_after_first["/s.tar"] = b  # ... and the object is replaced before the retry
    server.honour_if_match = honour_if_match  # a server that answers 412, or one that ignores If-Match
    s = WebLIStream(server.url + "/s.tar", batch_size=2, image_size=16)
    texts = [t for batch in s for t in batch["texts"]]
    assert texts and all(t.startswith("A ") for t in texts), texts
    st = s.stats()
    assert st["shard_changed"] == 1, st
    assert any(p["reason"] == "shard_changed" and "changed since it was first read" in p["message"] for p in s.problems())
    if honour_if_match:
        assert [r for path, r, n in server.log if path == "/s.tar"][1].startswith("bytes="), "a conditional ranged retry, refused"


def test_a_ranged_answer_that_does_not_continue_the_object_is_not_used(server, tmp_path, web_images, fast_retries):
    a, _ = _two_versions(tmp_path, web_images)
    server.files["/s.tar"] = a
    server.drops["/s.tar"] = 1
    server.wrong_range["/s.tar"] = 0  # a 206 from byte 0 when the rest was asked for
    s = WebLIStream(server.url + "/s.tar", batch_size=2, image_size=16)
    keys = [k for batch in s for k in batch["keys"]]
    assert len(keys) == len(set(keys)) > 0, "no sample twice"
    assert s.stats()["shard_changed"] == 1


def _serve_shards(server, make_shards, n=2):
    local = make_shards(shards=n, per_shard=5)
    for p in local["paths"]:
        with open(p, "rb") as f:
            server.files["/" + os.path.basename(p)] = f.read()
    return [server.url + "/" + os.path.basename(p) for p in local["paths"]]


def test_the_cache_never_deletes_what_it_does_not_own(server, make_shards, tmp_path, fast_retries):
    from webli_io import ConfigError

    urls = _serve_shards(server, make_shards)
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("notes.txt", "model.pt", "train-000.tar"):
        (mine / name).write_bytes(b"the user's" * 100)
    with pytest.raises(ConfigError, match="not a webli-io cache") as e:
        WebLIStream(urls, cache_dir=str(mine), cache_max_bytes=10_000)
    assert e.value.setting == "cache_dir"
    assert sorted(p.name for p in mine.iterdir()) == ["model.pt", "notes.txt", "train-000.tar"]
    # A cache of its own; a file the user drops in later is never evicted, a killed run's
    # partial file is.
    cache = tmp_path / "cache"
    keys = [k for b in WebLIStream(urls[:1], batch_size=5, image_size=16, cache_dir=str(cache)) for k in b["keys"]]
    assert len(keys) == 5 and (cache / ".webli-io-cache").exists()
    (cache / "precious.ckpt").write_bytes(b"x" * 50_000)
    (cache / ".partial-999999999-1-dead.tar").write_bytes(b"half")
    limit = min(len(v) for v in server.files.values())
    list(WebLIStream(urls[1:], batch_size=5, image_size=16, cache_dir=str(cache), cache_max_bytes=limit))
    assert (cache / "precious.ckpt").exists(), "not the cache's: never removed"
    assert not (cache / ".partial-999999999-1-dead.tar").exists(), "a partial file of a process that is gone is removed"


def test_a_cut_body_without_length_is_never_cached_as_whole(server, make_shards, tmp_path, fast_retries):
    urls = _serve_shards(server, make_shards, n=1)
    path = "/" + urls[0].rsplit("/", 1)[1]
    server.no_length.add(path)
    server.drops[path] = 1  # half the body, then the connection closes: it looks like an end
    cache = tmp_path / "cache"
    first = WebLIStream(urls, batch_size=5, image_size=16, cache_dir=str(cache))
    assert len([k for b in first for k in b["keys"]]) < 5 and first.stats()["shard_truncated"] == 1
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")], "half a shard is not kept"
    server.log.clear()
    again = [k for b in WebLIStream(urls, batch_size=5, image_size=16, cache_dir=str(cache)) for k in b["keys"]]
    assert len(again) == 5 and server.log, "read from the server again, whole"


def test_a_damaged_cache_entry_is_read_again_and_signatures_share_an_entry(server, make_shards, tmp_path, fast_retries):
    urls = _serve_shards(server, make_shards, n=1)
    # (A bound of its own: without one the cache keeps a tenth of the disk free, and keeps
    # nothing on a fuller disk.)
    cache = tmp_path / "cache"
    signed = [urls[0] + "?X-Amz-Signature=aaa&X-Amz-Date=1", urls[0] + "?X-Amz-Signature=bbb&X-Amz-Date=2"]
    assert len([k for b in WebLIStream(signed[0], batch_size=5, image_size=16, cache_dir=str(cache), cache_max_bytes=1 << 40) for k in b["keys"]]) == 5
    server.log.clear()
    assert len([k for b in WebLIStream(signed[1], batch_size=5, image_size=16, cache_dir=str(cache), cache_max_bytes=1 << 40) for k in b["keys"]]) == 5
    assert not server.log, "another signature of the same object: read from the cache"
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated on disk
    got = [k for b in WebLIStream(signed[1], batch_size=5, image_size=16, cache_dir=str(cache), cache_max_bytes=1 << 40) for k in b["keys"]]
    assert len(got) == 5 and server.log, "a damaged entry is not used: read from the server, whole"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent_even_while_a_server_stalls(server, make_shards, tmp_path):
    """Issue 28, item 4: a DataLoader worker blocked in a read (here a server that stalls for
    two minutes) must not outlive its killed parent (torch checks the parent only between
    batches)."""
    import signal
    import subprocess
    import time

    ds = make_shards(shards=2, per_shard=8)
    for i in range(2):
        server.files[f"/s{i}.tar"] = open(ds["paths"][i], "rb").read()
        server.stall[f"/s{i}.tar"] = 120
    code = f"""
import os, sys, threading
from torch.utils.data import DataLoader
from webli_io import WebLIStream
s = WebLIStream([{server.url + '/s0.tar'!r}, {server.url + '/s1.tar'!r}], batch_size=2, image_size=16, num_threads=1)
loader = DataLoader(s, batch_size=None, num_workers=2, timeout=0)
it = iter(loader)
def children():
    out = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and int(open(f"/proc/{{d}}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                out.append(d)
        except (OSError, ValueError, IndexError):
            pass
    return out
threading.Timer(3.0, lambda: print(" ".join(children()), flush=True)).start()
next(it)
"""
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) >= 2, workers
        for _ in range(100):  # the workers are in their reads: the server saw both requests
            if len([p for p, _, _ in server.log]) >= 2:
                break
            time.sleep(0.1)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        alive = workers
        for _ in range(100):  # a bound on liveness, not a speed assertion: they stalled for minutes
            alive = [p for p in workers if _alive(p)]
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, f"workers {alive} outlived their killed parent"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
