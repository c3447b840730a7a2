"""Each rank its own share, under the launchers users run: `torch.multiprocessing.spawn` (PyTorch's
DDP tutorial) and torchrun, with DataLoader workers started by fork, spawn and forkserver, kept
alive across epochs (`persistent_workers=True`), and with the stream built before or after
`init_process_group`. Real processes, real gloo process groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _launch
import pytest
import torch.multiprocessing as tmp
from _helpers import free_port

HERE = os.path.dirname(os.path.abspath(__file__))


def results(out_dir, world=2):
    return [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(world)]


def check_partition(res, samples, epoch=0):
    shares = [r["epochs"][epoch] for r in res]
    assert all(shares), "every rank read something"
    assert not set(shares[0]) & set(shares[1]), "no sample on two ranks"
    assert sorted(shares[0] + shares[1]) == sorted(samples), "every sample once"


@pytest.mark.parametrize(
    "context, workers, before",
    [("fork", 2, False), ("spawn", 2, False), ("forkserver", 2, False), ("spawn", 2, True), ("fork", 0, True)],
)
def test_mp_spawn_ranks_split_the_data(make_shards, tmp_path, context, workers, before):
    ds = make_shards(shards=5, per_shard=7)  # uneven: 5 shards over 2 ranks x 2 workers
    opts = {"context": context, "workers": workers, "build_before_init": before}
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    try:
        tmp.spawn(_launch.spawned, args=(ds["paths"], str(tmp_path), free_port(), opts), nprocs=2, join=True)
    finally:
        os.environ.update(env)
    res = results(tmp_path)
    check_partition(res, ds["samples"])
    for r in res:
        assert r["topology"][:2] == [r["rank"], 2]


def test_persistent_workers_see_every_epoch(make_shards, tmp_path):
    ds = make_shards(shards=4, per_shard=5)
    opts = {"context": "spawn", "workers": 2, "epochs": 2, "persistent": True}
    tmp.spawn(_launch.spawned, args=(ds["paths"], str(tmp_path), free_port(), opts), nprocs=2, join=True)
    res = results(tmp_path)
    for epoch in (0, 1):
        check_partition(res, ds["samples"], epoch)
    # set_epoch reached the kept-alive workers: epoch 1 is another shuffle, not epoch 0 again.
    assert res[0]["epochs"][0] + res[1]["epochs"][0] != res[0]["epochs"][1] + res[1]["epochs"][1]
    # ... and the one an in-process reader gives for epoch 1 (same seed, same layout).
    from torch.utils.data import DataLoader

    from webli_io import WebLIStream

    want = []
    for rank in range(2):
        s = WebLIStream(ds["paths"], batch_size=3, image_size=16, num_threads=1, shuffle=True, seed=7, rank=rank, world_size=2,
                        equal_batches=None)
        s.set_epoch(1)
        want.append(sorted(k for b in DataLoader(s, batch_size=None, num_workers=2) for k in b["keys"]))
    assert [sorted(r["epochs"][1]) for r in res] == want


def test_torchrun_with_spawned_workers(make_shards, tmp_path):
    ds = make_shards(shards=5, per_shard=6)
    shards_file = tmp_path / "shards.json"
    shards_file.write_text(json.dumps(ds["paths"]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           os.path.join(HERE, "_launch.py"), str(shards_file), str(tmp_path), "spawn", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = results(tmp_path)
    check_partition(res, ds["samples"])
    assert [r["topology"] for r in res] == [[0, 2, "torch.distributed"], [1, 2, "torch.distributed"]]


def test_topology_from_the_environment_is_checked(make_shards, monkeypatch):
    ds = make_shards(shards=2, per_shard=2)
    from webli_io import WebLIStream

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    s = WebLIStream(ds["paths"], batch_size=2, image_size=16)
    assert (s.topology.rank, s.topology.world_size, s.topology.source) == (1, 2, "env")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK=3 is outside WORLD_SIZE=2"):
        WebLIStream(ds["paths"], batch_size=2, image_size=16)
