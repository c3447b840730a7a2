"""Model sizes (torch-free, so that ``webli-io --help`` needs no torch).

Image towers are the ViTs of the papers; text towers follow big_vision's SigLIP configurations.
Sources:

- B/16, L/16, H/14: Dosovitskiy et al. 2021 (ViT), Table 1: width, depth, MLP, heads.
- So400m/14: Alabdulmohsin et al. 2023 ("Getting ViT in Shape"), the SigLIP So400m tower:
  width 1152, depth 27, MLP 4304, 16 heads.
- Text towers: big_vision's SigLIP configs (``proj/image_text/two_towers`` with
  ``text_model='proj.image_text.text_transformer'``, variant equal to the image tower's for B, L
  and So400m). WebLI-100B trains H/14 too without a text size in the paper: it gets L's text
  tower here (a choice, written down).
- The embedding width is the image tower's width, as SigLIP's text head projects to it.
- ``tiny`` and ``small`` are for CPU tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass
class ModelConfig:
    width: int
    depth: int
    heads: int
    patch: int
    text_width: int
    text_depth: int
    text_heads: int
    embed: int
    max_len: int = 64
    #: MLP widths (None: 4 x width).
    mlp: Optional[int] = None
    text_mlp: Optional[int] = None
    #: SigLIP as big_vision defines it (the default): the image tower pooled by a MAP head (a
    #: learned probe attending over the patches, then an MLP) with no projection after it, the
    #: text tower read at its last token with no padding mask (the text is padded to max_len),
    #: LayerNorm eps 1e-6, tanh-approximated GELU. ``pool="mean"``, ``text_pool="mean"``,
    #: ``ln_eps=1e-5``, ``act="gelu"`` is this package's earlier variant (:data:`MEAN_VARIANT`).
    pool: str = "map"
    text_pool: str = "last"
    ln_eps: float = 1e-6
    act: str = "gelu_tanh"

    @property
    def mlp_width(self) -> int:
        return self.mlp or 4 * self.width

    @property
    def text_mlp_width(self) -> int:
        return self.text_mlp or 4 * self.text_width


def _vit(width: int, depth: int, heads: int, patch: int, mlp: int, text: tuple) -> ModelConfig:
    tw, td, th, tm = text
    return ModelConfig(width=width, depth=depth, heads=heads, patch=patch, mlp=mlp, text_width=tw, text_depth=td, text_heads=th,
                       text_mlp=tm, embed=width)


#: The settings of the earlier mean-pooled variant; a checkpoint without ``pool`` in its config
#: was written by it.
MEAN_VARIANT: Dict[str, Any] = {"pool": "mean", "text_pool": "mean", "ln_eps": 1e-5, "act": "gelu"}
POOLINGS = ("siglip", "mean")


def model_config(saved: Dict[str, Any]) -> ModelConfig:
    """A checkpoint's ``config`` dict → ModelConfig (earlier checkpoints: the mean variant)."""
    return ModelConfig(**{**MEAN_VARIANT, **saved} if "pool" not in saved else saved)


def with_pooling(cfg: ModelConfig, pooling: str) -> ModelConfig:
    """``cfg`` as SigLIP (``"siglip"``) or as the mean-pooled variant (``"mean"``)."""
    from dataclasses import replace

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    return cfg if pooling == "siglip" else replace(cfg, **MEAN_VARIANT)


_TEXT_B, _TEXT_L, _TEXT_SO = (768, 12, 12, 3072), (1024, 24, 16, 4096), (1152, 27, 16, 4304)

MODELS: Dict[str, ModelConfig] = {
    "tiny": ModelConfig(width=128, depth=4, heads=4, patch=8, text_width=128, text_depth=2, text_heads=4, embed=128),
    "small": ModelConfig(width=384, depth=12, heads=6, patch=16, text_width=384, text_depth=6, text_heads=6, embed=384),
    "b16": _vit(768, 12, 12, 16, 3072, _TEXT_B),
    "l16": _vit(1024, 24, 16, 16, 4096, _TEXT_L),
    "h14": _vit(1280, 32, 16, 14, 5120, _TEXT_L),
    "so400m14": _vit(1152, 27, 16, 14, 4304, _TEXT_SO),
}

#: Published image-tower parameter counts (millions, at 224 px, without a classification head)
#: of the mean-pooled variant: what the test checks ``model.py`` against (ViT's B/16 86M, L/16
#: 304M, H/14 632M; So400m/14's published 428M less its MAP head, 15.2M). With the MAP head the
#: test compares with the real ``transformers`` SiglipVisionModel of the same size.
PUBLISHED_IMAGE_PARAMS_M = {"b16": 86, "l16": 304, "h14": 632, "so400m14": 413}
