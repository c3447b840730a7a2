"""``webli-io study``: the paper's grid at the user's scale. Nested subsets x quality filter off/on
x language rebalancing off/on, each trained with the same budget (steps, batch, the trainer's
settings) once per seed and evaluated on the same parts (the benchmarks as they ship, and any of
classification, retrieval, multilingual retrieval, subgroups on shards); one table with the mean
and a 95% interval over the seeds (``study.md``), every run's numbers and the per-language and
per-group rows (``study.json``), and one chart.

What the paper found at 1B → 10B → 100B pairs — little change on Western benchmarks, gains in
multilinguality and cultural diversity; a CLIP-style filter helping the former and hurting the
latter; rebalancing lifting low-resource languages — becomes a question a user can ask of their
own data, at whatever scale their machines afford.

Under a launcher (``torchrun``: every rank runs the command), each cell trains across the ranks
in one process group and rank 0 evaluates the whole held-out data; the other ranks wait for it.
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
              log: Callable[..., None] = print, seeds: Sequence[int] = (0,)) -> Dict[str, Any]:
    from ..train_args import add_arguments
    from . import dist as d
    from .loop import train

    p = argparse.ArgumentParser()
    add_arguments(p)
    device = d.device_for(p.parse_args([*shards, *train_argv]).device)
    rank, world, owned = d.setup(device)  # one group for every cell (train joins it, never re-creates it)
    say = log if rank == 0 else (lambda *a: None)
    filters = [False] + ([True] if filter_field else [])
    mixtures = [False] + ([True] if mixture else [])
    rows: List[Dict[str, Any]] = []
    try:
        for subset, filtered, rebalanced in itertools.product(subsets, filters, mixtures):
            name = f"subset {subset:g}" + (f", {filter_field} >= {filter_min:g}" if filtered else "") + (f", mixture {mixture}" if rebalanced else "")
            for seed in seeds:
                run_dir = os.path.join(out, f"s{subset:g}-f{int(filtered)}-m{int(rebalanced)}" + (f"-seed{seed}" if len(seeds) > 1 else ""))
                args = p.parse_args([*shards, "--out", run_dir, "--no-eval", *train_argv, "--seed", str(seed)])
                # Settings of the stream, by their names (options_from reads them off the namespace).
                args.subset = subset if subset < 1 else None
                args.min_score = {filter_field: filter_min} if filtered else None
                args.mixture = mixture if rebalanced else None
                args.manifest = manifest if rebalanced else None
                say(f"== {name}, seed {seed}")
                result = train(args, log=lambda *a: None)
                row: Dict[str, Any] = {"config": name, "subset": subset, "filter": filtered, "mixture": rebalanced, "seed": seed,
                                       "steps": result["steps"], "last_loss": result["last_loss"]}
                if rank == 0:
                    row.update(evaluate_cell(os.path.join(run_dir, "checkpoint.pt"), evals, device))
                    say("   " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float) and k != "subset"))
                rows.append(row)
                d.barrier(world)
        study = summarise(rows, shards, train_argv, seeds)
        if rank == 0:
            write(study, out)
        return study
    finally:
        d.teardown(owned)


def evaluate_cell(checkpoint: str, evals: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """One trained cell's numbers (flat floats, plus the per-language and per-group rows)."""
    from .benchmarks import read
    from .evalbench import Towers, headline, run
    from .evalsuite import DEFAULT_TEMPLATES, classify_folder, load_checkpoint, multilingual, retrieval, subgroups
    from .prompts import IMAGENET_TEMPLATES

    model, tok, size = load_checkpoint(checkpoint, device)
    row: Dict[str, Any] = {}
    with torch.no_grad():
        if evals.get("retrieval"):
            r = retrieval(model, tok, size, evals["retrieval"], device)
            row["retrieval_i2t_r1"], row["retrieval_t2i_r1"] = r["i2t_r1"], r["t2i_r1"]
        if evals.get("multilingual"):
            m = multilingual(model, tok, size, evals["multilingual"], device)
            row["multilingual_mean_r1"], row["multilingual_worst_r1"] = m["mean"], m["worst"]
            if m.get("low_resource_mean") is not None:
                row["multilingual_low_resource_r1"] = m["low_resource_mean"]
            row["per_language"] = m["recall_at_1"]
        templates = evals.get("templates") or DEFAULT_TEMPLATES
        if evals.get("classify"):
            c = classify_folder(model, tok, size, evals["classify"], evals.get("classnames"), templates, device)
            row["classify_top1"] = c["top1"]
        if evals.get("groups"):
            g = subgroups(model, tok, size, evals["groups"], evals.get("group_field", "region"), evals.get("label_field", "label"),
                          templates, device)
            row["groups_worst"], row["groups_spread"] = g["worst"], g["spread"]
            if "disparity" in g:
                row["groups_disparity"] = g["disparity"]
            row["per_group"] = g["per_group"]
        for kind, path in evals.get("benchmarks") or []:
            bench = read(kind, path)
            row.update(headline(bench.name, run(Towers(model, tok, size, device), bench, IMAGENET_TEMPLATES)))
    return row


