"""The evaluation's numbers, as the paper's references define them; pure functions on embeddings,
scores and labels (no model, no files), each tested against hand-computed values.

- :func:`retrieval_recall`: big_vision's ``image_text_retrieval`` (several texts per image:
  image→text is a hit when *any* of its texts is in the top k; text→image when its image is).
- :func:`zero_shot_accuracy`: big_vision's ``discriminative_classifier`` over a fixed class
  vocabulary; a sample with several correct labels (Dollar Street's topics) is right when the
  top prediction is any of them, as in Pouget et al., "No Filter" (arXiv 2405.13777).
- :func:`income_quartiles`, :func:`disparity`: No Filter's income groups and the signed
  richest − poorest accuracy difference.
- :func:`fewshot_lsr`: big_vision's ``fewshot_lsr`` (closed-form L2-regularised least squares on
  standardised features, a bias column of 100, ±1 targets, ``l2_reg = 2**10``, seeds 0..2),
  used for 10-shot geo-localisation (country, region).
- :func:`representation_bias`: Alabdulmohsin et al., "CLIP the Bias" (arXiv 2403.04547).
- :func:`language_means`: the paper's low-resource languages vs the rest.
- :func:`mean_interval`: a mean over seeds with a Student-t 95% interval.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Set, Union

import numpy as np

RECALL_KS = (1, 5, 10)
# The paper's low-resource languages (WebLI-100B §3: bn, fil, hi, he, mi, sw, te), as
# Crossmodal-3600 names them (its Filipino is ``fil``, its Hebrew ``he``).
LOW_RESOURCE = ("bn", "fil", "hi", "he", "mi", "sw", "te")
FEWSHOT_L2_REG = 2.0**10
FEWSHOT_BIAS = 100.0
FEWSHOT_SEEDS = (0, 1, 2)


def retrieval_recall(sim: np.ndarray, text_image: Sequence[int], ks: Sequence[int] = RECALL_KS,
                     texts: Optional[Sequence[str]] = None) -> Dict[str, Dict[int, float]]:
    """Recall@k both ways from ``sim`` ``[images, texts]`` (higher: closer) and ``text_image``,
    the image index of each text (many texts may name one image), as big_vision's
    ``image_text_retrieval`` computes it: ``{"i2t": {k: r}, "t2i": {k: r}}``. Ties rank the
    earlier index first (a stable sort).

    With ``texts`` (the strings), identical captions are one answer: an image's hit is any text
    equal to one of its captions, a caption's hit any image that has it. That is for shards
    whose images share captions (the sample data's classes); the benchmarks are scored without
    it, as big_vision scores them."""
    sim = np.asarray(sim, dtype=np.float64)
    owner = np.asarray(text_image)
    if sim.ndim != 2 or sim.shape[1] != len(owner):
        raise ValueError(f"sim is {sim.shape} but text_image names {len(owner)} texts")
    n_img = sim.shape[0]
    per_image = np.argsort(-sim, axis=1, kind="stable")  # [images, texts]
    per_text = np.argsort(-sim, axis=0, kind="stable")  # [images, texts]
    if texts is None:
        i2t = {k: float((owner[per_image[:, :k]] == np.arange(n_img)[:, None]).any(axis=1).mean()) for k in ks}
        t2i = {k: float((per_text[:k, :] == owner[None]).any(axis=0).mean()) for k in ks}
        return {"i2t": i2t, "t2i": t2i}
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    tid = np.array([ids[t] for t in texts])
    has = np.zeros((n_img, len(ids)), dtype=bool)  # image i has a caption equal to string s
    has[owner, tid] = True
    i2t = {k: float(np.mean([has[i, tid[per_image[i, :k]]].any() for i in range(n_img)])) for k in ks}
    t2i = {k: float(np.mean([has[per_text[:k, j], tid[j]].any() for j in range(len(tid))])) for k in ks}
    return {"i2t": i2t, "t2i": t2i}


def zero_shot_accuracy(logits: np.ndarray, labels: Sequence[Any], ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    """Top-k accuracy over a fixed vocabulary (the columns of ``logits``). Each label is a class
    index or a set of them (any is right)."""
    logits = np.asarray(logits, dtype=np.float64)
    sets = [_as_set(y) for y in labels]
    top = np.argsort(-logits, axis=1, kind="stable")[:, : max(ks)]
    return {k: float(np.mean([bool(sets[i] & set(top[i, :k].tolist())) for i in range(len(sets))])) for k in ks}


def correct_top1(logits: np.ndarray, labels: Sequence[Any]) -> np.ndarray:
    """Per sample: is the top prediction one of its labels (bool array)."""
    top = np.argmax(np.asarray(logits), axis=1)
    return np.array([int(t) in _as_set(y) for t, y in zip(top, labels)], dtype=bool)


def _as_set(y: Any) -> Set[int]:
    return {int(v) for v in y} if isinstance(y, (set, frozenset, list, tuple)) else {int(y)}


def income_quartiles(incomes: Sequence[float]) -> np.ndarray:
    """Each income's quartile 0 (poorest) … 3 (richest), by the quartiles of the incomes given
    (the evaluated images' own distribution, as No Filter bins Dollar Street). An income equal to
    a boundary falls in the lower bin."""
    x = np.asarray(incomes, dtype=np.float64)
    edges = np.quantile(x, [0.25, 0.5, 0.75])
    return np.searchsorted(edges, x, side="left")


def per_group(correct: Union[Sequence[bool], np.ndarray], groups: Sequence[Any]) -> Dict[str, Dict[str, float]]:
    """Accuracy and count per group value: ``{group: {"accuracy": a, "n": n}}`` (sorted)."""
    c = np.asarray(correct, dtype=np.float64)
    out: Dict[str, Dict[str, float]] = {}
    for g in sorted({str(g) for g in groups}):
        idx = [i for i, x in enumerate(groups) if str(x) == g]
        out[g] = {"accuracy": float(c[idx].mean()), "n": len(idx)}
    return out


def disparity(by_quartile: Dict[int, float]) -> float:
    """Richest − poorest quartile's accuracy, signed (negative: the model serves the poorest
    households better)."""
    return float(by_quartile[max(by_quartile)] - by_quartile[min(by_quartile)])


def worst_and_spread(values: Dict[str, float]) -> Dict[str, Any]:
    """The worst group and the best − worst spread (unsigned, by construction)."""
    worst = min(values, key=values.__getitem__)
    best = max(values, key=values.__getitem__)
    return {"worst_group": worst, "worst": values[worst], "best_group": best, "spread": values[best] - values[worst]}


def fewshot_indices(labels: Union[Sequence[int], np.ndarray], shots: int, seed: int, num_classes: int) -> np.ndarray:
    """big_vision's draw of the few-shot training set: per class, the first ``shots`` of a
    ``np.random.default_rng(seed).permutation`` of that class's indices, classes in order."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.where(y == c)[0])[:shots] for c in range(num_classes)]).astype(int)


def lsr_accuracy(train_x: np.ndarray, train_y: Sequence[int], test_x: np.ndarray, test_y: Sequence[int], num_classes: int,
                 l2_reg: float = FEWSHOT_L2_REG) -> float:
    """big_vision's few-shot linear probe: features standardised by the training mean and std
    (+1e-5), a constant column of 100 for the bias, one-vs-all targets ±1, ridge regression
    solved through an eigendecomposition; the test accuracy of the arg-max."""
    x = np.asarray(train_x, dtype=np.float64)
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True) + 1e-5
    x = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=FEWSHOT_BIAS)
    targets = 2.0 * np.eye(num_classes)[np.asarray(train_y)] - 1.0
    if x.shape[0] >= x.shape[1]:
        eigs, q = np.linalg.eigh(x.T @ x)
        rhs, lhs = q.T @ (x.T @ targets), q
    else:
        eigs, q = np.linalg.eigh(x @ x.T)
        rhs, lhs = q.T @ targets, x.T @ q
    w = (lhs / (eigs + l2_reg)[None, :]) @ rhs
    xt = np.pad((np.asarray(test_x, dtype=np.float64) - mean) / std, ((0, 0), (0, 1)), constant_values=FEWSHOT_BIAS)
    return float(np.mean(np.argmax(xt @ w, axis=1) == np.asarray(test_y)))


