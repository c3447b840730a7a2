"""The documentation runs: every fenced block of every page under docs/ is either executed here
(``python`` blocks, in order, in one fresh folder per page) or marked, just above it, with
``<!-- not run: REASON -->``; and the site builds with warnings as errors."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")
PAGES = sorted(os.path.relpath(p, DOCS) for p in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```$", flags=re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run: [^>]{8,} -->\s*$")


def blocks(page):
    """(language, code, marked not run) of each fenced block of a page."""
    text = open(os.path.join(DOCS, page), encoding="utf-8").read()
    return [(m.group(1), m.group(2), bool(NOT_RUN.search(text[: m.start()].rstrip("\n") + "\n"))) for m in FENCE.finditer(text)]


def test_the_pages_have_blocks_to_run():
    assert {"migrating.md", "index.md", "concepts.md", "howto/img2dataset.md"} <= set(PAGES)
    assert sum(1 for p in PAGES for lang, _, skip in blocks(p) if lang == "python" and not skip) >= 15


@pytest.mark.parametrize("page", PAGES)
def test_every_block_runs_or_says_why_not(page, tmp_path):
    pytest.importorskip("webdataset")
    pytest.importorskip("pyarrow")
    for i, (lang, code, skip) in enumerate(blocks(page)):
        if skip:
            continue
        assert lang == "python", f"{page}, block {i + 1} ({lang or 'no language'}): runs only if python, else mark it <!-- not run: why -->"
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{page}, python block {i + 1}:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    root = os.path.join(DOCS, "..")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=root,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "webli-io tokenizer" in cli
    assert "usage: webli-io stream" in cli, "the CLI reference is generated from the parser"
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "shards_in_flight" in api and "identity" in api, "the API reference has the docstrings and _core.pyi"
