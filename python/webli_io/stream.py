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
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from torch.utils.data import IterableDataset, get_worker_info

from . import _core
from .parquet import ParquetOpener, is_table_shard, num_rows

log = logging.getLogger("webli_io")

PathLike = Union[str, "os.PathLike[str]"]
ShardSpec = Union[PathLike, Sequence[PathLike]]

RESIZE_MODES = ("squash", "center_crop", "random_resized_crop")
LAYOUTS = ("NHWC", "NCHW")
#: Target mixtures by name. "webli-100b": the paper's recipe, each of the 7 Crossmodal-3600
#: low-resource languages at 1% of the mix (7% in all), the other 93% the original stream.
MIXTURES: Dict[str, Dict[str, float]] = {
    "webli-100b": {lang: 0.01 for lang in ("bn", "fil", "hi", "he", "mi", "sw", "te")},
}
#: Problems kept for ``problems()`` (the newest; all are counted in ``stats()``).
MAX_PROBLEMS = 1000
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
    """Image–text batches from WebDataset ``.tar`` or Parquet shards, decoded and resized in Rust.

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
            of them. Every local path must exist (FileNotFoundError otherwise). Tar shards may
            be URLs: ``http(s)://``, ``s3://``, ``gs://``, ``pipe:CMD`` (streamed, resumed by
            HTTP Range when a connection drops; see ``rust/remote.rs``). ``.parquet`` shards
            are read with pyarrow (img2dataset's columns; see ``columns``).
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
        lang_fields: the ``json`` fields read for each sample's language, in order (default
            ``language``, ``lang``, ``content-language``, ``content_language``); tags are
            normalised (``iw`` → ``he``, ``tl`` → ``fil``, ``en-US`` → ``en``), missing → ``und``.
            Each batch carries ``langs``.
        mixture: rebalance languages to target shares, ``{"bn": 0.01, ...}`` or a preset name
            (``"webli-100b"``: the paper's 7 low-resource languages at 1% each): their samples
            are repeated, the others thinned evenly, keeping the epoch's length.
        mixture_temperature: instead of ``mixture``, temperature sampling ``p ∝ n^(1/T)``.
        manifest: the ``manifest.json`` of ``webli-io prepare`` (or its folder): exact language
            counts for the mixture. Without it the shares are estimated online.
        mixture_window: copies of a sample are spread over this many following samples.
        subset: keep this fraction of the pairs, e.g. ``0.01`` and ``0.1`` for the paper's 1B and
            10B sets out of 100B: a pair is kept iff a seeded hash of its key is below the
            fraction, so subsets are nested and the same on every run, machine and worker count.
        subset_seed: the seed of that hash (keep it fixed to keep the same subsets).
        dedup: drop a pair whose image bytes (xxh3, 64 bits) came earlier in this reader's
            stream; the set holds up to ``dedup_capacity`` hashes a generation, two generations
            (10 to 21 MB per million hashes as the table fills and doubles; 16.5 MB measured at 1 M).
        min_score: filters, off by default (the paper: CLIP filtering costs cultural
            diversity): keep a pair only if each named metadata field is at least its value,
            e.g. ``{"clip_score": 0.28}``.
        drop_if: drop a pair whose metadata field has one of the values, e.g.
            ``{"NSFW": ["NSFW", "UNSURE"]}``.
        min_image_side, max_aspect_ratio: drop images with a shorter side under, or a long/short
            ratio over, these (checked after decoding).
        blocklist: decontamination: a file from ``webli-io index-eval``; pairs whose image is a
            near-duplicate of an evaluation image are dropped (``skipped_blocklisted``).
        blocklist_radius: (pHash, dHash) Hamming radii of a match (default (6, 12), from
            ``benches/neardup.py``: recall ≥ 0.95, no false match against 1 M hashes).
        near_dedup: drop images that are near-duplicates (perceptual fingerprint within
            ``near_dedup_radius``) of an earlier image of this reader's stream. It compares
            whole-image fingerprints: re-encoded, rescaled and brightened copies are caught,
            cropped ones mostly not (the blocklist stores crop variants; the stream does not,
            to keep one fingerprint per image).
        equal_batches: ``None`` (default: each reader yields what its shards hold), ``"drop"``
            or ``"pad"``: every reader (rank x worker) yields exactly the same number of full
            batches per epoch, so DDP ranks never wait on each other at an epoch's end.
            ``"drop"`` takes the smallest reader's count and drops the rest; ``"pad"`` takes the
            largest and fills the others by repeating their own samples (another shuffle). The
            counts come from a scan of the tar headers (Parquet: the footers) at construction.
        columns: Parquet shards only: the metadata columns to read besides image, caption and
            key (``None``, the default: all of them). Shards ending in ``.parquet`` are read
            with pyarrow, row group by row group, and handed to the core without a copy.

    Resume: each batch carries ``position`` (epoch, reader slot, samples consumed). Iterating in
    this process (``num_workers=0``) keeps track by itself; with DataLoader workers, call
    ``stream.observe(batch)`` for each batch the loop receives (or use torchdata's
    ``StatefulDataLoader``, which calls ``state_dict``/``load_state_dict`` in the workers).
    ``state_dict()`` then describes where the epoch stands, and ``load_state_dict(state)`` on a
    new stream with the same shards, seed and shuffle makes its next iteration continue with
    exactly the batches an uninterrupted run would have given (same number of readers), or with
    exactly the samples not yet seen (another number of readers).

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
        equal_batches: Optional[str] = None,
        lang_fields: Optional[Sequence[str]] = None,
        mixture: Union[None, str, Mapping[str, float]] = None,
        mixture_temperature: Optional[float] = None,
        manifest: Optional[str] = None,
        mixture_window: int = 10_000,
        subset: Optional[float] = None,
        subset_seed: int = 0,
        dedup: bool = False,
        dedup_capacity: int = 10_000_000,
        min_score: Optional[Mapping[str, float]] = None,
        drop_if: Optional[Mapping[str, Sequence[Any]]] = None,
        min_image_side: int = 0,
        max_aspect_ratio: Optional[float] = None,
        blocklist: Optional[str] = None,
        blocklist_radius: Optional[Tuple[int, int]] = None,
        near_dedup: bool = False,
        near_dedup_radius: Optional[Tuple[int, int]] = None,
        columns: Optional[Sequence[str]] = None,
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
        if equal_batches not in (None, "drop", "pad"):
            raise ValueError(f"equal_batches must be None, 'drop' or 'pad', not {equal_batches!r}")
        self.equal_batches = equal_batches
        self.lang_fields = list(lang_fields) if lang_fields is not None else None
        if self.lang_fields is not None and (not self.lang_fields or not all(isinstance(f, str) for f in self.lang_fields)):
            raise ValueError("lang_fields must be a non-empty list of json field names, e.g. ['language', 'lang']")
        if isinstance(mixture, str):
            if mixture not in MIXTURES:
                raise ValueError(f"unknown mixture {mixture!r}: use one of {sorted(MIXTURES)} or a dict {{lang: share}}")
            mixture = MIXTURES[mixture]
        if mixture is not None:
            mixture = {str(k): float(v) for k, v in dict(mixture).items()}
            if any(not 0.0 <= v <= 1.0 for v in mixture.values()) or sum(mixture.values()) > 1.0 + 1e-9:
                raise ValueError(f"mixture shares must each be in [0, 1] and sum to at most 1, not {mixture}")
        if mixture is not None and mixture_temperature is not None:
            raise ValueError("give mixture= or mixture_temperature=, not both")
        if mixture_temperature is not None and not mixture_temperature > 0:
            raise ValueError(f"mixture_temperature must be positive, not {mixture_temperature}")
        self.mixture, self.mixture_temperature = mixture, mixture_temperature
        self.mixture_window = _check_int("mixture_window", mixture_window, 1)
        if subset is not None and not (isinstance(subset, (int, float)) and 0.0 < subset <= 1.0):
            raise ValueError(f"subset must be a fraction in (0, 1], e.g. 0.01 for the 1% subset, not {subset!r}")
        self.subset = None if subset is None else float(subset)
        self.subset_seed = _check_int("subset_seed", subset_seed, 0, 2**63 - 1)
        self.dedup = bool(dedup)
        self.dedup_capacity = _check_int("dedup_capacity", dedup_capacity, 1)
        self.min_score = {str(k): float(v) for k, v in dict(min_score or {}).items()}
        self.drop_if: Dict[str, List[str]] = {}
        for field, values in dict(drop_if or {}).items():
            if isinstance(values, (str, bool, int, float)):
                values = [values]
            self.drop_if[str(field)] = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
        self.min_image_side = _check_int("min_image_side", min_image_side, 0)
        if max_aspect_ratio is not None and not max_aspect_ratio >= 1.0:
            raise ValueError(f"max_aspect_ratio must be at least 1 (long side / short side), not {max_aspect_ratio!r}")
        self.max_aspect_ratio = max_aspect_ratio
        def radius(name: str, value: Optional[Tuple[int, int]]) -> Tuple[int, int]:
            if value is None:
                return tuple(_core.DEFAULT_NEAR_RADIUS)  # type: ignore[return-value]
            if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value)
                    and 0 <= value[0] <= 11 and 0 <= value[1] <= 64):
                raise ValueError(f"{name} must be (pHash bits <= 11, dHash bits <= 64), not {value!r}")
            return int(value[0]), int(value[1])

        if blocklist is not None and not os.path.isfile(os.fspath(blocklist)):
            raise FileNotFoundError(f"blocklist not found: {os.fspath(blocklist)!r} (write one with `webli-io index-eval`)")
        self.blocklist = None if blocklist is None else os.fspath(blocklist)
        self.blocklist_radius = radius("blocklist_radius", blocklist_radius)
        self.near_dedup = bool(near_dedup)
        self.near_dedup_radius = radius("near_dedup_radius", near_dedup_radius)
        self._table_opener: Optional[ParquetOpener] = (
            ParquetOpener(meta_columns=columns) if any(is_table_shard(s) for s in self.shards) else None
        )
        self.mixture_counts: Optional[Dict[str, int]] = None
        if manifest is not None:
            from .prepare import load_counts

            self.mixture_counts = load_counts(os.fspath(manifest))
        elif mixture is not None or mixture_temperature is not None:
            log.warning("no manifest given: the language shares are estimated online from the samples seen so far, "
                        "so the mixture settles as the stream goes (write one with `webli-io prepare`)")
        # Samples per shard from the tar headers: needed to give every reader the same number of
        # batches. One header scan per shard, here, so that every worker agrees.
        self._counts: Optional[List[int]] = self._count_samples() if equal_batches else None
        self.epoch = 0
        self._resume: Optional[Dict[str, Any]] = None
        self._positions: Dict[int, Dict[str, int]] = {}
        self._positions_epoch = 0
        self._slots: Optional[int] = None
        self._stats = _SharedStats()
        self._problems: List[Dict[str, str]] = []

    # -- epochs and splitting -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: it reseeds the shard order, the sample shuffle and the random crops."""
        self.epoch = _check_int("epoch", epoch, 0)
        if self._positions_epoch != self.epoch:
            self._positions, self._positions_epoch = {}, self.epoch

    def _rank_world(self) -> Tuple[int, int]:
        if self.world_size is not None:
            return int(self.rank), int(self.world_size)  # type: ignore[arg-type]
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _order(self) -> List[str]:
        """This epoch's shard order: the same in every process."""
        order = list(self.shards)
        if self.shuffle:
            random.Random(_mix_seed(self.seed, self.epoch, "shards")).shuffle(order)
        return order

    def shards_for(self, rank: int, world_size: int, worker: int, num_workers: int) -> List[str]:
        """The shards that DataLoader worker ``worker`` of rank ``rank`` reads this epoch."""
        slot, slots = rank * num_workers + worker, world_size * num_workers
        return self._order()[slot::slots]

    def _slot_seed(self, slot: int) -> int:
        return _mix_seed(self.seed, self.epoch, slot)

    def _batches_per_reader(self, slots: int, exclude: Optional[Dict[str, bytes]] = None) -> int:
        """With ``equal_batches``: the number of full batches every reader yields this epoch
        (of the samples not excluded, after a resume on another layout)."""
        assert self._counts is not None
        count = dict(zip(self.shards, self._counts))
        for shard, bitmap in (exclude or {}).items():
            count[shard] = max(0, count.get(shard, 0) - sum(bin(b).count("1") for b in bitmap))
        order = self._order()
        per_slot = [sum(count[s] for s in order[i::slots]) for i in range(slots)]
        if self.equal_batches == "drop":
            return min(n // self.batch_size for n in per_slot)
        return max(-(-n // self.batch_size) for n in per_slot)

    def _count_samples(self) -> List[int]:
        tars = [s for s in self.shards if not is_table_shard(s)]
        counted = dict(zip(tars, _core.count_samples(tars))) if tars else {}
        return [num_rows(s) if is_table_shard(s) else counted[s] for s in self.shards]

    def _exclusions(self, state: Dict[str, Any], mine: List[str]) -> Dict[str, bytes]:
        """Per-shard bitmaps of the samples consumed before `state` was taken, for the shards
        in `mine`, found by replaying (reading, not decoding) the readers of that layout."""
        exclude: Dict[str, bytes] = self._exclusions(state["base"], mine) if state.get("base") else {}
        order, slots, wanted = self._order(), state["slots"], set(mine)
        for slot in range(slots):
            consumed = int(state["positions"].get(str(slot), {}).get("seq", 0))
            theirs = order[slot::slots]
            if consumed and wanted.intersection(theirs):
                exclude = _core.consumed_bitmaps(
                    theirs, consumed, seed=self._slot_seed(slot), shuffle_buffer=self.shuffle_buffer, exclude=exclude,
                    table_reader=self._table_opener,
                )
        return exclude

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
        slot, slots = rank * workers + worker, world * workers
        skip, yielded, exclude = 0, 0, {}
        resume = self._resume if self._resume is not None and self._resume["epoch"] == self.epoch else None
        if resume is not None:
            if resume["slots"] == slots:
                mine = resume["positions"].get(str(slot), {})
                skip, yielded = int(mine.get("seq", 0)), int(mine.get("yielded", 0))
                if resume.get("base"):
                    exclude = self._exclusions(resume["base"], self.shards if self.equal_batches else shards)
            else:
                exclude = self._exclusions(resume, self.shards if self.equal_batches else shards)
        limit, cycle = 0, False
        if self.equal_batches:
            per_reader = self._batches_per_reader(slots, exclude) * self.batch_size
            limit, cycle = per_reader - yielded, True
            if not shards and limit > 0:
                # A reader with no shard of its own pads from one shard (equal_batches="pad").
                shards = [self._order()[slot % len(self.shards)]]
        if not shards or (self.equal_batches and limit <= 0):
            return
        threads = self.num_threads or max(1, _available_cpus() // workers)
        core = _core.Stream(
            shards,
            batch_size=self.batch_size,
            image_size=self.image_size,
            resize=self.resize,
            layout=self.layout,
            shuffle_buffer=self.shuffle_buffer,
            seed=self._slot_seed(slot),
            num_threads=threads,
            max_pixels=self.max_pixels,
            scaled_decode=self.scaled_decode,
            drop_last=self.drop_last or bool(self.equal_batches),
            prefetch=self.prefetch,
            skip=skip,
            exclude=exclude,
            limit=limit,
            cycle=cycle,
            lang_fields=self.lang_fields,
            mixture=self.mixture,
            mixture_temperature=self.mixture_temperature,
            mixture_counts=self.mixture_counts,
            mixture_window=self.mixture_window,
            subset=self.subset,
            subset_seed=self.subset_seed,
            min_score=self.min_score,
            drop_if=self.drop_if,
            dedup_capacity=self.dedup_capacity if self.dedup else None,
            min_image_side=self.min_image_side,
            max_aspect_ratio=self.max_aspect_ratio or 0.0,
            blocklist=self.blocklist,
            blocklist_radius=self.blocklist_radius,
            near_dedup_radius=self.near_dedup_radius if self.near_dedup else None,
            table_reader=self._table_opener,
        )
        row = self._stats.row_of(info.id if info is not None else None)
        base = self._stats.read_row(row)
        self._slots = slots
        if self._positions_epoch != self.epoch:
            self._positions, self._positions_epoch = {}, self.epoch
        try:
            for batch in core:
                self._stats.write_row(row, base, core.stats())
                yielded += len(batch["keys"])
                batch["position"] = {"epoch": self.epoch, "slot": slot, "slots": slots, "seq": batch.pop("next_seq"), "yielded": yielded}
                self._positions[slot] = {"seq": batch["position"]["seq"], "yielded": yielded}
                yield batch
        finally:
            self._stats.write_row(row, base, core.stats())
            problems = core.problems()
            core.close()
            for i, p in enumerate(problems):
                level = logging.WARNING if i < WARN_PROBLEMS else logging.DEBUG
                log.log(level, "skipped or repaired %s in %s: %s (%s)", p["key"] or "-", p["shard"], p["reason"], p["message"])
            if info is None:
                self._problems = (self._problems + problems)[-MAX_PROBLEMS:]

    # -- resume ---------------------------------------------------------------------------

    def observe(self, batch: Dict[str, Any]) -> None:
        """Record that the training loop received `batch` (needed for ``state_dict`` when the
        batches come from DataLoader worker processes; harmless otherwise)."""
        pos = batch.get("position")
        if not isinstance(pos, dict):
            raise ValueError("observe() takes a batch of this stream (a dict with a 'position')")
        epoch, slot, slots, seq, yielded = (int(pos[k]) for k in ("epoch", "slot", "slots", "seq", "yielded"))
        if epoch != self._positions_epoch:
            self._positions, self._positions_epoch = {}, epoch
        self._slots = slots
        if seq >= self._positions.get(slot, {}).get("seq", -1):
            self._positions[slot] = {"seq": seq, "yielded": yielded}

    def _identity(self) -> Dict[str, Any]:
        digest = hashlib.blake2b("\n".join(self.shards).encode(), digest_size=16).hexdigest()
        return {"seed": self.seed, "shards": len(self.shards), "shards_digest": digest,
                "shuffle": self.shuffle, "shuffle_buffer": self.shuffle_buffer}

    def state_dict(self) -> Dict[str, Any]:
        """Where this epoch stands: per reader slot, the samples of its shuffled stream consumed
        by the batches seen so far. Plain data (ints, strings, dicts): ``torch.save`` or JSON."""
        positions = {str(k): v for k, v in self._positions.items()} if self._positions_epoch == self.epoch else {}
        slots, base = self._slots, None
        resume = self._resume if self._resume is not None and self._resume["epoch"] == self.epoch else None
        if resume is not None:
            if slots is None or slots == resume["slots"]:
                # Same layout: readers not seen since the restart keep their old place.
                positions = {**resume["positions"], **positions}
                slots, base = resume["slots"], resume.get("base")
            else:
                base = resume  # another layout: the old state stays the base of this one
        return {"version": 1, "epoch": self.epoch, "slots": slots, "positions": positions, "base": base, **self._identity()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from `state` (from ``state_dict``) at the next iteration: it sets the epoch,
        and the readers skip what was consumed. The shards, seed and shuffle must be the same."""
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError("not a webli-io state (expected the dict from WebLIStream.state_dict())")
        mine = self._identity()
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(f"cannot resume: the state was taken with {key}={state.get(key)!r}, this stream has {value!r}")
        self.epoch = int(state["epoch"])
        if state.get("slots") is None or not state.get("positions"):
            self._resume = None  # nothing consumed yet: start the epoch from the beginning
        else:
            self._resume = state
        self._positions, self._positions_epoch = {}, self.epoch
        self._slots = None

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