def fewshot_lsr(train_x: np.ndarray, train_y: Sequence[int], test_x: np.ndarray, test_y: Sequence[int], shots: int,
                seed: int, num_classes: int, l2_reg: float = FEWSHOT_L2_REG) -> float:
    """One seed of big_vision's ``fewshot_lsr`` evaluator: draw ``shots`` per class from the
    training split (:func:`fewshot_indices`), fit, score on the test split."""
    idx = fewshot_indices(train_y, shots, seed, num_classes)
    return lsr_accuracy(np.asarray(train_x)[idx], np.asarray(train_y)[idx], test_x, test_y, num_classes, l2_reg)


def fewshot_holdout(x: np.ndarray, labels: Sequence[Any], shots: int = 10, seeds: Sequence[int] = FEWSHOT_SEEDS,
                    l2_reg: float = FEWSHOT_L2_REG) -> Dict[str, Any]:
    """Few-shot geo-localisation on one labelled set (Dollar Street, GeoDE have no training
    split): per seed, ``shots`` images per class drawn as :func:`fewshot_indices` draws them
    train the probe and every other image tests it. Classes with no more than ``shots`` images
    are left out (no test image would remain), and named."""
    values = sorted({str(v) for v in labels})
    counts = {v: sum(str(y) == v for y in labels) for v in values}
    kept = [v for v in values if counts[v] > shots]
    if len(kept) < 2:
        raise ValueError(f"{shots}-shot probe needs two classes with more than {shots} images; counts {counts}")
    index = {v: i for i, v in enumerate(kept)}
    rows = [i for i, y in enumerate(labels) if str(y) in index]
    xs, ys = np.asarray(x)[rows], np.array([index[str(labels[i])] for i in rows])
    accs = []
    for seed in seeds:
        train = fewshot_indices(ys, shots, seed, len(kept))
        test = np.setdiff1d(np.arange(len(ys)), train)
        accs.append(lsr_accuracy(xs[train], ys[train], xs[test], ys[test], len(kept), l2_reg))
    return {"shots": shots, "classes": len(kept), "left_out": sorted(set(values) - set(kept)),
            "per_seed": accs, **mean_interval(accs)}


