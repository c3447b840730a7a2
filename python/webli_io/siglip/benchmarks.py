"""Readers for the evaluation benchmarks as they ship: each turns the downloaded files into a
:class:`Benchmark` (image paths with their captions, labels and fields), or says which file is
missing or does not match. Nothing is downloaded.

========================  ====================================================================
``imagenet``              a folder per class (``n01440764/…``) or the flat validation folder
                          with its ground truth (Kaggle's ``LOC_val_solution.csv``, or Caffe's
                          ``val.txt``: ``file index``); class names from ``LOC_synset_mapping.txt``
                          (found beside the images or given), a list of names in synset order
                          (OpenCLIP / CLIP_benchmark: ``.txt`` one per line or ``.json``), or
                          ``folder<TAB>name`` lines. A names file that matches no folder is an
                          error, never ignored.
``coco``                  ``annotations/captions_val2017.json`` (or 2014) and its image folder
``karpathy``              Karpathy's split files: ``dataset_flickr30k.json``, ``dataset_coco.json``
                          (the ``test`` split by default), with the images folder
``xm3600``                Crossmodal-3600's ``captions.jsonl`` and ``images/<key>.jpg``
``dollar_street``         ``images_v2.csv`` (``topics``, ``income``, ``region.id``, ``country.name``,
                          ``imageRelPath``)
``geode``                 ``index.csv`` (``file_path``, ``object``, ``region``, ``ip_country``)
``gldv2``                 Google Landmarks v2: a label CSV (``train.csv``: ``id,url,landmark_id``,
                          or ``recognition_solution_v2.1.csv``: ``id,landmarks,Usage``), the names
                          in ``train_label_to_category.csv``, images at ``<split>/a/b/c/abc….jpg``
========================  ====================================================================

The column names and nestings follow the datasets' own documentation and the loaders that read
them (big_vision, CLIP_benchmark, TFDS); ``tests/test_benchmarks.py`` writes a tiny replica of
each and reads it back.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
SYNSET = re.compile(r"^n\d{8}$")
KINDS = ("imagenet", "coco", "karpathy", "flickr30k", "xm3600", "dollar_street", "geode", "gldv2")


class BenchmarkError(ValueError):
    """A benchmark's files are missing, malformed or do not match one another."""


@dataclass
class Item:
    """One evaluation image: its file, and what the benchmark says about it."""

    image: str
    captions: List[str] = field(default_factory=list)
    by_language: Dict[str, List[str]] = field(default_factory=dict)
    labels: FrozenSet[int] = frozenset()
    fields: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Benchmark:
    """A benchmark read from its files. ``classnames`` is the fixed class vocabulary (every class
    the benchmark defines, not only those present); ``skipped`` counts rows that name no usable
    image or label, by reason."""

    name: str
    task: str  # "classification", "retrieval" or "multilingual"
    items: List[Item]
    classnames: List[str] = field(default_factory=list)
    skipped: Dict[str, int] = field(default_factory=dict)
    source: Dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read(kind: str, path: str, *, classnames: Optional[str] = None, labels: Optional[str] = None,
         split: str = "test") -> Benchmark:
    """The benchmark ``kind`` (one of :data:`KINDS`) from ``path`` (its folder, or its main file)."""
    if kind not in KINDS:
        raise BenchmarkError(f"unknown benchmark {kind!r}; choose one of {', '.join(KINDS)}")
    if not os.path.exists(path):
        raise BenchmarkError(f"{kind}: {path!r} does not exist")
    if kind == "imagenet":
        return imagenet(path, classnames=classnames, labels=labels)
    if kind == "coco":
        return coco(path)
    if kind in ("karpathy", "flickr30k"):
        return karpathy(path, split=split)
    if kind == "xm3600":
        return xm3600(path)
    if kind == "dollar_street":
        return dollar_street(path)
    if kind == "geode":
        return geode(path)
    return gldv2(path)


def _find(path: str, names: Sequence[str], what: str) -> str:
    """``path`` if it is a file, else the first of ``names`` inside it."""
    if os.path.isfile(path):
        return path
    for n in names:
        p = os.path.join(path, n)
        if os.path.isfile(p):
            return p
    raise BenchmarkError(f"{what}: none of {', '.join(names)} in {path!r}")


