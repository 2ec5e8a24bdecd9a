"""Run records on disk: JSON written atomically and durably, and the per-epoch / per-step logs.

A record is written to a temporary file in the target's directory, fsynced,
renamed over the target, and the directory is fsynced: after a crash or a
power loss a reader finds the old record or the new one, never a torn one.
The JSON-lines logs are appended and fsynced once per epoch; on resume they
are cut back to what the training state covers (a torn last line included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kdcache.errors import RunError


def canonical_hash(obj: Any) -> str:
    """sha256 of an object's canonical JSON: how a run records which manifest it used."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename in directory ``path`` durable.

    A no-op only where a directory cannot be opened for reading (some platforms and file
    systems refuse it); an error of the fsync itself (EIO: the data did not reach the disk)
    is raised, never swallowed.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``: temp file in the same directory, fsync, rename, fsync the directory."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically and durably (see the module docstring)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append one JSON line per row and fsync, so a finished epoch's log survives a crash."""
    with Path(path).open("a") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a JSON-lines log; a torn last line (a crash mid-append) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                break  # the torn tail of an interrupted append
            raise RunError(f"{path} line {i + 1} is corrupted (not JSON); delete the log or restore it, "
                           "or start a new run with another output") from None
    return rows


def rewrite_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Replace a JSON-lines log by ``rows`` atomically (used to cut it back on resume)."""
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
