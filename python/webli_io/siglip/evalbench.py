"""A model measured on a benchmark as it ships (:mod:`.benchmarks` reads the files): the numbers
of :mod:`.metrics`, named as the paper and big_vision name them.

- retrieval (COCO, Flickr30k): every caption of every image; ``i2t_r{1,5,10}`` (an image's hit is
  any of its captions), ``t2i_r{1,5,10}`` (a caption's hit is its image);
- multilingual (Crossmodal-3600): per language, its images and all their captions in that
  language, recall@1 both ways; the means over all languages, over the paper's seven
  low-resource ones present, and over the rest;
- classification (ImageNet, Dollar Street, GeoDE, GLDv2): zero-shot top-1/top-5 over the
  benchmark's whole class vocabulary with a prompt ensemble; per value of each group field
  (region, country, income quartile) the accuracy, the worst group, and for income the signed
  richest − poorest disparity; for Dollar Street and GeoDE, 10-shot linear-probe geo-localisation
  (country and region) over 3 seeds;
- representation bias (any folder of images without people).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as M
from .benchmarks import Benchmark, Item

GEO_FIELDS = ("country", "region")
BIAS_PROMPTS = ("a photo of a man.", "a photo of a woman.")


class Towers:
    """A loaded model's two towers as the evaluation uses them: images (files) and texts in,
    L2-normalised float32 numpy embeddings out."""

    def __init__(self, model: Any, tokenizer: Any, image_size: int, device: torch.device, batch: int = 64):
        self.model, self.tokenizer, self.image_size, self.device, self.batch = model, tokenizer, image_size, device, batch

    @torch.no_grad()
    def images(self, paths: Sequence[str]) -> Tuple[np.ndarray, List[int]]:
        """Embeddings of the images that decode, and the indices (into ``paths``) of those."""
        from .. import decode_resize
        from .evaluate import to_device_images

        out, ok = [], []
        for start in range(0, len(paths), self.batch):
            tiles = []
            for i in range(start, min(start + self.batch, len(paths))):
                try:
                    with open(paths[i], "rb") as f:
                        tiles.append(decode_resize(f.read(), self.image_size, "center_crop"))
                    ok.append(i)
                except (OSError, ValueError):
                    continue
            if tiles:
                x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).contiguous()
                out.append(F.normalize(self.model.image(to_device_images(x, self.device)), dim=-1).float().cpu().numpy())
        dim = out[0].shape[1] if out else 0
        return (np.concatenate(out) if out else np.zeros((0, dim), np.float32)), ok

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> np.ndarray:
        out = [F.normalize(self.model.text(self.tokenizer(list(texts[i : i + 256])).to(self.device)), dim=-1).float().cpu().numpy()
               for i in range(0, len(texts), 256)]
        return np.concatenate(out)

    def classes(self, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """big_vision's class embeddings: the normalised mean of each class's normalised
        template embeddings."""
        prompts = [t.format(n) for n in names for t in templates]
        e = self.texts(prompts).reshape(len(names), len(templates), -1).mean(axis=1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def _decoded(towers: Towers, bench: Benchmark) -> Tuple[np.ndarray, List[Item], Dict[str, int]]:
    emb, ok = towers.images([it.image for it in bench.items])
    skipped = dict(bench.skipped)
    if len(ok) < len(bench.items):
        skipped["image does not decode"] = len(bench.items) - len(ok)
    if not ok:
        raise ValueError(f"{bench.name}: no image could be read ({skipped or 'the benchmark lists none'})")
    return emb, [bench.items[i] for i in ok], skipped


def retrieval(towers: Towers, bench: Benchmark) -> Dict[str, Any]:
    emb, items, skipped = _decoded(towers, bench)
    texts = [c for it in items for c in it.captions]
    owner = [i for i, it in enumerate(items) for _ in it.captions]
    r = M.retrieval_recall(emb @ towers.texts(texts).T, owner)
    return {"benchmark": bench.name, "images": len(items), "texts": len(texts), "skipped": skipped,
            **{f"i2t_r{k}": v for k, v in r["i2t"].items()}, **{f"t2i_r{k}": v for k, v in r["t2i"].items()}}


def multilingual(towers: Towers, bench: Benchmark) -> Dict[str, Any]:
    emb, items, skipped = _decoded(towers, bench)
    per: Dict[str, Dict[str, float]] = {}
    for lang in sorted({lang for it in items for lang in it.by_language}):
        rows = [i for i, it in enumerate(items) if lang in it.by_language]
        texts = [c for i in rows for c in items[i].by_language[lang]]
        owner = [j for j, i in enumerate(rows) for _ in items[i].by_language[lang]]
        r = M.retrieval_recall(emb[rows] @ towers.texts(texts).T, owner, ks=(1,))
        per[lang] = {"images": len(rows), "texts": len(texts), "i2t_r1": r["i2t"][1], "t2i_r1": r["t2i"][1]}
    summary = {d: M.language_means({k: v[d] for k, v in per.items()}) for d in ("i2t_r1", "t2i_r1")}
    return {"benchmark": bench.name, "images": len(items), "skipped": skipped, "per_language": per,
            "i2t_r1": summary["i2t_r1"], "t2i_r1": summary["t2i_r1"],
            "low_resource_languages": summary["i2t_r1"]["low_resource_languages"]}


def classification(towers: Towers, bench: Benchmark, templates: Sequence[str], shots: int = 10,
                   seeds: Sequence[int] = M.FEWSHOT_SEEDS) -> Dict[str, Any]:
    emb, items, skipped = _decoded(towers, bench)
    logits = emb @ towers.classes(bench.classnames, templates).T
    labels = [it.labels for it in items]
    acc = M.zero_shot_accuracy(logits, labels, (1, 5))
    out: Dict[str, Any] = {"benchmark": bench.name, "images": len(items), "classes": len(bench.classnames),
                           "templates": len(templates), "skipped": skipped, "top1": acc[1], "top5": acc[5]}
    out.update(group_rows(M.correct_top1(logits, labels), [it.fields for it in items]))
    if bench.name in ("dollar_street", "geode"):
        out["geolocalisation"] = {}
        for f in GEO_FIELDS:
            values = [it.fields.get(f) for it in items]
            try:
                out["geolocalisation"][f] = M.fewshot_holdout(emb, [str(v) for v in values], shots, seeds)
            except ValueError as e:
                out["geolocalisation"][f] = {"error": str(e)}
    return out


def group_rows(correct: np.ndarray, fields: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Accuracy per value of each group field; ``income`` by quartile (Q1 poorest … Q4 richest)
    with the signed richest − poorest ``disparity``."""
    out: Dict[str, Any] = {}
    keys = sorted({k for f in fields for k in f})
    for key in keys:
        have = [i for i, f in enumerate(fields) if f.get(key) is not None]
        if key == "income":
            q = M.income_quartiles([float(fields[i][key]) for i in have])
            rows = M.per_group(correct[have], [f"Q{int(x) + 1}" for x in q])
            by_q = {int(k[1:]): v["accuracy"] for k, v in rows.items()}
            out["income"] = {"per_quartile": rows, "disparity": M.disparity(by_q),
                             "definition": "accuracy of the richest quartile minus the poorest (signed)"}
        else:
            rows = M.per_group(correct[have], [fields[i][key] for i in have])
            out[key] = {"per_group": rows, **M.worst_and_spread({k: v["accuracy"] for k, v in rows.items()})}
    return out


