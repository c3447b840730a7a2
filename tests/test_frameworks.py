"""Safe by default in DDP, under the frameworks people train with: real PyTorch Lightning
(``strategy="ddp"``) and real HF Accelerate, 2 CPU ranks (gloo), over uneven shards. Without
equal batches the rank with more shards runs steps the other never joins (Lightning crashed at
the epoch's end, Accelerate hung); with the default every rank yields the same number of
batches and every sample of the epoch is seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from _helpers import free_port

COMMON = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from webli_io import WebLIStream

    shards, out = sys.argv[1].split(","), sys.argv[2]

    def record(rank, keys):
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(keys, f)

    def features(batch):
        # NHWC uint8 -> one number per channel: enough for a model to train on.
        return torch.as_tensor(batch["images"]).float().mean(dim=(1, 2)) / 255
    """
)

LIGHTNING = COMMON + textwrap.dedent(
    """
    import lightning as L

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.keys = []

        def training_step(self, batch, i):
            self.keys += batch["keys"]
            return self.lin(features(batch)).pow(2).mean()

        def on_train_epoch_end(self):
            record(self.global_rank, self.keys)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            # Built here, after Lightning made the process group: the stream knows its rank.
            return WebLIStream(shards, batch_size=4, image_size=16, shuffle=True, seed=0).loader(num_workers=0)

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Model())
    """
)

ACCELERATE = COMMON + textwrap.dedent(
    """
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model, opt = acc.prepare(model, opt)
    stream = WebLIStream(shards, batch_size=4, image_size=16, shuffle=True, seed=0)
    keys = []
    for batch in stream.loader(num_workers=0):
        keys += batch["keys"]
        loss = model(features(batch)).pow(2).mean()
        acc.backward(loss)  # DDP: an all-reduce every step, so uneven steps would hang here
        opt.step()
        opt.zero_grad()
    acc.wait_for_everyone()
    record(acc.process_index, keys)
    """
)


ACCELERATE_PREPARE = COMMON + textwrap.dedent(
    """
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stream = WebLIStream(shards, batch_size=4, image_size=16, shuffle=True, seed=0)
    how = sys.argv[3]
    if how == "plain":  # what Accelerate's docs show for a map-style dataset
        model, opt, loader = acc.prepare(model, opt, DataLoader(stream, batch_size=None))
    else:
        model, opt, loader = acc.prepare(model, opt, stream.loader(num_workers=int(how)))
    epochs = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        keys = []
        for batch in loader:
            keys += batch["keys"]
            loss = model(features(batch)).pow(2).mean()
            acc.backward(loss)
            opt.step()
            opt.zero_grad()
        epochs.append(keys)
    acc.wait_for_everyone()
    record(acc.process_index, epochs)
    """
)


ACCELERATE_RESUME = COMMON + textwrap.dedent(
    """
    from accelerate import Accelerator

    phase, workers = sys.argv[3], int(sys.argv[4])
    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stream = WebLIStream(shards, batch_size=4, image_size=16, shuffle=True, seed=0)
    if phase == "rest":
        with open(os.path.join(out, "state.json")) as f:
            stream.load_state_dict(json.load(f))
    model, opt, loader = acc.prepare(model, opt, stream.loader(num_workers=workers, persistent_workers=False))
    epochs = {}
    for epoch in range(stream.epoch, 2):
        stream.set_epoch(epoch)
        keys = epochs.setdefault(str(epoch), [])
        for step, batch in enumerate(loader):
            keys += batch["keys"]
            acc.backward(model(features(batch)).pow(2).mean())
            opt.step()
            opt.zero_grad()
            stream.observe(batch)
            if phase == "first" and epoch == 1 and step == 1:  # preempted 2 steps into epoch 1
                state = stream.gathered_state_dict()  # every rank calls it
                if acc.is_main_process:
                    with open(os.path.join(out, "state.json"), "w") as f:
                        json.dump(state, f)
                break
    acc.wait_for_everyone()
    record(f"{phase}{acc.process_index}", epochs)
    """
)


