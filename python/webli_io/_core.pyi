"""Types of the native module `webli_io._core` (built from rust/python.rs)."""

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "Blocklist",
    "ConfigError",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_LANG_FIELDS",
    "DEFAULT_NEAR_RADIUS",
    "NORMALIZATIONS",
    "Options",
    "STAT_NAMES",
    "ShardNames",
    "Stream",
    "TABLE_CAPTION_COLUMNS",
    "TABLE_IMAGE_COLUMNS",
    "TABLE_KEY_COLUMNS",
    "TarSamples",
    "__version__",
    "build_index",
    "cache_dir_problem",
    "consumed_bitmaps",
    "content_hashes",
    "count_samples",
    "count_selected",
    "decode_image",
    "decode_resize",
    "expand_shards",
    "fingerprints",
    "in_subset",
    "index_location",
    "is_table_shard",
    "normalize_lang",
    "order_at",
    "position_of",
    "read_bytes",
    "shard_identity",
    "shard_names",
    "shuffled_order",
    "slot_sums",
    "table_rows",
    "write_object",
]

__version__: str
STAT_NAMES: List[str]
DEFAULT_MAX_PIXELS: int
DEFAULT_LANG_FIELDS: List[str]
NORMALIZATIONS: Dict[str, Tuple[List[float], List[float]]]

class ConfigError(ValueError):
    """A setting of a stream is wrong; ``setting`` names it."""

    setting: str

@final
class Options:
    """The settings of a stream, validated once in the core (see `webli_io.WebLIStream` for
    each setting; `Options.names()` lists them). Immutable, picklable, plain data."""

    def __new__(cls, **settings: Any) -> Options: ...
    def replace(self, **settings: Any) -> Options: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def identity(self) -> Dict[str, Any]: ...
    def fingerprint(self, shards_digest: str) -> str: ...
    @property
    def selects_before_decode(self) -> bool: ...
    @property
    def shuffle_buffer_size(self) -> int: ...
    @staticmethod
    def names() -> List[str]: ...
    @staticmethod
    def defaults() -> Dict[str, Any]: ...
    @staticmethod
    def _from_json(text: str) -> Options: ...
    def __getattr__(self, name: str) -> Any: ...
    def __reduce__(self) -> Tuple[Any, Tuple[str]]: ...

@final
class Stream(Iterator[Dict[str, Any]]):
    """The native stream of one reader over its shards; see `webli_io.WebLIStream`."""

    def __new__(
        cls,
        shards: Sequence[str],
        options: Options,
        *,
        shuffle_seed: int,
        sample_seed: int,
        num_threads: int,
        skip: int = 0,
        exclude: Optional[Dict[str, bytes]] = None,
        limit: int = 0,
        cycle: bool = False,
        fallback_shards: Optional[Sequence[str]] = None,
        table_reader: Optional[Callable[[str], Iterator[Any]]] = None,
        pad: bool = False,
    ) -> Stream: ...
    def __iter__(self) -> Stream: ...
    def __next__(self) -> Dict[str, Any]: ...
    def stats(self) -> Dict[str, int]: ...
    def problems(self) -> List[Dict[str, str]]: ...
    def close(self) -> None: ...

@final
class TarSamples(Iterator[Tuple[str, List[Tuple[str, bytes]]]]):
    """The raw samples of one tar shard as the stream groups them: ``(key, [(ext, bytes)])``."""

    def __new__(cls, shard: str, max_member_bytes: int = ...) -> TarSamples: ...
    def __iter__(self) -> TarSamples: ...
    def __next__(self) -> Tuple[str, List[Tuple[str, bytes]]]: ...
    def stats(self) -> Dict[str, int]: ...
    def problems(self) -> List[Dict[str, str]]: ...
    def close(self) -> None: ...

def expand_shards(specs: Sequence[str], allow_pipe: bool = False) -> List[str]:
    """Resolve paths, globs and brace patterns to existing shard paths (URLs: expanded only).

    Raises FileNotFoundError for a missing path or an empty glob, ValueError for a bad pattern.
    """

def consumed_bitmaps(
    shards: Sequence[str],
    n: int,
    options: Options,
    *,
    shuffle_seed: int,
    sample_seed: int,
    exclude: Optional[Dict[str, bytes]] = None,
    table_reader: Optional[Callable[[str], Iterator[Any]]] = None,
) -> Dict[str, bytes]:
    """Per-shard bitmaps of the samples behind the first `n` samples of a reader's stream."""

def count_selected(
    shards: Sequence[str],
    options: Options,
    *,
    threads: int = 1,
    table_reader: Optional[Callable[[str], Iterator[Any]]] = None,
) -> List[int]:
    """Samples per shard that survive selection before decoding (read, not decoded)."""

_RunState = Tuple[str, str, str, int, int, bool, int]

