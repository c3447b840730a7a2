"""``webli-io index``: a shard index for shards that exist (local, http(s), object stores).

Each shard is read once, by the core (the stream's own sample rule), and described in one small
JSON file, ``<stem>.index.json``: per sample its number, key, byte range, image hash and the
metadata fields selection reads (format: ``rust/index.rs``, ``docs/concepts.md``). The folder
also gets ``index.json``, every indexed shard's sample count and size, so that a count without
selection loads one file. With the index a stream counts ``equal_batches`` without reading sample
data and a resume seeks instead of re-reading what was consumed.

Shards are indexed in parallel on threads (the core releases the GIL; remote reads wait on the
network, so more threads than CPUs pay). A shard whose index is there and still matches it
(size and modification time, or ETag) is not redone: a killed run resumes where it stopped.
Files are written atomically (a temporary name, then a rename; to an object store, one PUT), so
a reader never sees half an index. The output is a local folder or an object-store prefix
(``-o s3://bucket/webli-index/``), as a cluster job writes it.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Dict, Optional, Sequence

from . import _core
from ._files import is_object, read_text, write_text
from ._progress import progress as progress_bar

#: The ``format`` of the folder summary (``index.json``).
SUMMARY_FORMAT = "webli-io index summary"
#: The index version this webli-io writes (the core's).
INDEX_VERSION = 1


class ShardIndexError(RuntimeError):
    """``webli-io index`` cannot run as asked (a bad output, no shard)."""


def _is_url(path: str) -> bool:
    return "://" in path or path.startswith("pipe:")


def _read_json(path: str) -> Any:
    return json.loads(read_text(path))


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if is_object(path) else (os.path.dirname(path) or ".")


def _fresh(shard: str, dest: str, fields: Sequence[str]) -> Optional[Dict[str, Any]]:
    """The summary entry of an index at `dest` that still matches `shard` and holds `fields`
    (None: build it)."""
    try:
        ix = _read_json(dest)
        size, validator = _core.shard_identity(shard)
    except (OSError, ValueError, RuntimeError):
        return None
    if not isinstance(ix, dict) or ix.get("version") != INDEX_VERSION or ix.get("size") != size:
        return None
    if validator is not None and ix.get("validator") not in (None, validator):
        return None
    if not set(fields) <= set(ix.get("fields") or ()):
        return None
    return {"samples_read": ix.get("samples_read"), "size": size, "validator": ix.get("validator"),
            "samples": len((ix.get("samples") or {}).get("key") or ())}


def _index_one(shard: str, out: Optional[str], fields: Sequence[str], force: bool) -> Dict[str, Any]:
    """Index one shard (unless its index is fresh): what the summary records of it."""
    dest = _core.index_location(shard, out)
    if dest is None:
        raise ShardIndexError(f"{shard}: no place beside it for an index: give -o DIR")
    entry = None if force else _fresh(shard, dest, fields)
    kind = "fresh"
    if entry is None:
        text, n, _problems = _core.build_index(shard, list(fields))
        ix = json.loads(text)
        write_text(dest, text)
        entry = {"samples_read": ix["samples_read"], "size": ix["size"], "validator": ix["validator"], "samples": n}
        kind = "indexed"
    return {"kind": kind, "key": shard.split("?")[0].rsplit("/", 1)[-1], "folder": _folder(dest), "entry": entry}


def _footer_rows(shard: str) -> Any:
    """A Parquet shard's row count, or why its footer does not read."""
    from .parquet import num_rows

    try:
        return num_rows(shard)
    except ValueError as e:
        return str(e)


def _ray_index(row: Dict[str, Any]) -> Dict[str, Any]:
    """A Ray Data task: one shard (errors are returned, not raised, so one bad shard does not
    fail the job)."""
    try:
        return {"shard": row["shard"], "result": json.dumps(_index_one(row["shard"], row["out"], row["fields"], row["force"])),
                "error": ""}
    except Exception as e:  # noqa: BLE001 - reported per shard
        return {"shard": row["shard"], "result": "", "error": str(e) or type(e).__name__}