def _inside(rel: str) -> bool:
    """Whether a path a benchmark's file names stays inside the benchmark's folder: relative, no
    ``..`` part, no NUL (a hostile annotation file cannot point the reader at other files; the
    check is on the name, so a dataset folder that is itself a symlink still reads)."""
    if not rel or "\0" in rel or os.path.isabs(rel) or rel.startswith(("~", "\\")):
        return False
    return ".." not in os.path.normpath(rel).replace("\\", "/").split("/")


def _named(bench: Benchmark, top: str, rel: str) -> Optional[str]:
    """``top/rel`` when ``rel`` stays inside (else counted, and None)."""
    if not _inside(rel):
        bench.skip("image path outside the benchmark")
        return None
    return os.path.join(top, rel)


def _present(bench: Benchmark, item: Item) -> bool:
    if os.path.isfile(item.image):
        return True
    bench.skip("image file missing")
    return False


# -- ImageNet ----------------------------------------------------------------------------------


def _read_names(path: str) -> Tuple[Dict[str, str], List[str]]:
    """A class-names file → ({folder or synset: name}, [names in order]). LOC_synset_mapping
    lines ``n01440764 tench, Tinca tinca`` give the first name; ``folder<TAB>name`` lines give
    the name; a plain list (one per line, or a json list, or CLIP_benchmark's json
    ``{dataset: [names]}``) gives names in class-index order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        data = json.loads(text)
        if isinstance(data, dict):
            key = next((k for k in ("imagenet1k", "imagenet", "imagenet-1k") if k in data), None)
            if key is None and len(data) == 1:
                key = next(iter(data))
            if key is None:
                raise BenchmarkError(f"{path}: a json of class names per dataset without an ImageNet entry ({sorted(data)[:5]})")
            data = data[key]
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise BenchmarkError(f"{path}: expected a json list of class names")
        return {}, list(data)
    lines = [ln.rstrip("\r\n") for ln in text.splitlines() if ln.strip()]
    if lines and all("\t" in ln for ln in lines):
        pairs = [ln.split("\t", 1) for ln in lines]
        return {a.strip(): b.strip() for a, b in pairs}, [b.strip() for _, b in pairs]
    if lines and all(SYNSET.match(ln.split(" ", 1)[0]) for ln in lines):
        mapping = {ln.split(" ", 1)[0]: (ln.split(" ", 1)[1] if " " in ln else ln).split(",")[0].strip() for ln in lines}
        return mapping, list(mapping.values())
    return {}, [ln.strip() for ln in lines]


def _synset_order(root: str) -> Optional[str]:
    """``LOC_synset_mapping.txt`` in ``root`` or up to four folders above (Kaggle's layout puts it
    at the top, the images under ``ILSVRC/Data/CLS-LOC/val``)."""
    here = os.path.abspath(root)
    for _ in range(5):
        p = os.path.join(here, "LOC_synset_mapping.txt")
        if os.path.isfile(p):
            return p
        here = os.path.dirname(here)
    return None


def imagenet(path: str, *, classnames: Optional[str] = None, labels: Optional[str] = None) -> Benchmark:
    root = path
    kaggle = os.path.join(path, "ILSVRC", "Data", "CLS-LOC", "val")
    if os.path.isdir(kaggle):
        root = kaggle
        labels = labels or next((p for p in [os.path.join(path, "LOC_val_solution.csv")] if os.path.isfile(p)), None)
    synsets_file = _synset_order(root)
    dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    flat = [f for f in sorted(os.listdir(root)) if f.lower().endswith(IMAGE_EXTS)]
    if labels is None and not dirs:
        raise BenchmarkError(f"imagenet: {root!r} has no class folders; for the flat validation folder give its ground "
                             f"truth with --labels (LOC_val_solution.csv or val.txt)")
    # The class vocabulary: every class the names file or the synset list defines (all 1000),
    # else the folders; then the index of each class in it.
    order: List[str] = list(_read_names(synsets_file)[0]) if synsets_file else []
    mapping, names_in_order = _read_names(classnames) if classnames else ({}, [])
    if mapping:
        vocab = list(mapping)
    elif names_in_order:
        base = order or dirs
        if len(names_in_order) != len(base):
            raise BenchmarkError(f"imagenet: {classnames} lists {len(names_in_order)} names in class order but there are "
                                 f"{len(base)} classes ({'in LOC_synset_mapping.txt' if order else 'folders'}); a list of "
                                 f"1000 names needs LOC_synset_mapping.txt beside the images for the synset order")
        mapping, vocab = dict(zip(base, names_in_order)), list(base)
    elif synsets_file:
        mapping, vocab = _read_names(synsets_file)[0], order
    else:
        vocab = list(dirs)
    bench = Benchmark("imagenet", "classification", [], source={"images": root})
    if classnames:
        bench.source["classnames"] = classnames
    if synsets_file:
        bench.source["synsets"] = synsets_file
    if labels is None:
        pairs = [(os.path.join(root, d, f), d) for d in dirs for f in sorted(os.listdir(os.path.join(root, d)))
                 if f.lower().endswith(IMAGE_EXTS)]
        used = dirs
    else:
        bench.source["labels"] = labels
        truth = _ground_truth(labels, order or vocab)
        pairs = []
        for f in flat:
            stem = os.path.splitext(f)[0]
            cls = truth.get(f, truth.get(stem))
            if cls is None:
                bench.skip("no ground-truth label")
                continue
            pairs.append((os.path.join(root, f), cls))
        used = sorted({c for _, c in pairs})
        if not pairs:
            raise BenchmarkError(f"imagenet: no image of {root!r} is named in {labels}")
    if mapping:
        unmatched = [d for d in used if d not in mapping]
        if len(unmatched) == len(used):
            raise BenchmarkError(f"imagenet: the class names ({classnames or synsets_file}) match none of the "
                                 f"{len(used)} classes (e.g. {used[0]!r}); give a names file keyed by these folder names")
        if unmatched:
            raise BenchmarkError(f"imagenet: {len(unmatched)} classes have no name in {classnames or synsets_file} "
                                 f"(e.g. {unmatched[0]!r})")
    vocab = list(dict.fromkeys([*vocab, *used]))
    index = {c: i for i, c in enumerate(vocab)}
    bench.classnames = [mapping.get(c, c.replace("_", " ")) for c in vocab]
    bench.items = [Item(p, labels=frozenset({index[c]})) for p, c in pairs]
    return bench


def _ground_truth(path: str, synsets: Sequence[str]) -> Dict[str, str]:
    """{image file or stem: synset} from Kaggle's ``LOC_val_solution.csv`` (``ImageId,
    PredictionString`` whose first word is the synset) or Caffe's ``val.txt`` (``file index``,
    0-based in sorted synset order)."""
    with open(path, encoding="utf-8") as f:
        head = f.readline()
        f.seek(0)
        if head.startswith("ImageId"):
            return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f) if row.get("PredictionString")}
        out = {}
        for ln in f:
            parts = ln.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise BenchmarkError(f"{path}: expected 'file index' lines (Caffe's val.txt) or Kaggle's LOC_val_solution.csv")
            i = int(parts[1])
            if i >= len(synsets):
                raise BenchmarkError(f"{path}: class index {i} but {len(synsets)} classes; put LOC_synset_mapping.txt beside the images")
            out[parts[0]] = synsets[i]
        return out


# -- COCO, Flickr30k, Crossmodal-3600 ----------------------------------------------------------


def coco(path: str) -> Benchmark:
    ann = _find(path, ["annotations/captions_val2017.json", "annotations/captions_val2014.json",
                       "captions_val2017.json", "captions_val2014.json"], "coco")
    with open(ann, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise BenchmarkError(f"{ann}: not a COCO captions file (no 'images' and 'annotations')")
    split = re.sub(r"^captions_", "", os.path.splitext(os.path.basename(ann))[0])  # val2017
    top = os.path.dirname(os.path.dirname(ann)) if os.path.basename(os.path.dirname(ann)) == "annotations" else os.path.dirname(ann)
    images_dir = next((d for d in (os.path.join(top, split), os.path.join(top, "images", split)) if os.path.isdir(d)), None)
    if images_dir is None:
        raise BenchmarkError(f"coco: no image folder {split}/ beside {ann}")
    caps: Dict[int, List[str]] = {}
    for a in data["annotations"]:
        caps.setdefault(a["image_id"], []).append(str(a["caption"]).strip())
    bench = Benchmark("coco", "retrieval", [], source={"annotations": ann, "images": images_dir})
    for img in sorted(data["images"], key=lambda x: x["id"]):
        where = _named(bench, images_dir, str(img.get("file_name", "")))
        if where is None:
            continue
        item = Item(where, captions=caps.get(img["id"], []))
        if not item.captions:
            bench.skip("no caption")
        elif _present(bench, item):
            bench.items.append(item)
    return bench


def karpathy(path: str, split: str = "test") -> Benchmark:
    js = _find(path, ["dataset_flickr30k.json", "dataset_coco.json", "dataset_flickr8k.json"], "karpathy")
    with open(js, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BenchmarkError(f"{js}: not a Karpathy split file (no 'images' list)")
    top = os.path.dirname(js) if os.path.isfile(path) else path
    name = {"flickr30k": "flickr30k", "coco": "coco-karpathy", "flickr8k": "flickr8k"}.get(
        os.path.basename(js)[len("dataset_"):-len(".json")], "karpathy")
    image_dirs = [top, os.path.join(top, "flickr30k-images"), os.path.join(top, "images"), os.path.join(top, "Flicker8k_Dataset")]
    bench = Benchmark(name, "retrieval", [], source={"split_file": js, "split": split})
    for img in data["images"]:
        if img.get("split") != split:
            continue
        rel = os.path.join(str(img.get("filepath", "")), str(img.get("filename", "")))
        if _named(bench, top, rel) is None:
            continue
        where = next((os.path.join(d, rel) for d in image_dirs if os.path.isfile(os.path.join(d, rel))), os.path.join(top, rel))
        item = Item(where, captions=[str(s.get("raw", "")).strip() for s in img.get("sentences", []) if s.get("raw")])
        if not item.captions:
            bench.skip("no caption")
        elif _present(bench, item):
            bench.items.append(item)
    if not bench.items and not bench.skipped:
        raise BenchmarkError(f"{js}: no image in split {split!r}")
    return bench


def xm3600(path: str) -> Benchmark:
    js = _find(path, ["captions.jsonl"], "xm3600")
    top = os.path.dirname(js)
    bench = Benchmark("xm3600", "multilingual", [], source={"captions": js, "images": os.path.join(top, "images")})
    with open(js, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{js}:{n}: not json ({e.msg})") from None
            key = row.get("image/key")
            if not isinstance(key, str) or not re.fullmatch(r"[0-9A-Za-z_-]+", key):
                bench.skip("no image/key")
                continue
            langs = {lang: [str(c).strip() for c in v.get("caption", []) if str(c).strip()]
                     for lang, v in row.items() if isinstance(v, dict)}
            item = Item(os.path.join(top, "images", key + ".jpg"), by_language={k: v for k, v in langs.items() if v})
            if not item.by_language:
                bench.skip("no caption")
            elif _present(bench, item):
                bench.items.append(item)
    return bench


# -- cultural diversity: Dollar Street, GeoDE, GLDv2 -------------------------------------------


def _vocab(bench: Benchmark, names: Sequence[str]) -> Dict[str, int]:
    bench.classnames = list(dict.fromkeys(names))
    return {n: i for i, n in enumerate(bench.classnames)}


def _csv_rows(path: str, need: Sequence[str]) -> List[Dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkError(f"{path}: no column {', '.join(missing)} (has {', '.join(reader.fieldnames or [])})")
        return list(reader)


def _topics(value: str) -> List[str]:
    """Dollar Street's ``topics`` cell: a Python-style list (``"['toilet', 'toilet paper']"``)."""
    try:
        parsed = ast.literal_eval(value) if value.strip().startswith("[") else [value]
    except (ValueError, SyntaxError):
        parsed = [value]
    return [str(t).strip() for t in parsed if str(t).strip()]


