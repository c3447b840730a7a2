"""Parquet shards (as img2dataset writes them), read with pyarrow.

The Rust core calls a :class:`ParquetOpener` for each ``.parquet`` shard and gets record
batches, one row group's slice at a time, holding only the projected columns; it imports each
batch through the Arrow C data interface (``__arrow_c_array__``), so the image bytes are shared
with pyarrow's buffer, not copied. Column names follow ``rust/table.rs``: the image is ``jpg``
(or ``jpeg``, ``png``, ``webp``, ``image``, ``img``, ``image_bytes``), the caption ``caption``
(or ``txt``, ``text``), the key ``key``; other scalar columns become the sample's metadata.

Remote Parquet (``s3://``, ``gs://``, ``hdfs://``) goes through pyarrow's own filesystems
(``pyarrow.fs.FileSystem.from_uri``), which read the footer and row groups with ranged reads.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence

from . import _core
from ._extras import require

# The core's own rules (rust/table.rs, rust/sample.rs), so the projection and the reader agree.
IMAGE_COLUMNS = tuple(_core.TABLE_IMAGE_COLUMNS)
CAPTION_COLUMNS = tuple(_core.TABLE_CAPTION_COLUMNS)
KEY_COLUMNS = tuple(_core.TABLE_KEY_COLUMNS)
is_table_shard = _core.is_table_shard


def require_pyarrow() -> None:
    """Raise :class:`MissingExtra` (one line: what to install) when pyarrow is not installed."""
    require("pyarrow.parquet", "pyarrow (to read .parquet shards)", "parquet")


def _open(path: str):
    require_pyarrow()
    import pyarrow.parquet as pq

    if "://" in path and not path.startswith("file://"):
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(path)
        return pq.ParquetFile(filesystem.open_input_file(inner))
    return pq.ParquetFile(path[len("file://"):] if path.startswith("file://") else path)


def num_rows(path: str) -> int:
    """Rows of a Parquet shard, from its footer (no data read). A shard that is not Parquet is a
    ValueError naming it (not pyarrow's bare ArrowInvalid)."""
    try:
        return _open(path).metadata.num_rows
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise ValueError(f"cannot read the Parquet footer of {path!r}: {e}") from e


class ParquetOpener:
    """``opener(path)`` → an iterator of pyarrow RecordBatches of that shard.

    Args:
        meta_columns: metadata columns to read besides image, caption and key (None: every
            column; a list projects the rest away, so a wide img2dataset file costs only what
            the stream uses: e.g. the language and filter fields).
        batch_size: rows per batch handed to the core.
    """

    def __init__(self, meta_columns: Optional[Sequence[str]] = None, batch_size: int = 256) -> None:
        self.meta_columns = None if meta_columns is None else list(meta_columns)
        self.batch_size = batch_size

    def columns(self, names: Iterable[str]) -> Optional[List[str]]:
        names = list(names)
        if self.meta_columns is None:
            return None
        keep = set(IMAGE_COLUMNS + CAPTION_COLUMNS + KEY_COLUMNS) | set(self.meta_columns)
        return [n for n in names if n in keep]

    def __call__(self, path: str) -> Iterator[object]:
        pf = _open(path)
        cols = self.columns(pf.schema_arrow.names)
        # iter_batches walks the row groups in order, reading only the projected columns.
        return pf.iter_batches(batch_size=self.batch_size, columns=cols, use_threads=False)

    def __repr__(self) -> str:
        return f"ParquetOpener(meta_columns={self.meta_columns!r}, batch_size={self.batch_size})"
