"""`WebLIStream`: the torch IterableDataset over the Rust core.

It validates its arguments, resolves the shard list once, and at iteration time picks this
process's share of the shards (by DDP rank and DataLoader worker), then runs the native
pipeline over them. Counters are kept in a small shared-memory table so that `stats()` in the
main process sums what every DataLoader worker saw.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import multiprocessing as mp
import os
import random
from multiprocessing.context import get_spawning_popen
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from torch.utils.data import IterableDataset, get_worker_info

from . import _core

log = logging.getLogger("webli_io")

PathLike = Union[str, "os.PathLike[str]"]
ShardSpec = Union[PathLike, Sequence[PathLike]]

RESIZE_MODES = ("squash", "center_crop", "random_resized_crop")
LAYOUTS = ("NHWC", "NCHW")
#: Problems logged at WARNING per stream; the rest go to DEBUG (all are counted in `stats()`).
WARN_PROBLEMS = 5


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _mix_seed(*parts: int) -> int:
    """A 64-bit seed from several integers, the same in every process and on every machine."""
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def _check_int(name: str, value: Any, lo: int, hi: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return value


class _SharedStats:
    """Counters shared by the main process and its DataLoader workers.

    One row per worker (and one for the main process) in a lock-free shared-memory table: each
    process writes only its own row, the main process sums them. It travels to worker processes
    by inheritance (fork) or as a spawning argument (spawn), as multiprocessing allows.
    """

    ROWS = 257  # 256 worker rows + the main process

    def __init__(self) -> None:
        self.names: List[str] = list(_core.STAT_NAMES)
        self.table = mp.RawArray(ctypes.c_int64, self.ROWS * len(self.names))

    def row_of(self, worker_id: Optional[int]) -> int:
        return self.ROWS - 1 if worker_id is None else worker_id % (self.ROWS - 1)

    def read_row(self, row: int) -> List[int]:
        n = len(self.names)
        return list(self.table[row * n : (row + 1) * n])

    def write_row(self, row: int, base: List[int], counts: Dict[str, int]) -> None:
        n = len(self.names)
        self.table[row * n : (row + 1) * n] = [b + counts.get(k, 0) for b, k in zip(base, self.names)]

    def total(self) -> Dict[str, int]:
        n = len(self.names)
        values = list(self.table)
        return {k: sum(values[r * n + i] for r in range(self.ROWS)) for i, k in enumerate(self.names)}

    def reset(self) -> None:
        ctypes.memset(self.table, 0, ctypes.sizeof(self.table))

    def __getstate__(self) -> Dict[str, Any]:
        if get_spawning_popen() is None:
            # Pickled for another purpose than starting a worker (e.g. a copy): the copy keeps
            # its own counters rather than failing.
            return {"names": self.names, "table": None}
        return {"names": self.names, "table": self.table}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.names = state["names"]
        self.table = state["table"] if state["table"] is not None else mp.RawArray(ctypes.c_int64, self.ROWS * len(self.names))


class WebLIStream(IterableDataset):
    """Image–text batches from WebDataset ``.tar`` shards, decoded and resized in Rust.

    Use it with ``batch_size=None`` in a DataLoader (the stream makes its own batches)::

        loader = DataLoader(WebLIStream("shards/{000..099}.tar", batch_size=256),
                            batch_size=None, num_workers=4, pin_memory=True)

    Each batch is a dict: ``images`` (uint8, ``[B, S, S, 3]``, or ``[B, 3, S, S]`` with
    ``layout="NCHW"``; a NumPy array that owns the Rust buffer, a torch tensor after the
    DataLoader), ``texts``, ``keys``, ``shards`` (lists of str) and ``meta`` (the parsed ``json``
    member of each sample, list of dict).

    Shards are split across DDP ranks and DataLoader workers (shard ``i`` goes to
    ``rank * num_workers + worker``, modulo ``world_size * num_workers``), so every sample is
    read exactly once per epoch; a process with no shard yields nothing. Use as many shards as
    ``world_size * num_workers`` or more.

    Args:
        shards: a path, glob or brace pattern (``"data/shard-{000000..000009}.tar"``), or a list
            of them. Every path must exist (FileNotFoundError otherwise).
        batch_size: samples per batch.
        image_size: side of the square output images, in pixels.
        resize: ``"squash"`` (resize both sides, big_vision's default), ``"center_crop"``
            (central square, then resize) or ``"random_resized_crop"`` (torchvision's, seeded
            per sample by ``seed``, epoch and key).
        layout: ``"NHWC"`` (default) or ``"NCHW"``.
        shuffle: shuffle the shard order (per epoch) and samples in a buffer.
        shuffle_buffer: samples in the shuffle buffer (default 1000 when ``shuffle``, else 0).
        seed: base seed of every random choice; runs with the same seed, epoch and process
            layout give the same batches.
        num_threads: decode threads per process (default: the CPUs available, divided among
            DataLoader workers).
        max_pixels: images whose header declares more pixels are skipped as decompression
            bombs (default: Pillow's 89,478,485).
        scaled_decode: decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain
            (libjpeg-turbo), never below the size the resize needs; ``False`` decodes in full.
        drop_last: drop each process's last, short batch.
        prefetch: batches prepared ahead, per process.
        rank, world_size: override the DDP rank and world size (default: from
            ``torch.distributed`` when initialised, else 0 and 1).

    Bad input never stops the stream: corrupt or oversized images, samples missing an image or
    caption, damaged shards are skipped and counted (``stats()``), with the first cases
    described by ``problems()``.
    """

    def __init__(
        self,
        shards: ShardSpec,
        *,
        batch_size: int = 256,
        image_size: int = 224,
        resize: str = "squash",
        layout: str = "NHWC",
        shuffle: bool = False,
        shuffle_buffer: Optional[int] = None,
        seed: int = 0,
        num_threads: Optional[int] = None,
        max_pixels: int = _core.DEFAULT_MAX_PIXELS,
        scaled_decode: bool = True,
        drop_last: bool = False,
        prefetch: int = 2,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        if isinstance(shards, (str, os.PathLike)):
            specs = [os.fspath(shards)]
        else:
            try:
                specs = [os.fspath(s) for s in shards]
            except TypeError:
                raise TypeError(
                    f"shards must be a path, a glob, a brace pattern or a list of them, not {type(shards).__name__}"
                ) from None
        if not specs:
            raise ValueError("shards is empty: give at least one shard path or pattern")
        self.shards: List[str] = _core.expand_shards(specs)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.image_size = _check_int("image_size", image_size, 8, 8192)
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(map(repr, RESIZE_MODES))}, not {resize!r}")
        self.resize = resize
        if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', not {layout!r}")
        self.layout = layout.upper()
        self.shuffle = bool(shuffle)
        if shuffle_buffer is None:
            shuffle_buffer = 1000 if self.shuffle else 0
        self.shuffle_buffer = _check_int("shuffle_buffer", shuffle_buffer, 0)
        self.seed = _check_int("seed", seed, 0, 2**63 - 1)
        self.num_threads = None if num_threads is None else _check_int("num_threads", num_threads, 1, 1024)
        self.max_pixels = _check_int("max_pixels", max_pixels, 1)
        self.scaled_decode = bool(scaled_decode)
        self.drop_last = bool(drop_last)
        self.prefetch = _check_int("prefetch", prefetch, 1, 1024)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (to take them from torch.distributed)")
        if world_size is not None:
            _check_int("world_size", world_size, 1)
            _check_int("rank", rank, 0, world_size - 1)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._stats = _SharedStats()
        self._problems: List[Dict[str, str]] = []

    # -- epochs and splitting -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: it reseeds the shard order, the sample shuffle and the random crops."""
        self.epoch = _check_int("epoch", epoch, 0)

    def _rank_world(self) -> Tuple[int, int]:
        if self.world_size is not None:
            return int(self.rank), int(self.world_size)  # type: ignore[arg-type]
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def shards_for(self, rank: int, world_size: int, worker: int, num_workers: int) -> List[str]:
        """The shards that DataLoader worker ``worker`` of rank ``rank`` reads this epoch."""
        order = list(self.shards)
        if self.shuffle:
            random.Random(_mix_seed(self.seed, self.epoch, "shards")).shuffle(order)
        slot, slots = rank * num_workers + worker, world_size * num_workers
        return order[slot::slots]

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        rank, world = self._rank_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.shards_for(rank, world, worker, workers)
        if len(self.shards) < world * workers and worker == 0 and rank == 0:
            log.warning(
                "%d shards for %d readers (%d ranks x %d workers): some readers get no shard and idle; "
                "use fewer workers or more, smaller shards",
                len(self.shards), world * workers, world, workers,
            )
        if not shards:
            return
        threads = self.num_threads or max(1, _available_cpus() // workers)
        core = _core.Stream(
            shards,
            batch_size=self.batch_size,
            image_size=self.image_size,
            resize=self.resize,
            layout=self.layout,
            shuffle_buffer=self.shuffle_buffer,
            seed=_mix_seed(self.seed, self.epoch, rank * workers + worker),
            num_threads=threads,
            max_pixels=self.max_pixels,
            scaled_decode=self.scaled_decode,
            drop_last=self.drop_last,
            prefetch=self.prefetch,
        )
        row = self._stats.row_of(info.id if info is not None else None)
        base = self._stats.read_row(row)
        try:
            for batch in core:
                self._stats.write_row(row, base, core.stats())
                yield batch
        finally:
            self._stats.write_row(row, base, core.stats())
            problems = core.problems()
            core.close()
            for i, p in enumerate(problems):
                level = logging.WARNING if i < WARN_PROBLEMS else logging.DEBUG
                log.log(level, "skipped or repaired %s in %s: %s (%s)", p["key"] or "-", p["shard"], p["reason"], p["message"])
            if info is None:
                self._problems.extend(problems)

    # -- counters -------------------------------------------------------------------------

    def stats(self) -> Dict[str, int]:
        """Counters summed over this process and its DataLoader workers since construction
        (or ``reset_stats``): samples read and yielded, and every skip or repair by reason."""
        return self._stats.total()

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._stats.reset()
        self._problems.clear()

    def problems(self) -> List[Dict[str, str]]:
        """The first problems met when iterating in this process (reason, shard, key,
        message); DataLoader workers log theirs to the ``webli_io`` logger instead."""
        return list(self._problems)

    def __repr__(self) -> str:
        return (
            f"WebLIStream({len(self.shards)} shards, batch_size={self.batch_size}, image_size={self.image_size}, "
            f"resize={self.resize!r}, shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})"
        )
