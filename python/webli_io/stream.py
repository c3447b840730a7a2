"""`WebLIStream`: the torch IterableDataset over the Rust core.

The settings are one value, :class:`Options`, built and validated once in the core; the process
topology (rank, world size) is resolved once where the stream is built and carried to DataLoader
workers; the epoch reaches workers through shared memory, whatever their lifetime. At iteration
time a reader (rank x worker) takes its share of the shards and runs the native pipeline over
them. Counters live in a small shared-memory table, so that `stats()` in the main process sums
what every DataLoader worker saw.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import multiprocessing as mp
import os
import warnings
from dataclasses import dataclass
from multiprocessing.context import get_spawning_popen
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

if TYPE_CHECKING:
    from typing_extensions import Unpack
from torch.utils.data.dataloader import _InfiniteConstantSampler

from . import _core
from ._batches import StreamLoader
from ._settings import Settings
from .extras import decode_member
from .parquet import ParquetOpener, is_table_shard, num_rows, require_pyarrow

log = logging.getLogger("webli_io")

PathLike = Union[str, "os.PathLike[str]"]
ShardSpec = Union[PathLike, Sequence[PathLike]]

#: The settings of a stream, validated once in the core (see WebLIStream for each one).
Options = _core.Options
#: A wrong setting (a ValueError); ``.setting`` names it.
ConfigError = _core.ConfigError
#: Problems kept for ``problems()`` (the newest; all are counted in ``stats()``).
MAX_PROBLEMS = 1000
#: Problems logged at WARNING per stream; the rest go to DEBUG (all are counted in `stats()`).
WARN_PROBLEMS = 5


class Batch(dict):
    """One batch of a :class:`WebLIStream`: a dict (``images``, ``texts``, ``keys``, ...).

    Its own type so that a DataLoader that tries to batch the batches (any ``batch_size`` but
    ``None``) stops with an error saying so, rather than stacking them or failing in collate."""


def _refuse_collate(batch: Any, *, collate_fn_map: Any = None) -> Any:
    raise TypeError(
        "WebLIStream yields whole batches (its batch_size= setting): build the DataLoader with "
        "batch_size=None, e.g. DataLoader(stream, batch_size=None, num_workers=4), or use stream.loader(num_workers=4)"
    )


def _register_collate() -> None:
    try:
        from torch.utils.data._utils.collate import default_collate_fn_map
    except ImportError:  # pragma: no cover - torch < 1.13 has no collate map
        return
    default_collate_fn_map[Batch] = _refuse_collate


_register_collate()


def needed_columns(options: Options) -> Optional[List[str]]:
    """Parquet: the metadata columns to read for these settings: ``columns``, plus every field
    the filters (``min_score``, ``drop_if``) and the language (``lang_fields``) read, so that a
    projection never leaves a filter without its column. None: all columns."""
    if options.columns is None:
        return None
    need = list(options.columns) + list(options.min_score) + list(options.drop_if)
    need += list(options.lang_fields or _core.DEFAULT_LANG_FIELDS)
    return list(dict.fromkeys(need))


class ObserveWarning(UserWarning):
    """``state_dict()`` was called with batches from DataLoader workers never passed to
    ``observe()``."""


#: The limit of a resampled reader without ``samples_per_epoch``: without end, in practice.
RESAMPLED_FOREVER = 1 << 62

#: Counters kept by the Python layer, beside the core's (``stream.stats()`` sums both):
#: ``samples_dropped_equal``: samples of a reader's own shards that ``equal_batches="drop"`` left
#: out of the epoch to give every reader the same number of batches (counted when the reader's
#: epoch ends, from the shard counts).
PY_COUNTERS = ("samples_dropped_equal",)

#: A reader that must pad and has nothing of its own pads from at most this many of the epoch's
#: shards (the first of its order): enough for any share, and bounded at 12.5 M shards.
FALLBACK_SHARDS = 1024

#: Version of the dict that ``state_dict`` returns. 3: the epoch's shard order is a random-access
#: permutation (a version-2 state was taken in another order), the shards bound by their digest.
STATE_VERSION = 3


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _mix_seed(*parts: Union[int, str]) -> int:
    """A 64-bit seed from several integers (and names), the same in every process and on every machine."""
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def _check_int(name: str, value: Any, lo: int, hi: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return value


def options_from(namespace: Any, **fixed: Any) -> Options:
    """The stream settings among a namespace's attributes (an ``argparse.Namespace`` whose
    ``dest`` names are setting names), plus `fixed`: how the CLI and the trainer build their one
    :class:`Options` without listing the settings again. Unset (None) attributes keep defaults."""
    given = {name: getattr(namespace, name) for name in Options.names() if getattr(namespace, name, None) is not None}
    return Options(**{**given, **fixed})


#: Counters of shards that could not be read whole (what ``strict=True`` turns into an error).
SHARD_LOSSES = ("shard_unreadable", "shard_truncated", "shard_corrupt", "shard_table_corrupt")


class ShardError(RuntimeError):
    """``strict=True``: a shard could not be read whole."""


def _raise_if_shard_lost(counts: Mapping[str, int], problems: Callable[[], Sequence[Mapping[str, str]]]) -> None:
    if any(counts.get(k) for k in SHARD_LOSSES):
        lost = [f"{p['shard']}: {p['reason']} ({p['message']})" for p in problems() if p["reason"] in SHARD_LOSSES]
        raise ShardError("strict=True: a shard could not be read whole: " + "; ".join(lost[:3]))


def _config_error(setting: str, message: str) -> Exception:
    err = ConfigError(f"{setting}: {message}")
    err.setting = setting  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class Topology:
    """Which rank of how many this process is, and where that was learned."""

    rank: int
    world_size: int
    #: "explicit" (rank=/world_size=), "torch.distributed", "env" (RANK/WORLD_SIZE), or
    #: "default" (none of them: one process; looked up again where the loader is built).
    source: str


def resolve_topology(rank: Optional[int] = None, world_size: Optional[int] = None) -> Topology:
    """The topology, in order: explicit ``rank``/``world_size``; ``torch.distributed`` when
    initialised; the ``RANK``/``WORLD_SIZE`` variables torchrun and SLURM launchers set; else
    rank 0 of 1."""
    if (rank is None) != (world_size is None):
        raise _config_error("rank", "give both rank and world_size, or neither (to take them from torch.distributed or RANK/WORLD_SIZE)")
    if world_size is not None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise _config_error("world_size", f"must be an int >= 1, not {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise _config_error("rank", f"must be an int in [0, {world_size}), not {rank!r}")
        return Topology(rank, world_size, "explicit")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Topology(dist.get_rank(), dist.get_world_size(), "torch.distributed")
    env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if env_rank is not None and env_world is not None:
        try:
            r, w = int(env_rank), int(env_world)
        except ValueError:
            raise _config_error("rank", f"RANK={env_rank!r} / WORLD_SIZE={env_world!r} are not integers") from None
        if not 0 <= r < w:
            raise _config_error("rank", f"RANK={r} is outside WORLD_SIZE={w}")
        return Topology(r, w, "env")
    return Topology(0, 1, "default")


def _refuse_accelerate_wrappers() -> None:
    """A stream iterated by Accelerate's own loaders (``accelerator.prepare(DataLoader(stream))``)
    loses data silently: ``DataLoaderDispatcher`` feeds every rank from rank 0's stream, which
    reads rank 0's shards only, and ``IterableDatasetShard`` re-splits a stream of batches as if
    it were samples. Seen from the calling frames (in the process that iterates), refused."""
    import sys
    from types import FrameType

    frame: Optional[FrameType] = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            return
        name = frame.f_code.co_filename.replace("\\", "/")
        if name.endswith("accelerate/data_loader.py"):
            raise TypeError(
                "a WebLIStream inside a DataLoader prepared by Accelerate: its loaders would feed every rank from rank 0's "
                "shards (or re-split batches as samples), losing data. Pass stream.loader(...) to accelerator.prepare "
                "(Accelerate leaves it as it is: each rank streams its own shards), or iterate it without prepare"
            )
        frame = frame.f_back


class _EpochSampler(_InfiniteConstantSampler):
    """The sampler of a loader made by :meth:`WebLIStream.loader`: what DataLoader gives an
    iterable dataset (``None`` forever), plus ``set_epoch``, forwarded to the stream."""

    def __init__(self, stream: WebLIStream) -> None:
        super().__init__()
        self._stream = stream

    def set_epoch(self, epoch: int) -> None:
        self._stream.set_epoch(epoch)


def _die_with_parent() -> None:
    """In a DataLoader worker: be killed when the process that started it dies. torch's own
    check runs only between batches; a worker blocked in a read (a stalled server, a hung
    inherited runtime) outlived a killed trainer for 21 minutes, ignoring SIGTERM. Linux's
    ``PR_SET_PDEATHSIG`` makes the kernel send SIGKILL at the parent's death; a worker whose
    parent died before this call exits now. Elsewhere: nothing (torch's check remains)."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        os._exit(1)


class _Shared:
    """Memory shared by the main process and its DataLoader workers: the counters (one row per
    worker, one for the main process; each process writes only its own row, the main process
    sums them) and the epoch (written by ``set_epoch``, read by every ``__iter__``, so workers
    kept alive by ``persistent_workers=True`` see it). It travels to worker processes by
    inheritance (fork) or as a spawning argument (spawn, forkserver).
    """

    ROWS = 257  # 256 worker rows + the main process

    def __init__(self) -> None:
        self.names: List[str] = list(_core.STAT_NAMES) + list(PY_COUNTERS)
        self.table = mp.RawArray(ctypes.c_int64, self.ROWS * len(self.names))
        self.epoch = mp.RawValue(ctypes.c_int64, 0)
        # Rows are shared: worker 0 of two DataLoaders over one stream writes row 0 from two
        # processes. Each adds what its counters gained since its last write, under this lock,
        # so neither overwrites the other's. (A spawn-context lock: it may be inherited by fork,
        # and passed to spawn and forkserver workers; a fork-context one only inherited.)
        self.lock = mp.get_context("spawn").Lock()
        # equal_batches' batches per reader for one (epoch, slots): [epoch + 1, slots, batches].
        self.batches = mp.RawArray(ctypes.c_int64, 3)

    def batches_for(self, key: tuple) -> Optional[int]:
        b = self.batches
        return int(b[2]) if (b[0], b[1]) == (key[0] + 1, key[1]) else None

    def set_batches(self, key: tuple, batches: int) -> None:
        self.batches[0], self.batches[1], self.batches[2] = key[0] + 1, key[1], batches

    def row_of(self, worker_id: Optional[int]) -> int:
        return self.ROWS - 1 if worker_id is None else worker_id % (self.ROWS - 1)

    def add(self, row: int, last: List[int], counts: Dict[str, int]) -> List[int]:
        """Add to ``row`` what ``counts`` gained over ``last`` (the counts at the last call,
        zeros at first); returns the new ``last``."""
        n = len(self.names)
        now = [counts.get(k, 0) for k in self.names]
        with self.lock:
            for i, (a, b) in enumerate(zip(now, last)):
                if a != b:
                    self.table[row * n + i] += a - b
        return now

    def zeros(self) -> List[int]:
        return [0] * len(self.names)

    def total(self) -> Dict[str, int]:
        n = len(self.names)
        values = list(self.table)
        return {k: sum(values[r * n + i] for r in range(self.ROWS)) for i, k in enumerate(self.names)}

    def worker_batches(self) -> int:
        """Batches yielded by worker processes (all rows but the main process's)."""
        n, i = len(self.names), self.names.index("batches_yielded")
        values = list(self.table)
        return sum(values[r * n + i] for r in range(self.ROWS - 1))

    def reset(self) -> None:
        ctypes.memset(self.table, 0, ctypes.sizeof(self.table))

    def __getstate__(self) -> Dict[str, Any]:
        if get_spawning_popen() is None:
            # Pickled for another purpose than starting a worker (e.g. a copy): the copy keeps
            # its own counters and epoch rather than failing.
            return {"names": self.names, "table": None, "epoch": int(self.epoch.value), "lock": None, "batches": None}
        return {"names": self.names, "table": self.table, "epoch": self.epoch, "lock": self.lock, "batches": self.batches}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.names = state["names"]
        self.table = state["table"] if state["table"] is not None else mp.RawArray(ctypes.c_int64, self.ROWS * len(self.names))
        self.lock = state.get("lock") or mp.get_context("spawn").Lock()
        self.batches = state.get("batches") or mp.RawArray(ctypes.c_int64, 3)
        epoch = state["epoch"]
        if isinstance(epoch, int):
            self.epoch = mp.RawValue(ctypes.c_int64, epoch)
        else:
            self.epoch = epoch


def _check_state(state: Any, depth: int = 0) -> Dict[str, Any]:
    """Structure, types and ranges of a state from ``state_dict`` (it may come from a file)."""
    def bad(what: str) -> ValueError:
        return ValueError(f"not a usable webli-io state: {what}")

    if not isinstance(state, dict):
        raise bad(f"expected the dict from WebLIStream.state_dict(), not {type(state).__name__}")
    if state.get("version") != STATE_VERSION:
        raise bad(f"version {state.get('version')!r}, this webli-io reads version {STATE_VERSION}")
    def int_in(name: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise bad(f"{name} must be an int in [{lo}, {hi}], not {value!r}")
        return value

    int_in("epoch", state.get("epoch"), 0, 2**62)
    slots = state.get("slots")
    if slots is not None:
        int_in("slots", slots, 1, 1 << 20)
    positions = state.get("positions")
    if not isinstance(positions, dict):
        raise bad("positions must be a dict")
    for slot, pos in positions.items():
        if not isinstance(slot, str) or not slot.isdigit() or slots is None or int(slot) >= slots:
            raise bad(f"reader slot {slot!r} is not one of the {slots} slots")
        if not isinstance(pos, dict):
            raise bad(f"position of slot {slot} must be a dict")
        int_in(f"positions[{slot}].seq", pos.get("seq"), 0, 2**53)
        int_in(f"positions[{slot}].yielded", pos.get("yielded"), 0, 2**53)
    ranks = state.get("ranks")
    if ranks is not None:
        if not isinstance(ranks, dict) or not isinstance(ranks.get("covered"), list):
            raise bad("ranks must be a dict with world_size and covered")
        world = int_in("ranks.world_size", ranks.get("world_size"), 1, 1 << 20)
        for r in ranks["covered"]:
            int_in("ranks.covered[]", r, 0, world - 1)
    if state.get("base") is not None:
        if depth > 64:
            raise bad("base states nested too deep")
        _check_state(state["base"], depth + 1)
    return state


class WebLIStream(IterableDataset):
    """Image–text batches from WebDataset ``.tar`` or Parquet shards, decoded and resized in Rust.

    Use it with ``batch_size=None`` in a DataLoader (the stream makes its own batches; any
    other batch size is an error saying so), or take ``stream.loader()``::

        loader = DataLoader(WebLIStream("shards/{000..099}.tar", batch_size=256),
                            batch_size=None, num_workers=4, pin_memory=True)

    Each batch is a dict: ``images`` (uint8, ``[B, S, S, 3]``, or ``[B, 3, S, S]`` with
    ``layout="NCHW"``; a NumPy array that owns the Rust buffer, a torch tensor after the
    DataLoader), ``texts``, ``keys``, ``shards`` (lists of str) and ``meta`` (the parsed ``json``
    member of each sample, list of dict).

    Shards are split across DDP ranks and DataLoader workers (shard ``i`` goes to
    ``rank * num_workers + worker``, modulo ``world_size * num_workers``), so every sample is
    read exactly once per epoch; a process with no shard yields nothing. Use as many shards as
    ``world_size * num_workers`` or more. The rank and world size are resolved once, when the
    stream is built (explicit ``rank=``/``world_size=``, else ``torch.distributed`` when
    initialised, else the ``RANK``/``WORLD_SIZE`` variables of torchrun), and carried to the
    DataLoader workers, whatever their start method (fork, spawn, forkserver) or lifetime
    (``persistent_workers=True``): build the stream after ``init_process_group``, or pass them.

    Settings are keyword arguments (below), or an :class:`Options` value (``options=``) with
    keyword arguments overriding it. They are validated once, in the core: a wrong one raises
    :class:`ConfigError` (a ``ValueError``) naming it; ``Options.names()`` lists them all.

    Args:
        shards: a path, glob or brace pattern (``"data/shard-{000000..000009}.tar"``), or a list
            of them. Every local path must exist (FileNotFoundError otherwise). Tar shards may
            be URLs: ``http(s)://``, ``s3://``, ``gs://``, ``az://``/``abfs(s)://``,
            ``pipe:CMD`` (streamed, resumed by a ranged GET when a connection drops). Object
            stores use the cloud's standard credential chain: environment, AWS profile files,
            web identity (EKS), ECS task roles, instance profiles, GCP service accounts and
            application-default credentials, the GCE/GKE metadata server, Azure's chain (see
            ``rust/objstore.rs``). ``.parquet`` shards are read with pyarrow (img2dataset's
            columns; see ``columns``).
        batch_size: samples per batch.
        image_size: side of the square output images, in pixels.
        resize: ``"squash"`` (resize both sides, big_vision's default), ``"center_crop"``
            (central square, then resize), ``"random_resized_crop"`` (torchvision's, seeded
            per sample by ``seed``, epoch and key) or ``"letterbox"`` (the whole image, its
            longer side resized to ``image_size``, centred on black). OpenCLIP's
            ``resize_mode`` names are aliases: ``"shortest"`` is ``center_crop``, ``"longest"``
            ``letterbox``.
        interpolation: the resize filter, each as Pillow's (antialiased): ``"bilinear"``
            (default), ``"bicubic"`` (OpenCLIP's and timm's eval transforms), ``"area"``
            (``"box"``), ``"lanczos"``, ``"nearest"``. docs/howto/openclip.md bounds the
            difference from OpenCLIP's own transform.
        crop_scale, crop_ratio: ``random_resized_crop``'s range of the crop's area (fraction of
            the image, default ``(0.08, 1.0)``; OpenCLIP trains with ``(0.9, 1.0)``) and of its
            width/height (default ``(3/4, 4/3)``), as torchvision's ``scale=``/``ratio=``.
        hflip: probability of a horizontal flip, drawn per sample (default 0).
        layout: ``"NHWC"`` (default) or ``"NCHW"``.
        output: ``"uint8"`` (default: pixels as stored) or ``"float"``: ``float32``,
            ``(pixel / 255 - mean) / std`` per channel, computed in the core.
        mean, std: with ``output="float"``: three numbers (one for all channels), or a name:
            ``"clip"`` (OpenAI CLIP's constants), ``"imagenet"``, ``"siglip"`` (0.5: range
            -1..1). Default mean 0, std 1 (range 0..1). To move 4x fewer bytes to the GPU,
            keep ``uint8`` and normalise there: ``webli_io.normalize(images, mean, std)``.
        shuffle: shuffle the shard order (per epoch) and samples in a buffer.
        shuffle_buffer: samples in the shuffle buffer (default 1000 when ``shuffle``, else 0).
        shards_in_flight: shards a reader reads at once (each on a thread), taking one sample
            from each in turn into the shuffle buffer, so a batch mixes many shards even with
            img2dataset's 10k-sample shards. Default 4 when ``shuffle``, else 1 (shard order).
            The order depends only on the data, never on timing.
        extra_members: other tar members to carry into each batch, by extension, e.g.
            ``["cls", "npy"]``: ``batch["cls"]`` is then an ``int64`` array; the rule per
            extension is in ``webli_io.extras`` (``pickle``/``pth`` stay bytes: never
            unpickled). A missing member is ``None``.
        resampled: readers cycle over their shards without end (webdataset's
            ``resampled=True``; the shuffle buffer is reseeded each pass).
        samples_per_epoch: with ``resampled``: an epoch's samples over all ranks (OpenCLIP's
            ``--train-num-samples``); each rank yields ``len(stream)`` =
            ``samples_per_epoch // (batch_size * world_size)`` full batches, whatever its
            number of DataLoader workers.
        transform: a callable run on each batch's ``images`` (a torch tensor, after the core)
            in the reader process (the DataLoader worker), e.g. torchvision v2 ops; it returns
            the new images. It costs what it computes, in Python, per batch: prefer the core's
            settings above where one exists (a batched v2 transform draws one random choice for
            the whole batch; the core draws per sample). It must pickle for spawned workers
            (no lambda).
        tokenizer: a callable run on each batch's ``texts`` (list of str) in the reader process;
            what it returns is ``batch["tokens"]`` (e.g. OpenCLIP's tokenizer: a LongTensor).
        seed: base seed of every random choice; runs with the same seed, epoch and process
            layout give the same batches.
        num_threads: decode threads per process (default: the CPUs available, divided among
            DataLoader workers).
        max_pixels: images whose header declares more pixels are skipped as decompression
            bombs (default: Pillow's 89,478,485).
        scaled_decode: decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain
            (libjpeg-turbo), never below the size the resize needs; ``False`` decodes in full.
        crop_decode: with ``center_crop`` or ``random_resized_crop``, decode only the part of a
            JPEG the crop reads, plus the resize filter's margin (libjpeg-turbo's cropping
            region: the rows below are not read, the columns outside are not transformed).
            The tiles are the same as from a whole decode; off only to measure it.
        fast_decode: libjpeg's fast chroma upsampling and fast integer IDCT: a few percent
            faster, slightly less exact (see the README's speed section). Default off.
        decode_device: ``"cpu"`` (default) or ``"cuda"``: JPEGs left encoded by the core (which
            still reads their headers: size limit, filters, the crop) and decoded on the GPU by
            nvJPEG (``torchvision.io.decode_jpeg``), cropped, resized and flipped there; batches
            then hold a CUDA tensor. Needs ``num_workers=0`` and torchvision; without a CUDA
            device it warns and decodes on the CPU. See ``webli_io.gpu``.
        drop_last: drop each process's last, short batch.
        prefetch: batches prepared ahead, per process.
        options: an :class:`Options` value holding the settings below (keywords override it).
        rank, world_size: the DDP rank and world size (not settings: the topology). Default:
            ``torch.distributed`` when initialised, else torchrun's ``RANK``/``WORLD_SIZE``,
            else 0 and 1; resolved once, here (``stream.topology``), and carried to workers.
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
        equal_batches: ``"drop"`` or ``"pad"``: every reader (rank x worker) yields exactly the
            same number of full batches per epoch, so DDP ranks never wait on each other at an
            epoch's end; ``None``: each reader yields what its shards hold. Default: ``"pad"``
            when the stream is built for more than one rank (as torch's ``DistributedSampler``
            pads), else ``None``; pass ``equal_batches=None`` explicitly to opt out.
            ``"drop"`` takes the smallest reader's count and drops the rest; ``"pad"`` takes the
            largest and fills the others by repeating their own samples (another shuffle). The
            counts come from a scan of the tar headers (Parquet: the footers) at construction.
        columns: Parquet shards only: the metadata columns to read besides image, caption and
            key (``None``, the default: all of them). Shards ending in ``.parquet`` are read
            with pyarrow, row group by row group, and handed to the core without a copy.
        max_member_bytes: a tar member, or a whole sample, over this many bytes is skipped
            (``skipped_member_too_large``; default 256 MiB).
        exif_transpose: turn images as their EXIF orientation says (off by default, as Pillow's
            ``open`` and torchvision's ``decode_jpeg``).
        allow_pipe: allow ``pipe:COMMAND`` shards, which run a shell command (off: a shard name
            is data; ``WEBLI_IO_ALLOW_PIPE=1`` allows them too). Names found by a glob are
            always local paths.
        strict: a shard that cannot be read whole (a missing remote object, a truncated tar)
            raises :class:`ShardError` instead of being counted and skipped.
        cache_dir: keep remote shards read to their end in this folder and read them from there
            the next time (next epoch, next run); files appear only once whole, and are checked
            (length, hash) before each use. The folder must be new, empty or already a webli-io
            cache: one holding other files is refused (eviction removes only the cache's own).
        cache_max_bytes: with ``cache_dir``: the most bytes it holds (least recently used shards
            are removed first; default: no limit).
        index: the folder (or URL prefix) of the shard index files that ``webli-io index`` writes
            (``<stem>.index.json`` per shard, ``index.json``); default: beside the shards. With
            an index, ``equal_batches`` counts without reading sample data (remote shards need
            one), and a resume seeks to its next sample instead of re-reading what was consumed.
            An index that no longer matches its shard is counted (``index_stale``) and not used.

    Resume: each batch carries ``position`` (epoch, reader slot, samples consumed). Iterating in
    this process (``num_workers=0``) keeps track by itself; with DataLoader workers, call
    ``stream.observe(batch)`` for each batch the loop receives (or use torchdata's
    ``StatefulDataLoader``, which calls ``state_dict``/``load_state_dict`` in the workers).
    ``state_dict()`` then describes where the epoch stands, and ``load_state_dict(state)`` on a
    new stream with the same shards and settings (it refuses others, naming the difference) makes
    its next iteration continue with exactly the batches an uninterrupted run would have given
    (same number of readers), or with exactly the samples not yet seen (another number of
    readers). In DDP, merge every rank's state with ``WebLIStream.merge_states``.

    Bad input never stops the stream: corrupt or oversized images, samples missing an image or
    caption, damaged shards are skipped and counted (``stats()``), with the first cases
    described by ``problems()``.
    """

    def __init__(
        self,
        shards: ShardSpec,
        options: Optional[Options] = None,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        transform: Optional[Callable[[Any], Any]] = None,
        tokenizer: Optional[Callable[[List[str]], Any]] = None,
        **settings: Unpack[Settings],
    ) -> None:
        super().__init__()
        for name, hook in (("transform", transform), ("tokenizer", tokenizer)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be a callable, not {type(hook).__name__}")
        self.transform = transform
        self.tokenizer = tokenizer
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
        if options is None:
            options = Options(**settings)
        elif not isinstance(options, Options):
            raise TypeError(f"options must be a webli_io.Options, not {type(options).__name__}")
        elif settings:
            options = options.replace(**settings)
        if options.decode_device == "cuda":
            from .gpu import cuda_usable

            why = cuda_usable()
            if why is not None:
                log.warning("decode_device='cuda': %s; decoding on the CPU instead (the same crops, the CPU's pixels)", why)
                options = options.replace(decode_device="cpu")
        self.topology: Topology = resolve_topology(rank, world_size)
        if (self.topology.world_size > 1 and "equal_batches" not in settings and options.equal_batches is None
                and not options.resampled):
            # Safe in DDP by default, as torch's DistributedSampler and MosaicML streaming are:
            # every rank the same number of batches (a rank that runs out first would leave the
            # others waiting in a collective, or a framework crashing at the epoch's end).
            # Opt out with equal_batches=None, given explicitly.
            options = options.replace(equal_batches="pad")
            self._equal_auto = True
        else:
            self._equal_auto = False
        self._equal_chosen = "equal_batches" in settings or options.equal_batches is not None
        if options.cache_dir is not None:
            problem = _core.cache_dir_problem(options.cache_dir)
            if problem is not None:
                raise _config_error("cache_dir", problem)
        #: The settings, validated once (immutable).
        self.options: Options = options
        # Compact: a remote brace pattern of 12.5 M names is one run (a few bytes, a small pickle).
        self.shards: _core.ShardNames = _core.shard_names(specs, allow_pipe=options.allow_pipe)
        self._table_opener: Optional[ParquetOpener] = None
        if self.shards.has_table_shards():
            require_pyarrow()
            self._table_opener = ParquetOpener(meta_columns=needed_columns(options))
        if options.manifest is None and (options.mixture is not None or options.mixture_temperature is not None):
            log.warning("no manifest given: the language shares are estimated online from the samples seen so far, "
                        "so the mixture settles as the stream goes and differs between layouts (write one with `webli-io prepare`)")
        # Samples per shard, after selection: what every reader's equal share is computed from.
        # Counted once, here, so that every worker agrees.
        self._counts: Optional[List[int]] = self._count_samples() if options.equal_batches else None
        self._shared = _Shared()
        self._resume: Optional[Dict[str, Any]] = None
        self._positions: Dict[int, Dict[str, int]] = {}
        self._observing = False  # observe() was called: positions follow it, not the yields
        self._positions_epoch = 0
        self._slots: Optional[int] = None
        self._worker_batches_mark = 0
        self._problems: List[Dict[str, str]] = []
        #: decode_device="cuda": JPEGs decoded on the CPU after nvJPEG refused them, and failed.
        self._gpu_counts: Dict[str, int] = {}
        #: DataLoader workers per rank, when known (``loader()``): what ``len()`` needs with
        #: ``equal_batches``.
        self._num_workers: Optional[int] = None

    def __getattr__(self, name: str) -> Any:
        # Settings read as attributes (stream.batch_size): one source, the options.
        if name.startswith("_") or name in ("options",):
            raise AttributeError(name)
        try:
            return getattr(self.options, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    def __getstate__(self) -> Dict[str, Any]:
        if get_spawning_popen() is not None and self.topology.source == "default":
            # Pickled to start a worker: this is the process that builds the loader, where
            # torch.distributed may have been initialised since the stream was made.
            self.topology = resolve_topology()
        return self.__dict__.copy()

    @property
    def epoch(self) -> int:
        """The epoch (shared with DataLoader workers)."""
        return int(self._shared.epoch.value)

    # -- epochs and splitting -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: it reseeds the shard order, the sample shuffle and the random crops.
        It reaches DataLoader workers already running (``persistent_workers=True``) too."""
        self._shared.epoch.value = _check_int("epoch", epoch, 0, 2**62)
        if self._positions_epoch != self.epoch:
            self._positions, self._positions_epoch = {}, self.epoch
            self._worker_batches_mark = self._shared.worker_batches()

    def _topology_here(self) -> Topology:
        """The carried topology; where it had to default, the process building the loader (or a
        forked copy of it) may know better now."""
        if self.topology.source == "default":
            self.topology = resolve_topology()
        elif self.topology.source != "explicit":
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                here = (dist.get_rank(), dist.get_world_size())
                if here != (self.topology.rank, self.topology.world_size):
                    raise RuntimeError(
                        f"this stream was built for rank {self.topology.rank} of {self.topology.world_size} "
                        f"(from {self.topology.source}) but torch.distributed says rank {here[0]} of {here[1]}: "
                        "build the stream after init_process_group, or pass rank= and world_size="
                    )
        return self.topology

    def _order_seed(self) -> int:
        return _mix_seed(self.options.seed, self.epoch, "shards")

    def _order(self, limit: Optional[int] = None) -> List[str]:
        """This epoch's shard order (its first `limit` shards): the same in every process (the
        core's seeded shuffle)."""
        return self.shards.take(_core.order_at(len(self.shards), self._order_seed(), self.options.shuffle, 0, 1, limit))

    def shards_for(self, rank: int, world_size: int, worker: int, num_workers: int) -> List[str]:
        """The shards that DataLoader worker ``worker`` of rank ``rank`` reads this epoch: every
        ``world_size * num_workers``-th of the epoch's order. Dealt in the core, so Python sees
        only this reader's names, in O(its share): the epoch's order is a random-access
        permutation, so no pass over all 12.5 M shards)."""
        return self.shards.take(self._indices_for(rank * num_workers + worker, world_size * num_workers))

    def _indices_for(self, slot: int, slots: int) -> List[int]:
        """The places in the shard list of reader ``slot``'s shards this epoch."""
        return _core.order_at(len(self.shards), self._order_seed(), self.options.shuffle, slot, slots)

    def _slot_seed(self, slot: int) -> int:
        """Seed of reader `slot`'s sample shuffle this epoch."""
        return _mix_seed(self.options.seed, self.epoch, slot)

    def _sample_seed(self) -> int:
        """Seed of per-sample choices (crops, mixture copies) this epoch: no reader in it, so a
        sample gets the same crop and copies on every layout."""
        return _mix_seed(self.options.seed, self.epoch, "sample")

    def _batches_per_reader(self, slots: int, exclude: Optional[Dict[str, bytes]] = None) -> int:
        """With ``equal_batches``: the number of full batches every reader yields this epoch
        (of the samples not excluded, after a resume on another layout)."""
        assert self._counts is not None
        counts = self._counts
        if exclude:
            counts = list(counts)
            for key, bitmap in exclude.items():
                i = self.shards.index_of(key.split("\0")[0])  # "shard\0k": copy k of a mixture's samples
                if i is not None:
                    counts[i] = max(0, counts[i] - sum(bin(b).count("1") for b in bitmap))
        per_slot = _core.slot_sums(counts, self._order_seed(), self.options.shuffle, slots)
        batch = self.options.batch_size
        if self.options.equal_batches == "drop":
            return min(n // batch for n in per_slot)
        return max(-(-n // batch) for n in per_slot)

    def _own_samples(self, idx: List[int], names: List[str], exclude: Dict[str, bytes]) -> int:
        """Samples of a reader's own shards this epoch (their places ``idx`` and ``names``), from
        the shard counts, less those consumed before a resume on another layout: O(its share)."""
        assert self._counts is not None
        total = sum(self._counts[i] for i in idx)
        if exclude:
            mine = set(names)
            total -= sum(bin(b).count("1") for key, bitmap in exclude.items() if key.split("\0")[0] in mine for b in bitmap)
        return total

    def _shared_batches_per_reader(self, slots: int, exclude: Dict[str, bytes]) -> int:
        """:meth:`_batches_per_reader`, computed once per epoch for all the processes of this
        stream (the first reader to need it; the others read it from shared memory): it is
        O(all shards), which no reader may pay each epoch at 12.5 M shards."""
        if exclude:
            return self._batches_per_reader(slots, exclude)  # a resume on another layout: its own
        key = (self.epoch, slots)
        with self._shared.lock:
            got = self._shared.batches_for(key)
            if got is None:
                got = self._batches_per_reader(slots)
                self._shared.set_batches(key, got)
        return got

    def _count_samples(self) -> List[int]:
        """Samples per shard for ``equal_batches``, known without reading sample data where a
        shard index exists (``webli-io index``); a remote shard without one is a ShardError
        naming the fix (never a download of everything)."""
        # Index files are small reads, often remote: more threads than CPUs.
        threads = min(64, 4 * _available_cpus())
        names = self.shards.to_list()
        try:
            if self.options.selects_before_decode:
                # Selection drops samples before decoding: count what survives it (from the index,
                # else by reading the shard, decoding nothing). Decode failures and a mixture's
                # thinning can still leave a reader short: it then pads (samples_padded).
                return _core.count_selected(names, self.options, threads=threads, table_reader=self._table_opener)
            tars = [s for s in names if not is_table_shard(s)]
            counted = dict(zip(tars, _core.count_samples(tars, self.options, threads=threads))) if tars else {}
        except RuntimeError as e:
            raise ShardError(str(e)) from None
        return [num_rows(s) if is_table_shard(s) else counted[s] for s in names]

    def _exclusions(self, state: Dict[str, Any], mine: List[str]) -> Dict[str, bytes]:
        """Per-shard bitmaps of the samples consumed before `state` was taken, for the shards
        in `mine`, found by replaying (reading, not decoding) the readers of that layout."""
        exclude: Dict[str, bytes] = self._exclusions(state["base"], mine) if state.get("base") else {}
        n, seed, shuffle, slots = len(self.shards), self._order_seed(), self.options.shuffle, state["slots"]
        # The old layout's readers that held one of `mine`: each shard's place in the epoch's
        # order (the permutation's inverse) says whose it was, so only those are replayed.
        places = (self.shards.index_of(name) for name in mine)
        theirs_slots = sorted({_core.position_of(n, seed, shuffle, i) % slots for i in places if i is not None})
        for slot in theirs_slots:
            consumed = int(state["positions"].get(str(slot), {}).get("seq", 0))
            if consumed:
                theirs = self.shards.take(_core.order_at(n, seed, shuffle, slot, slots))
                exclude = _core.consumed_bitmaps(
                    theirs, consumed, self.options, shuffle_seed=self._slot_seed(slot), sample_seed=self._sample_seed(),
                    exclude=exclude, table_reader=self._table_opener,
                )
        return exclude

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        topo = self._topology_here()
        rank, world = topo.rank, topo.world_size
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            _die_with_parent()
        _refuse_accelerate_wrappers()
        if info is not None and self.options.decode_device == "cuda":
            raise ValueError(
                "decode_device='cuda' decodes in the process that iterates the stream, and CUDA cannot run in DataLoader "
                "workers: use num_workers=0 (the core's threads still read and parse the shards in parallel)"
            )
        if self._positions_epoch != self.epoch:
            self._positions, self._positions_epoch = {}, self.epoch
        own = self._indices_for(rank * workers + worker, world * workers)
        shards = self.shards.take(own)
        if world > 1 and not self._equal_chosen and not self.options.resampled and worker == 0 and rank == 0:
            log.warning(
                "this stream was built before torch.distributed knew the world size (%d ranks now), so it does not give "
                "every rank the same number of batches: build it after init_process_group (then equal_batches='pad' is "
                "the default), or pass equal_batches='pad' or, to opt out, equal_batches=None", world,
            )
        if len(self.shards) < world * workers and worker == 0 and rank == 0:
            log.warning(
                "%d shards for %d readers (%d ranks x %d workers): some readers get no shard and idle; "
                "use fewer workers or more, smaller shards",
                len(self.shards), world * workers, world, workers,
            )
        slot, slots = rank * workers + worker, world * workers
        equal = self.options.equal_batches
        skip, yielded, exclude = 0, 0, {}
        resume = self._resume if self._resume is not None and self._resume["epoch"] == self.epoch else None
        if resume is not None:
            if resume["slots"] == slots:
                mine = resume["positions"].get(str(slot), {})
                skip, yielded = int(mine.get("seq", 0)), int(mine.get("yielded", 0))
                if resume.get("base"):
                    exclude = self._exclusions(resume["base"], self.shards.to_list() if equal else shards)
            elif self.options.resampled:
                raise ValueError(
                    f"cannot resume a resampled stream on another layout ({resume['slots']} readers in the state, {slots} "
                    "now): readers cycle over their own shards, so resume with the same ranks x num_workers"
                )
            else:
                exclude = self._exclusions(resume, self.shards.to_list() if equal else shards)
        limit, cycle = 0, False
        counted = equal or self.options.resampled
        left_out = 0
        if equal:
            per_reader = self._shared_batches_per_reader(slots, exclude) * self.options.batch_size
            # "pad" cycles (its own shards, then the epoch's); "drop" reads its own shards once
            # (its share is what the smallest reader holds) and, should samples fail to decode,
            # repeats its own last ones: no other reader's shard is opened (but where none of
            # its own decodes, and there is nothing to repeat).
            limit, cycle = per_reader - yielded, equal == "pad"
            if equal == "drop":
                left_out = max(0, self._own_samples(own, shards, exclude) - per_reader)
        elif self.options.resampled:
            batches = self._resampled_batches(world, worker, workers)
            limit, cycle = (RESAMPLED_FOREVER if batches is None else batches * self.options.batch_size - yielded), True
        if cycle and not shards and limit > 0:
            # A reader with no shard of its own pads from (or cycles over) the epoch's shards.
            shards = self._order(FALLBACK_SHARDS)
        if not shards or (counted and limit <= 0):
            return
        threads = self.options.num_threads or max(1, _available_cpus() // workers)
        core = _core.Stream(
            shards, self.options, shuffle_seed=self._slot_seed(slot), sample_seed=self._sample_seed(), num_threads=threads,
            skip=skip, exclude=exclude, limit=limit, cycle=cycle, table_reader=self._table_opener,
            # A reader whose own shards cannot fill its share pads from the epoch's other shards
            # (the first of the epoch's order: enough to pad, bounded at any scale).
            fallback_shards=self._order(FALLBACK_SHARDS) if counted else None, pad=counted and not cycle,
        )
        row = self._shared.row_of(info.id if info is not None else None)
        written = self._shared.zeros()
        self._slots = slots
        epoch = self.epoch
        strict = self.options.strict
        ended = False
        try:
            for batch in core:
                counts = core.stats()
                written = self._shared.add(row, written, counts)
                if strict:
                    _raise_if_shard_lost(counts, core.problems)
                yielded += len(batch["keys"])
                batch["position"] = {"epoch": epoch, "slot": slot, "slots": slots, "seq": batch.pop("next_seq"), "yielded": yielded,
                                     "seqs": batch.pop("seqs")}
                if self._positions_epoch == epoch and not self._observing:
                    # (After a set_epoch() in the middle of this iteration, its batches belong to
                    # the old epoch: they must not become the new epoch's position.)
                    self._positions[slot] = {"seq": batch["position"]["seq"], "yielded": yielded}
                yield self._finish(batch)
            ended = True
        finally:
            stats = core.stats()
            if ended and left_out:
                stats = {**stats, "samples_dropped_equal": left_out}
            self._shared.add(row, written, stats)
            problems = core.problems()
            core.close()
            for i, p in enumerate(problems):
                level = logging.WARNING if i < WARN_PROBLEMS else logging.DEBUG
                log.log(level, "skipped or repaired %s in %s: %s (%s)", p["key"] or "-", p["shard"], p["reason"], p["message"])
            if info is None:
                self._problems = (self._problems + problems)[-MAX_PROBLEMS:]
        if strict:
            _raise_if_shard_lost(stats, lambda: problems)
        if stats.get("resume_past_end"):
            raise ValueError(
                f"cannot resume reader {slot} of {slots}: its saved position is past the end of its samples "
                "(a state from other shards or settings, or edited): " + "; ".join(p["message"] for p in problems[-1:])
            )
        if stats.get("equal_batches_unfilled"):
            raise RuntimeError(
                f"equal_batches: reader {slot} of {slots} cannot give its share of batches: no sample of its shards "
                f"({shards[:3]}{'...' if len(shards) > 3 else ''}), nor of the epoch's other shards, decodes and passes "
                "the filters and the mixture; relax the filters, or fix the shards"
            )

    def _finish(self, raw: Dict[str, Any]) -> Batch:
        """The core's batch → the user's: extra members decoded, then the hooks."""
        batch = Batch(raw)
        for ext in self.options.extra_members:
            batch[ext] = decode_member(ext, batch[ext])
        if "encoded" in batch:
            from .gpu import decode_batch

            o = self.options
            batch["images"] = decode_batch(batch["images"], batch.pop("encoded"), o.image_size, o.layout, o.output,
                                           o.mean or (0.0, 0.0, 0.0), o.std or (1.0, 1.0, 1.0), device="cuda",
                                           counts=self._gpu_counts)
        if self.tokenizer is not None:
            batch["tokens"] = self.tokenizer(batch["texts"])
        if self.transform is not None:
            import torch

            images = batch["images"]
            batch["images"] = self.transform(images if isinstance(images, torch.Tensor) else torch.from_numpy(images))
        return batch

    def _resampled_batches(self, world: int, worker: int, workers: int) -> Optional[int]:
        """``resampled`` with ``samples_per_epoch``: this reader's batches this epoch (the rank's
        share, :meth:`__len__`, dealt out among its workers); None: without end."""
        n = self.options.samples_per_epoch
        if n is None:
            return None
        per_rank = n // (self.options.batch_size * world)
        return per_rank // workers + (1 if worker < per_rank % workers else 0)

    def __bool__(self) -> bool:
        """A stream is true (``if stream:``), whether or not its length is known."""
        return True

    def __len__(self) -> int:
        """Batches this rank yields an epoch, where that is known before reading: a resampled
        stream with ``samples_per_epoch`` (``samples_per_epoch // (batch_size * world_size)``,
        whatever the number of DataLoader workers), or ``equal_batches`` once the number of
        workers is known (a loader made by :meth:`loader`). Otherwise a TypeError, as for any
        stream whose length is unknown (``DataLoader`` then has no ``len()`` either)."""
        world = self._topology_here().world_size
        if self.options.resampled:
            if self.options.samples_per_epoch is None:
                raise TypeError("a resampled stream without samples_per_epoch= has no end, so no len()")
            return self.options.samples_per_epoch // (self.options.batch_size * world)
        if self.options.equal_batches and self._num_workers is not None:
            workers = max(1, self._num_workers)
            return self._batches_per_reader(world * workers) * workers
        raise TypeError(
            "len() is known only for resampled=True with samples_per_epoch=, or equal_batches= with a loader from "
            "stream.loader(): otherwise the epoch's length is what the shards hold after filters and decoding"
        )

    def loader(self, num_workers: Optional[int] = None, **kwargs: Any) -> DataLoader:
        """A DataLoader over this stream, set up as it needs: ``batch_size=None`` (the stream
        batches), ``persistent_workers`` and ``pin_memory`` (when CUDA is available) on by
        default, ``num_workers`` by default min(4, CPUs). Its batches are full but the epoch's
        last: the workers' last, short batches are merged as they arrive (each worker reads its
        own shards, so each ends with one; see ``_batches.py``). Other keyword arguments go to the
        DataLoader (``prefetch_factor``, ``multiprocessing_context``, ...); ``batch_size``,
        ``shuffle``, ``sampler`` and ``collate_fn``-batching are the stream's settings, not the
        loader's, and are refused."""
        if kwargs.get("batch_size") is not None:
            raise ValueError(f"batch_size={kwargs['batch_size']!r}: the stream batches (its batch_size= setting); leave the loader's at None")
        for name in ("shuffle", "sampler", "batch_sampler"):
            if kwargs.get(name):
                raise ValueError(f"{name}= is not for a stream: use the stream's shuffle= and seed= settings")
        kwargs.pop("batch_size", None)
        workers = min(4, _available_cpus()) if num_workers is None else _check_int("num_workers", num_workers, 0)
        import torch

        kwargs.setdefault("pin_memory", torch.cuda.is_available())
        if workers > 0:
            kwargs.setdefault("persistent_workers", True)
        self._num_workers = workers
        # Its workers' last, short batches are merged into full ones (see _batches.py).
        loader = StreamLoader(self, batch_size=None, num_workers=workers, **kwargs)
        # Frameworks call set_epoch on a loader's sampler, never on its dataset (Lightning's
        # fit loop does so each epoch): this loader's forwards it to the stream, so each epoch
        # gets its own order, shuffle and crops. (DataLoader forbids setting its sampler after
        # init, hence object.__setattr__; it still yields what DataLoader's own one yields.)
        object.__setattr__(loader, "sampler", _EpochSampler(self))
        # Accelerate's prepare() would re-wrap it (rank 0 reading for everyone, or a stream of
        # batches re-split as samples): marked as prepared, it is left as it is, each rank
        # streaming its own shards (batches stay on the CPU: move them to accelerator.device).
        loader._is_accelerate_prepared = True  # type: ignore[attr-defined]
        return loader

    # -- resume ---------------------------------------------------------------------------

    def observe(self, batch: Dict[str, Any]) -> None:
        """Record that the training loop received `batch` (needed for ``state_dict`` when the
        batches come from DataLoader worker processes; harmless otherwise)."""
        pos = batch.get("position")
        if not isinstance(pos, dict):
            raise ValueError("observe() takes a batch of this stream (a dict with a 'position')")
        # A batch its loader merged from several readers' last samples: each reader's part.
        for part in pos.get("parts") or [pos]:
            self._observe_position(part)

    def _observe_position(self, pos: Dict[str, Any]) -> None:
        epoch, slot, slots, seq, yielded = (int(pos[k]) for k in ("epoch", "slot", "slots", "seq", "yielded"))
        if epoch != self._positions_epoch:
            self._positions, self._positions_epoch = {}, epoch
        self._slots = slots
        # From the first observe() on, what the loop observed is what was consumed: an
        # in-process iteration no longer counts a batch when it yields it (a framework's fetcher
        # holds one ahead of the step: counted at yield, it was lost on resume).
        first = not self._observing
        self._observing = True
        if first or seq >= self._positions.get(slot, {}).get("seq", -1):
            self._positions[slot] = {"seq": seq, "yielded": yielded}

    def _identity(self) -> Dict[str, Any]:
        """What a state is bound to: the settings that decide the samples, and the shards."""
        digest = self.shards.digest()
        return {"fingerprint": self.options.fingerprint(digest), "settings": self.options.identity(),
                "shards": len(self.shards), "shards_digest": digest}

    def state_dict(self) -> Dict[str, Any]:
        """Where this epoch stands: per reader slot, the samples of its shuffled stream consumed
        by the batches seen so far, bound to the settings and shards that produced it. Plain data
        (ints, strings, dicts): ``torch.save`` or JSON.

        Warns (``ObserveWarning``) when DataLoader workers made batches this epoch but none was
        passed to ``observe()``: the state would restart the epoch."""
        positions = {str(k): v for k, v in self._positions.items()} if self._positions_epoch == self.epoch else {}
        if not positions and self._shared.worker_batches() > self._worker_batches_mark:
            # Workers prefetch, so this is also seen when the loop stopped before its first batch;
            # hence a warning, not an error.
            warnings.warn(
                "DataLoader workers made batches this epoch, but none was passed to stream.observe(batch): "
                "call it for each batch the loop receives (or use torchdata's StatefulDataLoader), "
                "or this state restarts the epoch", ObserveWarning, stacklevel=2,
            )
        slots, base = self._slots, None
        resume = self._resume if self._resume is not None and self._resume["epoch"] == self.epoch else None
        if resume is not None:
            if slots is None or slots == resume["slots"]:
                # Same layout: readers not seen since the restart keep their old place.
                positions = {**resume["positions"], **positions}
                slots, base = resume["slots"], resume.get("base")
            else:
                base = resume  # another layout: the old state stays the base of this one
        topo = self._topology_here()
        # Which ranks' readers this state holds: this rank's only, until merge_states joins the
        # others' (a framework checkpoint that keeps rank 0's state must not restart rank 1).
        ranks = {"world_size": topo.world_size, "covered": [topo.rank]}
        return {"version": STATE_VERSION, "epoch": self.epoch, "slots": slots, "positions": positions, "base": base,
                "equal_batches_auto": self._equal_auto, "ranks": ranks, **self._identity()}

    def gathered_state_dict(self) -> Dict[str, Any]:
        """:meth:`state_dict` of every rank of a DDP job, merged (:meth:`merge_states`): a
        collective (``all_gather_object``), so call it on every rank; each gets the same state,
        which a resume on any number of ranks loads. Without a process group of more than one
        rank, :meth:`state_dict`. What to save with the model under Accelerate or a bare DDP loop
        (a checkpoint of rank 0's ``state_dict()`` alone would not restore rank 1's readers)."""
        return WebLIStream.gather_states(self.state_dict())

    @staticmethod
    def gather_states(state: Dict[str, Any]) -> Dict[str, Any]:
        """This rank's `state` and every other rank's, gathered (``all_gather_object``: a
        collective) and merged (:meth:`merge_states`); `state` itself without a process group
        of more than one rank."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: List[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
            state = WebLIStream.merge_states(states)
        return state

    @staticmethod
    def merge_states(states: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """One state from the ``state_dict()`` of every rank of a DDP job (each rank knows only
        its own readers): gather them (e.g. ``torch.distributed.all_gather_object``) and merge,
        so that a resume, on this layout or another, knows where every reader stood."""
        if not states:
            raise ValueError("merge_states needs the state of every rank, got none")
        for st in states:
            _check_state(st)
        first = states[0]
        for st in states[1:]:
            for key in ("fingerprint", "epoch", "shards_digest"):
                if st.get(key) != first.get(key):
                    raise ValueError(f"cannot merge states with another {key}: {st.get(key)!r} vs {first.get(key)!r}")
        # A rank that consumed nothing since it resumed on this layout still holds the state it
        # loaded, which the others hold as their base: it adds nothing.
        bases = [st["base"] for st in states if st.get("base") is not None]
        newer = [st for st in states if not any(st.get("slots") == b.get("slots") and st["positions"] == b.get("positions")
                                                  for b in bases)]
        states = newer or states
        slots = {st["slots"] for st in states if st.get("slots") is not None}
        if len(slots) > 1:
            raise ValueError(f"cannot merge states of different layouts ({sorted(slots)} readers)")
        positions: Dict[str, Dict[str, int]] = {}
        for st in states:
            for slot, pos in st["positions"].items():
                if slot not in positions or pos["seq"] > positions[slot]["seq"]:
                    positions[slot] = dict(pos)
        base = next((st["base"] for st in states if st.get("base") is not None), None)
        ranks = [st.get("ranks") for st in states]
        merged: Dict[str, Any] = {**first, "slots": slots.pop() if slots else None, "positions": positions, "base": base}
        if all(isinstance(r, dict) for r in ranks):
            merged["ranks"] = {"world_size": ranks[0]["world_size"],  # type: ignore[index]
                               "covered": sorted({k for r in ranks for k in r["covered"]})}  # type: ignore[index]
        return merged

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from `state` (from ``state_dict``) at the next iteration: it sets the epoch,
        and the readers skip what was consumed. Raises ValueError naming what differs when the
        state was taken with other settings or shards, or when its values are out of range."""
        _check_state(state)
        mine = self._identity()
        if state.get("fingerprint") != mine["fingerprint"] and (self._equal_auto or state.get("equal_batches_auto") is True):
            # The DDP default chose equal_batches on one side only (a run on one process resumed
            # on several, or back): the samples are the same, only the padding differs; the
            # resume on the other layout excludes what was consumed, whatever the padding.
            theirs = (state.get("settings") or {}).get("equal_batches") if isinstance(state.get("settings"), dict) else None
            if theirs in (None, "drop", "pad") and self.options.replace(equal_batches=theirs).fingerprint(self.shards.digest()) == state.get("fingerprint"):
                mine["fingerprint"] = state["fingerprint"]
        if state.get("fingerprint") != mine["fingerprint"]:
            saved: Dict[str, Any] = state["settings"] if isinstance(state.get("settings"), dict) else {}
            differ = sorted(k for k in set(saved) | set(mine["settings"]) if saved.get(k) != mine["settings"].get(k))
            what = [f"{k}: state {saved.get(k)!r}, stream {mine['settings'].get(k)!r}" for k in differ]
            if state.get("shards_digest") != mine["shards_digest"]:
                what.append(f"the shard list ({state.get('shards')} shards in the state, {mine['shards']} here, or another order)")
            raise ValueError("cannot resume: the state was taken with other settings or shards: " + ("; ".join(what) or "fingerprint differs"))
        self._check_ranks(state)
        self._shared.epoch.value = int(state["epoch"])
        if state.get("slots") is None or not state.get("positions"):
            self._resume = None  # nothing consumed yet: start the epoch from the beginning
        else:
            self._resume = state
        self._positions, self._positions_epoch = {}, self.epoch
        self._slots = None
        self._worker_batches_mark = self._shared.worker_batches()

    def _check_ranks(self, state: Dict[str, Any]) -> None:
        """A state that holds some ranks' readers only (one rank's ``state_dict()``, as a
        framework checkpoint keeps rank 0's) resumes those ranks on the same world size; on
        another rank or world size it would silently restart the readers it lacks: refused."""
        ranks = state.get("ranks")
        if not isinstance(ranks, dict):
            return
        world, covered = ranks.get("world_size"), ranks.get("covered")
        if not isinstance(world, int) or not isinstance(covered, list) or sorted(set(covered)) == list(range(world)):
            return
        topo = self._topology_here()
        if topo.world_size == world and topo.rank in covered:
            return
        raise ValueError(
            f"cannot resume rank {topo.rank} of {topo.world_size} from this state: it holds the readers of rank(s) "
            f"{sorted(covered)} of {world} only (one rank's state_dict(), as a framework checkpoint keeps rank 0's). "
            "Gather every rank's state_dict() (torch.distributed.all_gather_object) and join them with "
            "WebLIStream.merge_states before saving, or save and load one state per rank"
        )

    # -- counters -------------------------------------------------------------------------

    def stats(self) -> Dict[str, int]:
        """Counters summed over this process and its DataLoader workers since construction
        (or ``reset_stats``): samples read and yielded, and every skip or repair by reason
        (with ``decode_device="cuda"`` also ``gpu_decode_fallbacks`` and ``gpu_decode_failed``).
        ``ns_read``, ``ns_decode``, ``ns_resize``, ``ns_batch``: each stage's CPU time in
        nanoseconds, summed over the threads doing it (on Linux the threads' own CPU clocks: a
        thread waiting to be scheduled, or blocked on a queue, adds nothing)."""
        return {**self._shared.total(), **self._gpu_counts}

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._shared.reset()
        self._problems.clear()
        self._gpu_counts.clear()

    def problems(self) -> List[Dict[str, str]]:
        """The first problems met when iterating in this process (reason, shard, key,
        message); DataLoader workers log theirs to the ``webli_io`` logger instead."""
        return list(self._problems)

    def __repr__(self) -> str:
        topo = self.topology
        return f"WebLIStream({len(self.shards)} shards, {self.options!r}, rank {topo.rank} of {topo.world_size}, epoch {self.epoch})"
