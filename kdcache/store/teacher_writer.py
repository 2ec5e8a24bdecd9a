"""One teacher entry of a store, from its card to ``complete``: the only writer of ``teachers/<name>``.

A command that fills a teacher entry produces float logits for chunks of rows
and nothing else: ``precompute`` scores a network, ``convert`` decodes a float
teacher already stored, ``ensemble`` combines several of them. Everything
else about the entry is done here, the same way for each, and every message of
an entry's life is written here:

1. :func:`check_name`: a store-safe name;
2. :meth:`TeacherWriter.check` (read-only; call it before the writer lock so a
   refusal writes nothing) and :meth:`TeacherWriter.begin` (under the lock): a
   new entry gets its arrays and its card (status ``writing``); a name the
   store already holds must have been started with the same identity and the
   same :attr:`Producer.provenance` ("already has a teacher ... made
   differently"), and is resumed: chunks without a checksum record, or whose
   bytes no longer match it (a :class:`~kdcache.errors.StoreRepairWarning`),
   are pending, the rest are kept; rows that depend on the platform
   (:attr:`Producer.platform_bound`) are only added on the platform the card
   records;
3. :meth:`TeacherWriter.write`: one chunk's float logits, encoded with the
   card's encoding (keyed by this entry's name, so a sampled encoding draws
   the same bits whichever producer wrote them), then its checksum record;
4. :meth:`TeacherWriter.finish`: :meth:`~TeacherWriter.sync` (the store's
   files on stable storage) then :meth:`~TeacherWriter.complete` (the
   accuracy per view from the stored rows, :func:`teacher_accuracy`, and the
   card marked ``complete``). A killed producer leaves an entry in
   ``writing``: the same command resumes it.

A producer is a card, a :class:`Producer` and a loop over :attr:`TeacherWriter.pending`:
:mod:`kdcache.precompute.convert` is the smallest, :mod:`kdcache.precompute.ensemble` (which records its
members in the producer's provenance) the one to copy for a teacher derived from others.

The card's identity fields (:class:`~kdcache.store.manifest.TeacherCard`) and
the producer's provenance (JSON values) are what a resume must repeat.

Several processes (precompute under torchrun): rank 0 calls :meth:`begin`
and broadcasts :attr:`TeacherWriter.plan`; every other rank opens the store
for writing and calls :meth:`attach` with it; each writes its share of
:attr:`pending` and calls :meth:`sync`; after a barrier rank 0 calls
:meth:`complete`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdcache import encodings
from kdcache.errors import StoreMismatchError, StoreRepairWarning, UsageError, warn
from kdcache.store.chunks import platform_differences, utc_now
from kdcache.store.manifest import TeacherCard, differences
from kdcache.store.store import Store

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Producer:
    """What writes an entry's rows, as far as the entry's life depends on it.

    ``name_option`` is how the user names the entry (messages advise
    ``--teacher-name NEW``, or ``--as NEW``). ``provenance`` holds the card
    keys, beyond the identity fields, that say where the rows come from (e.g.
    ``{"converted_from": "f32"}``): they are recorded in the card and must
    match when the entry is resumed, so an entry another producer started is
    refused rather than mixed. ``platform_bound`` says whether the rows depend
    on the platform that computed them (a network's floating-point maths:
    chunks are only added where the first ones were scored); a pure numpy
    re-encoding of stored rows does not.
    """

    name_option: str = "--teacher-name"
    provenance: Mapping[str, Any] = field(default_factory=dict)
    platform_bound: bool = True


@dataclass(frozen=True)
class ResumePlan:
    """What :meth:`TeacherWriter.begin` found: the (view, chunk) pairs to write, in store order; how many
    of them had been written but no longer matched their record; and the rows in all and still to write.
    Picklable, so one process's reading of the store can be broadcast to the others."""

    pending: list[tuple[int, int]]
    redone: int
    rows_total: int
    rows_pending: int

    @property
    def rows_stored(self) -> int:
        return self.rows_total - self.rows_pending


