"""``webli-io train`` / ``python -m webli_io.train``: the SigLIP trainer of ``webli_io.siglip``
(its parts: config, model, loss, tokenizers, schedule, dist, loop, evaluate), under the names
this module has always offered."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import torch

from ._output import print_json_line
from .siglip.config import MODELS, ModelConfig
from .siglip.evaluate import evaluate, to_device_images
from .siglip.loop import train
from .siglip.loss import distributed_siglip_loss, siglip_loss
from .siglip.model import SigLIP
from .siglip.schedule import lr_at
from .siglip.tokenizers import ByteTokenizer
from .train_args import DESCRIPTION, add_arguments

__all__ = ["MODELS", "ModelConfig", "SigLIP", "add_arguments", "distributed_siglip_loss", "evaluate", "lr_at", "siglip_loss",
           "to_device_images", "tokenize", "train"]


def tokenize(texts: Sequence[str], max_len: int = 64) -> torch.Tensor:
    """UTF-8 bytes → ids (`[B, max_len]`, int64): BOS, bytes + 3, EOS, then PAD (the default
    tokenizer, ``--tokenizer bytes``)."""
    return ByteTokenizer(max_len)(texts)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="webli-io train", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    result = train(p.parse_args(argv))
    print_json_line(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
