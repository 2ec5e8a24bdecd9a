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
from kdcache.errors import StoreMismatchError, UsageError
from kdcache.progress import console, make_progress, rate_text
from kdcache.store import Store, differences, locate, utc_now, writer_lock
from kdcache.store.location import Location


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
    """The parts convert writes for ``rows``, given the float source's rows as stored (float16 or float32).

    The stored values are cast to float32, as precompute hands the teacher's
    output to the encoder, and encoded; so a float16 source's rounding is part
    of what is encoded. ``verify --replay`` rebuilds a converted teacher's
    parts through this same function, so the two cannot drift apart.
    """
    return enc.encode(np.asarray(stored, dtype=np.float32), rows)


def convert(path: str | os.PathLike[str] | Location, *, teacher: str | None, encoding: str,
            new_name: str | None = None, progress: bool = True) -> ConvertResult:
    """Re-encode teacher ``teacher`` of the store at ``path`` as ``encoding`` into teacher ``new_name``."""
    enc = encodings.parse(encoding)
    location = locate(path)
    Store.open(location)  # a missing or foreign store is refused before the lock is taken
    with writer_lock(location):
        store = Store.open(location, mode="r+")
        source = store.require_complete(teacher)
        src_card = store.card(source)
        if not store.encoding(source).lossless_dense:
            raise UsageError(f"teacher {source!r} is stored as {src_card.encoding}; convert re-encodes float "
                             "logits: pass --teacher-name of a float32 (or float16) teacher")
        problem = enc.check(src_card.num_classes)
        if problem:
            raise UsageError(problem)
        name = new_name or default_name(source, enc.spec)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise UsageError(f"--as {name!r} must use letters, digits, '_', '-' or '.'")
        if name == source:
            raise UsageError(f"--as {name!r} is the source teacher; give the new entry another name")
        card = src_card.replace(encoding=enc.spec, status="writing", started=None, finished=None,
                                accuracy_per_view=None, stats={},
                                extra={**src_card.extra_dict(), "converted_from": source})
        if name in store.teacher_names():
            problems = differences(card, store.card(name), "teacher")
            if problems or store.card(name).extra_dict().get("converted_from") != source:
                raise StoreMismatchError(
                    f"{store.path} already has a teacher {name!r} that is not {source!r} as {enc.spec} "
                    f"({'; '.join(problems) or 'made another way'}); choose another --as NAME")
        else:
            store.add_teacher(name, card)
        pending, redone = store.pending_chunks(name)
        if redone:
            console.print(f"[yellow]{redone} chunk(s) of {name!r} no longer match their checksum; re-encoding them")
        grid = store.grid
        total = store.num_views * store.num_samples
        rows_pending = sum(grid.bounds(j)[1] - grid.bounds(j)[0] for _, j in pending)
        if pending and rows_pending < total:
            console.print(f"resuming {name!r}: {total - rows_pending:,} of {total:,} rows already stored")
        t0 = time.perf_counter()
        done = 0
        with make_progress(enabled=progress) as bar:
            task = bar.add_task(f"convert {source} -> {name}", total=rows_pending, rate="")
            for v, j in pending:
                start, stop = grid.bounds(j)
                rows = encodings.Rows(seed=store.views.seed, view=v, samples=np.arange(start, stop), teacher=name)
                store.write_chunk(name, v, j, encode_from_source(store.read_logits_chunk(source, v, j), enc, rows),
                                  None)
                done += stop - start
                bar.update(task, advance=stop - start, rate=rate_text(done, time.perf_counter() - t0, "rows"))
        seconds = time.perf_counter() - t0
        store.sync()
        from kdcache.precompute import teacher_accuracy  # the same per-view accuracy precompute records

        accuracy = teacher_accuracy(store, name)
        store.set_card(name, store.card(name).replace(status="complete", started=store.card(name).started or utc_now(),
                                                      finished=utc_now(), accuracy_per_view=accuracy))
        views = max(1, store.num_views)
        return ConvertResult(store=str(store.path), source=source, name=name, encoding=enc.spec, rows_written=done,
                             rows_skipped=total - rows_pending, seconds=seconds,
                             bytes_per_view=store.logits_bytes(name) / views,
                             source_bytes_per_view=store.logits_bytes(source) / views)


def format_convert(r: ConvertResult) -> str:
    """The human summary of ``kdcache convert``."""
    ratio = r.source_bytes_per_view / r.bytes_per_view if r.bytes_per_view else float("nan")
    return (f"teacher {r.name} ({r.encoding}) from {r.source}: {r.rows_written:,} rows encoded"
            + (f" ({r.rows_skipped:,} already stored)" if r.rows_skipped else "") + f" in {r.seconds:.1f}s\n"
            f"  {r.bytes_per_view / 1e6:.3f} MB per view on disk ({ratio:.1f}x smaller than {r.source}); "
            f"store {r.store}")
