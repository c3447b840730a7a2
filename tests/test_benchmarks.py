"""The evaluation as the paper measures it: each metric against a value computed by hand on
constructed embeddings, each benchmark's reader on a tiny replica of its files as they ship
(columns and nesting as the datasets document them), and `webli-io eval --benchmark` end to end
on a checkpoint trained here, including under a launcher's RANK."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import web_like
from webli_io.siglip import metrics as M
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


def _write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


SYNSETS = [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
           ("n01484850", "great white shark, white shark"), ("n01491361", "tiger shark, Galeocerdo cuvieri"),
           ("n01494475", "hammerhead, hammerhead shark")]


def imagenet_kaggle(root, photos) -> str:
    """Kaggle's ImageNet: LOC_synset_mapping.txt, LOC_val_solution.csv, ILSVRC/Data/CLS-LOC/val/*.JPEG."""
    with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as f:
        f.writelines(f"{s} {n}\n" for s, n in SYNSETS)
    val = os.path.join(root, "ILSVRC", "Data", "CLS-LOC", "val")
    with open(os.path.join(root, "LOC_val_solution.csv"), "w") as f:
        f.write("ImageId,PredictionString\n")
        for i in range(6):
            s = SYNSETS[i % 3][0]
            f.write(f"ILSVRC2012_val_{i + 1:08d},{s} 10 20 110 120 {s} 5 5 50 50\n")
            _write(os.path.join(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG"), _img(photos, i))
    return str(root)


def imagenet_folders(root, photos, synsets=SYNSETS[:3]) -> str:
    for j, (s, _) in enumerate(synsets):
        for i in range(2):
            _write(os.path.join(root, "val", s, f"ILSVRC2012_val_{j * 2 + i + 1:08d}.JPEG"), _img(photos, j * 2 + i))
    return os.path.join(root, "val")


def test_imagenet_folder_with_the_synset_mapping_has_the_whole_vocabulary(tmp_path, photos):
    val = imagenet_folders(tmp_path, photos)
    with open(tmp_path / "LOC_synset_mapping.txt", "w") as f:  # beside val/, as Kaggle ships it
        f.writelines(f"{s} {n}\n" for s, n in SYNSETS)
    b = read("imagenet", val)
    assert b.classnames == ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]  # all 5, not the 3 present
    assert len(b.items) == 6 and sorted({min(it.labels) for it in b.items}) == [0, 1, 2]


def test_imagenet_name_lists_in_synset_order_and_unmatched_files(tmp_path, photos):
    val = imagenet_folders(tmp_path, photos)
    names = tmp_path / "openclip_classnames.txt"
    names.write_text("tench\ngoldfish\ngreat white shark\n")  # OpenCLIP-style: names in class order
    b = read("imagenet", val, classnames=str(names))
    assert b.classnames == ["tench", "goldfish", "great white shark"]
    names.write_text("tench\ngoldfish\ngreat white shark\ntiger shark\nhammerhead\n")  # 5 names, 3 folders, no synset file
    with pytest.raises(BenchmarkError, match="LOC_synset_mapping.txt"):
        read("imagenet", val, classnames=str(names))
    (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"{s} {n}\n" for s, n in SYNSETS))
    assert read("imagenet", val, classnames=str(names)).classnames[3] == "tiger shark"
    js = tmp_path / "en_classnames.json"  # CLIP_benchmark's file: {dataset: [names]}
    js.write_text(json.dumps({"imagenet1k": ["tench", "goldfish", "white shark", "tiger shark", "hammerhead"], "cars": ["a"]}))
    assert read("imagenet", val, classnames=str(js)).classnames[2] == "white shark"
    tsv = tmp_path / "names.tsv"
    tsv.write_text("tench\ta tench\ngoldfish\ta goldfish\n")  # keyed by names, not by these synset folders
    with pytest.raises(BenchmarkError, match="match none"):
        read("imagenet", val, classnames=str(tsv))


