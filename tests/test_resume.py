"""Exact resume, equal batches per DDP rank, and clean workers: the most reported failures of
today's loaders, with real DataLoader worker processes."""

from __future__ import annotations

import json
import os
import threading

import pytest
from torch.utils.data import DataLoader

from webli_io import WebLIStream

KW = dict(batch_size=3, image_size=16, num_threads=1, shuffle=True, shuffle_buffer=5, seed=11)


def batches(loader, stream=None, limit=None):
    out = []
    if limit == 0:
        return out
    for b in loader:
        if stream is not None:
            stream.observe(b)
        out.append(list(b["keys"]))
        if limit is not None and len(out) == limit:
            break
    return out


@pytest.fixture
def data(make_shards):
    ds = make_shards(shards=4, per_shard=7)
    return ds


@pytest.mark.parametrize("k", [0, 1, 4, 8])
def test_resume_in_process_is_exact(data, k):
    full = batches(WebLIStream(data["paths"], **KW))
    first = WebLIStream(data["paths"], **KW)
    got = batches(first, limit=k)
    state = json.loads(json.dumps(first.state_dict()))  # plain data
    again = WebLIStream(data["paths"], **KW)
    again.load_state_dict(state)
    assert got + batches(again) == full


@pytest.mark.parametrize("k", [2, 5])
def test_resume_with_dataloader_workers_is_exact_per_worker(data, k):
    def per_slot(bs):
        out = {}
        for b in bs:
            out.setdefault(b["position"]["slot"], []).append(list(b["keys"]))
        return out

    full = list(DataLoader(WebLIStream(data["paths"], **KW), batch_size=None, num_workers=2))
    first = WebLIStream(data["paths"], **KW)
    seen = []
    for b in DataLoader(first, batch_size=None, num_workers=2):
        first.observe(b)
        seen.append(b)
        if len(seen) == k:
            break
    again = WebLIStream(data["paths"], **KW)
    again.load_state_dict(first.state_dict())
    rest = list(DataLoader(again, batch_size=None, num_workers=2))
    # Each worker continues with exactly its next batches (a plain DataLoader restarts its
    # round-robin at worker 0; torchdata's StatefulDataLoader also restores that, see below).
    joined = per_slot(seen)
    for slot, bs in per_slot(rest).items():
        joined.setdefault(slot, []).extend(bs)
    assert joined == per_slot(full)


def test_stateful_dataloader_resumes_in_the_same_order(data):
    from torchdata.stateful_dataloader import StatefulDataLoader

    full = [list(b["keys"]) for b in StatefulDataLoader(WebLIStream(data["paths"], **KW), batch_size=None, num_workers=2)]
    loader = StatefulDataLoader(WebLIStream(data["paths"], **KW), batch_size=None, num_workers=2)
    it = iter(loader)
    head = [list(next(it)["keys"]) for _ in range(3)]
    state = loader.state_dict()
    del it
    loader2 = StatefulDataLoader(WebLIStream(data["paths"], **KW), batch_size=None, num_workers=2)
    loader2.load_state_dict(state)
    assert head + [list(b["keys"]) for b in loader2] == full


@pytest.mark.parametrize("before,after", [(2, 3), (2, 0), (0, 2)])
def test_resume_on_another_worker_count_loses_and_doubles_nothing(data, before, after):
    first = WebLIStream(data["paths"], **KW)
    seen = [k for bs in batches(DataLoader(first, batch_size=None, num_workers=before), first, limit=3) for k in bs]
    again = WebLIStream(data["paths"], **KW)
    again.load_state_dict(first.state_dict())
    rest = [k for bs in batches(DataLoader(again, batch_size=None, num_workers=after), again) for k in bs]
    assert len(seen) == 9
    assert sorted(seen + rest) == sorted(data["samples"])
    # ... and again, from the middle of the resumed run, on a third layout.
    third = WebLIStream(data["paths"], **KW)
    third.load_state_dict(again.state_dict())
    assert batches(third) == [], "everything was consumed"


def test_second_resume_after_a_layout_change(data):
    first = WebLIStream(data["paths"], **KW)
    a = [k for bs in batches(DataLoader(first, batch_size=None, num_workers=2), first, limit=2) for k in bs]
    second = WebLIStream(data["paths"], **KW)
    second.load_state_dict(first.state_dict())
    b = [k for bs in batches(DataLoader(second, batch_size=None, num_workers=3), second, limit=2) for k in bs]
    third = WebLIStream(data["paths"], **KW)
    third.load_state_dict(second.state_dict())
    c = [k for bs in batches(third) for k in bs]
    assert sorted(a + b + c) == sorted(data["samples"])


