"""A loader's batches full but the epoch's last: its workers' last, short batches merged.

Each DataLoader worker is a reader of its own shards, so each ends its epoch with a short batch
(4 workers, batch 8: sizes 2, 3, 7 and 5 at the end of an epoch). The loader that
:meth:`WebLIStream.loader` makes joins them in the main process as they arrive: a short batch
is held until the held samples fill a batch, which is then sent; what is left at the end of the
epoch is its one short batch. A batch cut in two (its first samples complete one batch, the
rest wait) keeps where each part resumes: every sample carries its number in its reader's
shuffled stream (``position["seqs"]``), so the part sent says "up to here" for its reader, and
a merged batch lists each reader's part (``position["parts"]``), which ``observe`` records one
by one. A resume then neither repeats nor loses a sample of a merged batch.

Written here, not taken from torch: DataLoader batches samples, not batches of an iterable
dataset, and its workers cannot hand samples to one another.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from torch.utils.data import DataLoader


def _size(batch: Dict[str, Any]) -> int:
    return len(batch["keys"])


def _mergeable(value: Any) -> bool:
    import numpy as np
    import torch

    return isinstance(value, (list, np.ndarray, torch.Tensor))


def _slice(value: Any, start: int, stop: Optional[int]) -> Any:
    return value[start:stop]


def _concat(values: List[Any]) -> Any:
    import numpy as np
    import torch

    first = values[0]
    if isinstance(first, list):
        return [x for v in values for x in v]
    if isinstance(first, torch.Tensor):
        out = torch.cat(values)
        return out.pin_memory() if first.is_pinned() else out
    return np.concatenate(values)


def cut(batch: Dict[str, Any], k: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """`batch`'s first `k` samples and the rest, each with its own resume position."""
    pos = batch["position"]
    n, seqs = _size(batch), pos["seqs"]
    head = {key: _slice(v, 0, k) for key, v in batch.items() if key != "position"}
    tail = {key: _slice(v, k, None) for key, v in batch.items() if key != "position"}
    head["position"] = {**pos, "seq": seqs[k - 1] + 1, "yielded": pos["yielded"] - (n - k), "seqs": seqs[:k]}
    tail["position"] = {**pos, "seqs": seqs[k:]}
    return type(batch)(head), type(batch)(tail)


def join(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One batch of `parts` (each a reader's last samples, or a piece of them): the fields
    concatenated, the position the last part's with every part's in ``parts``."""
    if len(parts) == 1:
        return parts[0]
    out = {key: _concat([p[key] for p in parts]) for key in parts[0] if key != "position"}
    flat = [q for p in parts for q in p["position"].get("parts", [p["position"]])]
    out["position"] = {**parts[-1]["position"], "parts": flat, "seqs": [s for q in flat for s in q["seqs"]]}
    return type(parts[0])(out)


def full_batches(batches: Iterable[Dict[str, Any]], size: int) -> Iterator[Dict[str, Any]]:
    """`batches` (a loader's, from several readers) with the short ones merged into full ones;
    only the last may be short. A batch whose fields cannot be joined (a transform that returns
    something other than arrays, tensors or lists) is passed on as it is."""
    held: List[Dict[str, Any]] = []
    count = 0
    for batch in batches:
        n = _size(batch)
        if n >= size or not all(_mergeable(v) for key, v in batch.items() if key != "position") or "seqs" not in batch["position"]:
            yield batch
            continue
        held.append(batch)
        count += n
        while count >= size:
            take, room = [], size
            while room:
                b = held.pop(0)
                if _size(b) <= room:
                    take.append(b)
                    room -= _size(b)
                else:
                    head, rest = cut(b, room)
                    take.append(head)
                    held.insert(0, rest)
                    room = 0
            count -= size
            yield join(take)
    if held:
        yield join(held)


class StreamLoader(DataLoader):
    """The DataLoader of :meth:`WebLIStream.loader`: a plain DataLoader (frameworks that
    rebuild a loader from its arguments get the same), whose iteration merges its workers' last
    batches (:func:`full_batches`)."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        it = super().__iter__()
        options = getattr(self.dataset, "options", None)
        if self.num_workers < 2 or options is None:
            return it  # one reader: its one short batch is the epoch's last
        return full_batches(it, options.batch_size)
