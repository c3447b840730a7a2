"""The trainer at the paper's scale, on CPU: the paper's model sizes, the distributed sigmoid loss
against one process, torchrun training with a resume on another world size, SentencePiece
tokenizers, and the CUDA-default branches (bf16 autocast, fused AdamW) run on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _helpers import free_port

from webli_io.siglip.config import MODELS, PUBLISHED_IMAGE_PARAMS_M, with_pooling
from webli_io.siglip.model import SigLIP, count_params

sys.path.insert(0, os.path.dirname(__file__))
import _siglip_ranks  # noqa: E402


@pytest.mark.parametrize("name", sorted(PUBLISHED_IMAGE_PARAMS_M))
def test_the_papers_image_towers_have_their_published_sizes(name):
    with torch.device("meta"):  # counted, not allocated
        model = SigLIP(with_pooling(MODELS[name], "mean"), 224, 259)
        siglip = SigLIP(MODELS[name], 224, 259)
    image_m = count_params(model.image) / 1e6
    assert abs(image_m - PUBLISHED_IMAGE_PARAMS_M[name]) / PUBLISHED_IMAGE_PARAMS_M[name] < 0.02, (name, image_m)
    assert count_params(model.text) > 0.3 * count_params(model.image)
    if name == "so400m14":  # published with its MAP head: 428M
        assert abs(count_params(siglip.image) / 1e6 - 428) / 428 < 0.01


def test_distributed_loss_and_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_siglip_ranks.loss_and_grads, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "dist.pt")
    torch.manual_seed(0)
    model = SigLIP(MODELS["tiny"], 16, 259).double()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64)
    ids = torch.randint(1, 259, (8, 12), generator=g)
    loss = model(images, ids)
    loss.backward()
    assert abs(float(got["loss"]) - float(loss.detach())) < 1e-5
    for mine, theirs in zip([p.grad for p in model.parameters()], got["grads"]):
        torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=0)
    # Without the gather (each rank's images against its own texts only) the loss differs: the
    # test can fail.
    from webli_io.siglip.loss import siglip_loss

    x, y = model.embed(images, ids)
    halves = (siglip_loss(x[:4], y[:4], model.t_prime, model.bias) + siglip_loss(x[4:], y[4:], model.t_prime, model.bias)) / 2
    assert abs(float(halves.detach()) - float(loss.detach())) > 1e-4  # 20x the tolerance above


def _train_cmd(shards, out, *extra):
    return [*shards, "--model", "tiny", "--image-size", "32", "--batch-size", "4", "--out", str(out), "--log-every", "1",
            "--warmup", "2", "--no-eval", "--threads", "1", *extra]


def test_torchrun_trains_on_two_ranks_and_resumes_on_one(make_shards, tmp_path):
    ds = make_shards(shards=4, per_shard=8)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "webli_io",
           "train", *_train_cmd(ds["paths"], out, "--steps", "3", "--checkpoint-every", "2", "--accum-steps", "2")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2 and all(x["steps"] == 3 and x["world_size"] == 2 for x in results)
    assert r.stderr.count("SigLIP tiny") == 1, "rank 0 logs, the other is quiet"
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2 and not list(out.glob("*.tmp"))
    assert ckpt["data"]["slots"] == 2, "both ranks' stream positions, merged"
    # Resume on one process: another world size, the stream continues with what was not consumed.
    import argparse

    from webli_io.siglip.loop import train
    from webli_io.train import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    lines = []
    res = train(p.parse_args(_train_cmd(ds["paths"], out, "--steps", "5", "--resume")), log=lines.append)
    assert res["steps"] == 5 and res["world_size"] == 1
    assert any("resumed from" in x and "step 3" in x for x in lines), lines


def test_cuda_default_branches_run_on_the_cpu(make_shards, tmp_path):
    """bf16 autocast, fused AdamW, activation checkpointing, accumulation and clipping: the code
    a GPU run takes, here on the CPU (no GPU in CI)."""
    import argparse

    from webli_io.siglip.loop import train
    from webli_io.train import add_arguments

    ds = make_shards(shards=2, per_shard=8)
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(_train_cmd(ds["paths"], tmp_path / "o", "--steps", "3", "--amp", "--fused", "--checkpointing",
                                   "--accum-steps", "2", "--clip-grad", "0.5", "--profile"))
    lines = []
    r = train(args, log=lines.append)
    assert r["steps"] == 3 and r["first_loss"] == r["first_loss"]  # not NaN
    history = json.loads((tmp_path / "o" / "history.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3]
    assert any("x 2 accumulation" in x for x in lines) and any("profile over 3 steps" in x for x in lines)


def test_a_sentencepiece_tokenizer_trained_on_the_captions_beats_bytes_in_every_script(tmp_path):
    from webli_io.sample_data import write_sample_dataset

    paths = write_sample_dataset(str(tmp_path / "d"), num_shards=2, samples_per_shard=120, bad_samples=False)
    r = subprocess.run([sys.executable, "-m", "webli_io", "tokenizer", *paths, "-o", str(tmp_path / "tok.model"),
                        "--vocab-size", "800", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    per = result["tokens_per_caption"]
    assert len(per) >= 12 and {"bn", "hi", "te", "he", "sw", "mi", "fil"} <= set(per)
    for lang, v in per.items():
        assert v["model"] < v["bytes"], (lang, v)
    counts = result["per_language"]
    assert max(counts.values()) <= sorted(counts.values())[len(counts) // 2], "no language above the median's count"
    # The trainer takes it.
    import argparse

    from webli_io.siglip.loop import train
    from webli_io.train import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    out = train(p.parse_args(_train_cmd(paths, tmp_path / "o", "--steps", "2", "--tokenizer", str(tmp_path / "tok.model"),
                                        "--workers", "1")), log=lambda *a: None)
    assert out["steps"] == 2


def test_mp_spawn_ranks_train_in_the_callers_group(make_shards, tmp_path):
    import torch.multiprocessing as mp

    ds = make_shards(shards=4, per_shard=6)
    out = tmp_path / "spawned"
    mp.spawn(_siglip_ranks.train_rank, args=(2, free_port(), _train_cmd(ds["paths"], out, "--steps", "2")), nprocs=2, join=True)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["world_size"] == 2 and ckpt["data"]["slots"] == 2