def dollar_street(path: str) -> Benchmark:
    table = _find(path, ["images_v2.csv", "dataset_dollarstreet/images_v2.csv"], "dollar_street")
    top = os.path.dirname(table)
    rows = _csv_rows(table, ["topics", "income", "imageRelPath", "region.id", "country.name"])
    bench = Benchmark("dollar_street", "classification", [], source={"table": table})
    index = _vocab(bench, sorted({t for r in rows for t in _topics(r["topics"])}))
    for r in rows:
        topics = _topics(r["topics"])
        try:
            income = float(r["income"])
        except ValueError:
            bench.skip("no income")
            continue
        if not topics:
            bench.skip("no topic")
            continue
        where = _named(bench, top, r["imageRelPath"])
        if where is None:
            continue
        item = Item(where, labels=frozenset(index[t] for t in topics),
                    fields={"income": income, "region": r["region.id"], "country": r["country.name"]})
        if _present(bench, item):
            bench.items.append(item)
    return bench


def geode(path: str) -> Benchmark:
    table = _find(path, ["index.csv"], "geode")
    top = os.path.dirname(table)
    rows = _csv_rows(table, ["file_path", "object", "region", "ip_country"])
    bench = Benchmark("geode", "classification", [], source={"table": table})
    index = _vocab(bench, sorted({r["object"] for r in rows if r["object"]}))
    names = {o: o.replace("_", " ") for o in index}
    for r in rows:
        if not r["object"]:
            bench.skip("no object")
            continue
        p = _named(bench, top, r["file_path"])
        if p is None:
            continue
        if not os.path.isfile(p) and os.path.isfile(os.path.join(top, "images", r["file_path"])):
            p = os.path.join(top, "images", r["file_path"])
        item = Item(p, labels=frozenset({index[r["object"]]}), fields={"region": r["region"], "country": r["ip_country"]})
        if _present(bench, item):
            bench.items.append(item)
    bench.classnames = [names[o] for o in bench.classnames]
    return bench


