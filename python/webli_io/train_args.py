"""A thin SigLIP trainer on top of WebLIStream: ``webli-io train`` / ``python -m webli_io.train``.

Two towers trained with the sigmoid loss of SigLIP (Zhai et al. 2023): a ViT image tower
(``tiny``, ``small`` or ``b16``) and a transformer text tower, with logits ``t·x·yᵀ + b``
(x, y L2-normalised, ``t = exp(t')``, ``t'`` initialised to log 10, ``b`` to −10), labels +1 on
the diagonal and −1 elsewhere.

The tokenizer is byte-level UTF-8 (256 byte ids + pad/bos/eos): it needs no download and no
training pass, covers every script of a multilingual web corpus with no unknown token, and is
the same on every machine. The paper uses mT5's 250k SentencePiece vocabulary, which would
have to be fetched from a hub; the price of bytes is longer sequences (64 tokens hold 64 bytes:
about 60 Latin, 21 Devanagari or Bengali characters).

Feeding the accelerator: batches come pinned from the DataLoader, are copied with
``non_blocking=True``, and the uint8 → float conversion and ``[-1, 1]`` scaling (big_vision's
``value_range(-1, 1)``) run on the device; bf16 autocast on CUDA. Each logged step reports the
loss, images/s and the fraction of step time spent waiting for data; ``--profile`` prints the
split between data wait, host→device copy and forward/backward. Checkpoints hold the model,
the optimiser, the step and the stream's position; ``--resume`` continues from the last one.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Dict

DESCRIPTION = __doc__

# The trainer's command line and model table, apart from the trainer (which imports torch), so
# that ``webli-io --help`` stays fast.


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


MODELS: Dict[str, ModelConfig] = {
    # A few hundred steps on CPU in the demo.
    "tiny": ModelConfig(width=128, depth=4, heads=4, patch=8, text_width=128, text_depth=2, text_heads=4, embed=128),
    # ViT-S/16 and a small text tower.
    "small": ModelConfig(width=384, depth=12, heads=6, patch=16, text_width=384, text_depth=6, text_heads=6, embed=384),
    # ViT-B/16 with a base-size text tower, as SigLIP B/16.
    "b16": ModelConfig(width=768, depth=12, heads=12, patch=16, text_width=768, text_depth=12, text_heads=12, embed=768),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", help="training shards: paths, globs or brace patterns")
    p.add_argument("--model", default="tiny", choices=sorted(MODELS), help="tower sizes")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--resize", default="random_resized_crop", choices=["squash", "center_crop", "random_resized_crop"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--out", default="webli-train", help="folder for checkpoint.pt and history.json")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (model, optimiser, step, stream)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--eval-shards", nargs="*", default=None, help="held-out shards (default: the last training shard)")
    p.add_argument("--no-eval", action="store_true", help="no held-out evaluation")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: webli-io's own threads in this process)")
    p.add_argument("--threads", dest="num_threads", type=int, default=None, help="decode threads per reader")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--profile", action="store_true", help="print the split of step time: data wait, host->device, compute")
