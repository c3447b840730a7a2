"""Typed settings (issue 24, item 8): mypy sees every setting of `WebLIStream`, so a misspelt
one (`bach_size=`) or a wrong type is a type error, and the typed list cannot drift from the
core's (the names are the Rust `Settings`' own; every default fits its type)."""

from __future__ import annotations

import collections.abc
import subprocess
import sys
import typing

from webli_io import _core
from webli_io._settings import Settings


def fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin is typing.Union:
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (collections.abc.Sequence,):
        return isinstance(value, (list, tuple)) and all(fits(v, args[0]) for v in value)
    if origin in (collections.abc.Mapping,):
        return isinstance(value, dict) and all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def test_the_typed_settings_are_the_cores_and_their_defaults_fit():
    hints = typing.get_type_hints(Settings)
    assert sorted(hints) == sorted(_core.Options.names())
    defaults = _core.Options.defaults()
    wrong = {k: (defaults[k], hints[k]) for k in hints if not fits(defaults[k], hints[k])}
    assert not wrong, wrong


def test_mypy_catches_a_misspelt_setting_and_a_wrong_type(tmp_path):
    (tmp_path / "user.py").write_text(
        "from webli_io import WebLIStream\n"
        "ok = WebLIStream('s3://b/{0..9}.tar', batch_size=4, shuffle=True, resize='center_crop', mixture='webli-100b')\n"
        "bad = WebLIStream('s3://b/{0..9}.tar', bach_size=4)\n"
        "worse = WebLIStream('s3://b/{0..9}.tar', batch_size='4')\n"
    )
    (tmp_path / "mypy.ini").write_text("[mypy]\n[mypy-torch.*]\nfollow_imports = skip\n")
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental", "user.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = r.stdout
    assert 'Unexpected keyword argument "bach_size"' in out and 'did you mean "batch_size"' in out, out
    assert 'Argument "batch_size" to "WebLIStream" has incompatible type "str"' in out, out
    assert "user.py:2" not in out, out