LIGHTNING_RESUME = COMMON + textwrap.dedent(
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from webli_io.integrations.lightning import WebLICallback

    devices, phase, workers = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.keys = {}

        def training_step(self, batch, i):
            self.keys.setdefault(str(self.current_epoch), []).extend(batch["keys"])
            return self.lin(features(batch)).pow(2).mean()

        def on_train_end(self):
            record(f"{phase}{self.global_rank}", self.keys)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    # Built before the process group exists: equal_batches given, the rank found when the loader is made.
    stream = WebLIStream(shards, batch_size=4, image_size=16, shuffle=True, seed=0, equal_batches="pad")

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return stream.loader(num_workers=workers, persistent_workers=False)

    # 4 steps an epoch on 2 ranks: the first run stops 2 steps into epoch 1, with a checkpoint.
    every = ModelCheckpoint(dirpath=out, filename="mid", every_n_train_steps=6, save_top_k=-1)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=2,
                        max_steps=6 if phase == "first" else -1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[WebLICallback(stream), every])
    trainer.fit(Model(), datamodule=Data(), ckpt_path=None if phase == "first" else os.path.join(out, "mid.ckpt"))
    """
)


TORCHDATA = COMMON + textwrap.dedent(
    """
    import torch.distributed as dist
    from torchdata.stateful_dataloader import StatefulDataLoader
    from webli_io.integrations.torchdata import gather_state

    phase, workers = sys.argv[3], int(sys.argv[4])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    stream = WebLIStream(shards, batch_size=4, image_size=16, shuffle=True, seed=0)  # after init: equal batches
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if phase == "rest":
        with open(os.path.join(out, "state.json")) as f:
            stream.load_state_dict(json.load(f))
    epochs = {}
    for epoch in range(stream.epoch, 2):
        stream.set_epoch(epoch)
        loader = StatefulDataLoader(stream, batch_size=None, num_workers=workers)
        keys = epochs.setdefault(epoch, [])
        for step, batch in enumerate(loader):
            keys += batch["keys"]
            loss = model(features(batch)).pow(2).mean()
            loss.backward()  # an all-reduce a step: unequal steps would hang
            opt.step()
            opt.zero_grad()
            if phase == "first" and epoch == 1 and step == 1:  # preempted mid-epoch, after 2 steps
                state = gather_state(loader)
                if rank == 0:
                    with open(os.path.join(out, "state.json"), "w") as f:
                        json.dump(state, f)
                break
    record(f"{phase}{rank}", {str(k): v for k, v in epochs.items()})
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("resume_on", [2, 1])
def test_torchdata_stateful_dataloader_under_ddp_resumes_every_ranks_share(make_shards, tmp_path, workers, resume_on):
    """Issue 24: torchdata's StatefulDataLoader under torchrun, 2 ranks x {0, 2} workers, 2 epochs,
    preempted mid-epoch 1 with gather_state (every rank's readers, one state), resumed on 2 and
    on 1 rank: each epoch every sample exactly once, equal steps (no hang), epochs differ."""
    import torchdata  # noqa: F401  (a test extra)

    def launcher(n):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(free_port())]

    _preempt_and_resume(TORCHDATA, launcher, make_shards, tmp_path, workers, resume_on)


@pytest.fixture
def uneven(make_shards):
    """5 shards of 8 samples: on 2 ranks, 3 shards (24 samples) and 2 (16)."""
    return make_shards(shards=5, per_shard=8)


def _check(out, ds):
    per_rank = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) > 0, [len(k) for k in per_rank]
    assert set(per_rank[0]) | set(per_rank[1]) == set(ds["samples"]), "every sample of the epoch seen"


def _run(cmd, tmp_path, **extra_env):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra_env}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_lightning_ddp_over_uneven_shards_gets_equal_batches_by_default(uneven, tmp_path):
    import lightning  # noqa: F401  (a test extra: missing, the test fails rather than skips)
    script = tmp_path / "fit.py"
    script.write_text(LIGHTNING)
    out = tmp_path / "out"
    out.mkdir()
    r = _run([sys.executable, str(script), ",".join(uneven["paths"]), str(out)], tmp_path, MASTER_PORT=str(free_port()))
    assert r.returncode == 0, r.stderr[-3000:]
    _check(out, uneven)


def test_accelerate_launch_over_uneven_shards_does_not_hang(uneven, tmp_path):
    import accelerate  # noqa: F401  (a test extra)
    script = tmp_path / "loop.py"
    script.write_text(ACCELERATE)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(script), ",".join(uneven["paths"]), str(out)]
    r = _run(cmd, tmp_path)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    _check(out, uneven)


def test_opting_out_gives_each_rank_what_its_shards_hold(uneven):
    from webli_io import WebLIStream

    counts = [sum(len(b["keys"]) for b in WebLIStream(uneven["paths"], batch_size=4, image_size=16, rank=r, world_size=2,
                                                       equal_batches=None)) for r in (0, 1)]
    assert counts == [24, 16]
    default = [sum(len(b["keys"]) for b in WebLIStream(uneven["paths"], batch_size=4, image_size=16, rank=r, world_size=2))
               for r in (0, 1)]
    assert default == [24, 24], "padded to the largest rank's share"
    assert WebLIStream(uneven["paths"], rank=0, world_size=1).options.equal_batches is None, "one process: unchanged"


