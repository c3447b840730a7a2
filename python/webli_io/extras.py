"""Extra tar members (``extra_members=``) → batch fields, by a small rule per extension.

The rule follows webdataset's default decoders, without the ones that run code:

=====================================================  =========================================
extension (its last part)                              a batch field holds
=====================================================  =========================================
``cls``, ``cls2``, ``class``, ``count``, ``index``,    ``int``; a 1-D ``int64`` array when every
``inx``, ``id``                                        sample has a readable one
``txt``, ``text``, ``transcript``                      ``str`` (UTF-8, bad bytes replaced)
``json``, ``jsn``                                      the parsed value
``npy``                                                a NumPy array (``allow_pickle=False``);
                                                       stacked when all shapes and dtypes agree
anything else (``pickle``, ``pth`` included)           the raw ``bytes``: never unpickled, as a
                                                       shard is data, not code
=====================================================  =========================================

A sample without the member, or whose member does not parse, has ``None`` there (and then a
field of ints or arrays stays a list). Decoding runs in the reader process (the DataLoader
worker), on the batch, after the core.
"""

from __future__ import annotations

import io
import json
from typing import Any, List, Optional, Sequence

import numpy as np

INT_EXTS = frozenset({"cls", "cls2", "class", "count", "index", "inx", "id"})
TEXT_EXTS = frozenset({"txt", "text", "transcript"})
JSON_EXTS = frozenset({"json", "jsn"})


def _int(b: bytes) -> Optional[int]:
    try:
        return int(b.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def _json(b: bytes) -> Any:
    try:
        return json.loads(b)
    except ValueError:
        return None


def _npy(b: bytes) -> Optional[np.ndarray]:
    try:
        return np.load(io.BytesIO(b), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None


def decode_member(ext: str, values: Sequence[Optional[bytes]]) -> Any:
    """The batch field for one extension: ``values`` holds each sample's member bytes or None."""
    last = ext.rsplit(".", 1)[-1].lower()
    if last in INT_EXTS:
        ints = [None if v is None else _int(v) for v in values]
        return np.array(ints, dtype=np.int64) if all(i is not None for i in ints) else ints
    if last in TEXT_EXTS:
        return [None if v is None else v.decode("utf-8", "replace") for v in values]
    if last in JSON_EXTS:
        return [None if v is None else _json(v) for v in values]
    if last == "npy":
        arrays: List[Optional[np.ndarray]] = [None if v is None else _npy(v) for v in values]
        first = arrays[0] if arrays else None
        if first is not None and all(a is not None and a.shape == first.shape and a.dtype == first.dtype for a in arrays):
            return np.stack(arrays)  # type: ignore[arg-type]
        return arrays
    return list(values)
