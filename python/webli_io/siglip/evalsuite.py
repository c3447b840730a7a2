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

Beside it: :mod:`.score` (``webli-io score``: each pair's alignment as a metadata field for
``min_score``, and what a threshold keeps), :mod:`.attention` (``webli-io attention``), and
:mod:`.evalbench` (the benchmarks as they ship, ``--benchmark``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
    (model in eval mode, its tokenizer, its image size), or any OpenCLIP model
    (``openclip:ARCH:WEIGHTS``, :mod:`.openclip_towers`). ``tokenizer`` overrides the
    checkpoint's; released weights need it (``siglip:PATH/spiece.model``)."""
    from .convert import load_any
    from .openclip_towers import PREFIX, load

    if path.startswith(PREFIX):
        return load(path, device)  # type: ignore[return-value]  # the same two towers, OpenCLIP's
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
