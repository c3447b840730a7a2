"""The evaluation as the paper measures it: each metric against a value computed by hand on
constructed embeddings, each benchmark's reader on a tiny replica of its files as they ship
(columns and nesting as the datasets document them), and `webli-io eval --benchmark` end to end
on a checkpoint trained here, including under a launcher's RANK."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import web_like
from webli_io.siglip import metrics as M
from webli_io.siglip import replicas as R
from webli_io.siglip.benchmarks import BenchmarkError, read

# -- metrics on constructed inputs ---------------------------------------------------------------


def test_retrieval_counts_any_of_an_images_captions():
    # 2 images x 2 captions each (texts 0,1 -> image 0; 2,3 -> image 1).
    sim = np.array([[0.1, 0.9, 0.8, 0.2],   # image 0: best text 1 (its own) -> i2t hit
                    [0.7, 0.3, 0.2, 0.6]])  # image 1: best text 0 (image 0's), its own text 3 is 2nd
    r = M.retrieval_recall(sim, [0, 0, 1, 1], ks=(1, 2))
    assert r["i2t"] == {1: 0.5, 2: 1.0}
    # Per text, the best image: t0 -> img 1 (miss), t1 -> img 0 (hit), t2 -> img 0 (miss), t3 -> img 1 (hit).
    assert r["t2i"] == {1: 0.5, 2: 1.0}
    # With the first caption only (what one caption per sample measured), image 0 would miss.
    first = M.retrieval_recall(sim[:, [0, 2]], [0, 1], ks=(1,))
    assert first["i2t"][1] == 0.0


def test_retrieval_refuses_a_correspondence_of_the_wrong_length():
    with pytest.raises(ValueError, match="names 3 texts"):
        M.retrieval_recall(np.zeros((2, 4)), [0, 0, 1])


def test_zero_shot_is_right_when_the_top_class_is_any_label():
    logits = np.array([[0.1, 0.8, 0.3], [0.9, 0.2, 0.1], [0.2, 0.3, 0.4]])
    labels = [frozenset({1}), frozenset({2, 1}), frozenset({0, 2})]
    acc = M.zero_shot_accuracy(logits, labels, (1, 2))
    assert acc[1] == pytest.approx(2 / 3)  # sample 1's top is 0, none of {1, 2}; samples 0 and 2 hit
    assert acc[2] == 1.0  # sample 1's top-2 is {0, 1}, which holds its label 1


def test_income_quartiles_and_the_signed_disparity():
    q = M.income_quartiles([10, 20, 30, 40, 50, 60, 70, 80])
    assert q.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    correct = [1, 1, 1, 0, 0, 1, 0, 0]
    rows = M.per_group(correct, [f"Q{x + 1}" for x in q])
    assert {k: v["accuracy"] for k, v in rows.items()} == {"Q1": 1.0, "Q2": 0.5, "Q3": 0.5, "Q4": 0.0}
    assert M.disparity({1: 1.0, 2: 0.5, 3: 0.5, 4: 0.0}) == -1.0  # the poorest served better: negative
    assert M.worst_and_spread({"a": 0.2, "b": 0.9})["spread"] == pytest.approx(0.7)


def test_fewshot_draw_is_big_visions():
    y = np.array([0, 1, 0, 1, 0, 1, 2, 2, 2, 0])
    idx = M.fewshot_indices(y, 2, seed=0, num_classes=3)
    rng = np.random.default_rng(0)  # one generator, drawn class after class
    expect = np.concatenate([rng.permutation(np.where(y == c)[0])[:2] for c in range(3)])
    assert idx.tolist() == expect.tolist() and [int(y[i]) for i in idx] == [0, 0, 1, 1, 2, 2]
    again = M.fewshot_indices(y, 2, seed=0, num_classes=3)
    assert again.tolist() == idx.tolist()  # deterministic per seed


@pytest.mark.parametrize("n,d", [(12, 3), (4, 9)])  # both branches: n >= d+1 and n < d+1
def test_lsr_is_the_ridge_solution(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d))
    y = np.arange(n) % 2
    xt = rng.normal(size=(7, d))
    # The ridge solution written directly: standardise, bias column 100, (X'X + l I)^-1 X'Y.
    mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
    xs = np.hstack([(x - mean) / std, np.full((n, 1), 100.0)])
    target = 2 * np.eye(2)[y] - 1
    w = np.linalg.solve(xs.T @ xs + 8.0 * np.eye(d + 1), xs.T @ target)
    pred = np.argmax(np.hstack([(xt - mean) / std, np.full((7, 1), 100.0)]) @ w, axis=1)
    yt = pred.copy()
    yt[:3] = 1 - yt[:3]  # 4 of 7 agree
    assert M.lsr_accuracy(x, y, xt, yt, 2, l2_reg=8.0) == pytest.approx(4 / 7)


def test_fewshot_geolocalisation_holds_out_all_but_the_shots():
    rng = np.random.default_rng(0)
    centres = {"NG": [5, 0, 0], "IN": [0, 5, 0], "BR": [0, 0, 5], "FJ": [5, 5, 5]}
    labels = [c for c in ("NG", "IN", "BR") for _ in range(14)] + ["FJ"] * 3  # FJ: too few to test
    x = np.array([np.array(centres[c]) + rng.normal(scale=0.3, size=3) for c in labels])
    r = M.fewshot_holdout(x, labels, shots=10, seeds=(0, 1, 2))
    assert r["classes"] == 3 and r["left_out"] == ["FJ"] and r["per_seed"] == [1.0, 1.0, 1.0]
    assert r["mean"] == 1.0 and r["ci95"] == 0.0


def test_representation_bias_share_and_sign():
    img = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    r = M.representation_bias(img, np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert r == {"images": 4, "male_share": 0.75, "bias": 0.25}


def test_language_means_split_the_papers_low_resource_languages():
    r = M.language_means({"en": 0.8, "fr": 0.6, "sw": 0.2, "te": 0.4})
    assert r["mean"] == pytest.approx(0.5) and r["low_resource_mean"] == pytest.approx(0.3)
    assert r["high_resource_mean"] == pytest.approx(0.7) and r["low_resource_languages"] == ["sw", "te"]


def test_mean_interval_is_students_t():
    r = M.mean_interval([0.5, 0.7, 0.6])
    assert r["mean"] == pytest.approx(0.6) and r["ci95"] == pytest.approx(4.303 * 0.1 / 3**0.5)
    assert M.mean_interval([0.4])["ci95"] is None


# -- tiny replicas of each benchmark's files -----------------------------------------------------


def _img(photos, i: int) -> bytes:
    return web_like(photos[i % len(photos)], 96 + 8 * (i % 5))


def real(photos):
    """The replicas' images: real photographs, 96-128 px."""
    return lambda i: _img(photos, i)