def check_name(name: str, producer: Producer = Producer()) -> str:
    """``name`` if it is a store-safe teacher name, else a usage error naming the option it came from."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"{producer.name_option} {name!r} must use letters, digits, '_', '-' or '.'")
    return name


def encode(enc: encodings.Encoding, logits: np.ndarray, rows: encodings.Rows) -> dict[str, np.ndarray]:
    """The parts an entry stores for ``rows``: the logits as float32 (a float16 source's rounding is part of
    them), encoded. Every writer goes through it, and ``verify --replay`` rebuilds rows through it."""
    return enc.encode(np.asarray(logits, dtype=np.float32), rows)


def teacher_accuracy(store: Store, teacher: str) -> list[float]:
    """Top-1 accuracy of the stored logits per view, against the hard labels, chunk by chunk (verified)."""
    labels = store.labels()
    grid = store.grid
    out = []
    for v in range(store.num_views):
        correct = 0
        for j in range(grid.num_chunks):
            start, stop = grid.bounds(j)
            pred = store.read_logits_chunk(teacher, v, j).argmax(axis=1)
            correct += int((pred == labels[start:stop]).sum())
        out.append(correct / max(1, store.num_samples))
    return out


class TeacherWriter:
    """Writes one teacher entry of a writable store (see the module docstring); made by :meth:`begin`
    or :meth:`attach`."""

    def __init__(self, store: Store, name: str, plan: ResumePlan) -> None:
        self.store = store
        self.name = name
        self.plan = plan
        self.encoding = encodings.parse(store.card(name).encoding)

    # ------------------------------------------------------------------ starting
    @staticmethod
    def _entry_card(card: TeacherCard, producer: Producer) -> TeacherCard:
        """``card`` as a new entry records it: no results yet, the producer's provenance in it."""
        return card.replace(status="writing", started=None, finished=None, accuracy_per_view=None, stats={},
                            extra={**card.extra_dict(), **producer.provenance})

    @classmethod
    def check(cls, store: Store, name: str, card: TeacherCard, producer: Producer = Producer()) -> None:
        """Refuse what :meth:`begin` would refuse before writing: a bad name, or a name the store holds
        made by another teacher, other settings or another producer. Needs only a read-only store."""
        check_name(name, producer)
        if name not in store.teacher_names():
            return
        recorded = store.card(name)
        problems = differences(card, recorded, "teacher")
        have = recorded.extra_dict()
        problems += [f"teacher {key}: store has {have.get(key)!r}, this run has {value!r}"
                     for key, value in producer.provenance.items() if have.get(key) != value]
        if problems:
            raise StoreMismatchError(
                f"{store.path} already has a teacher {name!r} made differently ({'; '.join(problems)}); "
                f"pass the same teacher and arguments to resume it, or {producer.name_option} NEW to add "
                "another teacher"
            )

    @classmethod
    def begin(cls, store: Store, name: str, card: TeacherCard, producer: Producer = Producer()) -> TeacherWriter:
        """Add entry ``name`` with ``card``, or resume the one the store holds (under the writer lock)."""
        cls.check(store, name, card, producer)
        if name not in store.teacher_names():
            store.add_teacher(name, cls._entry_card(card, producer))
        pending, redone = store.pending_chunks(name)
        if pending and producer.platform_bound:
            _check_platform(store, name, card, producer)
        grid = store.grid
        plan = ResumePlan(pending=pending, redone=redone, rows_total=store.num_views * store.num_samples,
                          rows_pending=sum(grid.bounds(j)[1] - grid.bounds(j)[0] for _, j in pending))
        if redone:
            warn(f"{redone} chunk(s) of teacher {name!r} no longer matched their checksum record; writing them "
                 "again", StoreRepairWarning)
        if pending and plan.rows_stored:
            log.info("resuming %r: %s of %s rows already stored", name, f"{plan.rows_stored:,}",
                     f"{plan.rows_total:,}")
        return cls(store, name, plan)

    @classmethod
    def attach(cls, store: Store, name: str, plan: ResumePlan) -> TeacherWriter:
        """The writer of another process of the same job: the entry ``begin`` started and the plan it made."""
        return cls(store, name, plan)

    @property
    def pending(self) -> list[tuple[int, int]]:
        return self.plan.pending

    # ------------------------------------------------------------------ writing
    def write(self, view: int, chunk: int, logits: np.ndarray, params: np.ndarray | None = None) -> None:
        """Encode and write chunk ``chunk`` of view ``view`` (float logits of its rows), then its checksum
        record; ``params``: the view parameters of a new view set (the first teacher writes them)."""
        start, stop = self.store.grid.bounds(chunk)
        rows = encodings.Rows(seed=self.store.views.seed, view=view, samples=np.arange(start, stop),
                              teacher=self.name)
        self.store.write_chunk(self.name, view, chunk, encode(self.encoding, logits, rows), params)

    def sync(self) -> None:
        """Flush what this process wrote to stable storage (each process of a job, before :meth:`complete`)."""
        self.store.sync()

    def complete(self) -> list[float]:
        """Record the accuracy per view and mark the entry ``complete``, once every chunk is written and
        synced (one process); returns the accuracy."""
        accuracy = teacher_accuracy(self.store, self.name)
        card = self.store.card(self.name)
        self.store.set_card(self.name, card.replace(status="complete", started=card.started or utc_now(),
                                                    finished=utc_now(), accuracy_per_view=accuracy))
        return accuracy

    def finish(self) -> list[float]:
        """:meth:`sync`, then :meth:`complete` (a producer that runs as one process)."""
        self.sync()
        return self.complete()


def _check_platform(store: Store, name: str, card: TeacherCard, producer: Producer) -> None:
    """Refuse to add chunks of ``name`` on another platform than the one its card records."""
    # Chunks computed elsewhere would differ in their last bits from the ones already stored.
    moved = platform_differences(store.card(name).platform or {}, card.platform or {})
    if moved:
        raise StoreMismatchError(
            f"teacher {name!r} in {store.path} was scored on another platform ({'; '.join(moved)}); "
            f"resume it where it was started (bits would differ), or {producer.name_option} NEW to score it here"
        )
