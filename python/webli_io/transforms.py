"""Helpers for the device side of a batch: normalise ``uint8`` images where they are used.

The core can normalise (``output="float"``), but a float batch is 4x the bytes of a ``uint8``
one to pin and copy to the GPU; with ``uint8`` batches, normalise after the copy::

    images = batch["images"].cuda(non_blocking=True)
    x = webli_io.normalize(images, "clip", layout="NHWC")  # float32 [B, 3, H, W] on the GPU
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

from . import _core

Channels = Union[str, float, Sequence[float]]


def _channels(value: Channels, which: int, what: str) -> Tuple[float, float, float]:
    if isinstance(value, str):
        try:
            return tuple(_core.NORMALIZATIONS[value][which])  # type: ignore[return-value]
        except KeyError:
            raise ValueError(f"{what}: unknown normalisation {value!r}: one of {sorted(_core.NORMALIZATIONS)} or numbers") from None
    if isinstance(value, (int, float)):
        return (float(value),) * 3  # type: ignore[return-value]
    out = tuple(float(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"{what}: give three numbers (R, G, B), one number, or a name")
    return out  # type: ignore[return-value]


def normalize(images, mean: Channels = 0.0, std: Channels = 1.0, layout: str = "NHWC", channels_first: bool = True):
    """``uint8`` images (a torch tensor, ``[B, H, W, 3]`` for ``layout="NHWC"`` or
    ``[B, 3, H, W]``) → ``float32`` ``(x / 255 - mean) / std`` on the same device, ``[B, 3, H, W]``
    (``channels_first=False``: the input's layout). ``mean``/``std`` take what the stream's
    settings take: three numbers, one, or a name (``"clip"``, ``"imagenet"``, ``"siglip"``).
    The same values as ``output="float"`` in the core, to float32 rounding."""
    import torch

    if layout not in ("NHWC", "NCHW"):
        raise ValueError(f"layout must be 'NHWC' or 'NCHW', not {layout!r}")
    m = torch.tensor(_channels(mean, 0, "mean"), dtype=torch.float32, device=images.device)
    s = torch.tensor(_channels(std, 1, "std"), dtype=torch.float32, device=images.device)
    if any(v <= 0 for v in s.tolist()):
        raise ValueError("std: must be positive numbers")
    x = images.to(torch.float32)
    if layout == "NHWC":
        x = (x / 255.0 - m) / s
        return x.permute(0, 3, 1, 2).contiguous() if channels_first else x
    return (x / 255.0 - m[:, None, None]) / s[:, None, None]
