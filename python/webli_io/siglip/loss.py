"""The sigmoid loss of SigLIP (Zhai et al. 2023), on one process and across processes.

``−(1/|B|) Σ_i Σ_j log σ(z_ij · (t · x_i·y_j + b))``, ``z = +1`` for a matching pair, ``−1``
otherwise. Across ranks, each rank scores its images against the texts of *every* rank (gathered
with gradients), so the global batch is the sum of the local ones and, with DDP's averaging of
gradients, training equals one process on the concatenated batch. The SigLIP paper also has a
chunked ring exchange (texts passed to the neighbour, B x B blocks at a time), which needs less
memory at very large batches; the all-gather is the simpler of the two and what OpenCLIP's
``SigLipLoss`` does by default (``bidir`` gather).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def siglip_loss(x: torch.Tensor, y: torch.Tensor, t_prime: torch.Tensor, bias: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """The loss of images ``x`` ``[B, D]`` against texts ``y`` ``[N, D]``: the pair of image ``i``
    is text ``offset + i`` (``offset = 0`` and ``N = B``: one process)."""
    # At least float32 (bf16 autocast gives bf16 embeddings); float64 stays float64.
    dtype = torch.promote_types(x.dtype, torch.float32)
    logits = t_prime.exp() * (x.to(dtype) @ y.to(dtype).T) + bias
    labels = -torch.ones_like(logits)
    idx = torch.arange(len(x), device=x.device)
    labels[idx, idx + offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() / len(x)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward gives each rank the sum, over ranks, of the gradients of its
    slice (all_reduce then slice: gloo has no reduce_scatter)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), len(t)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def distributed_siglip_loss(x: torch.Tensor, y: torch.Tensor, t_prime: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """This rank's images against every rank's texts (equal local batches); the plain loss when
    there is one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return siglip_loss(x, y, t_prime, bias)
    return siglip_loss(x, _GatherWithGrad.apply(y), t_prime, bias, offset=dist.get_rank() * len(x))
