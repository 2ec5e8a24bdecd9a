"""Cached distillation in your own training loop: :func:`open_store` and the batches of an epoch.

``kdcache distill`` is one loop over these pieces; a plain PyTorch (or
Lightning) loop can use them directly (``docs/api.md`` shows a whole loop)::

    store = kdcache.open_store("store.zarr")                  # checked against the data it was made from
    loss = kdcache.losses.spec("nkd")
    hp = loss.resolve({"temperature": 1})
    for epoch in range(1, epochs + 1):
        for b in store.batches(epoch, batch_size=128, seed=0, loss="nkd", loss_opts=hp):
            parts = loss.fn(model(b.images), b.teacher_logits, b.labels, **hp, **b.loss_inputs)
            ...

What a batch holds, and why it is the teacher's computation without the
teacher: ``images`` are the student's rendering of exactly the views the
teacher scored (rendered from the parameters the store recorded, never drawn
again from a seed), ``teacher_logits`` are the stored logits of those views,
and ``loss_inputs`` are the store statistics the loss declares
(:attr:`kdcache.losses.LossSpec.stats`), under the keywords the loss takes.
The epoch's order and views are a pure function of ``(seed, epoch)``, the
same as ``distill --seed``'s. Every chunk read is checked against its
checksum; the store is opened read-only.

Under DDP (``torch.distributed`` initialised, e.g. by ``torchrun``), each rank's
loader yields its own contiguous slice of every global batch, as ``distill``
under torchrun trains on it (:mod:`kdcache.engine.parallel`), and each batch
carries :attr:`DistillBatch.loss_scale`, distill's scale for a last batch that
does not split evenly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, default_collate

from kdcache import losses
from kdcache.data import DataSource, open_data
from kdcache.engine.parallel import RankSlices, check_batches, slice_side
from kdcache.distill.cached_rows import DEFAULT_WINDOW, VIEW_POLICIES, CachedBatches, epoch_plan
from kdcache.distill.logit_sources import CachedLogits, LogitSource
from kdcache.validate import require_choice, require_int
from kdcache.errors import ApproximateEncodingWarning, UsageError, warn
from kdcache.store import Store
from kdcache.store.location import Location, locate
from kdcache.views import Recipe, Render, ViewDataset, eval_dataset

__all__ = ["CachedStore", "DistillBatch", "EpochLoader", "open_store"]

# How the Python API allows an inexact encoding (named in a refusal instead of the CLI flag).
API_ALLOW = "allow_approximate_encoding=True"


@dataclass(frozen=True)
class DistillBatch:
    """One batch for a distillation step.

    Attributes:
        images: ``(B, C, H, W)`` float32, the student's rendering of each view.
        labels: ``(B,)`` int64 class labels, or :class:`~kdcache.losses.MixedLabels` (label, partner label,
            λ) when the store's recipe mixes views (``mix``); every loss takes either.
        teacher_logits: ``(B, num_classes)`` float32 teacher logits of those same views.
        loss_inputs: the statistics the loss declares, by keyword (e.g. ``{"tau_star": (B,)}`` for
            ISATS, ``{"class_table": (C, C)}`` for FGCR); pass them as ``**b.loss_inputs``.
        samples: ``(B,)`` dataset indices; views: ``(B,)`` the view of each sample.
        global_rows: rows of the global batch this batch is a rank's slice of (``B`` in one process).
        world_size: how many ranks share the global batch (1 in one process).
    """

    images: torch.Tensor
    labels: torch.Tensor | losses.MixedLabels
    teacher_logits: torch.Tensor
    loss_inputs: dict[str, Any] = field(default_factory=dict)
    samples: torch.Tensor | None = None
    views: torch.Tensor | None = None
    global_rows: int | None = None
    world_size: int = 1

    @property
    def loss_scale(self) -> float:
        """The factor for this rank's mean loss under DDP, as ``distill`` applies it before ``backward()``.

        DDP averages gradients over ranks (a mean of per-rank means); scaled by ``rows * world_size /
        global_rows``, that is the gradient of the global batch's mean even when the last batch does not
        split evenly. It is 1.0 in one process and whenever the ranks' slices are equal.
        """
        if self.world_size == 1 or self.global_rows is None:
            return 1.0
        return len(self.labels) * self.world_size / self.global_rows

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DistillBatch:
        """This batch with every tensor on ``device``."""
        def move(v: Any) -> Any:
            return v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v

        labels = self.labels
        labels = (losses.MixedLabels(move(labels.label), move(labels.partner), move(labels.lam))
                  if isinstance(labels, losses.MixedLabels) else move(labels))
        return replace(self, images=move(self.images), labels=labels,
                       teacher_logits=move(self.teacher_logits),
                       loss_inputs={k: move(v) for k, v in self.loss_inputs.items()},
                       samples=move(self.samples), views=move(self.views))


def batch_labels(batch: dict[str, Any]) -> torch.Tensor | losses.MixedLabels:
    """The labels of a collated view batch: :class:`~kdcache.losses.MixedLabels` when its recipe mixes views.

    A mixed view's partner label and λ come from its recorded ``mix`` params
    (``kdcache.views.ViewDataset``), the same in the cached and online paths.
    """
    if "lam" not in batch:
        return batch["label"]
    return losses.MixedLabels(batch["label"], batch["partner_label"], batch["lam"])


def assemble(batch: dict[str, Any], rows: dict[str, torch.Tensor] | None, teacher: LogitSource) -> DistillBatch:
    """A :class:`DistillBatch` from a collated view batch and its cached rows (``distill`` builds its steps' too)."""
    return DistillBatch(images=batch["images"][0], labels=batch_labels(batch), teacher_logits=teacher.logits(batch, rows),
                        loss_inputs=teacher.call_inputs(rows), samples=batch.get("sample"), views=batch.get("view"))


class EpochLoader(DataLoader):
    """One epoch of :class:`DistillBatch` es: a ``torch.utils.data.DataLoader`` over the store's views.

    It renders views in ``num_workers`` processes like any DataLoader (with
    its own generator: iterating never draws from torch's global one, which
    your model's initialisation and dropout use) and reads the cached rows of
    each batch in the main process, in lockstep. ``len()`` is the number of
    batches. Iterating again replays the same epoch; two iterations at once are refused.
    """

    def __init__(self, dataset: ViewDataset, batches: CachedBatches, teacher: CachedLogits, *, num_workers: int = 0,
                 pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> None:
        # Data-parallel, the loader renders this rank's slice of each global batch only (distill's split).
        slices = RankSlices(batches, rank, world_size) if world_size > 1 else None
        super().__init__(dataset, batch_sampler=slices if slices is not None else batches, num_workers=num_workers,
                         pin_memory=pin_memory, generator=torch.Generator())
        self._cached = batches
        self._slices = slices
        self._teacher = teacher
        self._live = False
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[DistillBatch]:  # type: ignore[override]
        # The cached rows of each batch travel beside the DataLoader in one FIFO per loader: a second
        # iteration while one is live would take the other's rows (images paired with other views'
        # logits), so it is refused. A finished or abandoned (closed) iteration may be replayed.
        if self._live:
            raise UsageError("this epoch's loader is already being iterated; finish (or break out of) that loop "
                             "first, or call store.batches(...) again for a second, independent loader")
        self._live = True
        try:
            side = self._cached.side()
            for batch in super().__iter__():
                rows = next(side)  # the global batch's rows, read by every rank (as distill's ranks do)
                if self._slices is None:
                    yield assemble(batch, rows, self._teacher)
                    continue
                n, lo, hi = self._slices.pop()
                yield replace(assemble(batch, slice_side(rows, n, lo, hi), self._teacher), global_rows=n,
                              world_size=self.world_size)
        finally:
            self._live = False


class CachedStore:
    """A store's teacher, opened read-only for training (see :func:`open_store`).

    Attributes: ``num_samples``, ``num_classes``, ``num_views``, ``in_channels`` (of the rendered
    images), ``seed`` (of the views), ``recipe`` and ``render`` (how views are rendered),
    ``teacher`` (the teacher's card: spec, weights' hash, how it was trained), ``source`` (the data).
    """

    def __init__(self, teacher: CachedLogits, source: DataSource) -> None:
        self._teacher = teacher
        self.source = source
        self.num_samples = len(source)
        self.num_classes = source.num_classes
        self.num_views: int = teacher.num_views
        self.seed: int = teacher.seed
        self.recipe: Recipe = teacher.recipe
        self.render: Render = teacher.render
        self.in_channels: int = teacher.render.channels or source.channels
        self.teacher: dict[str, Any] = teacher.card
        self.dataset = ViewDataset(source, teacher.recipe, teacher.seed, teacher.renders(teacher.render))
        self._served: dict[str, CachedLogits] = {}

    def for_loss(self, loss: str | None, loss_opts: Mapping[str, Any] | None = None, *,
                 allow_approximate_encoding: bool = False) -> CachedLogits:
        """The teacher serving the statistics ``loss`` declares (checked present in the store now), and
        decoding the store as that loss consumes it (``docs/encodings.md``).

        Without ``loss``, a store whose dense rows depend on the loss that reads them (``topk:K``: the
        rebuilt tail is the tail mass at the loss's temperature; ``sample:N@T``: pseudo-logits only
        KD at T may consume) is refused, as is a loss that cannot use the encoding exactly, unless
        ``allow_approximate_encoding`` (then an :class:`~kdcache.errors.ApproximateEncodingWarning` is issued and the
        rows are decoded at T=1).
        """
        if loss is None:
            encoding = self._teacher.store.encoding(self._teacher.name)
            if encoding.decode_depends_on_loss:
                why = (f"teacher {self._teacher.name!r} is stored as {encoding.spec}, whose dense logits depend on "
                       "the loss that reads them (its temperature)")
                if not allow_approximate_encoding:
                    raise UsageError(f"{why}: pass loss=... (and loss_opts) to batches() so they are decoded for "
                                     "it, or allow_approximate_encoding=True for rows decoded at T=1")
                warn(f"{why}; serving rows decoded at T=1 (allow_approximate_encoding=True)",
                     ApproximateEncodingWarning)
            return self._teacher
        spec = losses.spec(loss)
        hparams = spec.resolve(loss_opts)
        key = json.dumps([spec.config(hparams), allow_approximate_encoding], sort_keys=True)
        if key not in self._served:  # statistics are loaded once, not once per epoch
            self._served[key] = self._teacher.for_loss(spec, hparams, allow_approximate=allow_approximate_encoding,
                                                       allow_flag=API_ALLOW)
        return self._served[key]

    def batches(self, epoch: int, *, batch_size: int = 128, seed: int = 0, loss: str | None = None,
                loss_opts: Mapping[str, Any] | None = None, view_policy: str = "cycle",
                window: int = DEFAULT_WINDOW, num_workers: int = 0, pin_memory: bool = False,
                allow_approximate_encoding: bool = False, rank: int | None = None,
                world_size: int | None = None) -> EpochLoader:
        """The batches of ``epoch`` (1-based), in the order and views ``kdcache distill --seed SEED`` uses.

        ``loss`` / ``loss_opts`` choose which statistics each batch carries
        (:attr:`DistillBatch.loss_inputs`) and how a compact encoding is decoded for it; without
        ``loss`` a batch carries none (and a ``topk``/``sample`` store is refused, see
        :meth:`for_loss`). ``view_policy`` ``cycle`` shows view ``(epoch-1) mod V`` of every
        sample, ``random`` draws one per sample. ``allow_approximate_encoding`` is
        ``distill --allow-approximate-encoding``.

        Data-parallel: ``batch_size`` is the global batch; rank ``rank`` of ``world_size`` gets rows
        ``[rank*n//W, (rank+1)*n//W)`` of each global batch of ``n`` rows, exactly the rows ``distill``'s
        rank trains on under torchrun. Both default to ``torch.distributed``'s rank and world size when a
        process group is initialised (0 of 1 otherwise); values that contradict it are refused, as is a
        ``batch_size`` that would leave a rank without rows in some batch (distill's rule).
        """
        require_int("epoch", epoch, 1)
        require_int("batch_size", batch_size, 1)
        require_int("seed", seed, 0)
        require_int("window", window, 1)
        require_int("num_workers", num_workers, 0)
        require_choice("view_policy", view_policy, VIEW_POLICIES)
        rank, world_size = data_parallel(rank, world_size)
        check_batches(self.num_samples, batch_size, world_size, option="batch_size")
        teacher = self.for_loss(loss, loss_opts, allow_approximate_encoding=allow_approximate_encoding)
        plan = epoch_plan(seed, epoch, self.num_samples, self.num_views, view_policy, window)
        return EpochLoader(self.dataset, CachedBatches(teacher.rows, plan, batch_size), teacher,
                           num_workers=num_workers, pin_memory=pin_memory, rank=rank, world_size=world_size)


    def eval_batches(self, data: str | DataSource, *, batch_size: int = 256,
                     num_workers: int = 0) -> DataLoader:
        """``(images, labels)`` batches of validation ``data``, rendered as ``distill`` evaluates.

        The recipe's evaluation geometry (e.g. imagenet: resize, centre crop), at the size and
        normalisation the student trains at, in dataset order.
        """
        require_int("batch_size", batch_size, 1)
        source = open_data(data) if isinstance(data, str) else data
        dataset = eval_dataset(source, self.recipe, self.render)
        n = len(source)
        keys = [list(range(b, min(b + batch_size, n))) for b in range(0, n, batch_size)]
        return DataLoader(dataset, batch_sampler=keys, num_workers=num_workers, collate_fn=_image_label,
                          generator=torch.Generator())


def data_parallel(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's ``(rank, world_size)``: as given, else ``torch.distributed``'s (0 of 1 without a group).

    With a process group initialised, a value that differs from the group's is refused: the ranks would
    train on overlapping or missing rows, silently.
    """
    if rank is not None:
        require_int("rank", rank, 0)
    if world_size is not None:
        require_int("world_size", world_size, 1)
    if dist.is_available() and dist.is_initialized():
        group_rank, group_world = dist.get_rank(), dist.get_world_size()
        if (rank is not None and rank != group_rank) or (world_size is not None and world_size != group_world):
            raise UsageError(f"rank={rank}, world_size={world_size} contradict the initialised process group "
                             f"(rank {group_rank} of {group_world}); leave them out to use the group's")
        return group_rank, group_world
    if world_size is None:
        if rank not in (None, 0):
            raise UsageError(f"rank={rank} needs world_size (no torch.distributed process group is initialised)")
        return 0, 1
    rank = 0 if rank is None and world_size == 1 else rank
    if rank is None or rank >= world_size:
        raise UsageError(f"rank={rank}, world_size={world_size}: pass a rank from 0 to {world_size - 1} "
                         "(no torch.distributed process group is initialised to take it from)")
    return rank, world_size


def _image_label(items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = default_collate(items)
    return batch["images"][0], batch["label"]


def open_store(path_or_url: str | os.PathLike[str], data: str | DataSource | None = None, *,
               teacher_name: str | None = None, storage_options: Mapping[str, str] | None = None) -> CachedStore:
    """Open a store (a directory, or an ``s3://`` ``gs://`` ``az://`` ``file://`` URL) for training.

    ``data`` is the dataset the views are rendered from (a spec such as ``"embedded"`` or an opened
    :class:`~kdcache.data.DataSource`); by default the spec the store was made from. It is checked
    against the store (samples, classes, content fingerprint); a mismatch raises
    :class:`~kdcache.errors.StoreMismatchError`. ``teacher_name`` picks a teacher when the store
    holds several; ``storage_options`` are object-store settings (as ``--storage-option``).
    """
    target: str | os.PathLike[str] | Location = (locate(str(path_or_url), storage_options) if storage_options
                                                  else path_or_url)
    if data is None:
        data = Store.open(target).dataset.spec
    source = open_data(data) if isinstance(data, str) else data
    return CachedStore(CachedLogits(target, teacher_name, source), source)
