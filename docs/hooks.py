"""mkdocs hook: the command-line reference (docs/cli.md's ``<!-- cli-reference -->``) is
generated from the argparse parser at build time, so it cannot drift from ``--help``."""

from __future__ import annotations

import argparse


def _help(parser: argparse.ArgumentParser) -> str:
    return parser.format_help()


def cli_reference() -> str:
    import os

    from webli_io.cli import build_parser

    os.environ.setdefault("COLUMNS", "100")
    parser = build_parser()
    out = ["## webli-io", "", "```text", _help(parser).rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        out += [f"## webli-io {name}", "", "```text", _help(p).rstrip(), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs' signature
    if "<!-- cli-reference -->" in markdown:
        return markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown
