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
from typing import Dict, Optional


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


_TEXT_B, _TEXT_L, _TEXT_SO = (768, 12, 12, 3072), (1024, 24, 16, 4096), (1152, 27, 16, 4304)

MODELS: Dict[str, ModelConfig] = {
    "tiny": ModelConfig(width=128, depth=4, heads=4, patch=8, text_width=128, text_depth=2, text_heads=4, embed=128),
    "small": ModelConfig(width=384, depth=12, heads=6, patch=16, text_width=384, text_depth=6, text_heads=6, embed=384),
    "b16": _vit(768, 12, 12, 16, 3072, _TEXT_B),
    "l16": _vit(1024, 24, 16, 16, 4096, _TEXT_L),
    "h14": _vit(1280, 32, 16, 14, 5120, _TEXT_L),
    "so400m14": _vit(1152, 27, 16, 14, 4304, _TEXT_SO),
}

#: Published image-tower parameter counts (millions, at 224 px, without a classification head):
#: what the test checks ``model.py`` against. So400m/14 is published at 428M with its MAP
#: pooling head (attention 4 x 1152² + MLP 2 x 1152 x 4304 = 15.2M); this tower pools by the
#: mean, so the figure to match is 428 - 15 = 413.
PUBLISHED_IMAGE_PARAMS_M = {"b16": 86, "l16": 304, "h14": 632, "so400m14": 413}
