"""``webli-io score``: each pair's image–caption alignment (the paper's quality filter), written
as a metadata field into copies of the shards, and what a threshold (or a kept fraction) keeps
per language or group, before anyone applies it."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .evalsuite import _embed_images, _embed_texts
from .model import SigLIP


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


