"""``webli-io attention``: a SigLIP model's MAP-head attention over the image patches (the
paper's attention figure), and the mean-pooled variant's relevance maps."""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .evalsuite import _embed_texts
from .evaluate import to_device_images
from .model import SigLIP

ATTENTION_SATURATION = 4.0  # overlays: full red at 4x the uniform weight, for every image and model


@torch.no_grad()
def attention_map(model: SigLIP, image_size: int, image: bytes, device: torch.device) -> np.ndarray:
    """The MAP head's attention over the patches, ``[grid, grid]``, averaged over its heads: the
    weights themselves (they sum to 1; uniform is ``1 / patches``), not rescaled per image, so
    maps compare across images and models."""
    from .. import decode_resize

    tile = decode_resize(image, image_size, "squash")
    x = to_device_images(torch.from_numpy(tile[None]).permute(0, 3, 1, 2).contiguous(), device)
    w = model.image.attention(x)[0].float().cpu().numpy()
    grid = int(round(len(w) ** 0.5))
    return w.reshape(grid, grid)


def attention_display(w: np.ndarray) -> np.ndarray:
    """Attention weights → [0, 1] for an overlay on one fixed scale (:data:`ATTENTION_SATURATION`)."""
    return np.clip(w * w.size / ATTENTION_SATURATION, 0.0, 1.0)


@torch.no_grad()
def relevance_map(model: SigLIP, tokenizer: Any, image_size: int, image: bytes, text: Optional[str], device: torch.device) -> np.ndarray:
    """Per-patch relevance, ``[grid, grid]`` in [0, 1]: each patch token's (final norm, projection)
    cosine similarity with the caption's embedding (``text``), or with the image's own pooled
    embedding (no text). For the mean-pooled variant, whose patch tokens share the embedding
    space through the projection: a relevance map, not attention (SigLIP models have
    :func:`attention_map`)."""
    from .. import decode_resize

    tile = decode_resize(image, image_size, "squash")
    x = to_device_images(torch.from_numpy(tile[None]).permute(0, 3, 1, 2).contiguous(), device)
    tower = model.image
    tokens = tower.patch(x).flatten(2).transpose(1, 2) + tower.pos
    feats = F.normalize(tower.proj(tower.norm(tower.encoder(tokens))), dim=-1)[0]  # [patches, D]
    target = _embed_texts(model, tokenizer, [text], device)[0] if text else F.normalize(feats.mean(0), dim=-1)
    rel = (feats.float() @ target.float()).cpu().numpy()
    grid = int(round(len(rel) ** 0.5))
    rel = rel.reshape(grid, grid)
    lo, hi = float(rel.min()), float(rel.max())
    return (rel - lo) / (hi - lo) if hi > lo else np.zeros_like(rel)


def overlay(image: bytes, rel: np.ndarray, path: str) -> None:
    """The image with the relevance map over it in red (brighter: more relevant), as PNG."""
    from PIL import Image

    img = Image.open(io.BytesIO(image)).convert("RGB")
    heat = Image.fromarray((rel * 255).astype(np.uint8), "L").resize(img.size, Image.Resampling.BILINEAR)
    red = Image.new("RGB", img.size, (255, 30, 30))
    alpha = heat.point(lambda v: int(v * 0.6))
    Image.composite(red, img, alpha).save(path)
