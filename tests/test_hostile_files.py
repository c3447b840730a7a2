"""The files webli-io writes (issue 28, item 7): one writer per output folder, unique
temporaries a planted symlink cannot redirect, done markers that hold the output's size and
hash and are checked, and no write over the input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _helpers import write_tar

from webli_io._files import FolderBusy, atomic_file
from webli_io.prepare import DONE_DIR, prepare


def shard(path, jpg, n, caption=b"a red bicycle"):
    members = []
    for i in range(n):
        members += [(f"{i:04d}.jpg", jpg), (f"{i:04d}.txt", caption), (f"{i:04d}.json", b'{"language": "en"}')]
    write_tar(path, members)


@pytest.fixture
def jpg(web_images):
    return next(b for b in web_images if b[:2] == b"\xff\xd8")


def test_a_second_writer_into_one_folder_fails_at_once_naming_the_first(tmp_path, jpg):
    shard(tmp_path / "a.tar", jpg, 3)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom webli_io._files import folder_lock\n"
         f"with folder_lock({str(out)!r}, 'prepare'):\n    print('held', flush=True)\n    time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=f"another prepare run \\(pid {holder.pid}\\)"):
            prepare([str(tmp_path / "a.tar")], str(out), progress=False)
        assert not (out / "a.tar").exists()
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: no stale lock to clean by hand.
    assert prepare([str(tmp_path / "a.tar")], str(out), progress=False)["samples"] == 3


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path, jpg):
    (tmp_path / "in").mkdir()
    shard(tmp_path / "in" / "a.tar", jpg, 3)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    for planted in ("a.tar.tmp", ".a.tar.tmp", "manifest.json.tmp"):
        os.symlink(victim, out / planted)
    prepare([str(tmp_path / "in" / "a.tar")], str(out), progress=False)
    assert victim.read_text() == "the user's file"
    assert (out / "a.tar").is_file() and not (out / "a.tar").is_symlink()


def members(path):
    """A tar's members as (name, bytes): what a rewrite must reproduce (its mtimes differ)."""
    import tarfile

    with tarfile.open(path) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def test_a_done_marker_is_checked_against_the_output(tmp_path, jpg):
    (tmp_path / "in").mkdir()
    shard(tmp_path / "in" / "a.tar", jpg, 4)
    shard(tmp_path / "in" / "b.tar", jpg, 4)
    out = tmp_path / "out"
    prepare([str(tmp_path / "in" / "*.tar")], str(out), progress=False)
    marker = json.loads((out / DONE_DIR / "a.tar.json").read_text())
    assert marker["output"]["size"] == (out / "a.tar").stat().st_size and len(marker["output"]["sha256"]) == 64
    # The output cut (a crash, a full disk, a hand): the marker no longer matches, it is redone.
    whole = (out / "a.tar").read_bytes()
    want = members(out / "a.tar")
    (out / "a.tar").write_bytes(whole[: len(whole) // 2])
    m = prepare([str(tmp_path / "in" / "*.tar")], str(out), progress=False)
    assert m["shards_done_now"] == 1 and members(out / "a.tar") == want and m["samples"] == 8
    # Same size, other bytes: the hash tells.
    damaged = bytearray((out / "a.tar").read_bytes())
    damaged[1000] ^= 0xFF
    (out / "a.tar").write_bytes(bytes(damaged))
    assert prepare([str(tmp_path / "in" / "*.tar")], str(out), progress=False)["shards_done_now"] == 1
    assert members(out / "a.tar") == want


def test_another_source_of_the_same_name_is_redone_and_named(tmp_path, jpg):
    for d, caption in (("one", b"first source"), ("two", b"second source")):
        (tmp_path / d).mkdir()
        shard(tmp_path / d / "a.tar", jpg, 2, caption)
    out = tmp_path / "out"
    prepare([str(tmp_path / "one" / "a.tar")], str(out), progress=False)
    m = prepare([str(tmp_path / "two" / "a.tar")], str(out), progress=False)
    assert m["shards_done_now"] == 1 and m["shards"][0]["source"] == str(tmp_path / "two" / "a.tar")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"][0]["source"].endswith("two/a.tar")
    assert b"second source" in (out / "a.tar").read_bytes()


def test_prepare_refuses_to_write_over_its_input(tmp_path, jpg):
    shard(tmp_path / "a.tar", jpg, 2)
    before = (tmp_path / "a.tar").read_bytes()
    with pytest.raises(ValueError, match="holds the input"):
        prepare([str(tmp_path / "a.tar")], str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="holds the input"):
        prepare([str(tmp_path / "a.tar")], str(tmp_path / "." / ""), progress=False)
    assert (tmp_path / "a.tar").read_bytes() == before


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    dst = tmp_path / "x.json"
    dst.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(str(dst), "w") as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert dst.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["x.json"]
