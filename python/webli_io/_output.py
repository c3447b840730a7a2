"""Machine-readable output lines that stay whole when several processes share one stdout."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def print_json_line(obj: Any) -> None:
    """Write ``obj`` as one JSON line with a single ``write(2)``.

    Under ``torchrun`` every rank inherits the same stdout pipe; ``print`` writes the text and
    the newline separately when Python runs unbuffered (``PYTHONUNBUFFERED``, as CI and many
    launchers set it), so two ranks' lines could splice into one. One write of at most
    ``PIPE_BUF`` (4096) bytes to a pipe is atomic, so each rank's line arrives whole.
    """
    data = (json.dumps(obj) + "\n").encode()
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stdout (pytest capture, StringIO)
        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    while data:
        data = data[os.write(fd, data):]
