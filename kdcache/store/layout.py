"""Where each node of a store lives (the only place that spells a zarr path or attribute name), and
what is at a path (a store, an interrupted creation, something else).

The layout is the contract of ``docs/store-format.md`` (format version 2; version 1
stores are read and written in their own layout).
Every other module reaches a node through :class:`kdcache.store.Store`'s
typed accessors, which call these functions; a layout change is made here
and in that document, nowhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT_NAME = "kdcache-store"
FORMAT_VERSION = 2
# Versions this kdcache reads (and writes in their own layout): version 1 stores carry no labels record.
READABLE_VERSIONS = (1, 2)
# The manifest is the group attribute of this name (JSON).
MANIFEST_KEY = "kdcache"
LOCK_NAME = ".kdcache-writer.lock"
# The writer lease of a store on an object store (kdcache.store.lease), next to the group's zarr.json.
LEASE_NAME = ".kdcache-writer.lease"

LABELS = "labels"
VIEW_PARAMS = "views/params"
VIEW_CHECKSUMS = "views/checksums"
# Attribute of VIEW_PARAMS naming the P integers of a view.
PARAM_NAMES_ATTR = "names"
# Attribute of a statistic array: checksums of its chunks (hex strings, see docs/store-format.md).
STAT_CHECKSUMS_ATTR = "checksums"
# Top-level children a store holds before its manifest exists (an interrupted creation).
CREATION_NODES = frozenset({"zarr.json", "labels", "views", LOCK_NAME, LEASE_NAME})


def teacher_dir(teacher: str) -> str:
    return f"teachers/{teacher}"


def logits(teacher: str) -> str:
    return f"teachers/{teacher}/logits"


def part(teacher: str, name: str) -> str:
    """The array of one part of a teacher's encoding (``logits`` for float16/float32; docs/store-format.md)."""
    return f"teachers/{teacher}/{name}"


def logit_checksums(teacher: str) -> str:
    return f"teachers/{teacher}/checksums"


def stats_dir(teacher: str) -> str:
    return f"teachers/{teacher}/stats"


def stat(teacher: str, node: str) -> str:
    """The array of statistic node ``node`` (its name, or a fresh name while it is replaced)."""
    return f"teachers/{teacher}/stats/{node}"


def on_disk(root: Path, node: str) -> Path:
    """The directory of ``node`` on a local filesystem (zarr v3 local layout)."""
    return root.joinpath(*node.split("/"))


def chunk_key(node: str, *index: int) -> str:
    """The key of chunk ``index`` of array ``node`` under the store's root (zarr v3 default chunk key encoding)."""
    return "/".join([node, "c", *(str(i) for i in index)])


def chunk_file(root: Path, node: str, *index: int) -> Path:
    """The file holding chunk ``index`` of array ``node`` in a local store."""
    return on_disk(root, chunk_key(node, *index))


def group_meta(path: Path) -> dict[str, Any] | None:
    """The zarr group metadata at ``path`` (its ``zarr.json``), or None when there is no group."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        d = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("node_type") == "group" else None


def probe(path: str | os.PathLike[str]) -> str:
    """What is at ``path``: ``missing``, ``empty``, ``creating`` (creation interrupted before the
    manifest), ``store``, ``file`` or ``foreign``."""
    p = Path(path)
    if not p.exists():
        return "missing"
    if not p.is_dir():
        return "file"
    return classify({c.name for c in p.iterdir()}, group_meta(p))


def classify(children: set[str], meta: dict[str, Any] | None) -> str:
    """What a store location holds, from its top-level names and its group metadata (local or remote)."""
    if not children - {LOCK_NAME, LEASE_NAME}:
        return "empty"
    if meta is None:
        return "foreign"
    if MANIFEST_KEY in meta.get("attributes", {}):
        return "store"
    return "creating" if children <= CREATION_NODES else "foreign"
