"""The training loop: one process, or one per rank under torchrun / ``torch.multiprocessing.spawn``.

Each rank streams its own share of the shards (``equal_batches="drop"``, on every world size: the
same number of batches on every rank, so none waits at an epoch's end, and no repeated sample); the towers are wrapped in DDP; the loss
scores each rank's images against every rank's texts; ``--accum-steps`` micro-batches make one
step (DDP synchronises on the last only); ``--clip-grad`` clips the global gradient norm. The
checkpoint (model, optimiser, step, every rank's stream position merged) is written by rank 0,
atomically (a unique temporary file, fsync-ed, then a rename), and resumes on any number of
ranks; a resume refuses another model shape and shards the checkpoint did not train on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional

import torch

from . import dist as d
from .config import MODELS, model_config, with_pooling
from .evaluate import evaluate, to_device_images
from .model import SigLIP, count_params
from .schedule import lr_at
from .tokenizers import load_tokenizer


def _stderr(*parts: object) -> None:
    print(*parts, file=sys.stderr)


def _shards(args: argparse.Namespace, ckpt: Optional[Dict[str, Any]]):
    from .. import expand_shards

    shards = expand_shards(args.shards)
    eval_shards = expand_shards(args.eval_shards) if args.eval_shards else []
    if not eval_shards and len(shards) >= 2 and not args.no_eval:
        shards, eval_shards = shards[:-1], shards[-1:]  # hold the last shard out
    if args.no_eval:
        eval_shards = []
    saved = ckpt.get("train_shards") if ckpt else None
    if saved is not None and list(saved) != shards:
        # The training shards are the checkpoint's: what is held out for evaluation (or
        # --no-eval) must not change the stream a resume continues.
        missing = sorted(set(saved) - set(shards + eval_shards))
        if missing:
            raise ValueError("--resume: the checkpoint trained on shards not given now: " + ", ".join(missing[:3]))
        # A shard the checkpoint neither trained nor evaluated on is new: a resume continues the
        # checkpoint's epoch over its own shards, so a new one would be silently left out.
        known = set(saved) | set((ckpt or {}).get("eval_shards") or eval_shards)
        added = [s for s in shards + eval_shards if s not in known]
        if added:
            raise ValueError(
                f"--resume: the command line adds {len(added)} shard(s) the checkpoint did not train on ({', '.join(added[:3])}"
                f"{', ...' if len(added) > 3 else ''}): a resume continues the checkpoint's epoch over its own "
                f"{len(saved)} shards. Drop them from the command line, or train on them in a new run (another --out)"
            )
        shards = list(saved)
        eval_shards = [s for s in eval_shards if s not in saved]
    return shards, eval_shards


#: The settings that fix the model's shape: a resume must give the checkpoint's.
SHAPE_SETTINGS = (("model", "--model"), ("image_size", "--image-size"), ("tokenizer", "--tokenizer"))


def _check_resume_settings(args: argparse.Namespace, ckpt: Dict[str, Any]) -> None:
    """A resume with another model size, image size or tokenizer is a clear error naming the
    checkpoint's settings, not a size-mismatch traceback from ``load_state_dict``."""
    saved = ckpt.get("args") or {}

    def same(k: str, a: Any, b: Any) -> bool:  # a tokenizer file is the same file, however named
        if k == "tokenizer" and isinstance(a, str) and isinstance(b, str) and os.path.isfile(b):
            return os.path.abspath(a) == os.path.abspath(b)
        return bool(a == b)

    wrong = [(flag, saved[k], getattr(args, k)) for k, flag in SHAPE_SETTINGS if k in saved and not same(k, saved[k], getattr(args, k))]
    if wrong:
        given = ", ".join(f"{flag} {now} (the checkpoint's: {then})" for flag, then, now in wrong)
        fix = " ".join(f"{flag} {then}" for flag, then, _ in wrong)
        raise ValueError(f"--resume: this command gives {given}; the checkpoint's model has another shape. "
                         f"Resume with {fix}, or start a new run (another --out)")