def test_state_names_the_mismatch(data):
    s = WebLIStream(data["paths"], **KW)
    state = s.state_dict()
    other = WebLIStream(data["paths"], **{**KW, "seed": 12})
    with pytest.raises(ValueError, match="seed: state 11, stream 12"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a usable webli-io state: version None"):
        other.load_state_dict({"epoch": 1})


def test_state_at_an_epoch_start_and_set_epoch(data):
    s = WebLIStream(data["paths"], **KW)
    s.set_epoch(3)
    e3 = batches(s)
    t = WebLIStream(data["paths"], **KW)
    t.load_state_dict(s.state_dict())  # the end of epoch 3: nothing left of it
    assert t.epoch == 3 and batches(t) == []
    t.set_epoch(4)
    assert sorted(k for bs in batches(t) for k in bs) == sorted(k for bs in e3 for k in bs)


def uneven(make_shards, tmp_path):
    import webdataset as wds

    sizes = [9, 2, 5, 7, 1]
    paths, keys = [], []
    img = None
    from conftest import web_like  # noqa: WPS433
    from PIL import Image

    img = web_like(Image.new("RGB", (64, 48), (120, 30, 200)), 64)
    for i, n in enumerate(sizes):
        p = str(tmp_path / f"u-{i}.tar")
        with wds.TarWriter(p) as w:
            for j in range(n):
                key = f"{i}-{j}"
                w.write({"__key__": key, "jpg": img, "txt": key})
                keys.append(key)
        paths.append(p)
    return paths, keys


@pytest.mark.parametrize("mode", ["drop", "pad"])
def test_every_rank_yields_the_same_number_of_batches(make_shards, tmp_path, mode):
    paths, keys = uneven(make_shards, tmp_path)
    per_rank, everything = [], []
    for rank in range(2):
        s = WebLIStream(paths, batch_size=2, image_size=16, num_threads=1, rank=rank, world_size=2, equal_batches=mode)
        bs = batches(DataLoader(s, batch_size=None, num_workers=2))
        assert all(len(b) == 2 for b in bs), "full batches only"
        per_rank.append(len(bs))
        everything += [k for b in bs for k in b]
    assert per_rank[0] == per_rank[1] > 0
    # 4 readers hold 9+1, 2, 5, 7 samples: "drop" gives each min(10,2,5,7)//2 = 1 batch,
    # "pad" gives each ceil(10/2) = 5 batches, repeating samples on the short readers.
    assert per_rank[0] == (2 if mode == "drop" else 10)
    if mode == "pad":
        assert set(everything) == set(keys)
    else:
        assert len(set(everything)) == len(everything)


def test_equal_batches_with_fewer_shards_than_readers(make_shards):
    ds = make_shards(shards=1, per_shard=6)
    counts = []
    for rank in range(2):
        s = WebLIStream(ds["paths"], batch_size=2, image_size=16, num_threads=1, rank=rank, world_size=2, equal_batches="pad")
        counts.append(len(batches(DataLoader(s, batch_size=None, num_workers=2))))
    assert counts[0] == counts[1] == 6  # every reader pads to the largest: 3 batches x 2 workers


def test_no_leaked_threads_or_files_over_epochs(data):
    s = WebLIStream(data["paths"], **{**KW, "num_threads": 2})
    batches(s)

    def census():
        return len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task")), threading.active_count()

    def settled(limit=None):
        # A finished thread leaves /proc a moment after it has signalled its end: give the OS
        # up to 2 s to come down to `limit`. A leaked thread or file stays, and fails below.
        import time

        deadline = time.monotonic() + 2.0
        now = census()
        while time.monotonic() < deadline and (limit is None or any(n > m for n, m in zip(now, limit))):
            time.sleep(0.05)
            now = census()
            if limit is None:
                break
        return now

    before = settled()
    for epoch in range(5):
        s.set_epoch(epoch)
        batches(s)
        it = iter(s)  # and an epoch abandoned midway
        next(it)
        it.close()
    after = settled(before)
    assert all(n <= m for n, m in zip(after, before)), (after, before)


def test_set_epoch_in_the_middle_of_an_iteration_does_not_carry_its_position(make_shards):
    """Batches an old iterator yields after set_epoch() belong to the old epoch: the new epoch's
    state must not start from their position (a resume then skipped unseen samples)."""
    ds = make_shards(shards=2, per_shard=8)
    s = WebLIStream(ds["paths"], batch_size=2, image_size=16, num_threads=1, shuffle=True, seed=1)
    it = iter(s)
    next(it)
    s.set_epoch(1)
    next(it)  # still epoch 0's iterator
    state = s.state_dict()
    it.close()
    assert state["epoch"] == 1 and not state["positions"], state
    again = WebLIStream(ds["paths"], batch_size=2, image_size=16, num_threads=1, shuffle=True, seed=1)
    again.load_state_dict(state)
    fresh = WebLIStream(ds["paths"], batch_size=2, image_size=16, num_threads=1, shuffle=True, seed=1)
    fresh.set_epoch(1)
    assert [k for b in again for k in b["keys"]] == [k for b in fresh for k in b["keys"]]


def test_a_state_knows_its_ranks_one_ranks_state_is_refused_elsewhere(make_shards):
    """Issue 24, item 2: a framework checkpoint keeps rank 0's state only. Loaded on rank 1 it
    silently restarted rank 1's readers (32 samples seen twice); now it is refused, naming the
    fix, and the merged state of every rank resumes anywhere."""
    ds = make_shards(shards=4, per_shard=8)

    def stream(rank, world):
        return WebLIStream(ds["pattern"], batch_size=4, image_size=16, shuffle=True, seed=1, rank=rank, world_size=world)

    states = []
    for rank in (0, 1):
        s = stream(rank, 2)
        it = iter(s)
        next(it)
        states.append(s.state_dict())
        it.close()
    assert states[0]["ranks"] == {"world_size": 2, "covered": [0]}
    stream(0, 2).load_state_dict(states[0])  # its own readers: fine
    with pytest.raises(ValueError, match=r"rank\(s\) \[0\] of 2 only.*merge_states"):
        stream(1, 2).load_state_dict(states[0])
    with pytest.raises(ValueError, match="of 2 only"):
        stream(0, 1).load_state_dict(states[0])
    merged = WebLIStream.merge_states(states)
    assert merged["ranks"] == {"world_size": 2, "covered": [0, 1]}
    for rank, world in ((1, 2), (0, 1), (2, 3)):
        stream(rank, world).load_state_dict(merged)
    bad = {**states[0], "ranks": {"world_size": 2, "covered": [5]}}
    with pytest.raises(ValueError, match="ranks.covered"):
        stream(0, 2).load_state_dict(bad)
