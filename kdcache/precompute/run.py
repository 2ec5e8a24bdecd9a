"""``kdcache precompute``: run each teacher once over every (view, sample) and store its logits.

The work unit is one store chunk of one view. Chunks are rendered by a
DataLoader (workers), scored by the teacher in fixed micro-batches aligned to
the chunk (so the stored bits do not depend on ``--batch-size``), and written
whole by a background thread while the next chunk is scored. A chunk's
checksum record is written after the chunk itself; a rerun of the same command
skips every chunk whose record still matches its bytes, which makes an
interrupted run resumable and its result identical to an uninterrupted one.

Under ``torchrun`` (:mod:`kdcache.distributed`) the same command runs as N
ranks: rank 0 creates or opens the store, holds its writer lock and adds the
teacher; after a barrier every rank scores its strided share of the pending
chunks (``pending[rank::N]``, in the store's (view, chunk) order) and writes
them with their checksum records; after a second barrier rank 0 marks the
teacher complete. A chunk is scored in the same micro-batches whoever scores
it, so the store's bits do not depend on N, and progress lives in the checksum
records, so a killed job resumes with any N.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from kdcache import distributed, encodings
from kdcache.data import DataSource, open_data
from kdcache.errors import (
    NonFiniteLogitsError,
    StoreError,
    StoreMismatchError,
    StoreRepairWarning,
    UsageError,
    warn,
)
from kdcache.models import check_output_width, run_model
from kdcache.distill.prefetch import prefetch
from kdcache.progress import make_progress, rate_text
from kdcache.precompute.scoring import PRECISIONS, ChunkKeys, build_teacher, teacher_autocast, worker_init
from kdcache.store import (
    CODECS,
    ChunkWriter,
    DatasetRecord,
    Location,
    Store,
    TeacherCard,
    ViewsRecord,
    default_chunk_rows,
    differences,
    platform_record,
    probe,
    store_target,
)
from kdcache.store.integrity import repair_params
from kdcache.store.teacher_writer import TeacherWriter, check_name
from kdcache.store.writing import creating_writer_lock
from kdcache.validate import require_choice, require_int
from kdcache.views import Recipe, Render, ViewDataset, resolve_recipe

DEFAULT_MICRO_BATCH = 64
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherRequest:
    """One teacher to precompute: its spec, optional checkpoint and store name."""

    spec: str
    weights: str | None = None
    name: str | None = None
    random_init: bool = False  # a kdcache:/torchvision: spec without weights, untrained on purpose


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


def _views_record(seed: int, num_views: int, recipe: Recipe, chunk_rows: int) -> ViewsRecord:
    return ViewsRecord(seed=int(seed), num_views=int(num_views), recipe=recipe.to_dict(), recipe_hash=recipe.hash(),
                       param_names=recipe.param_names(), chunk_rows=int(chunk_rows))


@dataclass(frozen=True)
class _StoreRequest:
    """The store this run asks for: its data, view set and (for a new store) chunk rows."""

    dataset: DatasetRecord
    seed: int
    views: int
    recipe: Recipe
    chunk_rows: int | None  # as given (None: the default)
    new_chunk_rows: int | None  # a new store's rows per chunk (a whole number of micro-batches); None: it exists

    def check(self, store: Store) -> Store:
        """``store`` if it was made for this data and view set (read-only is enough), else refused."""
        problems = differences(self.dataset, store.dataset, "dataset")
        problems += differences(_views_record(self.seed, self.views, self.recipe, store.grid.chunk_rows),
                                store.views, "views")
        if self.chunk_rows is not None and self.chunk_rows != store.grid.chunk_rows:
            problems.append(f"chunk rows: store has {store.grid.chunk_rows}, this run asks {self.chunk_rows}")
        if problems:
            raise StoreMismatchError(
                f"{store.path} holds a store made with other arguments ({'; '.join(problems)}); "
                "use the same --data/--seed/--views/--recipe, or a new --out"
            )
        return store

    def open_or_create(self, out: Path | Location, labels: np.ndarray) -> Store:
        """Open the store at ``out`` if it is one for this data and view set, else create it (under the lock)."""
        if probe(out) == "store":
            return self.check(Store.open(out, mode="r+"))
        if self.new_chunk_rows is None:
            raise StoreError(f"the store at {out} was removed while this run started; run it again")
        return Store.create(out, dataset=self.dataset, labels=labels,
                            views=_views_record(self.seed, self.views, self.recipe, self.new_chunk_rows))


def _new_chunk_rows(chunk_rows: int | None, num_classes: int, num_samples: int, class_bytes: int,
                    micro_batch: int) -> int:
    """Rows per chunk of a new store (refused when not a whole number of micro-batches)."""
    rows = chunk_rows or default_chunk_rows(num_classes, num_samples, class_bytes, micro_batch)
    if rows % micro_batch:
        raise UsageError(f"--chunk-rows {rows} must be a multiple of the micro-batch {micro_batch}")
    return rows


def _check_arguments(views: int, batch_size: int, workers: int, encoding: str, codec: str, micro_batch: int,
                     chunk_rows: int | None, teachers: Sequence[TeacherRequest]) -> None:
    """Refuse bad option values before anything is opened or written (one line each; kdcache.validate)."""
    require_int("--views", views, 1)
    require_int("--batch-size", batch_size, 1)
    require_int("--workers", workers, 0)  # 0: render in this process
    require_int("micro_batch", micro_batch, 1)
    if chunk_rows is not None:
        require_int("--chunk-rows", chunk_rows, 1)
    require_choice("--codec", codec, CODECS)
    if not teachers:
        raise UsageError("give at least one --teacher")
    encodings.parse(encoding)  # one line naming the encodings when it is not one


def _resolve_recipe(name: str | None, source: DataSource) -> Recipe:
    recipe = resolve_recipe(name, source)
    if name is None:
        log.info("recipe: %s (the default for %s; give a recipe to choose another)", recipe.name, source.spec)
    return recipe


def _resolve_random_init(teachers: Sequence[TeacherRequest], random_init: bool) -> list[TeacherRequest]:
    """Each request with its own ``random_init``: the call's ``random_init`` marks every teacher given
    without weights, as ``--random-init`` does; a teacher given weights and random_init is refused."""
    for request in teachers:
        if request.random_init and request.weights:
            raise UsageError(f"teacher {request.spec}: --weights and --random-init contradict each other; "
                             "pass one of them")
    if random_init and all(request.weights for request in teachers):
        which = ", ".join(request.spec for request in teachers)
        raise UsageError(f"--weights and --random-init contradict each other: --random-init is for a --teacher "
                         f"without --weights, and every teacher has weights ({which}); pass one of them")
    return [dataclasses.replace(r, random_init=r.random_init or (random_init and not r.weights)) for r in teachers]


def precompute(
    *,
    data: str,
    teachers: Sequence[TeacherRequest],
    views: int,
    seed: int,
    out: str | Path,
    recipe: str | None = None,
    batch_size: int = 256,
    workers: int = 0,
    encoding: str = "float16",
    codec: str = "none",
    chunk_rows: int | None = None,
    micro_batch: int = DEFAULT_MICRO_BATCH,
    device: str = "cpu",
    random_init: bool = False,
    progress: bool = True,
    precision: str = "fp32",
) -> PrecomputeResult:
    """Run each teacher once over ``views`` replayable views of ``data`` into the store ``out``.

    Re-running the same call resumes an interrupted run; adding a teacher to a
    complete store with the same data and views is allowed (it is run on the
    recorded views); anything else that differs from the store, the teacher's
    program or weights included, is refused with the list of differences.
    ``random_init`` marks every teacher given without weights as an untrained
    ``kdcache:``/``torchvision:`` network on purpose (recorded in its card),
    as :attr:`TeacherRequest.random_init` marks one; with weights it is refused.
    ``precision`` runs the teacher under autocast (``bf16``/``fp16``) or not
    (``fp32``); it is recorded in the card and part of the teacher's identity.
    Under torchrun the work is split over the ranks (see the module docstring).
    """
    _check_arguments(views, batch_size, workers, encoding, codec, micro_batch, chunk_rows, teachers)
    teachers = _resolve_random_init(teachers, random_init)
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    ctx, dev = distributed.init(device)
    out_path = store_target(out)  # a local directory (absolute), or an object-store Location
    kind = probe(out_path)
    if kind == "file":
        raise StoreError(f"--out {out_path} is a file, not a store directory; choose another path")
    if kind == "foreign":
        raise StoreMismatchError(
            f"--out {out_path} is a non-empty directory that is not a kdcache store; "
            "choose a new path (kdcache will not write into it)"
        )
    # An unreadable store (other format version) is refused before any work.
    existing = Store.open(out_path) if kind == "store" else None
    source = open_data(data)
    encoding = encodings.parse(encoding).spec  # canonical spelling, recorded in the card
    too_many = encodings.parse(encoding).check(source.num_classes)
    if too_many:
        raise UsageError(too_many)
    rec = _resolve_recipe(recipe, source)
    # Every refusal of the store or a teacher comes before the writer lock, so a refused run writes nothing.
    wanted = _StoreRequest(
        dataset=DatasetRecord.from_dict(source.describe()), seed=seed, views=views, recipe=rec, chunk_rows=chunk_rows,
        new_chunk_rows=None if existing is not None else _new_chunk_rows(
            chunk_rows, source.num_classes, len(source), encodings.parse(encoding).class_bytes(), micro_batch),
    )
    if existing is not None:
        wanted.check(existing)
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
        weights = str(Path(request.weights).expanduser().absolute()) if request.weights else None
        model, built = build_teacher(request.spec, source.num_classes, in_channels, weights, request.random_init,
                                     init_seed=seed)
        check_output_width(model, in_channels, (h, w), source.num_classes,
                           micro_batch=2)  # a width check, not a full micro-batch of work
        name = check_name(request.name or teacher_name_from_spec(request.spec))
        if name in names:
            raise UsageError(f"two teachers are named {name!r}; give each a --teacher-name")
        names.add(name)
        card = TeacherCard.from_dict({
            **built, "render": render.to_dict(), "input_size": [int(h), int(w)], "encoding": encoding,
            "codec": codec, "micro_batch": micro_batch, "random_init": bool(built.get("random_init", False)),
            # The device as the user named it ("cuda", not each rank's "cuda:N"): the same record on every rank.
            "platform": platform_record(str(torch.device(device))), "precision": precision,
        })
        if existing is not None:
            TeacherWriter.check(existing, name, card)  # a teacher the store holds made differently
        prepared.append((name, card, model.to(dev)))

    result = PrecomputeResult(store=out_path)
    # Only rank 0 takes the lock (or lease): the other ranks write disjoint chunks under it. Where no
    # store was begun, a failure leaves neither the lock nor the directories made for it.
    with creating_writer_lock(out_path) if ctx.is_main else contextlib.nullcontext():
        store = None
        if ctx.is_main:
            store = wanted.open_or_create(out_path, source.labels)
            # Before any teacher renders from the record: a damaged params chunk is drawn again from the seed.
            if store.rewrite_labels(source.labels):  # damaged labels: rewritten from the dataset, as recorded
                warn("the store's labels no longer matched their record; rewritten from the dataset",
                     StoreRepairWarning)
            fixed = repair_params(store, source)
            if fixed:
                warn(f"{fixed} chunk(s) of views/params no longer matched their checksum record; drawn again "
                     "from the seed and rewritten", StoreRepairWarning)
        distributed.barrier()  # the store exists before the other ranks open it
        if store is None:
            store = Store.open(out_path, mode="r+")
        for name, card, model in prepared:
            result.teachers.append(
                _run_teacher(store, name, card, model, source, rec, batch_size, workers, dev,
                             progress and ctx.is_main)
            )
    return result


def _run_teacher(
    store: Store, name: str, card: TeacherCard, model: torch.nn.Module, source: DataSource, recipe: Recipe,
    batch_size: int, workers: int, device: torch.device, progress: bool,
) -> TeacherSummary:
    # Long because it is one pipeline (render -> score -> buffer to chunk -> write); its parts are
    # the loader (ChunkKeys), the scoring loop below, and the store's ChunkWriter.
    ctx = distributed.current()
    entry: TeacherWriter | None = None
    plan = None
    recorded = np.zeros(0, dtype=bool)
    if ctx.is_main:
        entry = TeacherWriter.begin(store, name, card)  # adds the entry, or resumes it (kdcache.store.teacher_writer)
        plan = entry.plan
        # The views are recorded by the first teacher; every other one renders the recorded params.
        recorded = store.recorded_views()
    # One reading of the store's state, by rank 0, before any rank writes: every rank splits the same list.
    plan, recorded = distributed.broadcast((plan, recorded))
    if entry is None:  # another rank: the store now holds the entry rank 0 began
        entry = TeacherWriter.attach(Store.open(store.location, mode="r+"), name, plan)
    store = entry.store
    grid = store.grid
    micro_batch = card.micro_batch

    mine = distributed.shard(plan.pending)  # strided: chunks cost the same, so ranks finish together
    dataset = ViewDataset(source, recipe, store.views.seed, [Render.from_dict(card.render)])
    loader = DataLoader(
        dataset,
        batch_sampler=ChunkKeys(store, mine, recorded, batch_size),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init if workers else None,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    # Chunks are encoded and written on the writer thread, overlapping the next chunk's scoring.
    writer = ChunkWriter(entry.write)
    t0 = time.perf_counter()
    done_rows = 0
    chunk_logits: list[np.ndarray] = []
    chunk_params: list[np.ndarray] = []
    chunk_iter = iter(mine)
    current = next(chunk_iter, None)
    filled = 0
    job_rows = distributed.Counter(f"precompute/{name}/rows")  # the whole job's rows, for rank 0's bar
    try:
        with make_progress(enabled=progress) as bar:
            task = bar.add_task(f"precompute {name}", total=plan.rows_pending, rate="")
            for batch in (loader if workers else prefetch(loader)):
                images = batch["images"][0].to(device, non_blocking=True)
                with teacher_autocast(device, card.precision):
                    logits = run_model(model, images, micro_batch=micro_batch).float().cpu()
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
                    params = None if recorded[v, j] else np.concatenate(chunk_params).astype(np.int32)
                    writer.put(v, j, np.concatenate(chunk_logits).astype(np.float32), params)
                    chunk_logits, chunk_params, filled = [], [], 0
                    current = next(chunk_iter, None)
                done_rows += logits.shape[0]
                everyone = job_rows.add(logits.shape[0])
                bar.update(task, completed=everyone, rate=rate_text(everyone, time.perf_counter() - t0, "views"))
            everyone = job_rows.final()  # every rank's rows: the bar ends at the job's total, not rank 0's share
            bar.update(task, completed=everyone, rate=rate_text(everyone, time.perf_counter() - t0, "views"))
    finally:
        writer.close()
    entry.sync()  # each rank flushes what it wrote (on a shared filesystem, from its own node)
    distributed.barrier()  # every rank's chunks and records are written
    seconds = time.perf_counter() - t0
    done_rows = int(distributed.all_sum([done_rows])[0])
    accuracy = distributed.broadcast(entry.complete() if ctx.is_main else None)
    return TeacherSummary(
        name=name,
        accuracy_per_view=accuracy,
        rows_written=done_rows,
        rows_skipped=plan.rows_stored,
        seconds=seconds,
        disk_bytes=store.disk_bytes(),
        bytes_per_view=store.logits_bytes(name) / max(1, store.num_views),
    )
