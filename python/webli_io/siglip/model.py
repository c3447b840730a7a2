"""The two towers as SigLIP defines them (big_vision's ``two_towers`` with ``pool_type="map"``
and the text tower read at its last token; the same computation as OpenCLIP's
``ViT-*-SigLIP`` and Hugging Face's ``SiglipModel``, whose weights :mod:`.convert` loads and
writes), or this package's earlier mean-pooled variant (``ModelConfig.pool="mean"``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .loss import distributed_siglip_loss


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "gelu_tanh":
        return _gelu_tanh
    if name == "gelu":
        return F.gelu
    raise ValueError(f"activation must be 'gelu_tanh' or 'gelu', not {name!r}")


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class Encoder(nn.Module):
    """Pre-norm transformer layers, optionally with activation checkpointing (recompute each
    layer in the backward pass: less memory for the paper's large models)."""

    def __init__(self, width: int, depth: int, heads: int, mlp: int, checkpointing: bool = False, eps: float = 1e-6,
                 act: str = "gelu_tanh") -> None:
        super().__init__()
        fn: object = "gelu" if act == "gelu" else activation(act)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, mlp, dropout=0.0, activation=fn, batch_first=True,  # type: ignore[arg-type]
                                       norm_first=True, layer_norm_eps=eps)
            for _ in range(depth)
        )
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor, pad: Optional[torch.Tensor] = None) -> torch.Tensor:
        for layer in self.layers:
            if self.checkpointing and self.training:
                x = checkpoint(layer, x, None, pad, use_reentrant=False)
            else:
                x = layer(x, src_key_padding_mask=pad)
        return x


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(width, hidden), nn.Linear(hidden, width), activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision's ``MAPHead``): a learned probe attends over the
    tokens, then a pre-norm MLP with a residual; returns the pooled vector and, on request, the
    probe's attention weights over the tokens (averaged over the heads)."""

    def __init__(self, width: int, heads: int, mlp: int, eps: float, act: str) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp, act)

    def forward(self, x: torch.Tensor, weights: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        probe = self.probe.expand(x.shape[0], -1, -1)
        h, w = self.attention(probe, x, x, need_weights=weights, average_attn_weights=True)
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0], (w[:, 0] if w is not None else None)


class ImageTower(nn.Module):
    """ViT: patch embedding, learned position embedding, pre-norm encoder, final norm; pooled by
    the MAP head (SigLIP: the pooled vector is the embedding) or by the mean and projected."""

    def __init__(self, cfg: ModelConfig, image_size: int, checkpointing: bool = False) -> None:
        super().__init__()
        if image_size % cfg.patch:
            raise ValueError(f"image_size {image_size} must be a multiple of the patch size {cfg.patch}")
        if cfg.pool not in ("map", "mean"):
            raise ValueError(f"pool must be 'map' or 'mean', not {cfg.pool!r}")
        self.patch = nn.Conv2d(3, cfg.width, cfg.patch, cfg.patch)
        self.pos = nn.Parameter(torch.randn(1, (image_size // cfg.patch) ** 2, cfg.width) * 0.02)
        self.encoder = Encoder(cfg.width, cfg.depth, cfg.heads, cfg.mlp_width, checkpointing, cfg.ln_eps, cfg.act)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.head: Optional[MAPHead] = None
        self.proj: nn.Module = nn.Identity()
        if cfg.pool == "map":
            if cfg.embed != cfg.width:
                raise ValueError(f"a MAP-pooled image tower's embedding is its width ({cfg.width}), not {cfg.embed}")
            self.head = MAPHead(cfg.width, cfg.heads, cfg.mlp_width, cfg.ln_eps, cfg.act)
        else:
            self.proj = nn.Linear(cfg.width, cfg.embed)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The patch tokens after the encoder and the final norm, ``[B, patches, width]``."""
        return self.norm(self.encoder(self.patch(x).flatten(2).transpose(1, 2) + self.pos))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x)
        if self.head is not None:
            return self.head(t)[0]
        return self.proj(t.mean(dim=1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The MAP head's attention over the patches, ``[B, patches]`` (each row sums to 1)."""
        if self.head is None:
            raise ValueError("a mean-pooled image tower has no attention to show; train or load a SigLIP (MAP) model")
        w = self.head(self.tokens(x), weights=True)[1]
        assert w is not None
        return w


class TextTower(nn.Module):
    """Transformer over token ids padded to ``max_len`` (0 is padding), final norm, a linear head;
    read at the last position with no padding mask (SigLIP), or the mean over the non-pad tokens
    with the padding masked (the earlier variant)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, checkpointing: bool = False) -> None:
        super().__init__()
        if cfg.text_pool not in ("last", "mean"):
            raise ValueError(f"text_pool must be 'last' or 'mean', not {cfg.text_pool!r}")
        self.pool = cfg.text_pool
        self.embed = nn.Embedding(vocab_size, cfg.text_width, padding_idx=0 if cfg.text_pool == "mean" else None)
        self.pos = nn.Parameter(torch.randn(1, cfg.max_len, cfg.text_width) * 0.02)
        self.encoder = Encoder(cfg.text_width, cfg.text_depth, cfg.text_heads, cfg.text_mlp_width, checkpointing, cfg.ln_eps, cfg.act)
        self.norm = nn.LayerNorm(cfg.text_width, eps=cfg.ln_eps)
        self.proj = nn.Linear(cfg.text_width, cfg.embed)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        if self.pool == "last":
            return self.proj(self.norm(self.encoder(x))[:, -1])
        pad = ids == 0
        x = self.encoder(x, pad)
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
