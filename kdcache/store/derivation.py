"""A derived teacher's ``derived`` card field: what it was made from, and whether that has changed since.

``kdcache ensemble`` (:mod:`kdcache.precompute.ensemble`) writes a teacher
whose rows are a function of other teachers' stored rows (its *members*). Its
card records, under the key ``derived`` (``docs/store-format.md``)::

    {"how": "mean-prob", "members": ["a", "b"], "weights": [0.5, 0.5], "temperature": 1.0,
     "records": {"a": "<16 hex>", "b": "<16 hex>"}}

``records`` holds, per member, :func:`records_digest` of the member's checksum
records when the ensemble was derived: a member re-run or rewritten since has
other records, so the derived rows no longer follow from it. Everything here
only reads; a reader that trains on a derived teacher (distill, sweep, the
API) calls :func:`require_current` and refuses a stale one in one line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdcache.errors import StoreMismatchError
from kdcache.store.chunks import checksum
from kdcache.store.store import Store

KEY = "derived"


def derivation(store: Store, name: str) -> dict[str, Any] | None:
    """Teacher ``name``'s ``derived`` record, or None for a teacher scored or converted."""
    value = store.card(name).extra_dict().get(KEY)
    return value if isinstance(value, dict) else None


def records_digest(store: Store, member: str) -> str:
    """BLAKE2b-64 (16 hex digits) of ``member``'s (V, K) checksum records as little-endian uint64: one
    value that changes whenever any chunk of the member is written again with other bytes."""
    sums = np.asarray(store.logit_checksums(member)[:]).astype("<u8")
    return f"{checksum(sums):016x}"


def changes(store: Store, name: str) -> list[str]:
    """Why derived teacher ``name`` no longer follows from its members (empty when it does, or when
    ``name`` is not derived): a member gone, not complete, or whose records differ from the recorded ones."""
    record = derivation(store, name)
    if record is None:
        return []
    out = []
    recorded = record.get("records") or {}
    for member in record.get("members") or []:
        if member not in store.teacher_names():
            out.append(f"member {member!r} is no longer in the store")
        elif store.card(member).status != "complete":
            out.append(f"member {member!r} is being written again")
        elif records_digest(store, member) != recorded.get(member):
            out.append(f"member {member!r} changed since (its checksum records differ)")
    return out


def rederive_command(store: Store, name: str) -> str:
    """The ``kdcache ensemble`` command that derives ``name`` again from its members' current rows (as NEW:
    a store only ever adds teachers, so the stale entry keeps its name and rows)."""
    record = derivation(store, name) or {}
    members = record.get("members") or []
    weights = record.get("weights")
    parts = [f"kdcache ensemble {store.path}", *(f"--teacher-name {m}" for m in members), f"--how {record.get('how')}"]
    if weights and len(set(weights)) > 1:
        parts += [f"--weight {m}={w:g}" for m, w in zip(members, weights)]
    if record.get("temperature", 1.0) != 1.0:
        parts.append(f"--temperature {record['temperature']:g}")
    return " ".join([*parts, "--as NEW"])


def require_current(store: Store, name: str) -> None:
    """Refuse derived teacher ``name`` in one line when a member changed after it was derived."""
    problems = changes(store, name)
    if problems:
        raise StoreMismatchError(
            f"teacher {name!r} was derived from members that changed ({'; '.join(problems)}); its rows no longer "
            f"follow from them: derive it again with `{rederive_command(store, name)}`")


def change_problems(store: Store, names: list[str]) -> list[str]:
    """``verify``'s lines for each derived teacher among ``names`` whose members changed since."""
    return [f"derived teacher {name!r}: {'; '.join(problems)}; derive it again with "
            f"`{rederive_command(store, name)}`" for name in names if (problems := changes(store, name))]
