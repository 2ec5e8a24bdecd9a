"""Loss options as a user writes them: ``key=value`` strings (``--loss-opt``, a sweep's ``--run``).

Values are JSON when they parse (numbers, lists, ``true``), else strings; the
loss's :class:`~kdcache.losses.LossSpec` then checks keys and values. A key
given twice is refused rather than letting the last one win silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kdcache.errors import LossConfigError

__all__ = ["parse_loss_opts"]


def parse_loss_opts(items: Iterable[str], what: str = "--loss-opt") -> dict[str, Any]:
    """``key=value`` strings to a dict; a malformed item or a repeated key is one :class:`LossConfigError`
    line (a usage error) naming ``what`` the user wrote it with."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LossConfigError(f"{what} {item!r} must look like key=value, e.g. temperature=4")
        if key in out:
            raise LossConfigError(f"{what} {key}= is given twice ({key}={out[key]!r} and {item!r}); give it once")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out
