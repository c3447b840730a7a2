"""Every ``python`` block of docs/migrating.md runs, in order, in one fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")


def python_blocks(path):
    text = open(path, encoding="utf-8").read()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_migration_guide_has_blocks_to_run():
    blocks = python_blocks(os.path.join(DOCS, "migrating.md"))
    assert len(blocks) >= 7


@pytest.mark.parametrize("doc", ["migrating.md"])
def test_every_python_block_runs(doc, tmp_path):
    pytest.importorskip("webdataset")
    pytest.importorskip("pyarrow")
    for i, code in enumerate(python_blocks(os.path.join(DOCS, doc))):
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{doc}, python block {i + 1}:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"
