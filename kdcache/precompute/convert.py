"""``kdcache convert``: re-encode a cached teacher into a new teacher entry, without running the teacher.

The new entry lives on the same views as the source and is written exactly as
``precompute --encoding E`` would write it: each chunk of the source's float
logits is read (checksum-verified), encoded by the same
:meth:`kdcache.encodings.Encoding.encode` precompute calls on the same float32
values, and written with its checksum record; so converting a float32 teacher
gives the bits a direct ``precompute --encoding E`` gives (a sample encoding
keys its draws by the NEW name, as precompute keys them by the name it writes).
Like precompute it holds the writer lock, shows a progress bar, skips chunks
whose record still matches (an interrupted convert resumes), and marks the
teacher ``complete`` only after every chunk is written and synced.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

import numpy as np

from kdcache import encodings
from kdcache.errors import UsageError
from kdcache.progress import make_progress, rate_text
from kdcache.store import Store, TeacherCard, locate, writer_lock
from kdcache.store.location import Location
from kdcache.store.teacher_writer import Producer, TeacherWriter, check_name, encode


@dataclass
class ConvertResult:
    """What one convert produced (printed by the CLI)."""

    store: str
    source: str
    name: str
    encoding: str
    rows_written: int
    rows_skipped: int
    seconds: float
    bytes_per_view: float
    source_bytes_per_view: float


def default_name(source: str, spec: str) -> str:
    """``SOURCE_<encoding>`` with the encoding's ':' '@' '.' spelled as a store-safe name (topk:32 -> topk32)."""
    return f"{source}_{re.sub(r'[^A-Za-z0-9]+', '', spec.replace('@', 'at'))}"


def encode_from_source(stored: np.ndarray, enc: encodings.Encoding, rows: encodings.Rows) -> dict[str, np.ndarray]:
    """The parts convert writes for ``rows``, given the float source's rows as stored (float16 or float32):
    :func:`kdcache.store.teacher_writer.encode`, which every writer goes through. ``verify --replay``
    rebuilds a converted teacher's parts with it, so the two cannot drift apart."""
    return encode(enc, stored, rows)


@dataclass(frozen=True)
class _Plan:
    source: str
    name: str
    card: TeacherCard
    producer: Producer


def _plan(store: Store, teacher: str | None, enc: encodings.Encoding, new_name: str | None) -> _Plan:
    """What to convert into what, every refusal included (on the store as read before the writer lock)."""
    source = store.require_complete(teacher)  # an unknown --teacher-name is a usage error (exit 2)
    src_card = store.card(source)
    if not store.encoding(source).lossless_dense:
        raise UsageError(f"teacher {source!r} is stored as {src_card.encoding}; convert re-encodes float "
                         "logits: pass --teacher-name of a float32 (or float16) teacher")
    problem = enc.check(src_card.num_classes)
    if problem:
        raise UsageError(problem)
    # Re-encoding stored rows is numpy, the same on every platform: the source's platform record stays.
    producer = Producer(name_option="--as", provenance={"converted_from": source}, platform_bound=False)
    name = check_name(new_name or default_name(source, enc.spec), producer)
    if name == source:
        raise UsageError(f"--as {name!r} is the source teacher; give the new entry another name")
    card = src_card.replace(encoding=enc.spec)
    TeacherWriter.check(store, name, card, producer)
    return _Plan(source, name, card, producer)


def convert(path: str | os.PathLike[str] | Location, *, teacher: str | None, encoding: str,
            new_name: str | None = None, progress: bool = True) -> ConvertResult:
    """Re-encode teacher ``teacher`` of the store at ``path`` as ``encoding`` into teacher ``new_name``.

    Every refusal (a missing store or teacher, a compact source, a name taken by another entry) comes
    before the writer lock is taken; the new entry's life is
    :class:`~kdcache.store.teacher_writer.TeacherWriter`'s.
    """
    enc = encodings.parse(encoding)
    location = locate(path)
    plan = _plan(Store.open(location), teacher, enc, new_name)
    with writer_lock(location):
        store = Store.open(location, mode="r+")
        entry = TeacherWriter.begin(store, plan.name, plan.card, plan.producer)
        grid = store.grid
        t0 = time.perf_counter()
        done = 0
        with make_progress(enabled=progress) as bar:
            task = bar.add_task(f"convert {plan.source} -> {plan.name}", total=entry.plan.rows_pending, rate="")
            for v, j in entry.pending:
                start, stop = grid.bounds(j)
                entry.write(v, j, store.read_logits_chunk(plan.source, v, j))
                done += stop - start
                bar.update(task, advance=stop - start, rate=rate_text(done, time.perf_counter() - t0, "rows"))
        seconds = time.perf_counter() - t0
        entry.finish()
        views = max(1, store.num_views)
        return ConvertResult(store=str(store.path), source=plan.source, name=plan.name, encoding=enc.spec,
                             rows_written=done, rows_skipped=entry.plan.rows_stored, seconds=seconds,
                             bytes_per_view=store.logits_bytes(plan.name) / views,
                             source_bytes_per_view=store.logits_bytes(plan.source) / views)


def format_convert(r: ConvertResult) -> str:
    """The human summary of ``kdcache convert``."""
    return (f"teacher {r.name} ({r.encoding}) from {r.source}: {r.rows_written:,} rows encoded"
            + (f" ({r.rows_skipped:,} already stored)" if r.rows_skipped else "") + f" in {r.seconds:.1f}s\n"
            f"  {r.bytes_per_view / 1e6:.3f} MB per view on disk "
            f"({size_change(r.bytes_per_view, r.source_bytes_per_view)} {r.source}); store {r.store}")


def size_change(new: float, old: float) -> str:
    """How ``new`` bytes compare with ``old``: '4.0x smaller than', '1.3x larger than', 'the same size as'."""
    if new <= 0 or old <= 0:
        return "compared with"  # nothing to divide by (an empty entry): no factor to state
    factor = old / new if new < old else new / old
    if f"{factor:.1f}" == "1.0":
        return "about the same size as"
    return f"{factor:.1f}x {'smaller' if new < old else 'larger'} than"
