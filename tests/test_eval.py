"""`webli-io eval`: the metrics on constructed inputs with known answers, and the whole command on
a checkpoint trained here, on data in each benchmark's layout."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import torch

from webli_io.siglip.evalsuite import group_summary, topk_accuracy
from webli_io.siglip.evaluate import recall_at_k


def test_recall_counts_the_rank_of_the_match():
    # Query 0's match ranks 1st, query 1's 2nd, query 2's 3rd.
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.7, 0.6, 0.2]])
    assert recall_at_k(sim, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_identical_captions_are_one_answer():
    # Texts 0 and 1 are the same caption: image 1 retrieving text 0 is a hit.
    sim = torch.tensor([[0.9, 0.8, 0.0], [0.9, 0.1, 0.0], [0.0, 0.5, 0.6]])
    assert recall_at_k(sim, (1,))[1] == pytest.approx(2 / 3)
    assert recall_at_k(sim, (1,), same=["red sky", "red sky", "blue sky"])[1] == 1.0


def test_topk_accuracy_and_groups():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.4, 0.3], [0.2, 0.3, 0.5]])
    assert topk_accuracy(logits, torch.tensor([1, 1, 0]), (1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    s = group_summary({"africa": 0.4, "europe": 0.9, "asia": 0.7})
    assert s["worst_group"] == "africa" and s["spread"] == pytest.approx(0.5)


def _jpeg(color, size=(96, 72)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_eval_writes_the_four_parts(tmp_path):
    import webdataset as wds

    from webli_io.sample_data import write_sample_dataset

    shards = write_sample_dataset(str(tmp_path / "train"), num_shards=2, samples_per_shard=40, bad_samples=False)
    ckpt_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "webli_io", "train", *shards, "--steps", "4", "--image-size", "32", "--batch-size", "8",
                        "--no-eval", "--out", str(ckpt_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    folder = tmp_path / "imagenet"
    for name, rgb in colors.items():
        (folder / name).mkdir(parents=True)
        for i in range(3):
            (folder / name / f"{i}.jpg").write_bytes(_jpeg(tuple(max(0, c - 20 * i) for c in rgb)))
    (tmp_path / "names.txt").write_text("red\ta red square\ngreen\ta green square\nblue\ta blue square\n")
    xm = str(tmp_path / "xm.tar")
    with wds.TarWriter(xm) as w:
        for i, (name, rgb) in enumerate(colors.items()):
            w.write({"__key__": f"x{i}", "jpg": _jpeg(rgb), "txt": name,
                     "json": json.dumps({"captions": {"en": f"a {name} square", "sw": f"mraba {name}", "bn": f"বর্গ {name}"}}).encode()})
    groups = str(tmp_path / "groups.tar")
    with wds.TarWriter(groups) as w:
        for i in range(12):
            name = list(colors)[i % 3]
            w.write({"__key__": f"g{i}", "jpg": _jpeg(colors[name]), "txt": name,
                     "json": json.dumps({"label": name, "region": ["africa", "asia"][i % 2]}).encode()})
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "webli_io", "eval", str(ckpt_dir / "checkpoint.pt"), "-o", str(out), "--json",
                        "--classify", str(folder), "--classnames", str(tmp_path / "names.txt"), "--retrieval", *shards,
                        "--multilingual", xm, "--groups", groups], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report == json.loads((out / "report.json").read_text())
    c = report["classification"]
    assert c["images"] == 9 and c["classes"] == 3 and 0 <= c["top1"] <= c["top5"] == 1.0  # 3 classes: top-5 holds all
    rr = report["retrieval"]
    assert rr["pairs"] == 80 and 0 <= rr["i2t_r1"] <= rr["i2t_r5"] <= rr["i2t_r10"] <= 1
    m = report["multilingual"]
    assert set(m["recall_at_1"]) == {"en", "sw", "bn"} and m["worst"] == min(m["recall_at_1"].values())
    g = report["subgroups"]
    assert set(g["per_group"]) == {"africa", "asia"} and g["spread"] == pytest.approx(max(g["per_group"].values()) - g["worst"])
    for png in ("languages.png", "groups.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "Zero-shot classification" in md and "worst (" in md
    r = subprocess.run([sys.executable, "-m", "webli_io", "eval", str(ckpt_dir / "checkpoint.pt"), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nothing to evaluate" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from webli_io.sample_data import write_sample_dataset

    d = tmp_path_factory.mktemp("trained")
    shards = write_sample_dataset(str(d / "data"), num_shards=2, samples_per_shard=40)
    r = subprocess.run([sys.executable, "-m", "webli_io", "train", *shards, "--steps", "3", "--image-size", "32", "--batch-size", "8",
                        "--no-eval", "--out", str(d / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {"shards": shards, "ckpt": str(d / "run" / "checkpoint.pt"), "dir": d}


def test_score_writes_a_filterable_field_and_reports_what_a_threshold_keeps(trained, tmp_path):
    from webli_io import WebLIStream

    out = tmp_path / "scored"
    r = subprocess.run([sys.executable, "-m", "webli_io", "score", *trained["shards"], "--checkpoint", trained["ckpt"], "-o", str(out),
                        "--report", "0.0", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["samples"] == 82 and res["unscored"] == 2  # the demo's corrupt image and caption-less pair
    shares = res["report"]["kept_share"]["language"]
    assert len(shares) > 5 and all(0 <= v <= 1 for v in shares.values())
    scored = [s for b in WebLIStream(str(out / "*.tar"), batch_size=100, image_size=16) for s in b["meta"]]
    values = sorted(m["alignment_score"] for m in scored)
    assert len(values) == 80 and all(-1.0 <= v <= 1.0 for v in values)
    median = values[len(values) // 2]
    kept = WebLIStream(str(out / "*.tar"), batch_size=100, image_size=16, min_score={"alignment_score": median})
    assert sum(len(b["keys"]) for b in kept) == sum(v >= median for v in values)


def test_score_does_not_hide_damage_merge_names_or_write_over_its_input(trained, tmp_path):
    """Issue 28, item 7: a truncated source is not copied as if whole, two sources of one file
    name are refused, and so is an output folder that holds the input."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    whole = open(trained["shards"][0], "rb").read()
    (src / "cut.tar").write_bytes(whole[: len(whole) // 2])
    shutil.copy(trained["shards"][1], src / "good.tar")
    run = lambda *a: subprocess.run([sys.executable, "-m", "webli_io", "score", *a, "--checkpoint", trained["ckpt"], "--json"],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run(str(src / "cut.tar"), str(src / "good.tar"), "-o", str(tmp_path / "out"))
    assert r.returncode == 1 and "cut.tar could not be read whole" in r.stderr, r.stderr
    assert json.loads(r.stdout)["damaged"][0]["source"].endswith("cut.tar")
    assert sorted(os.listdir(tmp_path / "out")) == [".webli-io.lock", "good.tar"], "no whole-looking copy of the cut shard"
    (tmp_path / "other").mkdir()
    shutil.copy(trained["shards"][1], tmp_path / "other" / "good.tar")
    r = run(str(src / "good.tar"), str(tmp_path / "other" / "good.tar"), "-o", str(tmp_path / "out2"))
    assert r.returncode != 0 and "two input shards have the file name 'good.tar'" in r.stderr, r.stderr
    before = (src / "good.tar").read_bytes()
    r = run(str(src / "good.tar"), "-o", str(src))
    assert r.returncode != 0 and "holds the input" in r.stderr, r.stderr
    assert (src / "good.tar").read_bytes() == before


def test_attention_shows_the_map_heads_weights(trained, tmp_path):
    from PIL import Image

    from webli_io.siglip import attention as at
    from webli_io.siglip import evalsuite as ev

    img = tmp_path / "red.jpg"
    im = Image.new("RGB", (128, 96), (240, 240, 240))
    im.paste((220, 20, 20), (0, 0, 64, 48))
    im.save(img, quality=92)
    r = subprocess.run([sys.executable, "-m", "webli_io", "attention", trained["ckpt"], str(img), "-o", str(tmp_path / "maps"), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    (out,) = report["written"]
    assert report["kind"] == "attention" and out.endswith(".attention.png")
    with Image.open(out) as o:
        assert o.size == (128, 96) and o.format == "PNG"
    model, tok, size = ev.load_checkpoint(trained["ckpt"], torch.device("cpu"))
    w = at.attention_map(model, size, img.read_bytes(), torch.device("cpu"))
    # The weights themselves: a distribution over the patches, not rescaled per image.
    assert w.shape == (size // 8, size // 8) and abs(float(w.sum()) - 1) < 1e-5 and (w >= 0).all()
    assert report["maps"][0]["max_weight"] == pytest.approx(float(w.max()), abs=1e-6)
    # A caption does not steer a MAP head: refused with the fix.
    r = subprocess.run([sys.executable, "-m", "webli_io", "attention", trained["ckpt"], str(img), "--text", "a red square",
                        "-o", str(tmp_path / "maps")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "drop --text" in r.stderr


def test_the_mean_pooled_variant_trains_and_gets_relevance_maps(tmp_path):
    from PIL import Image

    from webli_io.sample_data import write_sample_dataset
    from webli_io.siglip import attention as at
    from webli_io.siglip import evalsuite as ev

    shards = write_sample_dataset(str(tmp_path / "data"), num_shards=1, samples_per_shard=24)
    r = subprocess.run([sys.executable, "-m", "webli_io", "train", *shards, "--steps", "2", "--image-size", "32", "--batch-size", "8",
                        "--no-eval", "--pooling", "mean", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    model, tok, size = ev.load_checkpoint(ckpt, torch.device("cpu"))
    assert model.image.head is None and model.cfg.pool == "mean" and model.cfg.ln_eps == 1e-5
    img = tmp_path / "x.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(img)
    r = subprocess.run([sys.executable, "-m", "webli_io", "attention", ckpt, str(img), "--text", "a red square", "-o",
                        str(tmp_path / "maps"), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "relevance"
    rel = at.relevance_map(model, tok, size, img.read_bytes(), None, torch.device("cpu"))
    assert rel.shape == (size // 8, size // 8)


def test_study_runs_the_grid_with_one_budget(trained, tmp_path):
    import webdataset as wds

    xm = str(tmp_path / "xm.tar")
    with wds.TarWriter(xm) as w:
        for i, (name, rgb) in enumerate({"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items()):
            w.write({"__key__": f"x{i}", "jpg": _jpeg(rgb), "txt": name,
                     "json": json.dumps({"captions": {"en": f"a {name} square", "te": f"చతురస్రం {name}"}}).encode()})
    groups_shard = str(tmp_path / "groups.tar")
    with wds.TarWriter(groups_shard) as w:
        for i, name in enumerate(["red", "green", "blue"] * 2):
            w.write({"__key__": f"g{i}", "jpg": _jpeg((200, 30, 30)), "txt": name,
                     "json": json.dumps({"label": name, "region": ["north", "south"][i % 2]}).encode()})
    train_shard, held_out = trained["shards"][0], trained["shards"][1]
    out = tmp_path / "study"
    r = subprocess.run([sys.executable, "-m", "webli_io", "study", train_shard, "-o", str(out), "--subsets", "0.5", "1.0",
                        "--filter-field", "width", "--filter-min", "500", "--mixture", "webli-100b", "--steps", "2",
                        "--batch-size", "4", "--eval-retrieval", held_out, "--eval-multilingual", xm, "--eval-groups", groups_shard,
                        "--seeds", "0", "1", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    study = json.loads(r.stdout)
    rows = study["rows"]
    assert len(rows) == 16 and len(study["cells"]) == 8 and {(x["subset"], x["filter"], x["mixture"]) for x in rows} == {
        (s, f, m) for s in (0.5, 1.0) for f in (False, True) for m in (False, True)}
    assert all(x["steps"] == 2 for x in rows), "the same budget in every cell"
    assert all(0 <= x["multilingual_worst_r1"] <= x["multilingual_mean_r1"] <= 1 for x in rows)
    assert all(0 <= x["groups_worst"] <= 1 and 0 <= x["groups_spread"] <= 1 for x in rows)
    md = (out / "study.md").read_text()
    assert sum(line.startswith("| subset ") for line in md.splitlines()) == 8 * 3 and (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert "Recall@1 per language" in md and "Accuracy per group" in md and set(study["cells"][0]["per_language"]) == {"en", "te"}


def test_study_under_torchrun_with_seeds_and_intervals(tmp_path, photos):
    """Every rank runs the command: the cells train across both ranks, rank 0 evaluates the whole
    held-out data once (a benchmark as shipped too) and writes the study; several seeds give an
    interval."""
    from tests._helpers import free_port
    from tests.test_benchmarks import real
    from webli_io.sample_data import write_sample_dataset
    from webli_io.siglip import replicas as R

    *train_shards, held_out = write_sample_dataset(str(tmp_path / "data"), num_shards=3, samples_per_shard=24, bad_samples=False)
    coco = R.coco(str(tmp_path / "coco"), real(photos))
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "webli_io",
           "study", *train_shards, "-o", str(out), "--subsets", "1.0", "--steps", "2", "--batch-size", "4", "--seeds", "0", "1", "2",
           "--lr", "5e-4", "--warmup", "1", "--eval-retrieval", held_out, "--benchmark", f"coco={coco}", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    study = json.loads((out / "study.json").read_text())
    (cell,) = study["cells"]
    assert cell["seeds"] == [0, 1, 2] and len(study["rows"]) == 3
    m = cell["metrics"]["retrieval_i2t_r1"]
    assert m["n"] == 3 and m["ci95"] is not None and "coco_i2t_r1" in cell["metrics"]
    ckpt = torch.load(out / "s1-f0-m0-seed0" / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["args"]["lr"] == 5e-4 and ckpt["args"]["warmup"] == 1
    assert "±" in (out / "study.md").read_text()


def test_score_reads_and_writes_img2dataset_parquet(trained, img2dataset_out, tmp_path):
    """Issue 24, item 6: `webli-io score` on Parquet shards as img2dataset writes them (before:
    refused): a copy of each with the score column, which the stream's filter reads."""
    from webli_io import WebLIStream

    out = tmp_path / "scored"
    src = img2dataset_out["parquet"]
    r = subprocess.run([sys.executable, "-m", "webli_io", "score", str(src), "--checkpoint", trained["ckpt"], "-o", str(out),
                        "--report", "0.0", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    rows = img2dataset_out["rows"]
    assert res["samples"] == len(rows) and res["unscored"] == 1, res  # the failed download has no image
    assert sorted(n for n in os.listdir(out) if not n.startswith(".")) == sorted(n for n in os.listdir(src) if n.endswith(".parquet"))
    values = sorted(m["alignment_score"] for b in WebLIStream(str(out), batch_size=100, image_size=16) for m in b["meta"])
    assert len(values) == len(rows) - 1 and all(-1.0 <= v <= 1.0 for v in values)
    median = values[len(values) // 2]
    kept = WebLIStream(str(out), batch_size=100, image_size=16, min_score={"alignment_score": median})
    assert sum(len(b["keys"]) for b in kept) == sum(v >= median for v in values)
