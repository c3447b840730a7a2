"""Types of the native module `webli_io._core` (built from rust/python.rs)."""

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

__version__: str
STAT_NAMES: List[str]
DEFAULT_MAX_PIXELS: int

class Stream(Iterator[Dict[str, Any]]):
    """The native stream over resolved shard paths; see `webli_io.WebLIStream`."""

    def __init__(
        self,
        shards: Sequence[str],
        *,
        batch_size: int = 256,
        image_size: int = 224,
        resize: str = "squash",
        layout: str = "NHWC",
        shuffle_buffer: int = 0,
        seed: int = 0,
        num_threads: int = 1,
        max_pixels: int = ...,
        max_member_bytes: int = ...,
        scaled_decode: bool = True,
        drop_last: bool = False,
        prefetch: int = 2,
        skip: int = 0,
        exclude: Optional[Dict[str, bytes]] = None,
        limit: int = 0,
        cycle: bool = False,
        lang_fields: Optional[Sequence[str]] = None,
        mixture: Optional[Dict[str, float]] = None,
        mixture_temperature: Optional[float] = None,
        mixture_counts: Optional[Dict[str, int]] = None,
        mixture_window: int = 10000,
        subset: Optional[float] = None,
        subset_seed: int = 0,
        min_score: Optional[Dict[str, float]] = None,
        drop_if: Optional[Dict[str, List[str]]] = None,
        dedup_capacity: Optional[int] = None,
        min_image_side: int = 0,
        max_aspect_ratio: float = 0.0,
        blocklist: Optional[str] = None,
        blocklist_radius: Tuple[int, int] = ...,
        near_dedup_radius: Optional[Tuple[int, int]] = None,
        table_reader: Optional[Callable[[str], Iterator[Any]]] = None,
    ) -> None: ...
    def __iter__(self) -> "Stream": ...
    def __next__(self) -> Dict[str, Any]: ...
    def stats(self) -> Dict[str, int]: ...
    def problems(self) -> List[Dict[str, str]]: ...
    def close(self) -> None: ...

def expand_shards(specs: Sequence[str]) -> List[str]:
    """Resolve paths, globs and brace patterns to existing shard paths (URLs: expanded only).

    Raises FileNotFoundError for a missing path or an empty glob, ValueError for a bad pattern.
    """

def consumed_bitmaps(
    shards: Sequence[str],
    n: int,
    *,
    seed: int = 0,
    shuffle_buffer: int = 0,
    max_member_bytes: int = ...,
    exclude: Optional[Dict[str, bytes]] = None,
    table_reader: Optional[Callable[[str], Iterator[Any]]] = None,
) -> Dict[str, bytes]:
    """Per-shard bitmaps of the samples behind the first `n` samples of a shuffled stream."""

def count_samples(shards: Sequence[str]) -> List[int]:
    """Samples per shard from the tar headers alone."""

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

class Blocklist:
    """Fingerprints with multi-index Hamming lookup (the format of `webli-io index-eval`)."""

    def __init__(self, path: Optional[str] = None) -> None: ...
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

def decode_resize(
    data: bytes,
    image_size: int = 224,
    resize: str = "squash",
    seed: int = 0,
    key: str = "",
    max_pixels: int = ...,
    scaled_decode: bool = True,
) -> npt.NDArray[np.uint8]:
    """Decode and resize one image as the stream does: `[S, S, 3]` uint8; ValueError if skipped."""