def build_index(
    shards: Sequence[str],
    out: Optional[str] = None,
    *,
    fields: Sequence[str] = (),
    threads: Optional[int] = None,
    progress: bool = True,
    force: bool = False,
    allow_pipe: bool = False,
    engine: str = "local",
    ray_address: Optional[str] = None,
) -> Dict[str, Any]:
    """Index `shards` (paths, globs, brace patterns, URLs) into the folder `out` (default: beside
    each local shard). `fields`: metadata fields the stream's filters will read (``min_score``,
    ``drop_if``); the language fields are always kept. ``engine="ray"`` runs one Ray Data task
    per shard (on the cluster at `ray_address`, else a local Ray): on a cluster, `out` must be
    where every node writes the same place (an object store, a shared folder). Returns a
    summary: shards indexed now, found fresh, failed (with the reason), samples."""
    if engine not in ("local", "ray"):
        raise ShardIndexError(f"engine must be 'local' or 'ray', not {engine!r}")
    specs = [os.fspath(s) for s in ([shards] if isinstance(shards, (str, os.PathLike)) else shards)]
    if not specs:
        raise ShardIndexError("no shards given")
    if out is not None and _is_url(out) and not is_object(out):
        raise ShardIndexError(
            f"-o {out}: the index is written to a folder or an object store (s3://, gs://, az://), not over http(s) "
            "or a pipe: write it to a folder, then serve that folder beside the shards and pass index=URL"
        )
    names = _core.expand_shards(specs, allow_pipe=allow_pipe)
    tables = [s for s in names if _core.is_table_shard(s)]
    names = [s for s in names if not _core.is_table_shard(s)]
    if out is None and any(_is_url(s) for s in names):
        raise ShardIndexError("remote shards: give the folder to write their index to (-o DIR), then pass index=DIR to the stream")
    if out is not None and not is_object(out):
        os.makedirs(out, exist_ok=True)
    threads = threads or min(32, 4 * (os.cpu_count() or 1))
    summaries: Dict[str, Dict[str, Dict[str, Any]]] = {}
    lock = threading.Lock()
    report: Dict[str, Any] = {"shards": len(names), "indexed": 0, "fresh": 0, "failed": [], "samples": 0,
                              "parquet": {"shards": len(tables), "rows": 0}, "out": out}
    # A Parquet shard's footer is its own index (row counts, row groups), which the stream reads:
    # each is checked readable and counted; nothing is written for it.
    if tables:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for shard, rows in zip(tables, pool.map(_footer_rows, tables)):
                if isinstance(rows, int):
                    report["parquet"]["rows"] += rows
                else:
                    report["failed"].append({"shard": shard, "error": rows})

    def record(r: Dict[str, Any]) -> None:
        with lock:
            report[r["kind"]] += 1
            report["samples"] += r["entry"]["samples"] or 0
            summaries.setdefault(r["folder"], {})[r["key"]] = r["entry"]

    bar = progress_bar(total=len(names), desc="index", unit="shard", disable=not progress)
    try:
        if engine == "ray":
            _run_ray(names, out, fields, force, ray_address, report, record, bar)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                futures = {pool.submit(_index_one, s, out, fields, force): s for s in names}
                for fut in as_completed(futures):
                    err = fut.exception()
                    if isinstance(err, ShardIndexError):
                        raise err
                    if err is not None:
                        report["failed"].append({"shard": futures[fut], "error": str(err)})
                    else:
                        record(fut.result())
                    bar.update(1)
    finally:
        bar.close()
    for folder, entries in summaries.items():
        path = f"{folder}/index.json" if is_object(folder) else os.path.join(folder, "index.json")
        merged: Dict[str, Any] = {}
        try:
            old = _read_json(path)
            if isinstance(old, dict) and old.get("format") == SUMMARY_FORMAT and old.get("version") == INDEX_VERSION:
                merged = dict(old.get("shards") or {})
        except (OSError, ValueError, RuntimeError):
            pass
        merged.update(entries)
        write_text(path, json.dumps({"format": SUMMARY_FORMAT, "version": INDEX_VERSION, "shards": merged}, sort_keys=True))
    return report


def _run_ray(names: Sequence[str], out: Optional[str], fields: Sequence[str], force: bool, address: Optional[str],
             report: Dict[str, Any], record: Any, bar: Any) -> None:
    try:
        import ray
    except ImportError as e:
        raise ShardIndexError("--engine ray needs Ray Data: pip install 'webli-io[ray]'") from e
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = [{"shard": s, "out": out, "fields": list(fields), "force": force} for s in names]
        for r in ray.data.from_items(rows).map(_ray_index).iter_rows():
            if r["error"]:
                report["failed"].append({"shard": r["shard"], "error": r["error"]})
            else:
                record(json.loads(r["result"]))
            bar.update(1)
    finally:
        if started:
            ray.shutdown()