def save_checkpoint(obj: Dict[str, Any], path: str) -> None:
    """Write a checkpoint whole or not at all: a unique temporary, flushed and fsync-ed, then
    renamed over ``path`` (a node crash leaves the old checkpoint or the new one). A full disk
    is a clear :class:`~webli_io._files.WriteError`; the previous checkpoint is kept."""
    from .._files import WriteError, atomic_file

    try:
        with atomic_file(path) as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:
        raise WriteError(f"could not write the checkpoint {path} ({e}): the previous checkpoint, if any, is kept; "
                         "free some space (or choose another --out) and resume") from e


def train(args: argparse.Namespace, log=_stderr) -> Dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    from ..stream import WebLIStream, options_from

    torch.manual_seed(args.seed)
    device = d.device_for(args.device)
    rank, world, owned = d.setup(device)
    say = log if rank == 0 else (lambda *a: None)
    try:
        if args.model not in MODELS:
            raise ValueError(f"--model must be one of {sorted(MODELS)}, not {args.model!r}")
        if args.accum_steps < 1:
            raise ValueError(f"--accum-steps must be at least 1, not {args.accum_steps}")
        ckpt_path = os.path.join(args.out, "checkpoint.pt")
        ckpt: Optional[Dict[str, Any]] = None
        if args.resume:
            if not os.path.exists(ckpt_path):
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
            # weights_only: a checkpoint is data, never code (a crafted pickle cannot run anything).
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            _check_resume_settings(args, ckpt)
        shards, eval_shards = _shards(args, ckpt)
        # A resume rebuilds the checkpoint's own towers (an earlier one's: the mean variant).
        cfg = model_config(ckpt["config"]) if ckpt is not None else with_pooling(MODELS[args.model], args.pooling)
        tokenizer = load_tokenizer(args.tokenizer, cfg.max_len)
        model = SigLIP(cfg, args.image_size, tokenizer.vocab_size, checkpointing=args.checkpointing).to(device)
        if args.compile:
            model.image = torch.compile(model.image)  # type: ignore[assignment]
            model.text = torch.compile(model.text)  # type: ignore[assignment]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        decay = [p for p in model.parameters() if p.ndim >= 2]
        # Fused AdamW (one kernel for all parameters) on CUDA by default; --fused tries it anywhere.
        fused = args.fused if args.fused is not None else device.type == "cuda"
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, betas=(0.9, 0.95), fused=fused or None)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
        # One settings value from the command line (the same names), with what training needs fixed;
        # the captions are tokenized in the reader processes.
        # equal_batches on whatever the world size, so that a checkpoint resumes on another one;
        # "drop", not "pad": a padded batch repeats samples, which the sigmoid loss would score as
        # negatives of themselves.
        fixed: Dict[str, Any] = {"layout": "NCHW", "shuffle": True, "drop_last": True, "equal_batches": "drop"}
        stream = WebLIStream(shards, options_from(args, **fixed), tokenizer=tokenizer)
        os.makedirs(args.out, exist_ok=True)
        step, epoch, resumed_at = 0, 0, -1
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            step = int(ckpt["step"])
            stream.load_state_dict(ckpt["data"])
            epoch = resumed_at = stream.epoch
            say(f"resumed from {ckpt_path} at step {step} (epoch {epoch})")
        say(f"SigLIP {args.model}: {count_params(model) / 1e6:.1f} M parameters, {args.image_size} px, batch {args.batch_size} "
            f"x {world} rank{'s' if world > 1 else ''} x {args.accum_steps} accumulation, tokenizer {tokenizer.name}, "
            f"{len(shards)} train shards, {len(eval_shards)} eval shards, on {device}")

        # The command line as plain data (a checkpoint is loaded with weights_only: no functions).
        plain_args = {k: v for k, v in vars(args).items() if v is None or isinstance(v, (str, int, float, bool, list))}
        tok_spec = plain_args.get("tokenizer")
        if isinstance(tok_spec, str) and os.path.isfile(tok_spec):
            plain_args["tokenizer"] = os.path.abspath(tok_spec)  # the checkpoint is evaluated from other folders

        def save() -> None:
            # Every rank's stream position (each knows its own readers), merged; written once.
            data = WebLIStream.merge_states(d.gather_objects(stream.state_dict(), world))
            if rank == 0:
                save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "data": data,
                                 "train_shards": list(shards), "eval_shards": list(eval_shards), "args": plain_args,
                                 "config": asdict(cfg), "world_size": world}, ckpt_path)
            d.barrier(world)

        history: List[Dict[str, float]] = []
        prof = {"wait": 0.0, "h2d": 0.0, "compute": 0.0, "steps": 0}
        window = {"wait": 0.0, "total": 0.0, "images": 0}
        amp = args.amp if args.amp is not None else device.type == "cuda"
        pin = device.type == "cuda"
        start = time.perf_counter()
        micro, loss_sum = 0, 0.0
        while step < args.steps:
            stream.set_epoch(epoch)  # after a resume, the same epoch: the stream continues where it stopped
            loader = stream.loader(num_workers=args.workers, pin_memory=pin, persistent_workers=False,
                                   prefetch_factor=4 if args.workers else None)
            got_any = False
            t_ready = time.perf_counter()
            for batch in loader:
                got_any = True
                t_data = time.perf_counter()
                stream.observe(batch)
                images = to_device_images(batch["images"], device)
                ids = batch["tokens"].to(device, non_blocking=True)
                if args.profile and device.type == "cuda":
                    torch.cuda.synchronize()
                t_h2d = time.perf_counter()
                last = (micro + 1) % args.accum_steps == 0
                # DDP all-reduces gradients on the last micro-batch of a step only.
                sync = contextlib.nullcontext() if (last or world == 1) else ddp.no_sync()  # type: ignore[operator]
                with sync:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        loss = ddp(images, ids)
                    (loss / args.accum_steps).backward()
                micro += 1
                loss_sum += float(loss.detach())  # syncs the device: the micro-step is done
                t_done = time.perf_counter()
                wait, total = t_data - t_ready, t_done - t_ready
                prof["wait"] += wait
                prof["h2d"] += t_h2d - t_data
                prof["compute"] += t_done - t_h2d
                window["wait"] += wait
                window["total"] += total
                window["images"] += len(batch["keys"]) * world
                t_ready = time.perf_counter()
                if not last:
                    continue
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, args.lr, args.warmup)
                if args.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss_value, loss_sum = loss_sum / args.accum_steps, 0.0
                step += 1
                prof["steps"] += 1
                history.append({"step": step, "loss": loss_value})
                if step % args.log_every == 0 or step == args.steps:
                    say(f"step {step:>6}  loss {loss_value:8.4f}  {window['images'] / window['total']:8.1f} img/s  "
                        f"data wait {100 * window['wait'] / window['total']:5.1f}%  t {float(model.t_prime.detach().exp()):.2f} "
                        f"b {float(model.bias.detach()):.2f}")
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
        result: Dict[str, Any] = {"steps": step, "seconds": round(elapsed, 2), "world_size": world,
                                  "first_loss": history[0]["loss"] if history else None,
                                  "last_loss": history[-1]["loss"] if history else None, "checkpoint": ckpt_path}
        if prof["steps"]:
            total = prof["wait"] + prof["h2d"] + prof["compute"]
            result["data_wait_fraction"] = round(prof["wait"] / total, 4)
            if args.profile:
                say(f"profile over {prof['steps']} steps: data wait {100 * prof['wait'] / total:.1f}%, "
                    f"host->device {100 * prof['h2d'] / total:.1f}%, forward/backward {100 * prof['compute'] / total:.1f}%")
        if eval_shards and rank == 0:
            ev = evaluate(model, eval_shards, args.image_size, device, tokenizer)
            result["eval"] = ev
            if ev:
                say(f"zero-shot retrieval on {ev['pairs']} held-out pairs: image->text R@1 {ev['i2t_r1']:.3f} R@5 {ev['i2t_r5']:.3f}, "
                    f"text->image R@1 {ev['t2i_r1']:.3f} R@5 {ev['t2i_r5']:.3f} (chance R@1 {ev['chance_r1']:.3f})")
        if rank == 0:
            with open(os.path.join(args.out, "history.json"), "w") as f:
                json.dump({"result": result, "history": history}, f)
        return result
    finally:
        d.teardown(owned)
