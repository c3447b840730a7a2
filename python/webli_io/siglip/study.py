"""``webli-io study``: the paper's grid at the user's scale. Nested subsets x quality filter off/on
x language rebalancing off/on, each trained with the same budget (steps, batch, seed) and
evaluated on the same parts (any of: classification, retrieval, multilingual retrieval,
subgroups); one table (``study.md``, ``study.json``) and one chart.

What the paper found at 1B → 10B → 100B pairs — little change on Western benchmarks, gains in
multilinguality and cultural diversity; a CLIP-style filter helping the former and hurting the
latter; rebalancing lifting low-resource languages — becomes a question a user can ask of their
own data, at whatever scale their machines afford.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch


def run_study(shards: Sequence[str], out: str, *, subsets: Sequence[float], filter_field: Optional[str], filter_min: Optional[float],
              mixture: Optional[str], manifest: Optional[str], train_argv: Sequence[str], evals: Dict[str, Any],
              log: Callable[..., None] = print) -> Dict[str, Any]:
    from ..train_args import add_arguments
    from .evalsuite import DEFAULT_TEMPLATES, bar_chart, classify_folder, load_checkpoint, multilingual, retrieval, subgroups
    from .loop import train

    filters = [False] + ([True] if filter_field else [])
    mixtures = [False] + ([True] if mixture else [])
    rows: List[Dict[str, Any]] = []
    for subset, filtered, rebalanced in itertools.product(subsets, filters, mixtures):
        name = f"subset {subset:g}" + (f", {filter_field} >= {filter_min:g}" if filtered else "") + (f", mixture {mixture}" if rebalanced else "")
        run_dir = os.path.join(out, f"s{subset:g}-f{int(filtered)}-m{int(rebalanced)}")
        p = argparse.ArgumentParser()
        add_arguments(p)
        args = p.parse_args([*shards, "--out", run_dir, "--no-eval", *train_argv])
        # Settings of the stream, by their names (options_from reads them off the namespace).
        args.subset = subset if subset < 1 else None
        args.min_score = {filter_field: filter_min} if filtered else None
        args.mixture = mixture if rebalanced else None
        args.manifest = manifest if rebalanced else None
        log(f"== {name}")
        result = train(args, log=lambda *a: None)
        row: Dict[str, Any] = {"config": name, "subset": subset, "filter": filtered, "mixture": rebalanced,
                               "steps": result["steps"], "last_loss": result["last_loss"]}
        model, tokenizer, size = load_checkpoint(result["checkpoint"], torch.device("cpu"))
        with torch.no_grad():
            if evals.get("retrieval"):
                r = retrieval(model, tokenizer, size, evals["retrieval"], torch.device("cpu"))
                row["retrieval_i2t_r1"], row["retrieval_t2i_r1"] = r["i2t_r1"], r["t2i_r1"]
            if evals.get("multilingual"):
                m = multilingual(model, tokenizer, size, evals["multilingual"], torch.device("cpu"))
                row["multilingual_mean_r1"], row["multilingual_worst_r1"] = m["mean"], m["worst"]
            templates = evals.get("templates") or DEFAULT_TEMPLATES
            if evals.get("classify"):
                c = classify_folder(model, tokenizer, size, evals["classify"], evals.get("classnames"), templates, torch.device("cpu"))
                row["classify_top1"] = c["top1"]
            if evals.get("groups"):
                g = subgroups(model, tokenizer, size, evals["groups"], evals.get("group_field", "region"),
                              evals.get("label_field", "label"), templates, torch.device("cpu"))
                row["groups_worst"], row["groups_spread"] = g["worst"], g["spread"]
        log("   " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float) and k != "subset"))
        rows.append(row)
    os.makedirs(out, exist_ok=True)
    study = {"shards": len(shards), "train": list(train_argv), "rows": rows}
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(study, f, indent=2)
    metrics = [k for k in rows[0] if isinstance(rows[0][k], float) and k != "subset"]
    lines = ["# Study", "", "| config | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    lines += ["| " + r["config"] + " | " + " | ".join(f"{r[m]:.3f}" for m in metrics) + " |" for r in rows]
    chart_metric = next((m for m in ("multilingual_mean_r1", "retrieval_i2t_r1") if m in rows[0]), None)
    if chart_metric:
        bar_chart({r["config"]: r[chart_metric] for r in rows}, chart_metric, os.path.join(out, "study.png"))
        lines += ["", f"![{chart_metric}](study.png)"]
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return study