@final
class ShardNames:
    """A stream's shard list, compact: a remote brace pattern is one run, not millions of
    strings. A read-only sequence of names that pickles as its runs."""

    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __getitem__(self, key: Any, /) -> Any: ...
    def __iter__(self) -> Iterator[str]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def take(self, indices: Sequence[int]) -> List[str]: ...
    def index_of(self, name: str) -> Optional[int]: ...
    def to_list(self) -> List[str]: ...
    def has_table_shards(self) -> bool: ...
    def digest(self) -> str: ...
    def runs(self) -> List[_RunState]: ...
    @staticmethod
    def from_runs(runs: Sequence[_RunState]) -> ShardNames: ...
    @staticmethod
    def from_names(names: Sequence[str]) -> ShardNames: ...
    def __reduce__(self) -> Tuple[Any, Tuple[List[_RunState]]]: ...

def shard_names(specs: Sequence[str], allow_pipe: bool = False) -> ShardNames:
    """Resolve shard specs as `expand_shards` does, keeping remote numeric ranges compact."""

def position_of(n: int, seed: int, shuffle: bool, index: int) -> int:
    """Where shard `index` stands in the epoch's order (the inverse of `order_at`)."""

def shuffled_order(n: int, seed: int) -> List[int]:
    """`range(n)` shuffled with `seed` by the core's RNG (the shard order of an epoch)."""

def order_at(n: int, seed: int, shuffle: bool, start: int, step: int, limit: Optional[int] = None) -> List[int]:
    """Positions start, start + step, ... of the epoch's shard order: a reader's shard indices."""

def slot_sums(counts: Sequence[int], seed: int, shuffle: bool, slots: int) -> List[int]:
    """Per reader slot, the sum of per-shard counts over the shards the epoch deals it."""

def count_samples(shards: Sequence[str], options: Options, *, threads: int = 1) -> List[int]:
    """Samples per tar shard from the shard index, else a local shard's tar headers."""

def build_index(
    shard: str, fields: Sequence[str] = ..., max_member_bytes: int = ...
) -> Tuple[str, int, List[Dict[str, str]]]:
    """Read a tar shard once: its shard index as JSON, the samples indexed, the problems met."""

def cache_dir_problem(dir: str) -> Optional[str]:
    """Why `dir` cannot be a cache_dir (it holds files that are not the cache's), or None."""

def read_bytes(location: str, limit: int = ...) -> bytes:
    """The bytes of a small local or remote file (FileNotFoundError when there is none)."""

def write_object(url: str, data: bytes) -> None:
    """Write `data` as the object at `url` (s3/gs/az): one PUT."""

def index_location(shard: str, index_dir: Optional[str] = None) -> Optional[str]:
    """Where `shard`'s index file is, in `index_dir` or beside the shard."""

def shard_identity(shard: str) -> Tuple[int, Optional[str]]:
    """A shard's size and validator now (local mtime; remote ETag/Last-Modified)."""

def table_rows(batch: Any) -> List[Tuple[Optional[str], int, int, Optional[str], Dict[str, Any]]]:
    """The rows of an Arrow record batch as the core sees them: (key, image address, image
    length, caption, metadata). The address shows the image was shared, not copied."""

TABLE_IMAGE_COLUMNS: List[str]
TABLE_CAPTION_COLUMNS: List[str]
TABLE_KEY_COLUMNS: List[str]

def is_table_shard(shard: str) -> bool:
    """Is `shard` read as a table (Parquet) rather than a tar? (By its extension.)"""

def content_hashes(images: Sequence[bytes]) -> List[int]:
    """xxh3-64 of each image's bytes, as the stream's exact dedup computes it."""

DEFAULT_NEAR_RADIUS: Tuple[int, int]

@final
class Blocklist:
    """Fingerprints with multi-index Hamming lookup (the format of `webli-io index-eval`)."""

    def __new__(cls, path: Optional[str] = None) -> Blocklist: ...
    def add(self, fingerprints: Sequence[Tuple[int, int]], id: int) -> None: ...
    def find(self, phash: int, dhash: int, radius: Tuple[int, int] = ...) -> Optional[int]: ...
    def count_matches(self, queries: Sequence[Tuple[int, int]], radius: Tuple[int, int] = ...) -> int: ...
    def save(self, path: str) -> None: ...
    def __len__(self) -> int: ...
    def memory_bytes(self) -> int: ...

def fingerprints(data: bytes, variants: bool = False, image_size: int = 224, max_pixels: int = ...) -> List[Tuple[int, int]]:
    """(pHash, dHash) of an image as the stream decodes it; with `variants`, its 36 crop variants."""

def in_subset(key: str, fraction: float, subset_seed: int = 0) -> bool:
    """Is `key` in the subset of `fraction`? (Nested: the 1% subset is inside the 10% one.)"""

def normalize_lang(tag: str) -> str:
    """Normalise a language tag as the stream does (`iw` → `he`, unknown → `und`)."""

def decode_image(data: bytes, max_pixels: int = ...) -> npt.NDArray[np.uint8]:
    """Decode one image whole at full size as the stream does: `[H, W, 3]` uint8; ValueError if skipped."""

def decode_resize(
    data: bytes,
    image_size: int = 224,
    resize: str = "squash",
    seed: int = 0,
    key: str = "",
    max_pixels: int = ...,
    scaled_decode: bool = True,
    crop_decode: bool = True,
    fast_decode: bool = False,
    interpolation: str = "bilinear",
) -> npt.NDArray[np.uint8]:
    """Decode and resize one image as the stream does: `[S, S, 3]` uint8; ValueError if skipped."""
