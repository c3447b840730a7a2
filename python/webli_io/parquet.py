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

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

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


# -- rewriting a table shard (`webli-io prepare`, `webli-io score`) ------------------------------


def first_column(schema: Any, names: Sequence[str], binary: bool) -> Optional[str]:
    """The first of `names` that `schema` (a pyarrow schema) has as a binary (image) or a string
    (caption) column: the rule of ``rust/table.rs``, so the copy and the stream read the same."""
    import pyarrow as pa

    ok = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view) if binary else (
        pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    for name in names:
        i = schema.get_field_index(name)
        if i >= 0 and any(f(schema.field(i).type) for f in ok):
            return name
    return None


class TableDamage(ValueError):
    """A table shard that could not be read whole: the row groups before the damage were read."""


def schema_of(path: str) -> Any:
    """A Parquet shard's schema, from its footer; :class:`TableDamage` when it has none."""
    try:
        return _open(path).schema_arrow
    except (OSError, ValueError) as e:
        raise TableDamage(f"not a readable Parquet file: {e}") from e


def row_groups(path: str, columns: Optional[Sequence[str]] = None) -> Iterator[Any]:
    """A Parquet shard's row groups, one pyarrow Table each (the shard's own layout: memory is
    one row group, not the file). A file that is not Parquet, or a row group that does not read,
    raises :class:`TableDamage` naming it, after the row groups before it."""
    try:
        pf = _open(path)
    except (OSError, ValueError) as e:
        raise TableDamage(f"not a readable Parquet file: {e}") from e
    for i in range(pf.num_row_groups):
        try:
            yield pf.read_row_group(i, columns=None if columns is None else list(columns), use_threads=False)
        except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
            raise TableDamage(f"row group {i} of {pf.num_row_groups} does not read: {e}") from e


def rewrite(src: str, dst: str, annotate: Callable[[Any], Dict[str, list]], drop: Iterable[int] = (),
            keep_damaged: bool = True) -> Dict[str, Any]:
    """Copy the Parquet shard `src` to `dst` row group by row group, with the columns that
    ``annotate(table)`` returns (``{name: values}``) set on each (added, or replacing
    a column of that name), and the rows numbered in `drop` left out. Returns ``{"rows": rows
    read, "written": rows written, "error": None or why the source could not be read whole}``.
    A damaged source keeps the rows before the damage with ``keep_damaged``; without it nothing
    is written (a copy of a part would look whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ._files import output_file

    dropped = set(drop)
    done: Dict[str, Any] = {"rows": 0, "written": 0, "error": None}
    with output_file(dst) as fh:
        writer = None
        try:
            for table in row_groups(src):
                first = done["rows"]
                done["rows"] += table.num_rows
                keep = [i for i in range(table.num_rows) if first + i not in dropped]
                if len(keep) < table.num_rows:
                    table = table.take(pa.array(keep, type=pa.int64()))
                for name, values in annotate(table).items():
                    column = pa.array(values)
                    i = table.schema.get_field_index(name)
                    table = table.set_column(i, name, column) if i >= 0 else table.append_column(name, column)
                if writer is None:
                    writer = pq.ParquetWriter(fh, table.schema)
                writer.write_table(table)
                done["written"] += table.num_rows
        except TableDamage as e:
            done["error"] = str(e)
            if not keep_damaged:
                raise
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no row group (or damaged at the first): the schema alone
            pq.write_table(_open(src).schema_arrow.empty_table() if done["error"] is None else pa.table({}), fh)
    return done