def _landmark_name(category: str) -> str:
    """``http://commons.wikimedia.org/wiki/Category:Elmore_Mountain`` → ``Elmore Mountain``."""
    from urllib.parse import unquote

    name = unquote(category.rsplit("Category:", 1)[-1])
    return name.replace("_", " ").strip()


def gldv2(path: str) -> Benchmark:
    if os.path.isfile(path):
        path = os.path.dirname(path)
    names_file = _find(path, ["train_label_to_category.csv", "index_label_to_category.csv"], "gldv2")
    names = {r["landmark_id"]: _landmark_name(r["category"]) for r in _csv_rows(names_file, ["landmark_id", "category"])}
    solution = next((os.path.join(path, n) for n in ("recognition_solution_v2.1.csv", "recognition_solution.csv")
                     if os.path.isfile(os.path.join(path, n))), None)
    if solution:
        rows = _csv_rows(solution, ["id", "landmarks"])
        split = "test"
        pairs = [(r["id"], r["landmarks"].split()) for r in rows]
        table = solution
    else:
        table = _find(path, ["train.csv", "train_clean.csv"], "gldv2")
        rows = _csv_rows(table, ["id", "landmark_id"]) if table.endswith("train.csv") else []
        split = "train"
        pairs = [(r["id"], [r["landmark_id"]]) for r in rows]
    bench = Benchmark("gldv2", "classification", [], source={"labels": table, "names": names_file, "split": split})
    present = sorted({lm for _, lms in pairs for lm in lms}, key=lambda x: int(x) if x.isdigit() else x)
    unnamed = [lm for lm in present if lm not in names]
    if unnamed:
        raise BenchmarkError(f"gldv2: {len(unnamed)} landmark ids have no name in {names_file} (e.g. {unnamed[0]})")
    index = _vocab(bench, present)
    for image_id, lms in pairs:
        if not lms:
            bench.skip("not a landmark")  # the test set's non-landmark images
            continue
        if not re.fullmatch(r"[0-9a-f]{3,}", image_id):
            bench.skip("malformed id")
            continue
        item = Item(os.path.join(path, split, image_id[0], image_id[1], image_id[2], image_id + ".jpg"),
                    labels=frozenset(index[lm] for lm in lms), fields={"landmark_id": lms[0]})
        if _present(bench, item):
            bench.items.append(item)
    bench.classnames = [names[lm] for lm in bench.classnames]
    return bench
