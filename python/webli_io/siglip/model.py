"""The two towers: a ViT over image patches, a transformer over tokens; both pre-norm, pooled
by the mean (big_vision's SigLIP uses a MAP head; the mean is simpler and close: a written-down
difference), projected to the shared embedding."""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .loss import distributed_siglip_loss


class Encoder(nn.Module):
    """Pre-norm transformer layers, optionally with activation checkpointing (recompute each
    layer in the backward pass: less memory for the paper's large models)."""

    def __init__(self, width: int, depth: int, heads: int, mlp: int, checkpointing: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, mlp, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            if self.checkpointing and self.training:
                x = checkpoint(layer, x, None, pad, use_reentrant=False)
            else:
                x = layer(x, src_key_padding_mask=pad)
        return x


class ImageTower(nn.Module):
    """ViT: patch embedding, learned position embedding, pre-norm encoder, mean pooling."""

    def __init__(self, cfg: ModelConfig, image_size: int, checkpointing: bool = False) -> None:
        super().__init__()
        if image_size % cfg.patch:
            raise ValueError(f"image_size {image_size} must be a multiple of the patch size {cfg.patch}")
        self.patch = nn.Conv2d(3, cfg.width, cfg.patch, cfg.patch)
        self.pos = nn.Parameter(torch.randn(1, (image_size // cfg.patch) ** 2, cfg.width) * 0.02)
        self.encoder = Encoder(cfg.width, cfg.depth, cfg.heads, cfg.mlp_width, checkpointing)
        self.norm = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.proj(self.norm(self.encoder(x)).mean(dim=1))


class TextTower(nn.Module):
    """Transformer over token ids (0 is padding), mean pooling over the non-pad tokens."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, checkpointing: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.text_width, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, cfg.max_len, cfg.text_width) * 0.02)
        self.encoder = Encoder(cfg.text_width, cfg.text_depth, cfg.text_heads, cfg.text_mlp_width, checkpointing)
        self.norm = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == 0
        x = self.encoder(self.embed(ids) + self.pos[:, : ids.shape[1]], pad)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return self.proj(self.norm((x * keep).sum(1) / keep.sum(1).clamp(min=1)))


class SigLIP(nn.Module):
    """Both towers, the learned temperature ``t = exp(t')`` (t' from log 10) and bias (from −10)."""

    def __init__(self, cfg: ModelConfig, image_size: int, vocab_size: int = 259, checkpointing: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageTower(cfg, image_size, checkpointing)
        self.text = TextTower(cfg, vocab_size, checkpointing)
        self.t_prime = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))

    def embed(self, images: torch.Tensor, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised image and text embeddings."""
        return F.normalize(self.image(images), dim=-1), F.normalize(self.text(ids), dim=-1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The loss of this batch: against every rank's texts when a process group is up."""
        x, y = self.embed(images, ids)
        return distributed_siglip_loss(x, y, self.t_prime, self.bias)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
