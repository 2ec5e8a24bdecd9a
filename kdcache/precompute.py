"""``kdcache precompute``: run each teacher once over every (view, sample) and store its logits.

The work unit is one store chunk of one view. Chunks are rendered by a
DataLoader (workers), scored by the teacher in fixed micro-batches aligned to
the chunk (so the stored bits do not depend on ``--batch-size``), and written
whole by a background thread while the next chunk is scored. A chunk's
checksum record is written after the chunk itself; a rerun of the same command
skips every chunk whose record still matches its bytes, which makes an
interrupted run resumable and its result identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from kdcache.data import DataSource, open_data
from kdcache.errors import KdcacheError, NonFiniteLogitsError, StoreMismatchError
from kdcache.models import build_model, check_output_width, run_model
from kdcache.prefetch import prefetch
from kdcache.progress import console, make_progress, rate_text
from kdcache.store import (
    CODECS,
    ENCODINGS,
    ChunkGrid,
    Store,
    WriterLock,
    checksum,
    default_chunk_rows,
    dir_size,
    sync_store,
    utc_now,
)
from kdcache.views import Recipe, Render, ViewDataset, load_recipe

DEFAULT_MICRO_BATCH = 64


@dataclass(frozen=True)
class TeacherRequest:
    """One teacher to precompute: its spec, optional checkpoint and store name."""

    spec: str
    weights: str | None = None
    name: str | None = None


@dataclass
class TeacherSummary:
    """What one teacher's precompute produced (printed at the end of the command)."""

    name: str
    accuracy_per_view: list[float]
    rows_written: int
    rows_skipped: int
    seconds: float
    disk_bytes: int
    bytes_per_view: float

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class PrecomputeResult:
    store: Path
    teachers: list[TeacherSummary] = field(default_factory=list)


def teacher_name_from_spec(spec: str) -> str:
    """A store-safe teacher name from a spec: 'kdcache:resnet32x4' -> 'resnet32x4'."""
    tail = spec.rsplit(":", 1)[-1]
    tail = Path(tail).stem if "/" in tail or tail.endswith((".pt", ".pt2")) else tail
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", tail).strip("._") or "teacher"
    return name


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise KdcacheError(f"teacher name {name!r} must use letters, digits, '_', '-' or '.'")
    return name


def _batches_for_chunk(view: int, start: int, stop: int, batch_size: int) -> list[list[tuple[int, int]]]:
    return [
        [(i, view) for i in range(b, min(b + batch_size, stop))] for b in range(start, stop, batch_size)
    ]


def _worker_init(_: int) -> None:
    # Rendering is tiny per image; one thread per worker avoids oversubscribing cores.
    torch.set_num_threads(1)


