"""Durable file replacement: the one way kdcache writes a record, a checkpoint or a training state.

A file is written to a temporary name in its target's directory, flushed and
fsynced, renamed over the target, and the directory is fsynced so that the
rename itself survives a power loss. A reader therefore finds the old file or
the new one, never a torn one, and an interrupted write leaves the old file
as it was. An error of an fsync (EIO: the data did not reach the disk) is
raised, never swallowed, with the target's path as its file name: the
caller's command then ends with one line naming the file, and the previous
file is still there.

The store's zarr chunks are not written here: zarr renames them into place
itself, and ``kdcache.store.writing`` only adds the fsyncs zarr leaves out.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["fsync_path", "replace_durably", "write_text_atomic"]


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file, or a directory to make a rename in it durable (kdcache's one fsync helper).

    A no-op only where the path cannot be opened for reading (some platforms and file systems
    refuse a directory) or is gone (renamed away meanwhile: nothing of ours to make durable);
    an error of the fsync itself is raised.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (PermissionError, IsADirectoryError, FileNotFoundError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], *, binary: bool) -> None:
    """Replace ``path`` by what ``write`` writes to an open file: temp file, fsync, rename, fsync the directory.

    ``write`` receives the temporary file opened for writing (bytes when ``binary``). The
    parent directory must exist. On any failure the temporary file is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            # The OS names no file for a failed write or fsync (or names our temporary one):
            # the user's error line names the file they asked for.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    fsync_path(path.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` by ``text`` durably (see :func:`replace_durably`)."""
    replace_durably(path, lambda f: f.write(text), binary=False)
