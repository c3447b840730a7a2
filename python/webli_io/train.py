"""The SigLIP trainer (see ``webli_io.train_args`` for what it does and its command line)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .train_args import DESCRIPTION, MODELS, ModelConfig, add_arguments

__all__ = ["MODELS", "ModelConfig", "SigLIP", "add_arguments", "siglip_loss", "tokenize", "train"]

PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
VOCAB = 256 + OFFSET


def tokenize(texts: Sequence[str], max_len: int = 64) -> torch.Tensor:
    """UTF-8 bytes → ids (`[B, max_len]`, int64): BOS, bytes + 3, EOS, then PAD."""
    out = torch.zeros(len(texts), max_len, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [BOS] + [b + OFFSET for b in t.encode("utf-8")[: max_len - 2]] + [EOS]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def _encoder(width: int, depth: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class ImageTower(nn.Module):
    """ViT: patch embedding, learned position embedding, pre-norm encoder, mean pooling."""

    def __init__(self, cfg: ModelConfig, image_size: int) -> None:
        super().__init__()
        if image_size % cfg.patch:
            raise ValueError(f"image_size {image_size} must be a multiple of the patch size {cfg.patch}")
        self.patch = nn.Conv2d(3, cfg.width, cfg.patch, cfg.patch)
        self.pos = nn.Parameter(torch.randn(1, (image_size // cfg.patch) ** 2, cfg.width) * 0.02)
        self.encoder = _encoder(cfg.width, cfg.depth, cfg.heads)
        self.norm = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.proj(self.norm(self.encoder(x)).mean(dim=1))


class TextTower(nn.Module):
    """Transformer over byte tokens, mean pooling over the non-pad tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, cfg.text_width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, cfg.max_len, cfg.text_width) * 0.02)
        self.encoder = _encoder(cfg.text_width, cfg.text_depth, cfg.text_heads)
        self.norm = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == PAD
        x = self.encoder(self.embed(ids) + self.pos[:, : ids.shape[1]], src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return self.proj(self.norm((x * keep).sum(1) / keep.sum(1).clamp(min=1)))


class SigLIP(nn.Module):
    def __init__(self, cfg: ModelConfig, image_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageTower(cfg, image_size)
        self.text = TextTower(cfg)
        self.t_prime = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))

    def embed(self, images: torch.Tensor, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.image(images), dim=-1), F.normalize(self.text(ids), dim=-1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x, y = self.embed(images, ids)
        return siglip_loss(x, y, self.t_prime, self.bias)


def siglip_loss(x: torch.Tensor, y: torch.Tensor, t_prime: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """−(1/|B|) Σ_i Σ_j log σ(z_ij · (t · x_i·y_j + b)), z = +1 on the diagonal, −1 elsewhere."""
    logits = t_prime.exp() * (x.float() @ y.float().T) + bias
    labels = 2 * torch.eye(len(x), device=x.device) - 1
    return -F.logsigmoid(labels * logits).sum() / len(x)


def to_device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW (pinned) → float in [-1, 1] on the device; the conversion runs there."""
    return images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)


def lr_at(step: int, base: float, warmup: int) -> float:
    """Linear warm-up, then inverse square root decay (the paper's schedule)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * math.sqrt(warmup / (step + 1))


@torch.no_grad()
def evaluate(model: SigLIP, shards: List[str], image_size: int, device: torch.device, max_len: int, limit: int = 1000) -> Dict[str, float]:
    """Zero-shot retrieval on held-out shards: recall@1/5, image→text and text→image."""
    from .stream import WebLIStream

    model.eval()
    xs, ys = [], []
    n = 0
    for b in WebLIStream(shards, batch_size=128, image_size=image_size, layout="NCHW", resize="squash"):
        images = to_device_images(torch.as_tensor(b["images"]), device)
        x, y = model.embed(images, tokenize(b["texts"], max_len).to(device))
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
    target = torch.arange(len(x), device=sim.device)

    def recall(s: torch.Tensor, k: int) -> float:
        top = s.topk(min(k, s.shape[1]), dim=1).indices
        return float((top == target[:, None]).any(dim=1).float().mean())

    return {"pairs": len(x), "i2t_r1": recall(sim, 1), "i2t_r5": recall(sim, 5), "t2i_r1": recall(sim.T, 1),
            "t2i_r5": recall(sim.T, 5), "chance_r1": 1.0 / len(x)}


def _stderr(*parts: object) -> None:
    print(*parts, file=sys.stderr)


def train(args: argparse.Namespace, log=_stderr) -> Dict[str, Any]:
    from torch.utils.data import DataLoader

    from . import expand_shards
    from .stream import WebLIStream, options_from

    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    shards = expand_shards(args.shards)
    eval_shards = expand_shards(args.eval_shards) if args.eval_shards else []
    if not eval_shards and len(shards) >= 2 and not args.no_eval:
        shards, eval_shards = shards[:-1], shards[-1:]  # hold the last shard out
    if args.no_eval:
        eval_shards = []
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    ckpt: Optional[Dict[str, Any]] = None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        # weights_only: a checkpoint is data, never code (a crafted pickle cannot run anything).
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = ckpt.get("train_shards")
        if saved is not None and list(saved) != shards:
            # The training shards are the checkpoint's: what is held out for evaluation (or
            # --no-eval) must not change the stream a resume continues.
            if set(saved) - set(shards + eval_shards):
                raise ValueError("--resume: the checkpoint trained on shards not given now: " + ", ".join(sorted(set(saved) - set(shards + eval_shards))[:3]))
            shards = list(saved)
            eval_shards = [s for s in eval_shards if s not in saved]
    if args.model not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, not {args.model!r}")
    cfg = MODELS[args.model]
    model = SigLIP(cfg, args.image_size).to(device)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    # One settings value from the command line (the same names), with what training needs fixed.
    stream = WebLIStream(shards, options_from(args, layout="NCHW", shuffle=True, drop_last=True))
    os.makedirs(args.out, exist_ok=True)
    step, epoch, resumed_at = 0, 0, -1
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        stream.load_state_dict(ckpt["data"])
        epoch = resumed_at = stream.epoch
        log(f"resumed from {ckpt_path} at step {step} (epoch {epoch})")
    params = sum(p.numel() for p in model.parameters())
    log(f"SigLIP {args.model}: {params / 1e6:.1f} M parameters, {args.image_size} px, batch {args.batch_size}, "
        f"{len(shards)} train shards, {len(eval_shards)} eval shards, on {device}")

    def save() -> None:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "data": stream.state_dict(),
                    "train_shards": list(shards),
                    "args": vars(args), "config": asdict(cfg)}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    history: List[Dict[str, float]] = []
    prof = {"wait": 0.0, "h2d": 0.0, "compute": 0.0, "steps": 0}
    window = {"wait": 0.0, "total": 0.0, "images": 0}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    start = time.perf_counter()
    while step < args.steps:
        stream.set_epoch(epoch)  # after a resume, the same epoch: the stream continues where it stopped
        loader = DataLoader(stream, batch_size=None, num_workers=args.workers, pin_memory=cuda,
                            persistent_workers=False, prefetch_factor=4 if args.workers else None)
        got_any = False
        t_ready = time.perf_counter()
        for batch in loader:
            got_any = True
            t_data = time.perf_counter()
            stream.observe(batch)
            images = to_device_images(batch["images"], device)
            ids = tokenize(batch["texts"], cfg.max_len).to(device, non_blocking=True)
            if args.profile and cuda:
                torch.cuda.synchronize()
            t_h2d = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup)
            with autocast:
                loss = model(images, ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())  # syncs the device: the step is done
            t_done = time.perf_counter()
            step += 1
            wait, total = t_data - t_ready, t_done - t_ready
            prof["wait"] += wait
            prof["h2d"] += t_h2d - t_data
            prof["compute"] += t_done - t_h2d
            prof["steps"] += 1
            window["wait"] += wait
            window["total"] += total
            window["images"] += len(batch["keys"])
            history.append({"step": step, "loss": loss_value})
            if step % args.log_every == 0 or step == args.steps:
                log(f"step {step:>6}  loss {loss_value:8.4f}  {window['images'] / window['total']:8.1f} img/s  "
                    f"data wait {100 * window['wait'] / window['total']:5.1f}%  t {float(model.t_prime.detach().exp()):.2f} b {float(model.bias.detach()):.2f}")
                window = {"wait": 0.0, "total": 0.0, "images": 0}
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save()
            t_ready = time.perf_counter()
            if step >= args.steps:
                break
        resumed_epoch = args.resume and epoch == resumed_at
        if not got_any and not resumed_epoch:
            raise ValueError(
                f"the training shards gave no batch of {args.batch_size}: they hold fewer usable samples than one batch "
                f"({stream.stats().get('samples_yielded', 0)} streamed, the last short batch dropped): use a smaller "
                "--batch-size, or more shards" + (" (the last shard is held out for evaluation: --no-eval keeps it)" if eval_shards else "")
            )
        if step < args.steps:
            epoch += 1
    elapsed = time.perf_counter() - start
    save()
    result: Dict[str, Any] = {"steps": step, "seconds": round(elapsed, 2), "first_loss": history[0]["loss"] if history else None,
                              "last_loss": history[-1]["loss"] if history else None, "checkpoint": ckpt_path}
    if prof["steps"]:
        total = prof["wait"] + prof["h2d"] + prof["compute"]
        result["data_wait_fraction"] = round(prof["wait"] / total, 4)
        if args.profile:
            log(f"profile over {prof['steps']} steps: data wait {100 * prof['wait'] / total:.1f}%, "
                f"host->device {100 * prof['h2d'] / total:.1f}%, forward/backward {100 * prof['compute'] / total:.1f}%")
    if eval_shards:
        ev = evaluate(model, eval_shards, args.image_size, device, cfg.max_len)
        result["eval"] = ev
        if ev:
            log(f"zero-shot retrieval on {ev['pairs']} held-out pairs: image->text R@1 {ev['i2t_r1']:.3f} R@5 {ev['i2t_r5']:.3f}, "
                f"text->image R@1 {ev['t2i_r1']:.3f} R@5 {ev['t2i_r5']:.3f} (chance R@1 {ev['chance_r1']:.3f})")
    with open(os.path.join(args.out, "history.json"), "w") as f:
        json.dump({"result": result, "history": history}, f)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="webli-io train", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    result = train(p.parse_args(argv))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
