"""Optional parts of webli-io and the extra that installs each: a missing one is one line saying
what to install, raised where the part is first needed (tar streaming needs none of them)."""

from __future__ import annotations


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} is not installed: pip install 'webli-io[{extra}]'")
        self.extra = extra
