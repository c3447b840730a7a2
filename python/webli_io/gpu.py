"""JPEG decode on the GPU (``decode_device="cuda"``): batched nvJPEG through
``torchvision.io.decode_jpeg(list, device="cuda")``, then each sample's crop (chosen by the core,
the same box a CPU decode would use), an antialiased bilinear resize and the flip, on the device.

The core reads each JPEG's header (size limit, filters, crop) and leaves the bytes encoded;
images it decoded itself (PNG, WebP, EXIF-turned JPEGs, runs with a blocklist or near-dedup)
arrive as pixels and are copied up. A JPEG nvJPEG refuses (libjpeg-turbo is more forgiving of
damaged data) is decoded by the core on the CPU and counted (``gpu_decode_fallbacks``); one that
fails there too is logged and left black, counted as ``gpu_decode_failed``.

The GPU tile is close to the CPU one, not equal (torch's antialiased bilinear resize vs.
Pillow's, integer crop boxes): tests/test_gpu_decode.py bounds the difference by PSNR.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger("webli_io")

Encoded = Optional[Tuple[bytes, Tuple[float, float, float, float], bool]]


def cuda_usable() -> Optional[str]:
    """None when the GPU path can run here, else why not (for the fallback's warning)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    from ._extras import MissingExtra, require

    try:
        require("torchvision.io", "torchvision (for decode_device='cuda')", "gpu")
    except MissingExtra as e:
        return str(e)
    return None


def crop_resize(img: Any, crop: Tuple[float, float, float, float], size: int, flip: bool) -> Any:
    """``[3, H, W]`` uint8 → ``[3, size, size]`` uint8: the crop box (rounded to whole pixels),
    an antialiased bilinear resize, then the mirror image when ``flip``."""
    import torch
    import torch.nn.functional as F

    _, h, w = img.shape
    left, top, cw, ch = crop
    x0 = min(max(int(round(left)), 0), w - 1)
    y0 = min(max(int(round(top)), 0), h - 1)
    x1 = min(max(int(round(left + cw)), x0 + 1), w)
    y1 = min(max(int(round(top + ch)), y0 + 1), h)
    x = img[:, y0:y1, x0:x1].unsqueeze(0).to(torch.float32)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.flip(-1) if flip else x


def decode_batch(images: Any, encoded: Sequence[Encoded], size: int, layout: str = "NHWC", output: str = "uint8",
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 device: Any = "cuda", counts: Optional[Dict[str, int]] = None) -> Any:
    """The core's batch ``images`` (a NumPy array; zeros where a sample was left encoded) and its
    ``encoded`` list → one tensor on ``device`` in the batch's layout and output type."""
    import numpy as np
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    out = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    todo = [i for i, e in enumerate(encoded) if e is not None]
    if not todo:
        return out
    counts = counts if counts is not None else {}
    datas = [torch.frombuffer(bytearray(encoded[i][0]), dtype=torch.uint8) for i in todo]  # type: ignore[index]
    try:
        decoded: List[Any] = list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        # One bad JPEG fails the whole batched call: redo them one by one, with the core's CPU
        # decoders for the ones the device refuses.
        from ._core import decode_image

        decoded = []
        for i, d in zip(todo, datas):
            try:
                decoded.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                try:
                    pixels = decode_image(encoded[i][0])  # type: ignore[index]
                    decoded.append(torch.from_numpy(pixels).permute(2, 0, 1).to(device))
                    counts["gpu_decode_fallbacks"] = counts.get("gpu_decode_fallbacks", 0) + 1
                except ValueError as e:
                    decoded.append(None)
                    counts["gpu_decode_failed"] = counts.get("gpu_decode_failed", 0) + 1
                    log.warning("GPU decode: a JPEG neither nvJPEG nor the CPU decodes was left black: %s", e)
    m = torch.tensor(list(mean), dtype=torch.float32, device=device)
    s = torch.tensor(list(std), dtype=torch.float32, device=device)
    for i, img in zip(todo, decoded):
        if img is None:
            continue
        _, crop, flip = encoded[i]  # type: ignore[misc]
        tile = crop_resize(img, crop, size, flip)  # [3, S, S] uint8
        value: Any = tile
        if output == "float":
            value = (tile.to(torch.float32) / 255.0 - m[:, None, None]) / s[:, None, None]
        out[i] = value.permute(1, 2, 0) if layout == "NHWC" else value
    return out
