"""``webli-io eval``: a checkpoint measured the ways the WebLI-100B study measures, on data the
user brings, in the layouts of the real benchmarks (nothing is downloaded):

1. zero-shot classification on an image folder (ImageNet's layout: one folder per class), with
   prompt templates: top-1 / top-5;
2. image↔text retrieval on shards (COCO / Flickr style): recall@1/5/10 both ways;
3. multilingual retrieval (Crossmodal-3600's layout: each image with captions in many languages,
   here a shard whose ``json`` holds ``"captions": {"bn": "...", ...}``): recall@1 per language,
   the mean and the worst language;
4. subgroups (Dollar Street / GeoDE style: shards whose ``json`` names a ``label`` and a group
   field such as ``region``): zero-shot accuracy per group, the worst group, the
   best − worst spread (with ``income``: quartiles and the signed richest − poorest disparity).

Definitions follow big_vision's evaluators: class embeddings are the normalised mean of the
normalised template embeddings; retrieval ranks every candidate of the set; recall@k is the
share of queries whose match is among the k best. It writes ``report.json``, ``report.md`` and
PNG bar charts (per language, per group), drawn with Pillow.

Also here: ``webli-io score`` (each pair's image–caption alignment, written as a metadata field
for ``min_score``, and what a threshold keeps per language or group) and ``webli-io attention``
(per-patch relevance maps over the images).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .config import model_config
from .evaluate import to_device_images
from .model import SigLIP
from .tokenizers import load_tokenizer

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "{}")


# -- metrics (pure: tested on constructed inputs) ---------------------------------------------


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    return {k: float((top[:, :k] == labels[:, None]).any(dim=1).float().mean()) for k in ks}


def group_summary(per_group: Dict[str, float]) -> Dict[str, Any]:
    """The worst group and the best − worst ``spread`` (unsigned; a signed disparity between
    two named groups is :func:`.metrics.disparity`)."""
    worst = min(per_group, key=per_group.__getitem__)
    best = max(per_group, key=per_group.__getitem__)
    return {"per_group": per_group, "worst_group": worst, "worst": per_group[worst], "spread": per_group[best] - per_group[worst]}


# -- the model ---------------------------------------------------------------------------------


def load_checkpoint(path: str, device: torch.device, tokenizer: Optional[str] = None) -> Tuple[SigLIP, Any, int]:
    """A trainer checkpoint, or released SigLIP weights (an OpenCLIP ``ViT-*-SigLIP`` state dict,
    a Hugging Face ``SiglipModel`` folder or file, a big_vision ``.npz``: :mod:`.convert`) →
    (model in eval mode, its tokenizer, its image size). ``tokenizer`` overrides the
    checkpoint's; released weights need it (``siglip:PATH/spiece.model``)."""
    from .convert import load_any

    ckpt = None
    if os.path.isfile(path) and path.endswith((".pt", ".pth", ".ckpt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and "config" in ckpt and "model" in ckpt:
        cfg = model_config(ckpt["config"])
        args = ckpt.get("args", {})
        image_size = int(args.get("image_size", 224))
        spec = tokenizer or args.get("tokenizer", "bytes")
        if spec != "bytes" and not spec.startswith("siglip:") and not os.path.isabs(spec) and not os.path.exists(spec):
            beside = os.path.join(os.path.dirname(os.path.abspath(path)), spec)
            spec = beside if os.path.exists(beside) else spec  # an earlier checkpoint's relative path
        tok = load_tokenizer(spec, cfg.max_len)
        model = SigLIP(cfg, image_size, tok.vocab_size)
        model.load_state_dict(ckpt["model"])
        return model.to(device).eval(), tok, image_size
    model, image_size, layout = load_any(path)
    if tokenizer is None:
        raise ValueError(f"{path} holds released {layout} SigLIP weights: give their tokenizer with --tokenizer "
                         f"siglip:PATH (the SentencePiece model the weights were trained with)")
    tok = load_tokenizer(tokenizer, model.cfg.max_len)
    if tok.vocab_size > model.text.embed.num_embeddings:
        raise ValueError(f"the tokenizer has {tok.vocab_size} ids but the text tower {model.text.embed.num_embeddings}: "
                         f"not the tokenizer of these weights")
    return model.to(device).eval(), tok, image_size


@torch.no_grad()
def _embed_texts(model: SigLIP, tokenizer: Any, texts: List[str], device: torch.device) -> torch.Tensor:
    out = [F.normalize(model.text(tokenizer(texts[i : i + 256]).to(device)), dim=-1) for i in range(0, len(texts), 256)]
    return torch.cat(out).float()


@torch.no_grad()
def _embed_images(model: SigLIP, tiles: List[np.ndarray], device: torch.device) -> torch.Tensor:
    out = []
    for i in range(0, len(tiles), 128):
        x = torch.from_numpy(np.stack(tiles[i : i + 128])).permute(0, 3, 1, 2).contiguous()
        out.append(F.normalize(model.image(to_device_images(x, device)), dim=-1).float())
    return torch.cat(out)


def _class_embeddings(model: SigLIP, tokenizer: Any, names: List[str], templates: Sequence[str], device: torch.device) -> torch.Tensor:
    per_class = [_embed_texts(model, tokenizer, [t.format(n) for t in templates], device).mean(0) for n in names]
    return F.normalize(torch.stack(per_class), dim=-1)


def _samples(shards: Sequence[str], image_size: int):
    """(tile, caption, meta) of each sample of the shards, decoded as the stream does: every
    sample, whatever RANK/WORLD_SIZE the launcher set (the evaluation runs whole, on one rank)."""
    from ..stream import WebLIStream

    for b in WebLIStream(list(shards), batch_size=128, image_size=image_size, resize="center_crop", rank=0, world_size=1):
        yield from zip(b["images"], b["texts"], b["meta"])


# -- the four parts ----------------------------------------------------------------------------


def classify_folder(model: SigLIP, tokenizer: Any, image_size: int, folder: str, classnames: Optional[str],
                    templates: Sequence[str], device: torch.device) -> Dict[str, Any]:
    """Zero-shot accuracy on an image folder in ImageNet's layout, read by
    :func:`.benchmarks.imagenet` (``classnames``: a names file in any of its formats)."""
    from .benchmarks import imagenet
    from .evalbench import Towers, classification

    r = classification(Towers(model, tokenizer, image_size, device), imagenet(folder, classnames=classnames), templates)
    return {k: r[k] for k in ("images", "classes", "skipped", "top1", "top5")}


def _captions(meta: Dict[str, Any], text: str) -> List[str]:
    """A shard sample's captions: its json's ``captions`` list when it has one, else its text."""
    caps = meta.get("captions")
    if isinstance(caps, list):
        got = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
        if got:
            return got
    return [text] if text else []


def retrieval(model: SigLIP, tokenizer: Any, image_size: int, shards: Sequence[str], device: torch.device) -> Dict[str, Any]:
    """Recall@1/5/10 both ways on shards of pairs (a sample's json ``captions`` list gives it
    several texts), as big_vision's ``image_text_retrieval`` ranks them, identical captions
    counting as one answer."""
    from .metrics import retrieval_recall

    tiles: List[np.ndarray] = []
    texts: List[str] = []
    owner: List[int] = []
    for img, text, meta in _samples(shards, image_size):
        caps = _captions(meta, text)
        if caps:
            owner.extend([len(tiles)] * len(caps))
            texts.extend(caps)
            tiles.append(img)
    if not tiles:
        raise ValueError("retrieval: no sample of the shards has an image and a caption")
    sim = (_embed_images(model, tiles, device) @ _embed_texts(model, tokenizer, texts, device).T).cpu().numpy()
    r = retrieval_recall(sim, owner, texts=texts)  # identical captions are one answer (shards may repeat them)
    return {"pairs": len(tiles), "texts": len(texts), **{f"i2t_r{k}": v for k, v in r["i2t"].items()},
            **{f"t2i_r{k}": v for k, v in r["t2i"].items()}}


def multilingual(model: SigLIP, tokenizer: Any, image_size: int, shards: Sequence[str], device: torch.device) -> Dict[str, Any]:
    """Crossmodal-3600's protocol on shards whose json holds ``captions: {language: caption or
    [captions]}``: per language, recall@1 image→text and text→image over all its captions;
    ``recall_at_1`` is their mean, kept per direction in ``i2t_r1``/``t2i_r1``."""
    from .metrics import language_means, retrieval_recall

    tiles, captions = [], []
    for img, _, meta in _samples(shards, image_size):
        caps = meta.get("captions")
        if isinstance(caps, dict) and caps:
            per = {lang: [x.strip() for x in (c if isinstance(c, list) else [c]) if isinstance(x, str) and x.strip()]
                   for lang, c in caps.items()}
            per = {k: v for k, v in per.items() if v}
            if per:
                tiles.append(img)
                captions.append(per)
    if not tiles:
        raise ValueError("multilingual: no sample has a 'captions' object in its json ({language: caption})")
    images = _embed_images(model, tiles, device).cpu().numpy()
    i2t: Dict[str, float] = {}
    t2i: Dict[str, float] = {}
    for lang in sorted({lang for c in captions for lang in c}):
        idx = [i for i, c in enumerate(captions) if lang in c]
        texts = [t for i in idx for t in captions[i][lang]]
        owner = [j for j, i in enumerate(idx) for _ in captions[i][lang]]
        r = retrieval_recall(images[idx] @ _embed_texts(model, tokenizer, texts, device).cpu().numpy().T, owner, ks=(1,), texts=texts)
        i2t[lang], t2i[lang] = r["i2t"][1], r["t2i"][1]
    per_lang = {k: (i2t[k] + t2i[k]) / 2 for k in i2t}
    s = group_summary(per_lang)
    means = language_means(per_lang)
    return {"images": len(tiles), "recall_at_1": per_lang, "i2t_r1": i2t, "t2i_r1": t2i, "mean": means["mean"],
            "low_resource_mean": means["low_resource_mean"], "high_resource_mean": means["high_resource_mean"],
            "worst_language": s["worst_group"], "worst": s["worst"]}


def _label_values(value: Any) -> List[str]:
    """A json label: a string, an integer id (GLDv2's ``landmark_id``) or a list (Dollar
    Street's ``topics``: any is right)."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (str, int)):
        return [str(value)] if str(value).strip() else []
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).strip()]
    return []


def subgroups(model: SigLIP, tokenizer: Any, image_size: int, shards: Sequence[str], group_field: str, label_field: str,
              templates: Sequence[str], device: torch.device, classnames: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Zero-shot accuracy per group on shards whose json names a label and a group. The class
    vocabulary is ``classnames`` when given, else every label of the shards (``vocabulary``
    says which); ``income`` (a number) is binned into quartiles with the signed richest −
    poorest ``disparity``; other groups report the worst group and the best − worst ``spread``."""
    from .evalbench import group_rows
    from .metrics import correct_top1

    tiles, labels, groups = [], [], []
    for img, _, meta in _samples(shards, image_size):
        got = _label_values(meta.get(label_field))
        g = meta.get(group_field)
        if got and g is not None and not isinstance(g, (dict, list)):
            if group_field == "income" and not isinstance(g, (int, float)):
                continue
            tiles.append(img)
            labels.append(got)
            groups.append(g)
    if not tiles:
        raise ValueError(f"subgroups: no sample has both {label_field!r} and {group_field!r} in its json")
    names = list(classnames) if classnames else sorted({x for ls in labels for x in ls})
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({x for ls in labels for x in ls if x not in index})
    if unknown:
        raise ValueError(f"subgroups: labels {unknown[:5]} are not in the class vocabulary ({len(names)} names)")
    emb = _embed_images(model, tiles, device).cpu().numpy()
    cls = _class_embeddings(model, tokenizer, names, templates, device).cpu().numpy()
    correct = correct_top1(emb @ cls.T, [frozenset(index[x] for x in ls) for ls in labels])
    rows = group_rows(correct, [{group_field: g} for g in groups])[group_field]
    out: Dict[str, Any] = {"images": len(tiles), "classes": len(names), "vocabulary": "given" if classnames else "labels present",
                           "accuracy": float(correct.mean()), "group_field": group_field}
    if group_field == "income":
        per = {k: v["accuracy"] for k, v in rows["per_quartile"].items()}
        return {**out, "per_group": per, "disparity": rows["disparity"], **_worst(per)}
    per = {k: v["accuracy"] for k, v in rows["per_group"].items()}
    return {**out, "per_group": per, **_worst(per)}


def _worst(per: Dict[str, float]) -> Dict[str, Any]:
    s = group_summary(per)
    return {"worst_group": s["worst_group"], "worst": s["worst"], "spread": s["spread"]}


# -- the report --------------------------------------------------------------------------------


def bar_chart(values: Dict[str, float], title: str, path: str) -> None:
    """A horizontal bar chart of values in [0, 1], as PNG (Pillow)."""
    from PIL import Image, ImageDraw

    row, left, width = 22, 140, 420
    img = Image.new("RGB", (left + width + 70, 40 + row * len(values)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title, fill="black")
    for i, (name, v) in enumerate(values.items()):
        y = 34 + i * row
        draw.text((10, y + 3), str(name)[:20], fill="black")
        draw.rectangle([left, y, left + int(width * max(0.0, min(1.0, v))), y + row - 6], fill=(70, 110, 190))
        draw.text((left + width + 8, y + 3), f"{v:.3f}", fill="black")
    img.save(path)


def write_report(report: Dict[str, Any], out: str) -> List[str]:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    lines = [f"# Evaluation of {report['checkpoint']}", ""]
    charts = []
    if "classification" in report:
        c = report["classification"]
        lines += ["## Zero-shot classification", "", "| images | classes | top-1 | top-5 |", "|---:|---:|---:|---:|",
                  f"| {c['images']} | {c['classes']} | {c['top1']:.3f} | {c['top5']:.3f} |", ""]
    if "retrieval" in report:
        r = report["retrieval"]
        lines += ["## Image-text retrieval", "", "| pairs | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 |", "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {r['pairs']} | {r['i2t_r1']:.3f} | {r['i2t_r5']:.3f} | {r['i2t_r10']:.3f} | {r['t2i_r1']:.3f} | {r['t2i_r5']:.3f} | {r['t2i_r10']:.3f} |", ""]
    def per_key(title: str, column: str, values: Dict[str, float], totals: List[Tuple[str, float]], chart: str) -> None:
        """A section: one row per language or group, the summary rows, and its bar chart."""
        lines.extend([f"## {title}", "", f"| {column} | value |", "|---|---:|"])
        lines.extend(f"| {k} | {v:.3f} |" for k, v in values.items())
        lines.extend([*(f"| **{name}** | {v:.3f} |" for name, v in totals), "", f"![{title}]({chart})", ""])
        bar_chart(values, title, os.path.join(out, chart))
        charts.append(chart)

    if "multilingual" in report:
        m = report["multilingual"]
        per_key("Multilingual retrieval (recall@1, mean of both directions)", "language", m["recall_at_1"],
                [("mean", m["mean"]), (f"worst ({m['worst_language']})", m["worst"])], "languages.png")
    if "subgroups" in report:
        g = report["subgroups"]
        per_key("Subgroups (zero-shot accuracy)", "group", g["per_group"],
                [(f"worst ({g['worst_group']})", g["worst"]), *([("disparity (richest - poorest quartile)", g["disparity"])] if "disparity" in g else []), ("spread (best - worst)", g["spread"])], "groups.png")
    if "benchmarks" in report:
        from .evalbench import markdown

        for name, part in report["benchmarks"].items():
            lines.extend(markdown(name, part))
    if "representation_bias" in report:
        b = report["representation_bias"]
        lines += ["## Representation bias (gender)", "", "| images | share matched to the first prompt | bias (share - 0.5) |",
                  "|---:|---:|---:|", f"| {b['images']} | {b['male_share']:.3f} | {b['bias']:+.3f} |", "",
                  f"prompts: {b['prompts'][0]!r} vs {b['prompts'][1]!r}", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines))
    return charts


# -- alignment scores (the paper's quality filter) ---------------------------------------------


@torch.no_grad()
def score_shards(model: SigLIP, tokenizer: Any, image_size: int, shards: Sequence[str], out_dir: str, device: torch.device,
                 field: str = "alignment_score") -> Dict[str, Any]:
    """Write a copy of each tar shard to ``out_dir`` whose samples' ``json`` gain ``field``: the
    cosine similarity of the image and caption embeddings (None where the image does not decode
    or there is no caption: a ``min_score`` filter then drops the sample, failing closed). The
    members are read and written back by ``prepare``'s rules, as they were.

    A shard that cannot be read whole (truncated, corrupt) is not copied (a copy of the samples
    before the damage would look whole): it is listed in ``damaged`` with the reason. Two inputs
    of one file name, and an ``out_dir`` that holds an input, are refused before anything is
    written; a second run into the same ``out_dir`` fails at once (a lock per folder)."""
    from .._files import folder_lock, refuse_in_place
    from ..prepare import _output_name

    names = [_output_name(s) for s in shards]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"two input shards have the file name {twice[0]!r}: their copies would overwrite each other in "
                         f"{out_dir!r}; score them into separate folders")
    refuse_in_place(shards, out_dir, "score")
    done: Dict[str, Any] = {"shards": [], "samples": 0, "unscored": 0, "field": field, "damaged": []}
    with folder_lock(out_dir, "score"):
        for shard in shards:
            _score_one(model, tokenizer, image_size, shard, out_dir, device, field, done)
    return done


def _score_one(model: SigLIP, tokenizer: Any, image_size: int, shard: str, out_dir: str, device: torch.device,
               field: str, done: Dict[str, Any]) -> None:
    import tarfile
    import time

    from .. import _core
    from .._files import atomic_file
    from ..prepare import _damage, _output_name, parse_members, write_sample

    if _core.is_table_shard(shard):
        return _score_table(model, tokenizer, image_size, shard, out_dir, device, field, done)
    read = _core.TarSamples(shard)
    samples = [(key, list(members)) for key, members in read]
    damage = _damage(read)
    if damage is not None:
        # A copy of what was read would look whole: the shard is not copied, and named.
        done["damaged"].append({"source": shard, "error": damage, "samples_read": len(samples)})
        return
    parsed = [parse_members(members) for _, members in samples]
    scores = _scores(model, tokenizer, image_size, device, [(p.image, p.text) for p in parsed])
    path = os.path.join(out_dir, _output_name(shard))
    now = int(time.time())
    with atomic_file(path) as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as t:
        for (key, members), p, score in zip(samples, parsed, scores):
            write_sample(t, key, members, p.json_ext, {**p.meta, field: score}, now)
    done["shards"].append(path)
    done["samples"] += len(samples)
    done["unscored"] += sum(x is None for x in scores)


def _scores(model: SigLIP, tokenizer: Any, image_size: int, device: torch.device,
            pairs: Sequence[Tuple[Optional[bytes], Optional[str]]]) -> List[Optional[float]]:
    """Each (image bytes, caption) pair's cosine similarity; None where either is unusable."""
    from .. import decode_resize

    scores: List[Optional[float]] = [None] * len(pairs)
    for start in range(0, len(pairs), 64):
        tiles, texts, where = [], [], []
        for i in range(start, min(start + 64, len(pairs))):
            image, text = pairs[i]
            if not image or not isinstance(text, str) or not text.strip():
                continue
            try:
                tiles.append(decode_resize(image, image_size, "center_crop"))
            except ValueError:
                continue
            texts.append(text.strip())
            where.append(i)
        if tiles:
            sims = (_embed_images(model, tiles, device) * _embed_texts(model, tokenizer, texts, device)).sum(dim=1).tolist()
            for i, sim in zip(where, sims):
                scores[i] = round(float(sim), 6)
    return scores


def _score_table(model: SigLIP, tokenizer: Any, image_size: int, shard: str, out_dir: str, device: torch.device,
                 field: str, done: Dict[str, Any]) -> None:
    """:func:`_score_one` for a Parquet shard: a copy with the column `field` set."""
    from ..parquet import CAPTION_COLUMNS, IMAGE_COLUMNS, TableDamage, first_column, rewrite
    from ..prepare import _output_name

    unscored = [0]

    def annotate(table: Any) -> Dict[str, list]:
        image = first_column(table.schema, IMAGE_COLUMNS, binary=True)
        caption = first_column(table.schema, CAPTION_COLUMNS, binary=False)
        images = table.column(image).to_pylist() if image else [None] * table.num_rows
        texts = table.column(caption).to_pylist() if caption else [None] * table.num_rows
        scores = _scores(model, tokenizer, image_size, device, list(zip(images, texts)))
        unscored[0] += sum(x is None for x in scores)
        return {field: scores}

    path = os.path.join(out_dir, _output_name(shard))
    try:
        copied = rewrite(shard, path, annotate, keep_damaged=False)
    except TableDamage as e:
        done["damaged"].append({"source": shard, "error": str(e), "samples_read": None})
        return
    done["shards"].append(path)
    done["samples"] += copied["written"]
    done["unscored"] += unscored[0]


def _metas(shard: str, fields: Sequence[str]) -> Iterator[Dict[str, Any]]:
    """Each sample's metadata (of a Parquet shard: the named columns it has), in shard order."""
    from .. import _core
    from ..prepare import parse_members

    if not _core.is_table_shard(shard):
        for _, members in _core.TarSamples(shard):
            yield parse_members(members).meta
        return
    from ..parquet import row_groups, schema_of

    names = [f for f in dict.fromkeys(fields) if schema_of(shard).get_field_index(f) >= 0]
    for table in row_groups(shard, names):
        yield from table.to_pylist()


def threshold_for(shards: Sequence[str], keep_fraction: float, field: str = "alignment_score") -> float:
    """The score threshold that keeps ``keep_fraction`` of the pairs (of all pairs, counting
    unscored ones, which a ``min_score`` filter drops, as not kept): the ``1 - keep_fraction``
    quantile of the scores, with the unscored pairs below every score."""
    scores = [m.get(field) for s in shards for m in _metas(s, [field])]
    got = sorted(float(x) for x in scores if isinstance(x, (int, float)))
    if not got:
        raise ValueError(f"no pair has a {field!r} score")
    keep = max(1, int(round(keep_fraction * len(scores))))
    if keep > len(got):
        raise ValueError(f"--keep-fraction {keep_fraction} keeps {keep} pairs but only {len(got)} of {len(scores)} have a score")
    return got[len(got) - keep]


def filter_report(shards: Sequence[str], threshold: float, field: str = "alignment_score",
                  group_fields: Sequence[str] = ("language",)) -> Dict[str, Any]:
    """For a threshold, the share of samples kept per value of each group field (the language is
    normalised): what the filter would cost each language or culture, before anyone applies it."""
    from .. import _core

    counts: Dict[str, Dict[str, List[int]]] = {g: {} for g in group_fields}
    for shard in shards:
        for meta in _metas(shard, [field, *group_fields]):
            score = meta.get(field)
            kept = isinstance(score, (int, float)) and score >= threshold
            for g in group_fields:
                value = meta.get(g)
                value = _core.normalize_lang(value) if g in ("language", "lang") and isinstance(value, str) else str(value)
                c = counts[g].setdefault(value, [0, 0])
                c[0] += int(kept)
                c[1] += 1
    return {"threshold": threshold, "field": field,
            "kept_share": {g: {v: round(k / n, 4) for v, (k, n) in sorted(vals.items())} for g, vals in counts.items()}}


# -- relevance maps (the paper's attention figure) ---------------------------------------------


ATTENTION_SATURATION = 4.0  # overlays: full red at 4x the uniform weight, for every image and model


@torch.no_grad()
def attention_map(model: SigLIP, image_size: int, image: bytes, device: torch.device) -> np.ndarray:
    """The MAP head's attention over the patches, ``[grid, grid]``, averaged over its heads: the
    weights themselves (they sum to 1; uniform is ``1 / patches``), not rescaled per image, so
    maps compare across images and models."""
    from .. import decode_resize

    tile = decode_resize(image, image_size, "squash")
    x = to_device_images(torch.from_numpy(tile[None]).permute(0, 3, 1, 2).contiguous(), device)
    w = model.image.attention(x)[0].float().cpu().numpy()
    grid = int(round(len(w) ** 0.5))
    return w.reshape(grid, grid)


def attention_display(w: np.ndarray) -> np.ndarray:
    """Attention weights → [0, 1] for an overlay on one fixed scale (:data:`ATTENTION_SATURATION`)."""
    return np.clip(w * w.size / ATTENTION_SATURATION, 0.0, 1.0)


@torch.no_grad()
def relevance_map(model: SigLIP, tokenizer: Any, image_size: int, image: bytes, text: Optional[str], device: torch.device) -> np.ndarray:
    """Per-patch relevance, ``[grid, grid]`` in [0, 1]: each patch token's (final norm, projection)
    cosine similarity with the caption's embedding (``text``), or with the image's own pooled
    embedding (no text). For the mean-pooled variant, whose patch tokens share the embedding
    space through the projection: a relevance map, not attention (SigLIP models have
    :func:`attention_map`)."""
    from .. import decode_resize

    tile = decode_resize(image, image_size, "squash")
    x = to_device_images(torch.from_numpy(tile[None]).permute(0, 3, 1, 2).contiguous(), device)
    tower = model.image
    tokens = tower.patch(x).flatten(2).transpose(1, 2) + tower.pos
    feats = F.normalize(tower.proj(tower.norm(tower.encoder(tokens))), dim=-1)[0]  # [patches, D]
    target = _embed_texts(model, tokenizer, [text], device)[0] if text else F.normalize(feats.mean(0), dim=-1)
    rel = (feats.float() @ target.float()).cpu().numpy()
    grid = int(round(len(rel) ** 0.5))
    rel = rel.reshape(grid, grid)
    lo, hi = float(rel.min()), float(rel.max())
    return (rel - lo) / (hi - lo) if hi > lo else np.zeros_like(rel)


def overlay(image: bytes, rel: np.ndarray, path: str) -> None:
    """The image with the relevance map over it in red (brighter: more relevant), as PNG."""
    from PIL import Image

    img = Image.open(io.BytesIO(image)).convert("RGB")
    heat = Image.fromarray((rel * 255).astype(np.uint8), "L").resize(img.size, Image.Resampling.BILINEAR)
    red = Image.new("RGB", img.size, (255, 30, 30))
    alpha = heat.point(lambda v: int(v * 0.6))
    Image.composite(red, img, alpha).save(path)