class _ChunkWriter:
    """A background thread that writes finished chunks while the teacher scores the next.

    The queue is bounded (two chunks), so memory stays bounded whatever the
    store size. Errors raised in the thread are re-raised in the caller.
    """

    def __init__(self, store: Store, teacher: str, write_params: bool, encoding: str) -> None:
        self.store = store
        self.teacher = teacher
        self.write_params = write_params
        self.dtype = np.dtype(encoding)
        self.queue: queue.Queue[tuple[int, int, np.ndarray, np.ndarray] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, name="kdcache-writer", daemon=True)
        self.thread.start()

    def put(self, view: int, chunk: int, logits: np.ndarray, params: np.ndarray) -> None:
        self.raise_if_failed()
        self.queue.put((view, chunk, logits, params))

    def _run(self) -> None:
        store, grid = self.store, self.store.grid
        logits_arr = store.logits(self.teacher)
        sums = store.logit_checksums(self.teacher)
        params_arr, params_sums = store.params(), store.view_checksums()
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain without writing after a failure
            view, chunk, logits, params = item
            start, stop = grid.bounds(chunk)
            try:
                if self.write_params:
                    params_arr[view, start:stop] = params
                    params_sums[view, chunk] = checksum(params)
                encoded = logits.astype(self.dtype)
                logits_arr[view, start:stop] = encoded
                # The record goes last: a chunk without one is redone on resume.
                sums[view, chunk] = checksum(encoded)
                self.written += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Write everything queued, stop the thread, re-raise a writer error."""
        self.queue.put(None)
        self.thread.join()
        self.raise_if_failed()


def _views_record(seed: int, num_views: int, recipe: Recipe, chunk_rows: int) -> dict[str, Any]:
    return {
        "seed": int(seed),
        "num_views": int(num_views),
        "seed_derivation": "numpy PCG64(SeedSequence([seed, sample, view]))",
        "recipe": recipe.to_dict(),
        "recipe_hash": recipe.hash(),
        "param_names": recipe.param_names(),
        "chunk_rows": int(chunk_rows),
    }


def _differences(expected: dict[str, Any], found: dict[str, Any], keys: Sequence[str], what: str) -> list[str]:
    out = []
    for key in keys:
        if expected.get(key) != found.get(key):
            out.append(f"{what} {key}: store has {found.get(key)!r}, this run has {expected.get(key)!r}")
    return out


def _open_or_create(
    out: Path, source: DataSource, recipe: Recipe, seed: int, views: int, chunk_rows: int | None,
    num_classes: int, itemsize: int, micro_batch: int,
) -> Store:
    """Open the store at ``out`` if it is one for this data and view set, else create it."""
    if out.exists() and (out / "zarr.json").exists():
        store = Store.open(out, mode="r+")
        problems = _differences(
            source.describe(), store.manifest["dataset"], ["name", "split", "num_samples", "fingerprint"], "dataset"
        )
        wanted = _views_record(seed, views, recipe, store.grid.chunk_rows)
        problems += _differences(wanted, store.manifest["views"], ["seed", "num_views", "recipe_hash"], "views")
        if chunk_rows is not None and chunk_rows != store.grid.chunk_rows:
            problems.append(f"chunk rows: store has {store.grid.chunk_rows}, this run asks {chunk_rows}")
        if problems:
            raise StoreMismatchError(
                f"{out} holds a store made with other arguments ({'; '.join(problems)}); "
                "use the same --data/--seed/--views/--recipe, or a new --out"
            )
        return store
    rows = chunk_rows or default_chunk_rows(num_classes, len(source), itemsize, micro_batch)
    if rows % micro_batch:
        raise KdcacheError(f"--chunk-rows {rows} must be a multiple of the micro-batch {micro_batch}")
    return Store.create(
        out,
        dataset=source.describe(),
        labels=source.labels,
        views=_views_record(seed, views, recipe, rows),
        num_params=len(recipe.param_names()),
    )


def _pending_chunks(store: Store, teacher: str) -> tuple[list[tuple[int, int]], int]:
    """Chunks still to compute; a chunk whose bytes no longer match its record is redone."""
    sums = np.asarray(store.logit_checksums(teacher)[:])
    pending: list[tuple[int, int]] = []
    redone = 0
    for v, j in store.iter_chunks():
        if sums[v, j] == 0:
            pending.append((v, j))
        elif checksum(store.read_logits_chunk(teacher, v, j)) != int(sums[v, j]):
            # Torn by a power loss after the record was written: compute it again.
            pending.append((v, j))
            redone += 1
    return pending, redone


def precompute(
    *,
    data: str,
    teachers: Sequence[TeacherRequest],
    views: int,
    seed: int,
    out: str | Path,
    recipe: str = "fashion-mnist",
    batch_size: int = 256,
    workers: int = 0,
    encoding: str = "float16",
    codec: str = "none",
    chunk_rows: int | None = None,
    micro_batch: int = DEFAULT_MICRO_BATCH,
    device: str = "cpu",
    progress: bool = True,
) -> PrecomputeResult:
    """Run each teacher once over ``views`` replayable views of ``data`` into the store ``out``.

    Re-running the same call resumes an interrupted run; adding a teacher to a
    complete store with the same data and views is allowed; anything else that
    differs from the store is refused with the list of differences.
    """
    if views < 1:
        raise KdcacheError(f"--views must be at least 1 (got {views})")
    if batch_size < 1 or workers < 0:
        raise KdcacheError("--batch-size must be >= 1 and --workers >= 0")
    if encoding not in ENCODINGS:
        raise KdcacheError(f"--encoding must be one of {', '.join(ENCODINGS)} (got {encoding!r})")
    if codec not in CODECS:
        raise KdcacheError(f"--codec must be one of {', '.join(CODECS)} (got {codec!r})")
    if not teachers:
        raise KdcacheError("give at least one --teacher")
    source = open_data(data)
    rec = load_recipe(recipe)
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise KdcacheError(f"--out {out_path} is a file, not a store directory; choose another path")
    dev = torch.device(device)
    # Rows are scored in micro-batches aligned to chunk starts; a user batch is a
    # whole number of them so batch boundaries never move a row inside one.
    batch_size = max(micro_batch, (batch_size // micro_batch) * micro_batch)

    # Build and check every teacher before writing anything: a bad second
    # teacher is reported at once, not after the first one's long run.
    render = rec.render
    in_channels = render.channels or source.channels
    h, w = render.size or rec.output_size(source.image_size(0))
    prepared = []
    names: set[str] = set()
    for request in teachers:
        model, card = build_model(request.spec, source.num_classes, in_channels, request.weights)
        check_output_width(model, in_channels, (h, w), source.num_classes,
                           micro_batch=2)  # a width check, not a full micro-batch of work
        name = _check_name(request.name or teacher_name_from_spec(request.spec))
        if name in names:
            raise KdcacheError(f"two teachers are named {name!r}; give each a --teacher-name")
        names.add(name)
        card = {**card, "render": render.to_dict(), "input_size": [int(h), int(w)], "encoding": encoding,
                "codec": codec, "micro_batch": micro_batch}
        prepared.append((name, card, model.to(dev)))

    out_path.mkdir(parents=True, exist_ok=True)
    result = PrecomputeResult(store=out_path)
    with WriterLock(out_path):
        store = _open_or_create(out_path, source, rec, seed, views, chunk_rows, source.num_classes,
                                np.dtype(encoding).itemsize, micro_batch)
        for name, card, model in prepared:
            result.teachers.append(
                _run_teacher(store, name, card, model, source, rec, seed, batch_size, workers, micro_batch,
                             dev, progress)
            )
    return result


_CARD_KEYS = ("spec", "weights_sha256", "num_classes", "in_channels", "render", "encoding", "codec", "micro_batch")


def _run_teacher(
    store: Store, name: str, card: dict[str, Any], model: torch.nn.Module, source: DataSource, recipe: Recipe,
    seed: int, batch_size: int, workers: int, micro_batch: int, device: torch.device, progress: bool,
) -> TeacherSummary:
    if name in store.manifest["teachers"]:
        problems = _differences(card, store.manifest["teachers"][name], _CARD_KEYS, "teacher")
        if problems:
            raise StoreMismatchError(
                f"{store.path} already has a teacher {name!r} made differently ({'; '.join(problems)}); "
                "pass the same arguments to resume it, or --teacher-name NEW to add another teacher"
            )
    else:
        store.add_teacher(name, card, source.num_classes, card["encoding"], card["codec"])
    # The first teacher on a view set records the view parameters; later ones
    # check that their replayed parameters are the same.
    view_sums = np.asarray(store.view_checksums()[:])
    pending, redone = _pending_chunks(store, name)
    total_rows = store.num_views * store.num_samples
    grid: ChunkGrid = store.grid
    rows_pending = sum(grid.bounds(j)[1] - grid.bounds(j)[0] for _, j in pending)
    if redone:
        console.print(f"[yellow]{redone} chunk(s) of {name!r} no longer match their checksum; recomputing them")
    if pending and len(pending) < store.num_views * grid.num_chunks:
        console.print(f"resuming {name!r}: {total_rows - rows_pending:,} of {total_rows:,} rows already stored")

    renders: list[Render] = [Render.from_dict(card["render"])]
    dataset = ViewDataset(source, recipe, seed, renders)
    batches = [b for v, j in pending for b in _batches_for_chunk(v, *grid.bounds(j), batch_size)]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    write_params = bool((view_sums == 0).any())
    writer = _ChunkWriter(store, name, write_params, card["encoding"])
    t0 = time.perf_counter()
    done_rows = 0
    chunk_logits: list[np.ndarray] = []
    chunk_params: list[np.ndarray] = []
    chunk_iter = iter(pending)
    current = next(chunk_iter, None)
    filled = 0
    try:
        with make_progress(enabled=progress) as bar:
            task = bar.add_task(f"precompute {name}", total=rows_pending, rate="")
            for batch in (loader if workers else prefetch(loader)):
                images = batch["images"][0].to(device, non_blocking=True)
                logits = run_model(model, images, micro_batch=micro_batch).cpu()
                finite = torch.isfinite(logits).all(dim=1)
                if not bool(finite.all()):
                    bad = int((~finite).nonzero()[0, 0])
                    raise NonFiniteLogitsError(
                        f"teacher {name!r} produced NaN/Inf logits for sample {int(batch['sample'][bad])}, "
                        f"view {int(batch['view'][bad])}; check its weights (chunks already written are kept)"
                    )
                chunk_logits.append(logits.numpy())
                chunk_params.append(batch["params"].numpy())
                filled += logits.shape[0]
                if current is None:  # batches are built from `pending`, so this is a bug
                    raise RuntimeError("precompute received more rows than it scheduled")
                v, j = current
                start, stop = grid.bounds(j)
                if filled == stop - start:
                    params = np.concatenate(chunk_params).astype(np.int32)
                    if view_sums[v, j] != 0:
                        _check_params(store, v, j, params)
                    writer.put(v, j, np.concatenate(chunk_logits), params)
                    chunk_logits, chunk_params, filled = [], [], 0
                    current = next(chunk_iter, None)
                done_rows += logits.shape[0]
                elapsed = time.perf_counter() - t0
                bar.update(task, advance=logits.shape[0], rate=rate_text(done_rows, elapsed, "views"))
    finally:
        writer.close()
    seconds = time.perf_counter() - t0

    sync_store(store.path)
    accuracy = teacher_accuracy(store, name)
    teacher_card = store.manifest["teachers"][name]
    teacher_card.update(status="complete", finished=utc_now(), accuracy_per_view=accuracy)
    if all(t["status"] == "complete" for t in store.manifest["teachers"].values()):
        store.manifest["status"] = "complete"
    store.save_manifest()
    disk = store.disk_bytes()
    logit_bytes = dir_size(store.path / "teachers" / name / "logits")
    return TeacherSummary(
        name=name,
        accuracy_per_view=accuracy,
        rows_written=done_rows,
        rows_skipped=total_rows - rows_pending,
        seconds=seconds,
        disk_bytes=disk,
        bytes_per_view=logit_bytes / max(1, store.num_views),
    )


def _check_params(store: Store, view: int, chunk: int, params: np.ndarray) -> None:
    stored = store.read_params_chunk(view, chunk)
    if not np.array_equal(stored.reshape(params.shape), params):
        raise StoreMismatchError(
            f"view {view}, chunk {chunk}: the replayed augmentation parameters differ from those "
            f"recorded in {store.path}; the data or the kdcache version differs from the store's"
        )


def teacher_accuracy(store: Store, teacher: str) -> list[float]:
    """Top-1 accuracy of the stored logits per view, against the hard labels, chunk by chunk."""
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


def format_summary(result: PrecomputeResult) -> str:
    """The human summary printed at the end of ``kdcache precompute``."""
    lines = [f"store: {result.store}"]
    for t in result.teachers:
        acc = ", ".join(f"{a:.2%}" for a in t.accuracy_per_view[:8])
        more = " ..." if len(t.accuracy_per_view) > 8 else ""
        mean = float(np.mean(t.accuracy_per_view)) if t.accuracy_per_view else math.nan
        lines.append(
            f"teacher {t.name}: {t.rows_written:,} views scored"
            + (f" ({t.rows_skipped:,} already stored)" if t.rows_skipped else "")
            + f" in {t.seconds:.1f}s ({t.rows_per_s:,.0f} views/s)"
        )
        lines.append(f"  accuracy per view: {acc}{more} (mean {mean:.2%})")
        lines.append(f"  logits: {t.bytes_per_view / 1e6:.2f} MB per view; store on disk {t.disk_bytes / 1e6:.2f} MB")
    return "\n".join(lines)
