"""The SigLIP trainer on CPU: the loss, learning, checkpoints and resume, evaluation."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from webli_io.train import MODELS, SigLIP, add_arguments, lr_at, siglip_loss, tokenize, train


def args_for(shards, out, *extra):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([*shards, "--out", str(out), "--image-size", "32", "--batch-size", "8", "--log-every", "5",
                         "--warmup", "5", "--lr", "2e-3", *extra])


def test_siglip_loss_matches_the_paper_formula():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    t, b = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    ref = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            ref -= math.log(1 / (1 + math.exp(-z * (10.0 * float(x[i] @ y[j]) - 10.0))))
    assert float(siglip_loss(x, y, t, b)) == pytest.approx(ref / 5, rel=1e-5)
    # Matching pairs score better than shuffled ones.
    assert siglip_loss(x, x, t, b) < siglip_loss(x, x.roll(1, 0), t, b)


def test_byte_tokenizer_is_multilingual_and_bounded():
    ids = tokenize(["hi", "हिन्दी", "x" * 500], max_len=16)
    assert ids.shape == (3, 16)
    assert ids[0, :4].tolist() == [1, ord("h") + 3, ord("i") + 3, 2] and ids[0, 4:].eq(0).all()
    assert ids[1].ne(0).all() and ids[2].ne(0).all()  # cut to max_len
    hindi = tokenize(["हिन्दी"], max_len=32)[0]
    assert hindi.ne(0).sum() == len("हिन्दी".encode()) + 2


def test_model_sizes_and_init():
    m = SigLIP(MODELS["tiny"], 32)
    assert float(m.t_prime.detach().exp()) == pytest.approx(10.0) and float(m.bias.detach()) == -10.0
    loss = m(torch.rand(4, 3, 32, 32) * 2 - 1, tokenize(["a", "b", "c", "d"]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert MODELS["b16"].width == 768 and MODELS["b16"].patch == 16


def test_lr_schedule():
    assert lr_at(0, 1e-3, 10) == pytest.approx(1e-4)
    assert lr_at(9, 1e-3, 10) == pytest.approx(1e-3)
    assert lr_at(39, 1e-3, 10) == pytest.approx(1e-3 * math.sqrt(10 / 40))


def test_trains_checkpoints_resumes_and_evaluates(make_shards, tmp_path):
    ds = make_shards(shards=3, per_shard=16)
    out = tmp_path / "run"
    r = train(args_for(ds["paths"], out, "--steps", "40", "--checkpoint-every", "20"), log=lambda *a: None)
    assert r["steps"] == 40 and r["last_loss"] < r["first_loss"] * 0.7, r
    assert 0.0 <= r["data_wait_fraction"] < 1.0
    ev = r["eval"]
    assert ev["pairs"] == 16 and 0.0 <= ev["i2t_r1"] <= 1.0 and ev["i2t_r5"] >= ev["i2t_r1"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 40 and ckpt["data"]["version"] == 3
    # Resume: continues at step 40 with the saved weights and stream position.
    lines = []
    r2 = train(args_for(ds["paths"], out, "--steps", "50", "--resume"), log=lines.append)
    assert r2["steps"] == 50 and any("resumed from" in x and "step 40" in x for x in lines)
    history = json.loads((out / "history.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(41, 51))


def test_train_cli(make_shards, tmp_path):
    ds = make_shards(shards=2, per_shard=8)
    r = subprocess.run([sys.executable, "-m", "webli_io", "train", *ds["paths"], "--steps", "3", "--image-size", "32",
                        "--batch-size", "4", "--out", str(tmp_path / "o"), "--profile", "--no-eval"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "profile over 3 steps" in r.stderr and "data wait" in r.stderr
    assert json.loads(r.stdout)["steps"] == 3, "stdout holds the result only, human text is on stderr"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(args_for(ds["paths"], tmp_path / "empty", "--steps", "1", "--resume"), log=lambda *a: None)


def test_train_on_shards_smaller_than_a_batch_is_a_clear_error(make_shards, tmp_path):
    ds = make_shards(shards=1, per_shard=3)
    r = subprocess.run([sys.executable, "-m", "webli_io", "train", *ds["paths"], "--steps", "3", "--image-size", "32",
                        "--batch-size", "8", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "fewer usable samples than one batch" in r.stderr and "--batch-size" in r.stderr
    assert "Traceback" not in r.stderr


def test_resume_keeps_the_training_shards_whatever_is_held_out(make_shards, tmp_path):
    ds = make_shards(shards=3, per_shard=8)
    out = tmp_path / "run"
    train(args_for(ds["paths"], out, "--steps", "4", "--checkpoint-every", "2"), log=lambda *a: None)  # last shard held out
    assert torch.load(out / "checkpoint.pt", weights_only=True)["train_shards"] == ds["paths"][:2]
    lines = []
    r = train(args_for(ds["paths"], out, "--steps", "6", "--resume", "--no-eval"), log=lines.append)
    assert r["steps"] == 6 and "eval" not in r
    assert any("2 train shards" in x for x in lines), lines


def test_a_resume_refuses_new_shards_and_another_model_shape(make_shards, tmp_path):
    """Issue 28, item 11: neither is silently ignored nor a size-mismatch traceback."""
    ds = make_shards(shards=4, per_shard=8)
    out = tmp_path / "run"
    train(args_for(ds["paths"][:2], out, "--steps", "2", "--no-eval"), log=lambda *a: None)
    with pytest.raises(ValueError, match=r"adds 2 shard\(s\) the checkpoint did not train on"):
        train(args_for(ds["paths"], out, "--steps", "4", "--resume", "--no-eval"), log=lambda *a: None)
    with pytest.raises(ValueError, match=r"--image-size 64 \(the checkpoint's: 32\).*Resume with --image-size 32"):
        train(args_for(ds["paths"][:2], out, "--steps", "4", "--resume", "--no-eval", "--image-size", "64"), log=lambda *a: None)
    with pytest.raises(ValueError, match="--tokenizer"):
        train(args_for(ds["paths"][:2], out, "--steps", "4", "--resume", "--no-eval", "--tokenizer", "mt5"), log=lambda *a: None)
    r = train(args_for(ds["paths"][:2], out, "--steps", "4", "--resume", "--no-eval"), log=lambda *a: None)
    assert r["steps"] == 4


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(make_shards, tmp_path):
    """A write that fails part-way (here: a file-size limit, as a full disk fails a write) is a
    clear error; the previous checkpoint is whole and no temporary is left."""
    ds = make_shards(shards=2, per_shard=8)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "webli_io", "train", *ds["paths"], "--image-size", "32", "--batch-size", "4", "--no-eval",
           "--out", str(out)]
    assert subprocess.run([*cmd, "--steps", "2"], capture_output=True, text=True, timeout=300).returncode == 0
    before = (out / "checkpoint.pt").read_bytes()
    limit = len(before) // 2

    def small_disk():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([*cmd, "--steps", "4", "--resume"], capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "could not write the checkpoint" in r.stderr and "previous checkpoint, if any, is kept" in r.stderr
    assert "Traceback" not in r.stderr
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
