"""A thin SigLIP trainer on top of WebLIStream: ``webli-io train`` / ``python -m webli_io.train``.

Two towers trained with the sigmoid loss of SigLIP (Zhai et al. 2023): a ViT image tower
(``tiny``, ``small``, or the paper's ``b16``, ``l16``, ``h14`` and SigLIP's ``so400m14``) and a
transformer text tower, with logits ``t·x·yᵀ + b``
(x, y L2-normalised, ``t = exp(t')``, ``t'`` initialised to log 10, ``b`` to −10), labels +1 on
the diagonal and −1 elsewhere.

The default tokenizer is byte-level UTF-8 (256 byte ids + pad/bos/eos): it needs no download
and no training pass, covers every script with no unknown token; the price is longer sequences
(64 tokens hold about 60 Latin, 21 Devanagari or Bengali characters). ``--tokenizer MODEL`` takes
a SentencePiece model instead: mT5's ``spiece.model`` (the paper's), or one trained on your
captions, balanced across languages, by ``webli-io tokenizer SHARDS -o tok.model``.

Many GPUs: run it under ``torchrun --nproc_per_node=N`` (or call ``train`` from a
``torch.multiprocessing.spawn`` function after ``init_process_group``): each rank streams its own
share (equal batches on every rank), the towers are wrapped in DDP, and the sigmoid loss scores
each rank's images against every rank's texts, so the global batch is the sum of the local ones.
``--accum-steps`` accumulates micro-batches; ``--clip-grad`` clips the gradient norm; the
checkpoint is written once, by rank 0, and resumes on another number of ranks.

Feeding the accelerator: batches come pinned from the DataLoader, are copied with
``non_blocking=True``, and the uint8 → float conversion and ``[-1, 1]`` scaling (big_vision's
``value_range(-1, 1)``) run on the device; bf16 autocast on CUDA. Each logged step reports the
loss, images/s and the fraction of step time spent waiting for data; ``--profile`` prints the
split between data wait, host→device copy and forward/backward. Checkpoints hold the model,
the optimiser, the step and the stream's position; ``--resume`` continues from the last one.
"""

from __future__ import annotations

import argparse

from ._settings import INTERPOLATIONS, RESIZE_MODES
from .siglip.config import MODELS

DESCRIPTION = __doc__

# The trainer's command line and model table, apart from the trainer (which imports torch), so
# that ``webli-io --help`` stays fast.


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", help="training shards: paths, globs or brace patterns")
    p.add_argument("--model", default="tiny", choices=sorted(MODELS), help="tower sizes")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--resize", default="squash", choices=RESIZE_MODES,
                   help="how images become tiles: 'squash' is SigLIP's plain resize to the square (big_vision's "
                   "decode|resize), the default; random_resized_crop is torchvision's Inception-style augmentation")
    p.add_argument("--interpolation", default="bilinear", choices=INTERPOLATIONS, help="the resize filter, as Pillow's")
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
    p.add_argument("--index", default=None,
                   help="folder (or URL prefix) of the shard index of `webli-io index` (default: beside the shards); remote "
                   "shards need one: the trainer's equal batches are counted from it, and a resume seeks with it")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--profile", action="store_true", help="print the split of step time: data wait, host->device, compute")
    p.add_argument("--tokenizer", default="bytes",
                   help="'bytes' (UTF-8 bytes, no training), or a SentencePiece model file (mT5's spiece.model, or one from `webli-io tokenizer`)")
    p.add_argument("--pooling", default="siglip", choices=["siglip", "mean"],
                   help="'siglip': the MAP head over the image patches and the text read at its last token, LayerNorm eps "
                   "1e-6, tanh GELU, as big_vision's SigLIP (loads and exports OpenCLIP / Hugging Face weights); 'mean': "
                   "mean pooling and a projection (this package's earlier towers)")
    p.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimiser step (gradient accumulation)")
    p.add_argument("--clip-grad", type=float, default=1.0, help="clip the global gradient norm to this (0: off)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing: recompute each layer in backward (less memory)")
    p.add_argument("--compile", action="store_true", help="torch.compile the towers")
    p.add_argument("--fused", dest="fused", action="store_true", default=None, help="fused AdamW (default: on with CUDA)")
    p.add_argument("--no-fused", dest="fused", action="store_false")
    p.add_argument("--amp", dest="amp", action="store_true", default=None, help="bf16 autocast (default: on with CUDA)")
    p.add_argument("--no-amp", dest="amp", action="store_false")
