"""The process group: joined from torchrun's variables (``WORLD_SIZE`` > 1), or the one a
``torch.multiprocessing.spawn`` function initialised before calling ``train``."""

from __future__ import annotations

import os
from typing import Any, List, Tuple

import torch
import torch.distributed as dist


def setup(device: torch.device) -> Tuple[int, int, bool]:
    """(rank, world size, whether this call initialised the group: then ``teardown`` ends it)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def device_for(spec: str | None) -> torch.device:
    """``--device`` (default: CUDA when available); on CUDA, the rank's local GPU."""
    device = torch.device(spec or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def gather_objects(obj: Any, world: int) -> List[Any]:
    """Every rank's ``obj`` (one process: ``[obj]``)."""
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def teardown(owned: bool) -> None:
    if owned and dist.is_initialized():
        dist.destroy_process_group()
