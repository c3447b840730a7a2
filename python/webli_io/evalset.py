"""`webli-io index-eval`: a blocklist of evaluation images, for decontamination.

Each evaluation image contributes the fingerprints of its 36 crop variants (see
``rust/fingerprint.rs``): a web copy cropped by up to 10% a side, rescaled, re-encoded or
brightened lands near one of them. ``WebLIStream(..., blocklist="evalset.idx")`` then drops
every pair whose image matches within the radii (default ``_core.DEFAULT_NEAR_RADIUS``:
pHash ≤ 6 and dHash ≤ 12 bits, chosen by ``benches/neardup.py``: recall ≥ 0.95 with no false
match against 1 M distractor hashes).
"""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from . import _core

T = TypeVar("T")
R = TypeVar("R")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def iter_images(inputs: Sequence[str]) -> Iterator[Tuple[str, bytes]]:
    """(name, bytes) of every image in `inputs`: image files, folders (recursively), and
    WebDataset shards (their image members; paths, globs and brace patterns)."""
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in os.walk(item):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTS):
                        path = os.path.join(root, f)
                        with open(path, "rb") as fh:
                            yield path, fh.read()
        elif item.lower().endswith(IMAGE_EXTS) and os.path.isfile(item):
            with open(item, "rb") as fh:
                yield item, fh.read()
        else:
            for shard in _core.expand_shards([item]):
                # Read as the stream reads shards (its key rule and limits).
                for key, members in _core.TarSamples(shard):
                    for ext, data in members:
                        if ("." + ext).lower().endswith(IMAGE_EXTS):
                            yield f"{shard}:{key}.{ext}", data


def bounded_map(ex: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``ex.map(fn, items)`` in order, with at most `ahead` items in flight: ``Executor.map``
    reads its whole input first, which for an evaluation set of a million images is every image
    in memory at once."""
    pending: Deque[Future[R]] = deque()
    for item in items:
        pending.append(ex.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def index_eval(inputs: Sequence[str], out: str, threads: Optional[int] = None, progress: bool = True) -> Dict[str, Any]:
    """Fingerprint every image of `inputs` into the blocklist file `out` (plus `out.json` with
    the image names). Images that do not decode are listed, not fatal."""
    from ._progress import progress as tqdm

    blocklist = _core.Blocklist()
    names: List[str] = []
    failed: List[Dict[str, str]] = []

    def work(item: Tuple[str, bytes]) -> Tuple[str, Any]:
        name, data = item
        try:
            return name, _core.fingerprints(data, variants=True)
        except ValueError as e:
            return name, str(e)

    n_threads = threads or os.cpu_count() or 1
    with ThreadPoolExecutor(n_threads) as ex, tqdm(desc="index-eval", unit="img", disable=not progress) as bar:
        for name, result in bounded_map(ex, work, iter_images(inputs), 4 * n_threads):
            if isinstance(result, str):
                failed.append({"image": name, "error": result})
            else:
                blocklist.add(result, len(names))
                names.append(name)
            bar.update(1)
    if not names:
        raise ValueError(f"no image could be read from {list(inputs)}")
    blocklist.save(out)
    summary = {"images": len(names), "fingerprints": len(blocklist), "memory_bytes": blocklist.memory_bytes(),
               "radius": list(_core.DEFAULT_NEAR_RADIUS), "failed": failed, "names": names}
    with open(out + ".json", "w") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    return summary
