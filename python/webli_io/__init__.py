"""webli-io: stream web-scale image–text pairs from WebDataset shards into PyTorch.

The heavy work (reading shards, decoding, resizing, batching) runs in a Rust core on native
threads with the GIL released; this package is the thin Python layer around it::

    from torch.utils.data import DataLoader
    from webli_io import WebLIStream

    stream = WebLIStream("data/shard-{000000..000099}.tar", batch_size=256, image_size=224)
    for batch in DataLoader(stream, batch_size=None, num_workers=4):
        batch["images"]  # uint8 tensor [B, 224, 224, 3]
        batch["texts"]   # list[str]

The names that need torch (``WebLIStream`` and its kin) are imported on first use, so that
``import webli_io`` and ``webli-io --help`` stay fast.
"""

from typing import TYPE_CHECKING, Any

from ._core import ConfigError, Options, __version__, decode_resize, expand_shards

if TYPE_CHECKING:  # pragma: no cover
    from .stream import Batch, Topology, WebLIStream, resolve_topology
    from .transforms import normalize

_LAZY = {"WebLIStream": "stream", "Batch": "stream", "Topology": "stream", "resolve_topology": "stream", "normalize": "transforms"}

__all__ = [
    "WebLIStream", "Batch", "Options", "ConfigError", "Topology", "resolve_topology", "expand_shards", "decode_resize",
    "normalize", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'webli_io' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