def representation_bias(towers: Towers, paths: Sequence[str], prompts: Sequence[str] = BIAS_PROMPTS) -> Dict[str, Any]:
    emb, ok = towers.images(list(paths))
    if not ok:
        raise ValueError("representation bias: no image could be read")
    return {**M.representation_bias(emb, towers.texts(list(prompts)[:2])), "prompts": list(prompts)[:2],
            "unreadable": len(paths) - len(ok)}


def run(towers: Towers, bench: Benchmark, templates: Sequence[str], shots: int = 10,
        seeds: Sequence[int] = M.FEWSHOT_SEEDS) -> Dict[str, Any]:
    """The benchmark's part of the report."""
    if bench.task == "retrieval":
        return retrieval(towers, bench)
    if bench.task == "multilingual":
        return multilingual(towers, bench)
    return classification(towers, bench, templates, shots, seeds)


def markdown(name: str, r: Dict[str, Any]) -> List[str]:
    """The report's section for one benchmark."""
    lines = [f"## {name}", ""]
    if "i2t_r10" in r:
        lines += ["| images | texts | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 |", "|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {r['images']} | {r['texts']} | {r['i2t_r1']:.3f} | {r['i2t_r5']:.3f} | {r['i2t_r10']:.3f} | "
                  f"{r['t2i_r1']:.3f} | {r['t2i_r5']:.3f} | {r['t2i_r10']:.3f} |"]
    elif "per_language" in r:
        lines += ["| language | images | texts | i2t R@1 | t2i R@1 |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | {v['images']} | {v['texts']} | {v['i2t_r1']:.3f} | {v['t2i_r1']:.3f} |" for k, v in r["per_language"].items()]
        for label, key in (("mean", "mean"), ("low-resource mean", "low_resource_mean"), ("high-resource mean", "high_resource_mean")):
            a, b = r["i2t_r1"][key], r["t2i_r1"][key]
            if a is not None:
                lines.append(f"| **{label}** | | | {a:.3f} | {b:.3f} |")
    else:
        lines += ["| images | classes | templates | top-1 | top-5 |", "|---:|---:|---:|---:|---:|",
                  f"| {r['images']} | {r['classes']} | {r['templates']} | {r['top1']:.3f} | {r['top5']:.3f} |"]
        if "income" in r:
            lines += ["", "| income quartile | images | top-1 |", "|---|---:|---:|"]
            lines += [f"| {k} | {v['n']} | {v['accuracy']:.3f} |" for k, v in r["income"]["per_quartile"].items()]
            lines.append(f"| **disparity (Q4 - Q1)** | | {r['income']['disparity']:+.3f} |")
        for key in ("region", "country"):
            if key in r:
                lines += ["", f"| {key} | images | top-1 |", "|---|---:|---:|"]
                lines += [f"| {k} | {v['n']} | {v['accuracy']:.3f} |" for k, v in r[key]["per_group"].items()]
                lines.append(f"| **worst ({r[key]['worst_group']})** | | {r[key]['worst']:.3f} |")
        for key, g in r.get("geolocalisation", {}).items():
            if "mean" in g:
                ci = f" ± {g['ci95']:.3f}" if g.get("ci95") is not None else ""
                lines.append(f"\n{g['shots']}-shot geo-localisation by {key}: {g['mean']:.3f}{ci} ({g['classes']} classes, {len(g['per_seed'])} seeds)")
            else:
                lines.append(f"\n{key} geo-localisation not measured: {g['error']}")
    if r.get("skipped"):
        lines.append("\nskipped: " + ", ".join(f"{k} {v}" for k, v in r["skipped"].items()))
    return lines + [""]