def test_lightning_sets_the_epoch_of_a_stream_loader(uneven):
    """Issue 24, item 3: Lightning calls set_epoch on a loader's sampler, never on its dataset.
    A loader made by `stream.loader()` forwards it, so each epoch has its own order and crops
    (before, every epoch repeated epoch 0's)."""
    import lightning as L
    import torch

    from webli_io import WebLIStream

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.orders: dict = {}

        def training_step(self, batch, i):
            self.orders.setdefault(self.current_epoch, []).extend(batch["keys"])
            self.orders.setdefault(("epoch", self.current_epoch), set()).add(batch["position"]["epoch"])
            x = torch.as_tensor(batch["images"]).float().mean(dim=(1, 2)) / 255
            return self.lin(x).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    stream = WebLIStream(uneven["paths"], batch_size=4, image_size=16, shuffle=True, seed=0)
    assert bool(stream) is True, "a stream is true whatever its length"
    model = Model()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=stream.loader(num_workers=0))
    orders = [model.orders[e] for e in range(3)]
    assert [model.orders[("epoch", e)] for e in range(3)] == [{0}, {1}, {2}]
    assert all(sorted(o) == sorted(uneven["samples"]) for o in orders), "every sample once an epoch"
    assert orders[0] != orders[1] != orders[2], "each epoch its own order"


def _launch_accelerate(script_text, uneven, tmp_path, *args):
    script = tmp_path / "loop.py"
    script.write_text(script_text)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(script), ",".join(uneven["paths"]), str(out), *args]
    return _run(cmd, tmp_path), out


@pytest.mark.parametrize("workers", ["0", "2"])
def test_accelerate_prepare_of_a_stream_loader_keeps_every_ranks_share(uneven, tmp_path, workers):
    """Issue 24, item 1: `accelerator.prepare(model, opt, stream.loader())` runs, each rank
    streaming its own shards (before: a TypeError on the first batch, or rank 0's shards only)."""
    r, out = _launch_accelerate(ACCELERATE_PREPARE, uneven, tmp_path, workers)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    per_rank = [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]
    for epoch in (0, 1):
        a, b = per_rank[0][epoch], per_rank[1][epoch]
        assert len(a) == len(b) > 0 and set(a) | set(b) == set(uneven["samples"]), epoch
    assert per_rank[0][0] != per_rank[0][1], "set_epoch: each epoch its own order"


def _check_resumed(first, rest, ds, resume_on):
    """2 epochs over 4 even shards of 8 on 2 ranks (4 steps of 4 an epoch), preempted 2 steps
    into epoch 1, resumed on `resume_on` ranks: each epoch every sample once, equal steps."""
    assert len(first[0]["0"]) == len(first[1]["0"]) == 16, "equal steps in epoch 0"
    assert sorted(first[0]["0"] + first[1]["0"]) == sorted(ds["samples"]), "epoch 0: every sample once"
    before = first[0]["1"] + first[1]["1"]
    assert len(before) == 2 * 2 * 4, "2 steps of 4 on each of 2 ranks into epoch 1"
    assert all(set(r) <= {"1"} for r in rest), "the resume continues epoch 1"
    after = [k for r in rest for k in r.get("1", [])]
    assert sorted(before + after) == sorted(ds["samples"]), "epoch 1: trained + the rest = every sample once"
    if resume_on == 2:
        assert len(rest[0]["1"]) == len(rest[1]["1"]), "equal steps after the resume"
    assert first[0]["0"][:8] != first[0]["1"][:8], "each epoch its own order"


def _preempt_and_resume(script_text, launcher, make_shards, tmp_path, workers, resume_on):
    """Run `script_text` (phases "first", "rest") under `launcher(n)` (the launcher's command for
    n processes): 2 processes preempted 2 steps into epoch 1, then `resume_on` to the end."""
    ds = make_shards(shards=4, per_shard=8)
    script = tmp_path / "loop.py"
    script.write_text(script_text)
    out = tmp_path / "out"
    out.mkdir()

    def launch(n, phase):
        r = _run([*launcher(n), str(script), ",".join(ds["paths"]), str(out), phase, str(workers)], tmp_path)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
        return [json.loads((out / f"rank{phase}{k}.json").read_text()) for k in range(n)]

    _check_resumed(launch(2, "first"), launch(resume_on, "rest"), ds, resume_on)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("resume_on", [2, 1])
def test_accelerate_resumes_mid_epoch_on_the_same_and_another_world_size(make_shards, tmp_path, workers, resume_on):
    """Issue 24, item 2: under `accelerate launch`, 2 processes x {0, 2} workers, the state of
    every rank (stream.gathered_state_dict) saved 2 steps into epoch 1 and resumed on 2 and on
    1 process (before: rank 0's state alone, rank 1 restarted, the resumed run hung)."""
    def launcher(n):
        multi = ["--multi_gpu"] if n > 1 else []
        return [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(n), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]

    _preempt_and_resume(ACCELERATE_RESUME, launcher, make_shards, tmp_path, workers, resume_on)


