"""Tokenizers: captions → ``[B, max_len]`` int64 ids, 0 the padding.

- ``bytes`` (the default): UTF-8 bytes + 3 (0 pad, 1 BOS, 2 EOS). No download, no training, no
  unknown token in any script; the price is length (64 tokens: about 21 Devanagari characters).
- a SentencePiece model file (``--tokenizer PATH``): mT5's ``spiece.model`` is what the paper
  uses; ids are the model's + 1 (0 stays padding), EOS appended.
- ``train_sentencepiece``: a unigram model trained on captions, sampled so that every language
  weighs the same (each gets at most the count of the median language), so low-resource scripts
  get vocabulary, not only English.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import torch

from .._extras import require

BYTE_PAD, BYTE_BOS, BYTE_EOS, BYTE_OFFSET = 0, 1, 2, 3


class _Padded:
    """``tokenizer(texts)``: each text's ``ids`` in a ``[B, max_len]`` int64 tensor, 0-padded."""

    max_len: int

    def ids(self, text: str) -> List[int]:
        raise NotImplementedError

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self.ids(t)
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class ByteTokenizer(_Padded):
    """UTF-8 bytes → ids: BOS, bytes + 3, EOS, then PAD (0)."""

    name = "bytes"
    vocab_size = 256 + BYTE_OFFSET

    def __init__(self, max_len: int = 64) -> None:
        self.max_len = max_len

    def ids(self, text: str) -> List[int]:
        return [BYTE_BOS] + [b + BYTE_OFFSET for b in text.encode("utf-8")[: self.max_len - 2]] + [BYTE_EOS]


class SentencePieceTokenizer(_Padded):
    """A SentencePiece model: its ids + 1 (0 is padding), EOS appended, cut at ``max_len``."""

    def __init__(self, path: str, max_len: int = 64) -> None:
        spm = require("sentencepiece", "sentencepiece (for --tokenizer MODEL)", "train")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SentencePiece model not found: {path!r}")
        self.name = path
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.max_len = max_len
        self.vocab_size = self.sp.get_piece_size() + 1
        self.eos = self.sp.eos_id() + 1 if self.sp.eos_id() >= 0 else None

    def ids(self, text: str) -> List[int]:
        ids = [i + 1 for i in self.sp.encode(text)][: self.max_len - (1 if self.eos else 0)]
        return ids + ([self.eos] if self.eos else [])

    def __getstate__(self) -> Dict[str, object]:  # picklable for DataLoader workers
        return {"name": self.name, "max_len": self.max_len}

    def __setstate__(self, state: Dict[str, object]) -> None:
        self.__init__(state["name"], state["max_len"])  # type: ignore[misc, arg-type]


def read_captions(shards: Sequence[str], limit: int = 1_000_000) -> Iterable[Tuple[str, str]]:
    """``(language, caption)`` of the samples of tar shards (without decoding images): the
    language from the sample's json (normalised), else fastText LID when ``webli-io[lid]`` is
    installed, else ``und``."""
    from .. import _core
    from ..prepare import LanguageId, default_lid_model, meta_language, parse_members

    try:
        lid = LanguageId(default_lid_model())
    except (ImportError, RuntimeError):  # no webli-io[lid], or its model missing
        lid = None
    n = 0
    for shard in shards:
        if _core.is_table_shard(shard):
            raise ValueError(f"{shard}: read captions from tar shards (Parquet: export its caption column)")
        for _, members in _core.TarSamples(shard):
            parsed = parse_members(members)
            text = parsed.text.strip()
            lang = meta_language(parsed.meta, _core.DEFAULT_LANG_FIELDS)
            if not text:
                continue
            if lang == "und" and lid is not None:
                lang = lid(text)[0]
            yield lang, text
            n += 1
            if n >= limit:
                return


