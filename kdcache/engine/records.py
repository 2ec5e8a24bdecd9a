"""Run records on disk: JSON written atomically and durably, and the per-epoch / per-step logs.

A record replaces its file durably (``kdcache.durable``: a temporary file,
fsync, rename, fsync of the directory): after a crash or a power loss a
reader finds the old record or the new one, never a torn one.
The JSON-lines logs are appended and fsynced once per epoch; on resume they
are cut back to what the training state covers (a torn last line included).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kdcache.durable import fsync_path, write_text_atomic
from kdcache.errors import RunError

__all__ = ["append_jsonl", "canonical_hash", "fsync_path", "read_jsonl", "rewrite_jsonl", "write_json_atomic", "write_text_atomic"]


def canonical_hash(obj: Any) -> str:
    """sha256 of an object's canonical JSON: how a run records which manifest it used."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


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