def _write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)






def test_imagenet_folder_with_the_synset_mapping_has_the_whole_vocabulary(tmp_path, photos):
    val = R.imagenet_folders(str(tmp_path), real(photos))
    with open(tmp_path / "LOC_synset_mapping.txt", "w") as f:  # beside val/, as Kaggle ships it
        f.writelines(f"{s} {n}\n" for s, n in R.SYNSETS)
    b = read("imagenet", val)
    assert b.classnames == ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]  # all 5, not the 3 present
    assert len(b.items) == 6 and sorted({min(it.labels) for it in b.items}) == [0, 1, 2]


def test_imagenet_name_lists_in_synset_order_and_unmatched_files(tmp_path, photos):
    val = R.imagenet_folders(str(tmp_path), real(photos))
    names = tmp_path / "openclip_classnames.txt"
    names.write_text("tench\ngoldfish\ngreat white shark\n")  # OpenCLIP-style: names in class order
    b = read("imagenet", val, classnames=str(names))
    assert b.classnames == ["tench", "goldfish", "great white shark"]
    names.write_text("tench\ngoldfish\ngreat white shark\ntiger shark\nhammerhead\n")  # 5 names, 3 folders, no synset file
    with pytest.raises(BenchmarkError, match="LOC_synset_mapping.txt"):
        read("imagenet", val, classnames=str(names))
    (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"{s} {n}\n" for s, n in R.SYNSETS))
    assert read("imagenet", val, classnames=str(names)).classnames[3] == "tiger shark"
    js = tmp_path / "en_classnames.json"  # CLIP_benchmark's file: {dataset: [names]}
    js.write_text(json.dumps({"imagenet1k": ["tench", "goldfish", "white shark", "tiger shark", "hammerhead"], "cars": ["a"]}))
    assert read("imagenet", val, classnames=str(js)).classnames[2] == "white shark"
    tsv = tmp_path / "names.tsv"
    tsv.write_text("tench\ta tench\ngoldfish\ta goldfish\n")  # keyed by names, not by these synset folders
    with pytest.raises(BenchmarkError, match="match none"):
        read("imagenet", val, classnames=str(tsv))


