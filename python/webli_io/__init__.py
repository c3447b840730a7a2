"""webli-io: stream web-scale image–text pairs from WebDataset shards into PyTorch.

The heavy work (reading shards, decoding, resizing, batching) runs in a Rust core on native
threads with the GIL released; this package is the thin Python layer around it::

    from torch.utils.data import DataLoader
    from webli_io import WebLIStream

    stream = WebLIStream("data/shard-{000000..000099}.tar", batch_size=256, image_size=224)
    for batch in DataLoader(stream, batch_size=None, num_workers=4):
        batch["images"]  # uint8 tensor [B, 224, 224, 3]
        batch["texts"]   # list[str]
"""

from ._core import ConfigError, Options, __version__, decode_resize, expand_shards
from .stream import Topology, WebLIStream, resolve_topology

__all__ = ["WebLIStream", "Options", "ConfigError", "Topology", "resolve_topology", "expand_shards", "decode_resize", "__version__"]