def representation_bias(image_emb: np.ndarray, text_emb: np.ndarray) -> Dict[str, float]:
    """Representation bias as in "CLIP the Bias" (arXiv 2403.04547): over images that show no
    person, the share the model assigns to the first of two gendered prompts (``text_emb[0]``,
    e.g. "a photo of a man") rather than the second (``text_emb[1]``, "a photo of a woman"):
    ``male_share``; ``bias`` = male_share − 0.5 (signed; 0 is no preference, ±0.5 the most)."""
    sims = np.asarray(image_emb, dtype=np.float64) @ np.asarray(text_emb, dtype=np.float64)[:2].T
    share = float(np.mean(sims[:, 0] > sims[:, 1]))
    return {"images": int(sims.shape[0]), "male_share": share, "bias": share - 0.5}


def language_means(per_language: Dict[str, float], low: Sequence[str] = LOW_RESOURCE) -> Dict[str, Any]:
    """The mean over all languages, over the paper's low-resource ones present, and over the
    rest (None where a side has no language)."""
    lows = [v for k, v in per_language.items() if k in low]
    highs = [v for k, v in per_language.items() if k not in low]
    return {"mean": float(np.mean(list(per_language.values()))) if per_language else None,
            "low_resource_mean": float(np.mean(lows)) if lows else None,
            "high_resource_mean": float(np.mean(highs)) if highs else None,
            "low_resource_languages": sorted(k for k in per_language if k in low)}


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (scipy.stats.t.ppf).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_interval(values: Sequence[float]) -> Dict[str, Any]:
    """Mean of ``values`` (one per seed) and the half-width of its 95% Student-t interval (None
    for a single value)."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_interval of no values")
    m = sum(v) / len(v)
    if len(v) < 2:
        return {"mean": m, "ci95": None, "n": 1}
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    t = _T975[min(len(v) - 1, len(_T975)) - 1] if len(v) - 1 <= len(_T975) else 1.960
    return {"mean": m, "ci95": t * sd / math.sqrt(len(v)), "n": len(v)}


def mean_of(rows: List[Dict[str, Any]], key: str) -> Dict[str, Any]:
    """:func:`mean_interval` of one numeric key over rows that have it."""
    return mean_interval([r[key] for r in rows if isinstance(r.get(key), (int, float))])