def test_imagenet_flat_validation_folder_with_kaggle_or_caffe_ground_truth(tmp_path, photos):
    root = imagenet_kaggle(tmp_path, photos)
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


def coco_replica(root, photos, n=4) -> str:
    images = [{"license": 1, "file_name": f"{397133 + i:012d}.jpg", "coco_url": "http://images.cocodataset.org/val2017/x.jpg",
               "height": 96, "width": 96, "date_captured": "2013-11-14 17:02:52", "flickr_url": "http://farm7.staticflickr.com/x.jpg",
               "id": 397133 + i} for i in range(n)]
    anns = [{"image_id": 397133 + i, "id": 1000 + 5 * i + k, "caption": f"photo {i}, caption {k}."} for i in range(n) for k in range(5)]
    os.makedirs(os.path.join(root, "annotations"))
    with open(os.path.join(root, "annotations", "captions_val2017.json"), "w") as f:
        json.dump({"info": {"year": 2017}, "licenses": [], "images": images, "annotations": anns}, f)
    for i, im in enumerate(images):
        _write(os.path.join(root, "val2017", im["file_name"]), _img(photos, i))
    return str(root)


def test_coco_captions_json_gives_five_captions_per_image(tmp_path, photos):
    b = read("coco", coco_replica(tmp_path, photos))
    assert b.task == "retrieval" and len(b.items) == 4 and all(len(it.captions) == 5 for it in b.items)
    b2 = read("coco", str(tmp_path / "annotations" / "captions_val2017.json"))  # the file itself
    assert [it.image for it in b2.items] == [it.image for it in b.items]


def karpathy_replica(root, photos) -> str:
    imgs = []
    for i, split in enumerate(["train", "test", "test", "val", "test"]):
        fn = f"{1000092795 + i}.jpg"
        sents = [{"tokens": ["a", "dog"], "raw": f"Image {i} sentence {k}.", "imgid": i, "sentid": 5 * i + k} for k in range(5)]
        imgs.append({"sentids": list(range(5 * i, 5 * i + 5)), "imgid": i, "sentences": sents, "split": split, "filename": fn})
        _write(os.path.join(root, "flickr30k-images", fn), _img(photos, i))
    with open(os.path.join(root, "dataset_flickr30k.json"), "w") as f:
        json.dump({"images": imgs, "dataset": "flickr30k"}, f)
    return os.path.join(root, "dataset_flickr30k.json")


def test_flickr30k_karpathy_split(tmp_path, photos):
    b = read("karpathy", karpathy_replica(tmp_path, photos))
    assert b.name == "flickr30k" and len(b.items) == 3 and b.items[0].captions[0] == "Image 1 sentence 0."


def xm3600_replica(root, photos, langs=("en", "sw", "bn", "de")) -> str:
    os.makedirs(os.path.join(root, "images"))
    with open(os.path.join(root, "captions.jsonl"), "w", encoding="utf-8") as f:
        for i in range(4):
            key = f"{0x000411001ff7dd4f + i:016x}"
            row = {"image/key": key, "image/locale": langs[i % len(langs)]}
            for lang in langs:
                caps = [f"{lang} caption {k} of {i}" for k in range(1 + (i + len(lang)) % 2)]
                row[lang] = {"caption": caps, "caption/tokenized": caps, "caption/tokenized/lowercase": caps}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            _write(os.path.join(root, "images", key + ".jpg"), _img(photos, i))
    return str(root)


def test_xm3600_jsonl_all_captions_per_language(tmp_path, photos):
    b = read("xm3600", xm3600_replica(tmp_path, photos))
    assert b.task == "multilingual" and len(b.items) == 4
    assert set(b.items[0].by_language) == {"en", "sw", "bn", "de"} and len(b.items[1].by_language["en"]) == 2


REGIONS = ["af", "am", "as", "eu"]


