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
