"""Optional parts of webli-io and the extra that installs each: a missing one is one line saying
what to install, raised where the part is first needed (tar streaming needs none of them)."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} is not installed: pip install 'webli-io[{extra}]'")
        self.extra = extra


def require(module: str, what: str, extra: str) -> ModuleType:
    """``import module`` (a dotted name gives the submodule), or :class:`MissingExtra` saying
    ``what`` is missing and which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(what, extra) from None