def dollar_street_replica(root, photos, n=24) -> str:
    cols = ["id", "country.id", "country.name", "country.name_alias", "country.lat", "country.lng", "region.id", "topics",
            "place", "income", "imageRelPath", "type"]
    topics = [["toilet", "toilet paper"], ["stove"], ["toothbrush"], ["bed", "kids bed"]]
    with open(os.path.join(root, "images_v2.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i in range(n):
            image_id = f"5d4be{i:019x}"
            rel = f"assets/{image_id}/{image_id}.jpg"
            country = ["Nigeria", "India", "Brazil"][i % 3]
            w.writerow([image_id, country[:2].lower(), country, country, "0.0", "0.0", REGIONS[i % 4], str(topics[i % 4]),
                        f"place{i}", str(30 + 40 * i), rel, "image"])
            _write(os.path.join(root, rel), _img(photos, i))
    return str(root)


def test_dollar_street_topics_income_and_regions(tmp_path, photos):
    b = read("dollar_street", dollar_street_replica(tmp_path, photos))
    assert b.classnames == ["bed", "kids bed", "stove", "toilet", "toilet paper", "toothbrush"]
    first = b.items[0]
    assert {b.classnames[i] for i in first.labels} == {"toilet", "toilet paper"}
    assert first.fields == {"income": 30.0, "region": "af", "country": "Nigeria"}


def geode_replica(root, photos) -> str:
    with open(os.path.join(root, "index.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_path", "object", "region", "ip_country"])
        for i in range(24):
            obj = ["bag", "cleaning_equipment", "house"][i % 3]
            region = ["Africa", "EastAsia", "Europe"][i % 3 if i < 12 else (i + 1) % 3]
            path = f"images/{obj}/{region}_{i:04d}.jpg"
            w.writerow([path, obj, region, ["Nigeria", "Japan", "Italy"][i % 3]])
            _write(os.path.join(root, path), _img(photos, i))
    return str(root)


def test_geode_index_csv(tmp_path, photos):
    b = read("geode", geode_replica(tmp_path, photos))
    assert b.classnames == ["bag", "cleaning equipment", "house"] and len(b.items) == 24
    assert b.items[1].fields == {"region": "EastAsia", "country": "Japan"}


def gldv2_replica(root, photos) -> str:
    ids = [f"{0x000014b1f770f640 + i * 0x10101:016x}" for i in range(6)]
    with open(os.path.join(root, "train.csv"), "w", newline="") as f:
        f.write("id,url,landmark_id\n")
        for i, image_id in enumerate(ids):
            f.write(f"{image_id},http://upload.wikimedia.org/x{i}.jpg,{[138982, 1924][i % 2]}\n")
            _write(os.path.join(root, "train", image_id[0], image_id[1], image_id[2], image_id + ".jpg"), _img(photos, i))
    with open(os.path.join(root, "train_label_to_category.csv"), "w") as f:
        f.write("landmark_id,category\n1924,http://commons.wikimedia.org/wiki/Category:Elmore_Mountain\n"
                "138982,http://commons.wikimedia.org/wiki/Category:Saint_Peter%27s_Basilica\n5,http://x/Category:Other\n")
    return str(root)


def test_gldv2_integer_landmark_ids_get_their_category_names(tmp_path, photos):
    b = read("gldv2", gldv2_replica(tmp_path, photos))
    assert b.classnames == ["Elmore Mountain", "Saint Peter's Basilica"] and len(b.items) == 6
    assert [min(it.labels) for it in b.items[:2]] == [1, 0]


def test_missing_images_are_counted_and_a_wrong_file_is_an_error(tmp_path, photos):
    root = coco_replica(tmp_path, photos)
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
    coco_replica(roots["coco"], photos)
    xm3600_replica(roots["xm"], photos)
    dollar_street_replica(roots["ds"], photos)
    geode_replica(roots["geode"], photos)
    imagenet_kaggle(roots["inet"], photos)
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
    root = coco_replica(tmp_path / "c", photos)
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
