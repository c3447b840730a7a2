"""Zero-shot retrieval on held-out shards: recall@1/5, image→text and text→image."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .model import SigLIP


def to_device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW (pinned) → float in [-1, 1] on the device (big_vision's ``value_range(-1, 1)``);
    the conversion runs there, on a quarter of the bytes a float copy would move."""
    return images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)


def recall_at_k(sim: torch.Tensor, ks: Sequence[int] = (1, 5, 10), same: Optional[Sequence[Any]] = None) -> Dict[int, float]:
    """Recall@k of queries (rows) whose match is the column of the same index. With ``same``
    (one value per column), any column with the match's value counts as the match: identical
    captions are one answer (benchmarks have distinct captions, where this changes nothing)."""
    ranked = sim.argsort(dim=1, descending=True)
    if same is None:
        target = torch.arange(sim.shape[0], device=sim.device)
        hits = ranked == target[:, None]
    else:
        ids = {v: i for i, v in enumerate(dict.fromkeys(same))}
        col = torch.tensor([ids[v] for v in same], device=sim.device)
        hits = col[ranked] == col[: sim.shape[0], None]
    hit_rank = hits.float().argmax(dim=1)
    return {k: float((hit_rank < k).float().mean()) for k in ks}


@torch.no_grad()
def evaluate(model: SigLIP, shards: List[str], image_size: int, device: torch.device, tokenizer: Callable, limit: int = 1000) -> Dict[str, float]:
    from ..stream import WebLIStream

    model.eval()
    xs, ys = [], []
    n = 0
    # rank=0, world_size=1: rank 0 evaluates every held-out pair, whatever RANK the launcher set.
    for b in WebLIStream(shards, batch_size=128, image_size=image_size, layout="NCHW", resize="squash", rank=0, world_size=1):
        images = to_device_images(torch.as_tensor(b["images"]), device)
        x, y = model.embed(images, tokenizer(b["texts"]).to(device))
        xs.append(x.float())
        ys.append(y.float())
        n += len(b["keys"])
        if n >= limit:
            break
    model.train()
    if not xs:
        return {}
    x, y = torch.cat(xs)[:limit], torch.cat(ys)[:limit]
    sim = x @ y.T
    i2t, t2i = recall_at_k(sim, (1, 5)), recall_at_k(sim.T, (1, 5))
    return {"pairs": len(x), "i2t_r1": i2t[1], "i2t_r5": i2t[5], "t2i_r1": t2i[1], "t2i_r5": t2i[5], "chance_r1": 1.0 / len(x)}
