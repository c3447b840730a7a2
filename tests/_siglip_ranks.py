"""Entry points for tests/test_siglip.py's multi-process cases (a plain module, importable by
`torch.multiprocessing.spawn`)."""

from __future__ import annotations

import os


def loss_and_grads(rank, world, port, out_dir):
    """Each rank: its half of a batch, the distributed loss, DDP-style averaged gradients."""
    import torch
    import torch.distributed as dist

    from webli_io.siglip.config import MODELS
    from webli_io.siglip.model import SigLIP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = SigLIP(MODELS["tiny"], 16, 259).double()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64)
    ids = torch.randint(1, 259, (8, 12), generator=g)
    n = 8 // world
    loss = model(images[rank * n : (rank + 1) * n], ids[rank * n : (rank + 1) * n])
    loss.backward()
    for p in model.parameters():  # what DDP does: the mean over ranks
        dist.all_reduce(p.grad)
        p.grad /= world
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        torch.save({"loss": total / world, "grads": [p.grad for p in model.parameters()]}, os.path.join(out_dir, "dist.pt"))
    dist.destroy_process_group()


def train_rank(rank, world, port, argv):
    """A `torch.multiprocessing.spawn` rank: the user's group first, then the trainer."""
    import argparse

    import torch.distributed as dist

    from webli_io.siglip.loop import train
    from webli_io.train_args import add_arguments

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    p = argparse.ArgumentParser()
    add_arguments(p)
    result = train(p.parse_args(argv), log=lambda *a: None)
    assert result["world_size"] == world and dist.is_initialized(), "the caller's group is left to the caller"
    dist.destroy_process_group()
