"""Progress bars: tqdm's (on stderr) when it is installed (``webli-io[cli]``), else none."""

from __future__ import annotations

from typing import Any


class _NoBar:
    """What a progress bar offers, doing nothing."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None


def progress(*args: Any, **kwargs: Any) -> Any:
    """``tqdm(*args, **kwargs)``, or a silent stand-in without tqdm (an iterable passed in is
    returned as it is)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return args[0] if args else _NoBar()
    return tqdm(*args, **kwargs)