def test_imagenet_flat_validation_folder_with_kaggle_or_caffe_ground_truth(tmp_path, photos):
    root = R.imagenet_kaggle(str(tmp_path), real(photos))
    b = read("imagenet", root)
    assert len(b.items) == 6 and len(b.classnames) == 5
    assert [min(it.labels) for it in b.items] == [0, 1, 2, 0, 1, 2]
    val = os.path.join(root, "ILSVRC", "Data", "CLS-LOC", "val")
    caffe = tmp_path / "val.txt"
    caffe.write_text("".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG {4 - i % 2}\n" for i in range(6)))
    b = read("imagenet", val, labels=str(caffe))
    assert [min(it.labels) for it in b.items] == [4, 3, 4, 3, 4, 3]
    with pytest.raises(BenchmarkError, match="ground truth"):
        os.remove(os.path.join(root, "LOC_val_solution.csv"))
        read("imagenet", val)



def test_coco_captions_json_gives_five_captions_per_image(tmp_path, photos):
    b = read("coco", R.coco(str(tmp_path), real(photos)))
    assert b.task == "retrieval" and len(b.items) == 4 and all(len(it.captions) == 5 for it in b.items)
    b2 = read("coco", str(tmp_path / "annotations" / "captions_val2017.json"))  # the file itself
    assert [it.image for it in b2.items] == [it.image for it in b.items]



def test_flickr30k_karpathy_split(tmp_path, photos):
    b = read("karpathy", R.flickr30k(str(tmp_path), real(photos)))
    assert b.name == "flickr30k" and len(b.items) == 4 and b.items[0].captions[0] == "Picture 1, sentence 0."
    assert len(read("karpathy", str(tmp_path), split="val").items) == 1



def test_xm3600_jsonl_all_captions_per_language(tmp_path, photos):
    b = read("xm3600", R.xm3600(str(tmp_path), real(photos)))
    assert b.task == "multilingual" and len(b.items) == 4
    assert set(b.items[0].by_language) == {"en", "sw", "bn", "de"} and len(b.items[1].by_language["en"]) == 2





def test_dollar_street_topics_income_and_regions(tmp_path, photos):
    b = read("dollar_street", R.dollar_street(str(tmp_path), real(photos)))
    assert b.classnames == ["bed", "kids bed", "stove", "toilet", "toilet paper", "toothbrush"]
    first = b.items[0]
    assert {b.classnames[i] for i in first.labels} == {"toilet", "toilet paper"}
    assert first.fields == {"income": 30.0, "region": "af", "country": "Nigeria"}



def test_geode_index_csv(tmp_path, photos):
    b = read("geode", R.geode(str(tmp_path), real(photos)))
    assert b.classnames == ["bag", "cleaning equipment", "house"] and len(b.items) == 24
    assert b.items[1].fields == {"region": "EastAsia", "country": "Japan"}



def test_gldv2_integer_landmark_ids_get_their_category_names(tmp_path, photos):
    b = read("gldv2", R.gldv2(str(tmp_path), real(photos)))
    assert b.classnames == ["Elmore Mountain", "Saint Peter's Basilica"] and len(b.items) == 6
    assert [min(it.labels) for it in b.items[:2]] == [1, 0]


def test_every_replica_reads_back(tmp_path):
    paths = R.write_replicas(str(tmp_path))
    tasks = {kind: read(kind, path).task for kind, path in paths.items()}
    assert tasks == {"imagenet": "classification", "coco": "retrieval", "karpathy": "retrieval", "xm3600": "multilingual",
                     "dollar_street": "classification", "geode": "classification", "gldv2": "classification"}


def test_missing_images_are_counted_and_a_wrong_file_is_an_error(tmp_path, photos):
    root = R.coco(str(tmp_path), real(photos))
    os.remove(os.path.join(root, "val2017", f"{397133:012d}.jpg"))
    b = read("coco", root)
    assert len(b.items) == 3 and b.skipped == {"image file missing": 1}
    with pytest.raises(BenchmarkError, match="no column"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "index.csv").write_text("path,label\nx.jpg,bag\n")
        read("geode", str(tmp_path / "bad"))
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        read("imagenet21k", root)


# -- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from webli_io.sample_data import write_sample_dataset

    d = tmp_path_factory.mktemp("bench_ckpt")
    shards = write_sample_dataset(str(d / "data"), num_shards=2, samples_per_shard=40)
    r = subprocess.run([sys.executable, "-m", "webli_io", "train", *shards, "--steps", "3", "--image-size", "32", "--batch-size", "8",
                        "--no-eval", "--out", str(d / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {"ckpt": str(d / "run" / "checkpoint.pt"), "shards": shards}


def _eval(ckpt_path, out, *args, env=None):
    return subprocess.run([sys.executable, "-m", "webli_io", "eval", ckpt_path, "-o", str(out), "--json", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def test_eval_measures_each_benchmark_as_shipped(ckpt, tmp_path, photos):
    from webli_io.siglip.evalbench import Towers, retrieval
    from webli_io.siglip.evalsuite import load_checkpoint

    roots = {k: tmp_path / k for k in ("coco", "xm", "ds", "geode", "inet", "bias")}
    for p in roots.values():
        p.mkdir()
    R.coco(str(roots["coco"]), real(photos))
    R.xm3600(str(roots["xm"]), real(photos))
    R.dollar_street(str(roots["ds"]), real(photos))
    R.geode(str(roots["geode"]), real(photos))
    R.imagenet_kaggle(str(roots["inet"]), real(photos))
    for i in range(5):
        _write(str(roots["bias"] / f"{i}.jpg"), _img(photos, i + 3))
    r = _eval(ckpt["ckpt"], tmp_path / "report", "--benchmark", f"coco={roots['coco']}", "--benchmark", f"xm3600={roots['xm']}",
              "--benchmark", f"dollar_street={roots['ds']}", "--benchmark", f"geode={roots['geode']}",
              "--benchmark", f"imagenet={roots['inet']}", "--bias-images", str(roots["bias"]), "--shots", "2")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    b = rep["benchmarks"]
    assert b["coco"]["images"] == 4 and b["coco"]["texts"] == 20
    # The same numbers from the library, in process.
    model, tok, size = load_checkpoint(ckpt["ckpt"], __import__("torch").device("cpu"))
    again = retrieval(Towers(model, tok, size, __import__("torch").device("cpu")), read("coco", str(roots["coco"])))
    assert {k: again[k] for k in ("i2t_r1", "t2i_r5")} == {k: b["coco"][k] for k in ("i2t_r1", "t2i_r5")}
    xm = b["xm3600"]
    assert set(xm["per_language"]) == {"en", "sw", "bn", "de"} and xm["low_resource_languages"] == ["bn", "sw"]
    assert xm["i2t_r1"]["low_resource_mean"] == pytest.approx(np.mean([xm["per_language"][k]["i2t_r1"] for k in ("bn", "sw")]))
    ds = b["dollar_street"]
    assert ds["classes"] == 6 and ds["templates"] == 80 and set(ds["income"]["per_quartile"]) == {"Q1", "Q2", "Q3", "Q4"}
    q = ds["income"]["per_quartile"]
    assert ds["income"]["disparity"] == pytest.approx(q["Q4"]["accuracy"] - q["Q1"]["accuracy"])
    assert set(ds["geolocalisation"]) == {"country", "region"} and ds["geolocalisation"]["country"]["classes"] == 3
    assert len(ds["geolocalisation"]["region"]["per_seed"]) == 3
    assert set(b["geode"]["region"]["per_group"]) == {"Africa", "EastAsia", "Europe"}
    assert b["imagenet"]["classes"] == 5 and b["imagenet"]["images"] == 6
    rb = rep["representation_bias"]
    assert rb["images"] == 5 and rb["bias"] == pytest.approx(rb["male_share"] - 0.5)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "disparity (Q4 - Q1)" in md and "low-resource mean" in md and "Representation bias" in md


def test_eval_errors_name_the_fix(ckpt, tmp_path, photos):
    (tmp_path / "c").mkdir()
    root = R.coco(str(tmp_path / "c"), real(photos))
    r = _eval(ckpt["ckpt"], tmp_path / "r", "--retrieval", os.path.join(root, "annotations", "captions_val2017.json"))
    assert r.returncode == 2 and "--benchmark" in r.stderr and "Traceback" not in r.stderr
    r = _eval(ckpt["ckpt"], tmp_path / "r", "--benchmark", f"xm3600={root}")
    assert r.returncode == 2 and "captions.jsonl" in r.stderr and "Traceback" not in r.stderr


def test_eval_under_a_launcher_measures_the_whole_set_once(ckpt, tmp_path):
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    r = _eval(ckpt["ckpt"], tmp_path / "r1", "--retrieval", *ckpt["shards"], env=env)
    assert r.returncode == 0 and "rank 0" in r.stderr and not (tmp_path / "r1").exists()
    env = {**env, "RANK": "0", "LOCAL_RANK": "0"}
    r = _eval(ckpt["ckpt"], tmp_path / "r0", "--retrieval", *ckpt["shards"], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["retrieval"]["pairs"] == 80  # both shards, not rank 0's half


def test_identical_captions_can_be_one_answer():
    # Images 0 and 1 share the caption "red sky"; image 1's best text is image 0's copy of it.
    sim = np.array([[0.9, 0.8, 0.1], [0.9, 0.2, 0.1], [0.1, 0.2, 0.9]])
    texts = ["red sky", "red sky", "blue sky"]
    assert M.retrieval_recall(sim, [0, 1, 2], ks=(1,))["i2t"][1] == pytest.approx(2 / 3)
    r = M.retrieval_recall(sim, [0, 1, 2], ks=(1,), texts=texts)
    assert r["i2t"][1] == 1.0 and r["t2i"][1] == 1.0  # text 1's best image is 0, which has "red sky" too


def test_class_embeddings_are_the_normalised_mean_of_normalised_templates():
    from webli_io.siglip.evalbench import Towers

    vectors = {"a photo of a cat.": [1.0, 0.0], "cat": [0.0, 1.0], "a photo of a dog.": [0.6, 0.8], "dog": [0.6, 0.8]}

    class Constructed(Towers):  # texts -> the constructed (already unit) embeddings above
        def __init__(self):
            pass

        def texts(self, texts):
            return np.array([vectors[t] for t in texts])

    c = Constructed().classes(["cat", "dog"], ["a photo of a {}.", "{}"])
    assert np.allclose(c[0], [2**-0.5, 2**-0.5]) and np.allclose(c[1], [0.6, 0.8])
    from webli_io.siglip.prompts import IMAGENET_TEMPLATES

    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80 and all("{}" in t for t in IMAGENET_TEMPLATES)


def test_a_hostile_annotation_file_cannot_point_outside_the_benchmark(tmp_path, photos):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_img(photos, 0))  # an image outside the benchmark's folder
    root = tmp_path / "ds"
    R.dollar_street(str(root), real(photos), n=4)
    rows = (root / "images_v2.csv").read_text().splitlines()
    rows[1] = rows[1].replace(rows[1].split(",")[-2], "../secret.jpg")
    rows[2] = rows[2].replace(rows[2].split(",")[-2], str(secret))
    (root / "images_v2.csv").write_text("\n".join(rows) + "\n")
    b = read("dollar_street", str(root))
    assert len(b.items) == 2 and b.skipped == {"image path outside the benchmark": 2}
    assert all(str(secret) != it.image and ".." not in it.image for it in b.items)