def test_accelerate_prepare_of_a_plain_loader_is_refused_not_silently_short(uneven, tmp_path):
    r, _ = _launch_accelerate(ACCELERATE_PREPARE, uneven, tmp_path, "plain")
    assert r.returncode != 0
    assert "inside a DataLoader prepared by Accelerate" in r.stderr and "stream.loader(" in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("workers", [0, 2])
def test_lightning_callback_resumes_mid_epoch_with_nothing_lost_or_repeated(uneven, tmp_path, workers):
    """Issue 24, items 2 and 4: with WebLICallback, a mid-epoch Lightning checkpoint holds what
    the steps trained on (Lightning's fetcher holds a batch ahead; counted at yield it was lost),
    and the resumed fit trains on the rest of the epoch: consumed + rest = one epoch, once each."""
    import lightning as L
    import torch

    from webli_io import WebLIStream
    from webli_io.integrations.lightning import WebLICallback

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.keys: list = []

        def training_step(self, batch, i):
            self.keys += batch["keys"]
            x = torch.as_tensor(batch["images"]).float().mean(dim=(1, 2)) / 255
            return self.lin(x).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(max_steps, ckpt=None):
        stream = WebLIStream(uneven["paths"], batch_size=4, image_size=16, shuffle=True, seed=0)
        model = Model()
        # A checkpoint after step 3, mid-epoch, while the fetcher holds the next batch.
        every = ModelCheckpoint(dirpath=tmp_path, filename="mid", every_n_train_steps=3, save_top_k=-1)
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, max_steps=max_steps, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[WebLICallback(stream), every])
        trainer.fit(model, train_dataloaders=stream.loader(num_workers=workers, persistent_workers=False), ckpt_path=ckpt)
        return model

    first = fit(max_steps=3)
    assert len(first.keys) == 12
    rest = fit(max_steps=-1, ckpt=str(tmp_path / "mid.ckpt"))
    assert sorted(first.keys + rest.keys) == sorted(uneven["samples"]), (len(first.keys), len(rest.keys))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("resume_on", [2, 1])
def test_lightning_ddp_checkpoint_holds_every_ranks_share(make_shards, tmp_path, resume_on, workers):
    """Issue 24, item 2: 2 DDP ranks x {0, 2} workers, 2 epochs, a checkpoint 2 steps into
    epoch 1 (the callback merges both ranks' states), resumed on 2 and on 1 device: each epoch
    every sample once (4 even shards: no padding), equal steps, epochs differ (before: rank 1
    restarted from rank 0's state)."""
    ds = make_shards(shards=4, per_shard=8)
    script = tmp_path / "fit.py"
    script.write_text(LIGHTNING_RESUME)
    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, str(script), ",".join(ds["paths"]), str(out)]
    r = _run([*args, "2", "first", str(workers)], tmp_path, MASTER_PORT=str(free_port()))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run([*args, str(resume_on), "rest", str(workers)], tmp_path, MASTER_PORT=str(free_port()))
    assert r.returncode == 0, r.stderr[-3000:]
    first = [json.loads((out / f"rankfirst{rk}.json").read_text()) for rk in (0, 1)]
    rest = [json.loads((out / f"rankrest{rk}.json").read_text()) for rk in range(resume_on)]
    _check_resumed(first, rest, ds, resume_on)


def test_equal_batches_drop_counts_what_it_leaves_out(uneven):
    """Issue 24, item 5: `equal_batches="drop"` left samples out with no counter (rank 0 of 2
    over 24 and 16 samples yields 16): now `samples_dropped_equal` says how many."""
    from torch.utils.data import DataLoader

    from webli_io import WebLIStream

    got = []
    for rank in (0, 1):
        s = WebLIStream(uneven["paths"], batch_size=4, image_size=16, rank=rank, world_size=2, equal_batches="drop")
        n = sum(len(b["keys"]) for b in s)
        got.append((n, s.stats()["samples_dropped_equal"]))
    assert got == [(16, 8), (16, 0)]
    # Each reader opens its own shards once, none of another rank's (3 and 2 shards): its
    # shuffle buffer is not filled by reading shards again.
    for rank, own in ((0, 3), (1, 2)):
        s = WebLIStream(uneven["paths"], batch_size=4, image_size=16, rank=rank, world_size=2, equal_batches="drop",
                        shuffle=True, seed=0)
        assert sum(len(b["keys"]) for b in s) == 16
        assert s.stats()["shards_opened"] == own, (rank, s.stats()["shards_opened"])
    s = WebLIStream(uneven["paths"], batch_size=4, image_size=16, rank=0, world_size=2, equal_batches="drop")
    assert sum(len(b["keys"]) for b in DataLoader(s, batch_size=None, num_workers=2)) == 16
    assert s.stats()["samples_dropped_equal"] == 8, "summed over the workers"
