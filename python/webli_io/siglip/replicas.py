"""Tiny replicas of the evaluation benchmarks' files, for trying ``webli-io eval --benchmark``
without the downloads, and for the tests and docs: each writes the files a benchmark ships, with
the same names, columns and nesting (as the datasets document them and big_vision,
CLIP_benchmark and TFDS read them), a handful of rows each.

``image(i)`` makes the i-th image's bytes; by default a picture of the sample data
(:func:`webli_io.sample_data.draw_picture`). The tests pass real photographs.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Callable, Dict, List, Optional

ImageFn = Callable[[int], bytes]

SYNSETS = [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
           ("n01484850", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"),
           ("n01491361", "tiger shark, Galeocerdo cuvieri"), ("n01494475", "hammerhead, hammerhead shark")]
DOLLAR_STREET_COLUMNS = ["id", "country.id", "country.name", "country.name_alias", "country.lat", "country.lng",
                         "region.id", "topics", "place", "income", "imageRelPath", "type"]


def default_image(i: int) -> bytes:
    import numpy as np

    from ..sample_data import SKIES, draw_picture, encode

    rng = np.random.default_rng(i)
    return encode(draw_picture(rng, 128, 96, SKIES[i % len(SKIES)][1]), "jpg", quality=90)


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def imagenet_kaggle(root: str, image: ImageFn = default_image, n: int = 6) -> str:
    """Kaggle's ImageNet download: ``LOC_synset_mapping.txt``, ``LOC_val_solution.csv``
    (``ImageId,PredictionString``: synset and box, repeated) and the flat
    ``ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_0000000N.JPEG``."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as f:
        f.writelines(f"{s} {n}\n" for s, n in SYNSETS)
    val = os.path.join(root, "ILSVRC", "Data", "CLS-LOC", "val")
    with open(os.path.join(root, "LOC_val_solution.csv"), "w") as f:
        f.write("ImageId,PredictionString\n")
        for i in range(n):
            s = SYNSETS[i % 3][0]
            f.write(f"ILSVRC2012_val_{i + 1:08d},{s} 10 20 110 120 {s} 5 5 50 50\n")
            _write(os.path.join(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG"), image(i))
    return root


def imagenet_folders(root: str, image: ImageFn = default_image, classes: int = 3, per_class: int = 2) -> str:
    """ImageNet's validation set sorted into a folder per synset (``val/n01440764/…``)."""
    for j, (s, _) in enumerate(SYNSETS[:classes]):
        for i in range(per_class):
            k = j * per_class + i
            _write(os.path.join(root, "val", s, f"ILSVRC2012_val_{k + 1:08d}.JPEG"), image(k))
    return os.path.join(root, "val")


def coco(root: str, image: ImageFn = default_image, n: int = 4) -> str:
    """COCO 2017: ``annotations/captions_val2017.json`` (``images``, ``annotations`` with five
    captions per image) and ``val2017/000000397133.jpg``."""
    images = [{"license": 1, "file_name": f"{397133 + i:012d}.jpg", "coco_url": f"http://images.cocodataset.org/val2017/{397133 + i:012d}.jpg",
               "height": 96, "width": 128, "date_captured": "2013-11-14 17:02:52", "flickr_url": "http://farm7.staticflickr.com/x.jpg",
               "id": 397133 + i} for i in range(n)]
    anns = [{"image_id": 397133 + i, "id": 1000 + 5 * i + k, "caption": f"A picture number {i}, described a {k}th way."}
            for i in range(n) for k in range(5)]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", "captions_val2017.json"), "w") as f:
        json.dump({"info": {"year": 2017, "version": "1.0"}, "licenses": [], "images": images, "annotations": anns}, f)
    for i, im in enumerate(images):
        _write(os.path.join(root, "val2017", str(im["file_name"])), image(i))
    return root


def flickr30k(root: str, image: ImageFn = default_image) -> str:
    """Karpathy's ``dataset_flickr30k.json`` (``images``: ``filename``, ``split``, ``sentences``
    with ``raw``) and ``flickr30k-images/``."""
    imgs: List[Dict[str, Any]] = []
    for i, split in enumerate(["train", "test", "test", "val", "test", "test"]):
        fn = f"{1000092795 + i}.jpg"
        sents = [{"tokens": ["a", "picture"], "raw": f"Picture {i}, sentence {k}.", "imgid": i, "sentid": 5 * i + k} for k in range(5)]
        imgs.append({"sentids": list(range(5 * i, 5 * i + 5)), "imgid": i, "sentences": sents, "split": split, "filename": fn})
        _write(os.path.join(root, "flickr30k-images", fn), image(i))
    with open(os.path.join(root, "dataset_flickr30k.json"), "w") as f:
        json.dump({"images": imgs, "dataset": "flickr30k"}, f)
    return os.path.join(root, "dataset_flickr30k.json")


def xm3600(root: str, image: ImageFn = default_image, langs=("en", "sw", "bn", "de"), n: int = 4) -> str:
    """Crossmodal-3600: ``captions.jsonl`` (per line ``image/key``, ``image/locale`` and per
    language ``caption``, ``caption/tokenized``, ``caption/tokenized/lowercase``) and
    ``images/<key>.jpg``."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    with open(os.path.join(root, "captions.jsonl"), "w", encoding="utf-8") as f:
        for i in range(n):
            key = f"{0x000411001FF7DD4F + i:016x}"
            row: Dict[str, object] = {"image/key": key, "image/locale": langs[i % len(langs)]}
            for lang in langs:
                caps = [f"{lang} caption {k} of picture {i}" for k in range(1 + (i + len(lang)) % 2)]
                row[lang] = {"caption": caps, "caption/tokenized": caps, "caption/tokenized/lowercase": [c.lower() for c in caps]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            _write(os.path.join(root, "images", key + ".jpg"), image(i))
    return root


def dollar_street(root: str, image: ImageFn = default_image, n: int = 24) -> str:
    """Dollar Street (MLCommons): ``images_v2.csv`` (``topics`` as a list literal, monthly
    ``income`` in dollars, ``region.id``, ``country.name``, ``imageRelPath``) and ``assets/``."""
    topics = [["toilet", "toilet paper"], ["stove"], ["toothbrush"], ["bed", "kids bed"]]
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "images_v2.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(DOLLAR_STREET_COLUMNS)
        for i in range(n):
            image_id = f"5d4be{i:019x}"
            rel = f"assets/{image_id}/{image_id}.jpg"
            country = ["Nigeria", "India", "Brazil"][i % 3]
            w.writerow([image_id, country[:2].lower(), country, country, "0.0", "0.0", ["af", "am", "as", "eu"][i % 4],
                        str(topics[i % 4]), f"place{i}", str(30 + 40 * i), rel, "image"])
            _write(os.path.join(root, rel), image(i))
    return root


def geode(root: str, image: ImageFn = default_image, n: int = 24) -> str:
    """GeoDE: ``index.csv`` (``file_path``, ``object``, ``region``, ``ip_country``) and
    ``images/<object>/…jpg``."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "index.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_path", "object", "region", "ip_country"])
        for i in range(n):
            obj = ["bag", "cleaning_equipment", "house"][i % 3]
            region = ["Africa", "EastAsia", "Europe"][i % 3 if i < n // 2 else (i + 1) % 3]
            path = f"images/{obj}/{region}_{i:04d}.jpg"
            w.writerow([path, obj, region, ["Nigeria", "Japan", "Italy"][i % 3]])
            _write(os.path.join(root, path), image(i))
    return root


def gldv2(root: str, image: ImageFn = default_image, n: int = 6) -> str:
    """Google Landmarks v2: ``train.csv`` (``id,url,landmark_id``),
    ``train_label_to_category.csv`` (``landmark_id,category``: a Wikimedia Commons category URL)
    and ``train/a/b/c/abc….jpg``."""
    os.makedirs(root, exist_ok=True)
    ids = [f"{0x000014B1F770F640 + i * 0x10101:016x}" for i in range(n)]
    with open(os.path.join(root, "train.csv"), "w", newline="") as f:
        f.write("id,url,landmark_id\n")
        for i, image_id in enumerate(ids):
            f.write(f"{image_id},http://upload.wikimedia.org/wikipedia/commons/x{i}.jpg,{[138982, 1924][i % 2]}\n")
            _write(os.path.join(root, "train", image_id[0], image_id[1], image_id[2], image_id + ".jpg"), image(i))
    with open(os.path.join(root, "train_label_to_category.csv"), "w") as f:
        f.write("landmark_id,category\n1924,http://commons.wikimedia.org/wiki/Category:Elmore_Mountain\n"
                "138982,http://commons.wikimedia.org/wiki/Category:Saint_Peter%27s_Basilica\n"
                "5,http://commons.wikimedia.org/wiki/Category:Mount_Kenya\n")
    return root


WRITERS = {"imagenet": imagenet_kaggle, "coco": coco, "karpathy": flickr30k, "xm3600": xm3600,
           "dollar_street": dollar_street, "geode": geode, "gldv2": gldv2}


def write_replicas(out_dir: str, image: Optional[ImageFn] = None) -> Dict[str, str]:
    """Every benchmark's replica under ``out_dir/<kind>``: {kind: the PATH for ``--benchmark
    kind=PATH``}."""
    return {kind: fn(os.path.join(out_dir, kind), image or default_image) for kind, fn in WRITERS.items()}
