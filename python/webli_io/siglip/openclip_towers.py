"""Any OpenCLIP model (a CLIP or a SigLIP architecture) as the two towers the evaluation and the
scorer call, so that ``webli-io score``/``eval`` can use an external model: the paper's
quality filter is a CLIP-style score, and the scorer need not be the model being studied.

``--checkpoint openclip:ARCH:WEIGHTS`` (e.g. ``openclip:ViT-B-32:~/models/vit-b-32.bin``): the
architecture by OpenCLIP's name, the weights from a local file (OpenCLIP would fetch a
pretrained *tag* from a hub; nothing is downloaded here, so a tag is refused). OpenCLIP builds
the model and its tokenizer; images come in as webli-io's tiles (``[-1, 1]``) and are
re-normalised with the model's own mean and std. The resize is webli-io's center crop (the
same box as OpenCLIP's resize-then-crop, bilinear where OpenCLIP's transform is bicubic), so a
score can differ slightly from one computed through OpenCLIP's own transform.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Tuple

import torch
import torch.nn as nn

from .._extras import require

PREFIX = "openclip:"


class OpenCLIPTowers(nn.Module):
    """``.image(x)`` (x in [-1, 1], NCHW) and ``.text(ids)`` of an OpenCLIP model."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(((x + 1) / 2 - self.mean) / self.std)

    def text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids)


class _Tokenizer:
    def __init__(self, tok: Any, name: str) -> None:
        self.tok, self.name = tok, name

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tok(list(texts))


def load(spec: str, device: torch.device) -> Tuple[OpenCLIPTowers, Any, int]:
    """``openclip:ARCH:WEIGHTS`` → (towers, tokenizer, image size)."""
    open_clip = require("open_clip", "open_clip_torch (for --checkpoint openclip:ARCH:WEIGHTS)", "openclip")
    parts = spec[len(PREFIX):].split(":", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{spec!r}: write openclip:ARCH:WEIGHTS (e.g. openclip:ViT-B-32:/models/vit-b-32.bin)")
    arch, weights = parts[0], os.path.expanduser(parts[1])
    if arch not in open_clip.list_models():
        raise ValueError(f"{arch!r} is not an OpenCLIP architecture (open_clip.list_models() has e.g. ViT-B-32, ViT-B-16-SigLIP)")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights!r}: give the weights as a local file (a pretrained tag would be downloaded; "
                                f"nothing is downloaded here)")
    model = open_clip.create_model(arch, pretrained=weights, device=device).eval()
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return OpenCLIPTowers(model, mean, std).to(device).eval(), _Tokenizer(open_clip.get_tokenizer(arch), arch), size
