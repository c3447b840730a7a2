"""What a release carries: one version everywhere, the licence it declares, a changelog entry."""

from __future__ import annotations

import importlib.metadata
import os
import re

import webli_io

ROOT = os.path.join(os.path.dirname(__file__), "..")


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_one_version_from_cargo_toml():
    cargo = re.search(r'^version = "([^"]+)"', read("Cargo.toml"), re.M).group(1)
    assert webli_io.__version__ == cargo
    assert importlib.metadata.version("webli-io") == cargo
    assert re.search(r'^dynamic = \["version"\]', read("pyproject.toml"), re.M), "pyproject takes the version from Cargo.toml"
    assert f"## [{cargo}]" in read("CHANGELOG.md") or "## [Unreleased]" in read("CHANGELOG.md")


def test_the_licence_file_is_the_declared_licence():
    text = read("LICENSE")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "TERMS AND CONDITIONS" in text
    assert 'license = "Apache-2.0"' in read("Cargo.toml")
    meta = importlib.metadata.metadata("webli-io")
    assert "Apache" in (meta.get("License") or meta.get("License-Expression") or "")
    urls = meta.get_all("Project-URL") or []
    assert any(u.startswith("Repository") for u in urls) and any(u.startswith("Changelog") for u in urls)


def test_the_workflow_linter_can_fail(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\non: push\njobs:\n  a:\n    steps:\n      - run: echo\n")  # no runs-on
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "runs-on" in r.stdout + r.stderr
    good = [os.path.join(ROOT, ".github", "workflows", f) for f in ("test.yml", "release.yml")]
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *good],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