def summarise(rows: List[Dict[str, Any]], shards: Sequence[str], train_argv: Sequence[str], seeds: Sequence[int]) -> Dict[str, Any]:
    """Per cell, each metric's mean and 95% interval over the seeds, and the mean per-language
    and per-group rows."""
    from .metrics import mean_interval

    cells: List[Dict[str, Any]] = []
    for name in dict.fromkeys(r["config"] for r in rows):
        runs = [r for r in rows if r["config"] == name]
        metrics = [k for k in runs[0] if isinstance(runs[0][k], float) and k not in ("subset",)]
        cell: Dict[str, Any] = {"config": name, **{k: runs[0][k] for k in ("subset", "filter", "mixture", "steps")},
                                "seeds": [r["seed"] for r in runs]}
        cell["metrics"] = {m: mean_interval([r[m] for r in runs if isinstance(r.get(m), float)]) for m in metrics
                           if any(isinstance(r.get(m), float) for r in runs)}
        for key in ("per_language", "per_group"):
            if key in runs[0]:
                cell[key] = {k: sum(r[key][k] for r in runs) / len(runs) for k in runs[0][key]}
        cells.append(cell)
    return {"shards": len(shards), "train": list(train_argv), "seeds": list(seeds), "rows": rows, "cells": cells}


def write(study: Dict[str, Any], out: str) -> None:
    from .evalsuite import bar_chart

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(study, f, indent=2)
    cells = study["cells"]
    metrics = list(cells[0]["metrics"])
    several = len(study["seeds"]) > 1

    def fmt(v: Dict[str, Any]) -> str:
        return f"{v['mean']:.3f}" + (f" ± {v['ci95']:.3f}" if several and v.get("ci95") is not None else "")

    lines = ["# Study", "", f"{len(study['seeds'])} seed(s) per cell" + (": mean ± 95% interval (Student t)" if several else ""), "",
             "| config | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    lines += ["| " + c["config"] + " | " + " | ".join(fmt(c["metrics"][m]) if m in c["metrics"] else "" for m in metrics) + " |" for c in cells]
    for key, title in (("per_language", "Recall@1 per language"), ("per_group", "Accuracy per group")):
        if key in cells[0]:
            cols = list(cells[0][key])
            lines += ["", f"## {title}", "", "| config | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
            lines += ["| " + c["config"] + " | " + " | ".join(f"{c[key].get(k, 0.0):.3f}" for k in cols) + " |" for c in cells]
    chart_metric = next((m for m in ("multilingual_mean_r1", "retrieval_i2t_r1") if m in cells[0]["metrics"]), None)
    if chart_metric:
        bar_chart({c["config"]: c["metrics"][chart_metric]["mean"] for c in cells}, chart_metric, os.path.join(out, "study.png"))
        lines += ["", f"![{chart_metric}](study.png)"]
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