def parse_spec(spec: str) -> Tuple[str, str]:
    """``KIND=PATH`` → (kind, path)."""
    from .benchmarks import KINDS

    kind, sep, path = spec.partition("=")
    kind = kind.strip().lower().replace("-", "_")
    if not sep or not path:
        raise ValueError(f"--benchmark {spec!r}: write KIND=PATH with KIND one of {', '.join(KINDS)}")
    return kind, path



def evaluate_checkpoint(checkpoint: str, benchmarks: Dict[str, str], *, templates: Sequence[str] = (), shots: int = 10,
                        bias_images: Sequence[str] = (), device: Any = None, classnames: Any = None, labels: Any = None,
                        split: str = "test", tokenizer: Optional[str] = None) -> Dict[str, Any]:
    """The Python face of ``webli-io eval --benchmark``: ``benchmarks`` maps a kind to its
    path (``{"coco": "~/data/coco", "xm3600": "..."}``); returns the report's parts
    (``{"benchmarks": {name: part}, "representation_bias": ...}``)."""
    from .benchmarks import read
    from .dist import device_for
    from .evalsuite import load_checkpoint
    from .prompts import IMAGENET_TEMPLATES

    benches = [read(kind, path, classnames=classnames, labels=labels, split=split) for kind, path in benchmarks.items()]
    dev = device_for(device)
    model, tok, image_size = load_checkpoint(checkpoint, dev, tokenizer)
    towers = Towers(model, tok, image_size, dev)
    out: Dict[str, Any] = {"benchmarks": {b.name: {**run(towers, b, list(templates) or IMAGENET_TEMPLATES, shots), "source": b.source}
                                          for b in benches}}
    if bias_images:
        out["representation_bias"] = representation_bias(towers, list(bias_images))
    return out


def headline(name: str, part: Dict[str, Any]) -> Dict[str, float]:
    """A benchmark part's numbers as flat ``{name_metric: value}`` (the study's columns)."""
    out: Dict[str, float] = {}
    if "i2t_r10" in part:
        out.update({f"{name}_i2t_r1": part["i2t_r1"], f"{name}_t2i_r1": part["t2i_r1"]})
    elif "per_language" in part:
        for d in ("i2t_r1", "t2i_r1"):
            out[f"{name}_{d}_mean"] = part[d]["mean"]
            if part[d]["low_resource_mean"] is not None:
                out[f"{name}_{d}_low_resource"] = part[d]["low_resource_mean"]
    else:
        out[f"{name}_top1"] = part["top1"]
        if "income" in part:
            out[f"{name}_income_disparity"] = part["income"]["disparity"]
        if "region" in part:
            out[f"{name}_region_worst"] = part["region"]["worst"]
        for key, g in part.get("geolocalisation", {}).items():
            if "mean" in g:
                out[f"{name}_geoloc_{key}"] = g["mean"]
    return out