class SigLIPTokenizer:
    """A released SigLIP model's SentencePiece model (``--tokenizer siglip:PATH``) applied as
    Hugging Face's ``SiglipTokenizer`` and big_vision apply it: lowercased, punctuation removed,
    whitespace collapsed; the model's own ids (no shift), EOS appended, cut at ``max_len`` and
    padded to it with EOS (SigLIP's pad token is ``</s>``; the text tower reads the last
    position with no mask)."""

    def __init__(self, path: str, max_len: int = 64) -> None:
        spm = require("sentencepiece", "sentencepiece (for --tokenizer siglip:MODEL)", "train")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SentencePiece model not found: {path!r}")
        self.name = "siglip:" + path
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=path)
        if self.sp.eos_id() < 0:
            raise ValueError(f"{path}: the SentencePiece model has no EOS piece, which SigLIP's text tower needs")
        self.max_len = max_len
        self.vocab_size = self.sp.get_piece_size()
        self.eos = self.pad = self.sp.eos_id()

    @staticmethod
    def canonicalize(text: str) -> str:
        import re
        import string

        return re.sub(r"\s+", " ", text.lower().translate(str.maketrans("", "", string.punctuation))).strip()

    def ids(self, text: str) -> List[int]:
        return list(self.sp.encode(self.canonicalize(text)))[: self.max_len - 1] + [self.eos]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.full((len(texts), self.max_len), self.pad, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self.ids(t)
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def __getstate__(self) -> Dict[str, object]:
        return {"path": self.path, "max_len": self.max_len}

    def __setstate__(self, state: Dict[str, object]) -> None:
        self.__init__(state["path"], state["max_len"])  # type: ignore[misc, arg-type]


def load_tokenizer(spec: str, max_len: int = 64) -> Any:
    """``"bytes"``, the path of a SentencePiece model (ids + 1, 0 padding: for training here), or
    ``"siglip:PATH"`` (a released SigLIP model's own ids and padding)."""
    if spec == "bytes":
        return ByteTokenizer(max_len)
    if spec.startswith("siglip:"):
        return SigLIPTokenizer(spec[len("siglip:"):], max_len)
    return SentencePieceTokenizer(spec, max_len)


def balanced_sample(captions: Iterable[Tuple[str, str]], seed: int = 0) -> Tuple[List[str], Dict[str, int]]:
    """``(language, caption)`` pairs → captions where every language has at most as many as the
    median language (the rest sampled evenly at random), and the count kept per language."""
    by_lang: Dict[str, List[str]] = defaultdict(list)
    for lang, text in captions:
        if text.strip():
            by_lang[lang].append(text)
    if not by_lang:
        return [], {}
    counts = sorted(len(v) for v in by_lang.values())
    cap = max(1, counts[len(counts) // 2])
    rng = random.Random(seed)
    out, kept = [], {}
    for lang in sorted(by_lang):
        texts = by_lang[lang]
        chosen = texts if len(texts) <= cap else rng.sample(texts, cap)
        out.extend(chosen)
        kept[lang] = len(chosen)
    rng.shuffle(out)
    return out, kept


def train_sentencepiece(captions: Iterable[Tuple[str, str]], out: str, vocab_size: int = 8000, seed: int = 0) -> Dict[str, Any]:
    """Train a SentencePiece unigram model on captions balanced across languages; write
    ``out`` (the ``.model`` file, and ``.vocab`` beside it). Returns what it kept per language."""
    spm = require("sentencepiece", "sentencepiece (to train a tokenizer)", "train")
    texts, kept = balanced_sample(captions, seed)
    if not texts:
        raise ValueError("no captions to train a tokenizer on")
    prefix = out[: -len(".model")] if out.endswith(".model") else out
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        for t in texts:
            f.write(" ".join(t.split()) + "\n")
        corpus = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, vocab_size=vocab_size, model_type="unigram", character_coverage=0.9995,
            hard_vocab_limit=False, num_threads=max(1, (os.cpu_count() or 1)), minloglevel=2,
            bos_id=-1, eos_id=1, unk_id=0, pad_id=-1,
        )
    finally:
        os.unlink(corpus)
    return {"model": prefix + ".model", "captions": len(texts), "per_language": kept, "vocab_size": vocab_size}
