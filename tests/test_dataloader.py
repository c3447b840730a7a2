"""WebLIStream in a real torch DataLoader with worker processes, and across simulated DDP ranks:
every sample exactly once per epoch, seeded shuffles, epochs."""

from __future__ import annotations

import multiprocessing

import pytest
import torch
from torch.utils.data import DataLoader

from webli_io import WebLIStream


def keys_of(loader):
    out = []
    for b in loader:
        assert isinstance(b["images"], torch.Tensor) and b["images"].dtype == torch.uint8
        assert b["images"].shape[1:] == (16, 16, 3)
        out += b["keys"]
    return out


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_workers_read_each_sample_once(make_shards, workers):
    ds = make_shards(shards=6, per_shard=5)
    stream = WebLIStream(ds["pattern"], batch_size=4, image_size=16, num_threads=1)
    keys = keys_of(DataLoader(stream, batch_size=None, num_workers=workers))
    assert sorted(keys) == sorted(ds["samples"])
    assert stream.stats()["samples_yielded"] == 30


def test_spawned_workers(make_shards):
    ds = make_shards(shards=2, per_shard=4)
    stream = WebLIStream(ds["paths"], batch_size=3, image_size=16, num_threads=1)
    loader = DataLoader(stream, batch_size=None, num_workers=2, multiprocessing_context=multiprocessing.get_context("spawn"))
    keys = keys_of(loader)
    assert sorted(keys) == sorted(ds["samples"])
    assert stream.stats()["samples_yielded"] == 8


def test_ddp_ranks_times_workers_partition_the_data(make_shards):
    ds = make_shards(shards=8, per_shard=3)
    seen = []
    for rank in range(2):
        stream = WebLIStream(ds["paths"], batch_size=2, image_size=16, num_threads=1, shuffle=True, seed=5, rank=rank, world_size=2,
                             equal_batches=None)
        stream.set_epoch(3)
        seen.append(keys_of(DataLoader(stream, batch_size=None, num_workers=2)))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(ds["samples"])


def test_shards_fewer_than_readers(make_shards):
    ds = make_shards(shards=1, per_shard=5)
    stream = WebLIStream(ds["paths"], batch_size=2, image_size=16, num_threads=1)
    keys = keys_of(DataLoader(stream, batch_size=None, num_workers=3))
    assert sorted(keys) == sorted(ds["samples"])


def test_shuffle_is_seeded_and_changes_with_epoch(make_shards):
    ds = make_shards(shards=4, per_shard=8)

    def order(seed, epoch, workers=0):
        s = WebLIStream(ds["paths"], batch_size=4, image_size=16, shuffle=True, shuffle_buffer=10, seed=seed, num_threads=2)
        s.set_epoch(epoch)
        return keys_of(DataLoader(s, batch_size=None, num_workers=workers))

    a = order(1, 0)
    assert a == order(1, 0), "same seed and epoch, same order"
    assert a != order(1, 1), "a new epoch reshuffles"
    assert a != order(2, 0), "another seed reshuffles"
    assert sorted(a) == sorted(order(1, 1)) == sorted(ds["samples"])
    assert a != sorted(a)
    assert order(1, 0, workers=2) == order(1, 0, workers=2), "deterministic with workers too"


def test_nchw_and_meta_through_a_worker(make_shards):
    ds = make_shards(shards=2, per_shard=3)
    stream = WebLIStream(ds["paths"], batch_size=3, image_size=16, layout="NCHW", num_threads=1)
    b = next(iter(DataLoader(stream, batch_size=None, num_workers=1)))
    assert b["images"].shape == (3, 3, 16, 16)
    assert isinstance(b["meta"][0], dict) and "language" in b["meta"][0]


def test_breaking_out_early_is_clean(make_shards):
    ds = make_shards(shards=2, per_shard=20)
    stream = WebLIStream(ds["paths"], batch_size=2, image_size=16, prefetch=1)
    it = iter(stream)
    next(it)
    it.close()  # runs the generator's cleanup: the native threads are joined
    assert stream.stats()["samples_yielded"] == 2


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_stats_count_two_loaders_over_one_stream(make_shards, context):
    """Issue 28, item 9: worker 0 of each loader writes the same counter row; neither may
    overwrite the other's counts."""
    ds = make_shards(shards=4, per_shard=10)
    s = WebLIStream(ds["pattern"], batch_size=5, image_size=16)
    ctx = multiprocessing.get_context(context)
    a = DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context=ctx)
    b = DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context=ctx)
    seen = 0
    for x, y in zip(a, b):  # both loaders' workers run at once
        seen += len(x["keys"]) + len(y["keys"])
    assert seen == 80
    stats = s.stats()
    assert stats["samples_yielded"] == 80 and stats["batches_yielded"] == 16, stats


@pytest.mark.parametrize("workers", [2, 3])
def test_loader_batches_are_full_but_the_epochs_last_and_resume_exactly(make_shards, workers):
    """Issue 24, item 8: each worker reads its own shards, so each ended its epoch with a short
    batch (sizes 2, 2, 3 of batch 4 with 3 workers). stream.loader() merges them: every batch is
    full but the last. A batch cut in two (part of a worker's last samples completes a batch,
    the rest wait) resumes exactly: a state taken after any step, then the rest, is the epoch."""
    ds = make_shards(shards=5, per_shard=7)  # 35 samples; 3 workers: 14, 14 and 7 of them

    def stream():
        return WebLIStream(ds["paths"], batch_size=4, image_size=16, shuffle=True, seed=0)

    def loader(s):
        return s.loader(num_workers=workers, persistent_workers=False)

    batches = [list(b["keys"]) for b in loader(stream())]
    sizes = [len(b) for b in batches]
    assert all(n == 4 for n in sizes[:-1]) and sizes[-1] == 35 % 4, sizes
    assert sorted(k for b in batches for k in b) == sorted(ds["samples"])
    for stop in sorted({0, len(batches) - 3, len(batches) - 2}):
        s, seen = stream(), []
        for i, b in enumerate(loader(s)):
            s.observe(b)
            seen += b["keys"]
            if i == stop:
                break
        state = s.state_dict()
        again = stream()
        again.load_state_dict(state)
        rest = [k for b in loader(again) for k in b["keys"]]
        assert sorted(seen + rest) == sorted(ds["samples"]), (stop, len(seen), len(rest))
