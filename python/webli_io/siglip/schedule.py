"""The learning rate: linear warm-up, then inverse square root decay (the paper's schedule)."""

from __future__ import annotations

import math


def lr_at(step: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * math.sqrt(warmup / (step + 1))
