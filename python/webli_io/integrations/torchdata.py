"""A WebLIStream under torchdata's ``StatefulDataLoader``, in DDP: one state for every rank.

``StatefulDataLoader(stream, batch_size=None, num_workers=N)`` checkpoints each worker's
``stream.state_dict()`` with the batch it sent, so its ``state_dict()`` is exact for the batches
the loop received (prefetched ones are not counted). It knows one rank only: in DDP each rank's
loader holds its own readers, and a checkpoint written by rank 0 alone would restart rank 1.

.. code-block:: python

    from webli_io.integrations.torchdata import gather_state

    stream = WebLIStream(shards, batch_size=256, shuffle=True)       # after init_process_group
    loader = StatefulDataLoader(stream, batch_size=None, num_workers=4)
    ...
    state = gather_state(loader)            # on every rank (a collective): every rank's readers
    if rank == 0:
        torch.save({"model": ..., "data": state}, "ckpt.pt")
    # ... later, on the same or another number of ranks and workers:
    stream.load_state_dict(torch.load("ckpt.pt")["data"])          # before the loader iterates
    loader = StatefulDataLoader(stream, batch_size=None, num_workers=4)

The stream's own state is what is restored (not the loader's ``load_state_dict``, which needs the
same number of workers and ranks): each reader skips what it consumed, on any layout.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ..stream import WebLIStream


def _stream_states(value: Any, out: List[Dict[str, Any]]) -> None:
    """Every stream state (a dict with ``positions`` and ``fingerprint``) inside `value`."""
    if isinstance(value, dict):
        if "positions" in value and "fingerprint" in value and "version" in value:
            out.append(value)
            return
        for v in value.values():
            _stream_states(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _stream_states(v, out)


def stream_state(loader_state: Dict[str, Any]) -> Dict[str, Any]:
    """The stream's state inside a ``StatefulDataLoader.state_dict()``: its workers' states
    (each holds its own reader) merged into one. A ValueError when it holds none (the loader
    had not started, or its dataset is not a WebLIStream)."""
    states: List[Dict[str, Any]] = []
    _stream_states(loader_state, states)
    if not states:
        raise ValueError("no WebLIStream state in this loader state: was the loader iterated, over a WebLIStream?")
    return WebLIStream.merge_states(states)


def gather_state(loader: Any) -> Dict[str, Any]:
    """The state of every rank's readers, from each rank's ``StatefulDataLoader``: call it on
    every rank (``all_gather_object``); each gets the same merged state, which a resume on any
    number of ranks and workers loads with ``stream.load_state_dict``."""
    return WebLIStream.gather_states(stream_state(loader.state_dict()))
