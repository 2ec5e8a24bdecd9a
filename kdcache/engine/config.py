"""What a training run is, as recorded: arguments derived from its config dataclass (values are checked
by :mod:`kdcache.validate`).

A run records every field of its config. Fields that may differ when the run
is continued (worker count, device, the output path) carry
``metadata=MAY_CHANGE``; every other field is part of the run's identity, and
a resume or a re-run compares exactly those. The list of compared arguments
is thus derived from the dataclass, never kept by hand beside it.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

MAY_CHANGE: dict[str, bool] = {"may_change_on_resume": True}
"""Field metadata: this argument may change when a run is resumed (it does not change the result)."""


def _plain(value: Any) -> Any:
    """A JSON value for a config field (paths as strings, tuples as lists, enums by value)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def recorded_args(cfg: Any) -> dict[str, Any]:
    """Every field of the config dataclass ``cfg``, as JSON values (what a run record shows)."""
    return json.loads(json.dumps(_plain(cfg), sort_keys=True))


def identity_args(cfg: Any) -> dict[str, Any]:
    """The fields of ``cfg`` (recursively) that a resumed run must repeat exactly."""

    def strip(obj: Any) -> dict[str, Any]:
        out = {}
        for f in fields(obj):
            if f.metadata.get("may_change_on_resume"):
                continue
            value = getattr(obj, f.name)
            out[f.name] = strip(value) if is_dataclass(value) and not isinstance(value, type) else _plain(value)
        return out

    return json.loads(json.dumps(strip(cfg), sort_keys=True))


def diff_args(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["name: old -> new", ...]`` for every identity argument that differs (nested as ``optim.lr``)."""
    diffs: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += diff_args(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs

