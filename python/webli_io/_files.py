"""The files webli-io writes (``prepare``'s shards, markers and manifest, ``score``'s copies,
the trainer's checkpoints), written one way:

- never through a name someone else planted: each temporary is a new, unique file created with
  ``O_EXCL`` (``tempfile.mkstemp``), so a symlink at ``NAME.tar.tmp`` is never followed (CWE-59);
- never half-written under the final name: the temporary is flushed and ``fsync``-ed before
  it is renamed over the final name, and the folder is synced after (a node crash leaves the
  old file or the new one, never an empty one); a failure removes the temporary;
- never by two writers at once: a run holds ``folder_lock`` on its output folder (``flock``,
  released by the kernel when the process dies, so a killed run leaves no stale lock);
- never over the input: ``refuse_in_place`` stops a command whose output folder holds its input.

An output folder may also be an object-store prefix (``s3://``, ``gs://``, ``az://``): a file is
then written whole to a local temporary and uploaded in one PUT (an object appears whole or not
at all); such a folder has no lock (run one job per prefix), and a done marker records the
object's size and ETag instead of a hash.

Written by hand rather than with a library (``atomicwrites`` is unmaintained; ``filelock``
would add a dependency for twenty lines of ``fcntl``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from typing import IO, Any, Dict, Iterator, Sequence

#: The lock file a writing run holds in its output folder.
LOCK_NAME = ".webli-io.lock"

#: Output folders that are object-store prefixes (one PUT a file).
OBJECT_SCHEMES = ("s3://", "gs://", "az://", "abfs://", "abfss://")


def is_object(path: str) -> bool:
    """Is ``path`` in an object store (``s3://``, ``gs://``, ``az://``)?"""
    return path.startswith(OBJECT_SCHEMES)


def join(folder: str, *names: str) -> str:
    """``folder/name``: ``os.path.join`` for a folder, ``/`` for an object-store prefix."""
    if is_object(folder):
        return "/".join([folder.rstrip("/"), *names])
    return os.path.join(folder, *names)


def makedirs(folder: str) -> None:
    """Create a local folder (an object-store prefix needs none)."""
    if not is_object(folder):
        os.makedirs(folder, exist_ok=True)


class FolderBusy(RuntimeError):
    """Another run is writing into the same output folder."""


class WriteError(OSError):
    """A file could not be written whole (a full disk, say): the previous one is kept."""


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(dst: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """A new file that becomes ``dst`` only once written whole (see the module notes).

    >>> with atomic_file("out/manifest.json", "w") as f:  # doctest: +SKIP
    ...     f.write("{}")
    """
    folder, base = os.path.split(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder or ".")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def output_file(dst: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """:func:`atomic_file`, or for an object-store ``dst`` a local temporary uploaded whole."""
    if not is_object(dst):
        with atomic_file(dst, mode) as f:
            yield f
        return
    from . import _core

    with tempfile.TemporaryDirectory(prefix="webli-io-upload-") as tmp:
        local = os.path.join(tmp, "part")
        with open(local, mode) as f:
            yield f
        with open(local, "rb") as f:
            _core.write_object(dst, f.read())


def read_text(path: str) -> str:
    """A file's text, from a folder or an object store."""
    if is_object(path):
        from . import _core

        return _core.read_bytes(path).decode("utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    """Write ``text`` whole: :func:`atomic_file` in a folder, one PUT in an object store."""
    if is_object(path):
        from . import _core

        _core.write_object(path, text.encode("utf-8"))
        return
    with atomic_file(path, "w") as f:
        f.write(text)


def identity(path: str) -> Dict[str, Any]:
    """What a done marker records of an output, and checks on a rerun: a local file's size and
    SHA-256 (:func:`digest`), an object's size and ETag (one HEAD)."""
    if is_object(path):
        from . import _core

        size, etag = _core.shard_identity(path)
        return {"size": size, "etag": etag}
    return digest(path)


@contextlib.contextmanager
def folder_lock(folder: str, what: str) -> Iterator[None]:
    """Hold ``folder``'s write lock for the block; :class:`FolderBusy` if another run holds it.
    An object-store prefix has no lock (nothing to hold): the block runs."""
    if is_object(folder):
        yield
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FolderBusy(f"{path} is a symbolic link: not a lock this run made; remove it and run again") from None
        raise
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; the unique temporaries still keep files whole
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise FolderBusy(
                    f"{folder!r} is being written by another {what} run (pid {holder}): wait for it to finish, "
                    "or write somewhere else with -o"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def digest(path: str) -> Dict[str, Any]:
    """``{"size", "sha256"}`` of a file: what a done marker records, and checks on a rerun."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def refuse_in_place(inputs: Sequence[str], out_dir: str, what: str) -> None:
    """A ``ValueError`` when ``out_dir`` is the folder of one of the (local) ``inputs``: the
    command would write its output over its input."""
    if is_object(out_dir):
        prefix = out_dir.rstrip("/")
        for src in inputs:
            if src.split("?", 1)[0].rsplit("/", 1)[0] == prefix:
                raise ValueError(f"the output prefix {out_dir!r} holds the input {src!r}: {what} would overwrite its input; "
                                 "write to another prefix with -o")
        return
    out = os.path.realpath(out_dir)
    for src in inputs:
        if "://" in src or src.startswith("pipe:"):
            continue
        if os.path.realpath(os.path.dirname(os.path.abspath(src))) == out:
            raise ValueError(
                f"the output folder {out_dir!r} holds the input {src!r}: {what} would overwrite its input; "
                "write to another folder with -o"
            )
