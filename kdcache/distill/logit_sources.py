"""Where a distill step's teacher logits come from: the store (cached) or a live network (online).

Both sources give the training loop the same things:

* ``renders(student)``: the renders the dataset produces per item;
* ``epoch_batches(plan, batch_size)``: the DataLoader's ``batch_sampler``
  for an epoch and, for a store, an iterator of each batch's cached rows in
  lockstep (``next`` once per batch), or None;
* ``logits(batch, rows)`` and ``call_inputs(rows)``: the teacher logits of
  a batch and the extra inputs its loss declares (store statistics).

:class:`CachedLogits` replays the store's record: every view is rendered from
the parameters recorded in the store (the seed is never drawn again), and
every chunk it reads is checked against its checksum. :class:`OnlineLogits`
runs the teacher network on its own rendering of each view, drawing views
from the seed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdcache import losses
from kdcache.data import DataSource
from kdcache.encodings.consume import ALLOW_FLAG, check_consumption
from kdcache.errors import ApproximateEncodingWarning, KdcacheBug, StoreCorruptError, StoreMismatchError, warn
from kdcache.distill.cached_rows import CachedBatches, CachedRows, EpochPlan
from kdcache.models import build_model, check_output_width, run_model
from kdcache.stats import for_loss_arg
from kdcache.stats.registry import missing, stats_command
from kdcache.store import Store
from kdcache.store.derivation import require_current
from kdcache.engine.records import canonical_hash
from kdcache.store.location import Location
from kdcache.views import Recipe, Render, resolve_recipe

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from kdcache.distill.run import DistillConfig


def check_store_matches_data(store: Store, source: DataSource, teacher: str) -> None:
    """Refuse a store made from other data than ``source``, saying which property differs."""
    d = store.dataset
    made = f"{d.spec} ({d.num_samples:,} samples, {d.num_classes} classes)"
    fix = "use the data the store was made from, or precompute a store for this data"
    width = store.card(teacher).num_classes
    if len(source) != d.num_samples:
        raise StoreMismatchError(
            f"{store.path} was made from {made}, but the data {source.spec} has {len(source):,} samples; {fix}"
        )
    if source.num_classes != d.num_classes or width != source.num_classes:
        raise StoreMismatchError(
            f"{store.path} holds {width}-class logits from {made}, but the data "
            f"{source.spec} has {source.num_classes} classes; {fix}"
        )
    if source.fingerprint() != d.fingerprint:
        raise StoreMismatchError(
            f"{store.path} was made from {made} with fingerprint {d.fingerprint[:23]}..., but the data "
            f"{source.spec} has fingerprint {source.fingerprint()[:23]}... (other images, labels or split); {fix}"
        )
    # The store's own labels (what its statistics and teacher accuracy were computed against): checked
    # against their record (format 2), and against the dataset's, which training uses.
    stored = store.labels()
    if not np.array_equal(stored, np.asarray(source.labels, dtype=np.int64)):
        raise StoreCorruptError(f"{store.path}: its labels differ from the dataset's labels "
                                f"(first at sample {int(np.argmax(stored != np.asarray(source.labels)))}); "
                                "re-run the kdcache precompute that made the store to rewrite them from the dataset")


class LogitSource:
    """Where a step's teacher logits come from (see the module docstring)."""

    seed: int
    num_views: int
    recipe: Recipe
    card: dict[str, Any]
    render: Render

    def renders(self, student: Render) -> list[Render]:
        return [student]

    def epoch_batches(self, plan: EpochPlan, batch_size: int) -> tuple[Any, Iterator[Any] | None]:
        """The DataLoader's batch_sampler for ``plan`` and the per-batch side input (or None)."""
        return plan.batches(batch_size), None

    def logits(self, batch: dict[str, Any], rows: dict[str, torch.Tensor] | None) -> torch.Tensor:
        raise NotImplementedError

    def call_inputs(self, rows: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        return {}


class CachedLogits(LogitSource):
    """A complete teacher of a store, opened read-only, replayed from what the store recorded.

    The statistics a loss declares (``LossSpec.store_stats``) are served by
    their providers (:mod:`kdcache.stats`) in one generic loop: a static one
    (e.g. a class table) is loaded once, a per-row one (e.g. ISATS τ*) is
    read with the logits. A statistic the loss does not require and the
    store lacks is left to the loss, which then computes it from the batch.
    """

    def __init__(self, store_path: str | os.PathLike[str] | Location, name: str | None, source: DataSource,
                 spec: losses.LossSpec | None = None, hparams: dict[str, Any] | None = None,
                 allow_approximate: bool = False) -> None:
        self.store = Store.open(store_path)  # read-only: distill can never change a store
        self.allow_approximate = allow_approximate  # --allow-approximate-encoding (kdcache.encodings.consume)
        self.allow_flag = ALLOW_FLAG  # how the caller allows it, named in a refusal (the API has a keyword)
        self.name = self.store.require_complete(name)
        require_current(self.store, self.name)  # a derived teacher whose members changed since
        check_store_matches_data(self.store, source, self.name)
        self.seed = self.store.views.seed
        self.num_views = self.store.num_views
        self.recipe = self.store.recipe()  # checked against its recorded hash
        card = self.store.card(self.name)
        self.card = card.to_dict()
        self.render = Render.from_dict(card.render)
        self._serve(spec, hparams)

    def for_loss(self, spec: losses.LossSpec, hparams: dict[str, Any], *, allow_approximate: bool | None = None,
                 allow_flag: str | None = None) -> CachedLogits:
        """The same opened store and teacher, serving the statistics of another loss (a sweep's runs).

        Each gets its own reader of exactly its loss's per-row statistics, as a single distill would;
        a sweep reads the union of them once with :meth:`rows_for`. ``allow_approximate`` and
        ``allow_flag`` (how the caller allows an inexact encoding, named in the refusal) default to
        this source's.
        """
        other = copy.copy(self)
        if allow_approximate is not None:
            other.allow_approximate = allow_approximate
        if allow_flag is not None:
            other.allow_flag = allow_flag
        other._serve(spec, hparams)
        return other

    def rows_for(self, sources: Sequence[CachedLogits]) -> CachedRows:
        """One reader of the logits and the union of the per-row statistics ``sources`` declare.

        They must decode the store at one temperature (a sweep makes one reader per temperature): a
        reader at another temperature than a run's own would hand it other logits than its single run.
        """
        names = list(dict.fromkeys(name for s in sources for name in s.row_arg))
        temperatures = {s.decode_temperature for s in sources}
        if len(temperatures) != 1:
            raise KdcacheBug(f"one reader cannot decode at temperatures {sorted(temperatures)}")
        return CachedRows(self.store, self.name, names, decode_temperature=temperatures.pop())

    def _serve(self, spec: losses.LossSpec | None, hparams: dict[str, Any] | None) -> None:
        """Load the statistics ``spec`` declares (none without a spec): static ones now, per-row ones with each batch."""
        card = self.store.card(self.name)
        self.static: dict[str, torch.Tensor] = {}
        self.row_arg: dict[str, str] = {}  # stored per-row statistic -> loss keyword
        self._read: dict[str, Any] = {}  # what this run reads, for input_hash
        listed = card.stats
        self.decode_temperature = 1.0
        if spec is None:
            self.rows = CachedRows(self.store, self.name, [])
            return
        # Refuse an encoding the loss cannot use exactly (one line), or warn when allowed anyway.
        self.decode_temperature, warning = check_consumption(self.store.encoding(self.name), spec, hparams,
                                                             self.allow_approximate, self.allow_flag)
        if warning:
            warn(warning, ApproximateEncodingWarning)
        for arg, wanted in spec.store_stats(hparams).items():
            provider = for_loss_arg(arg)
            fix = f"run `{stats_command(self.store, self.name, provider, wanted)}`"
            if provider.name not in listed:
                if spec.stats.get(arg, {}).get("required", True):
                    raise missing(self.store, self.name, provider.name, f"loss {spec.name!r} needs it; {fix}")
                continue  # optional: the loss computes it from the batch's logits
            entry = listed[provider.name]
            value = provider.serve(self.store, self.name, entry, wanted, fix)
            self._read[provider.name] = {k: v for k, v in entry.items() if k not in ("computed", "node")}
            if value is None:
                self.row_arg[provider.name] = arg
            elif isinstance(value, str):  # one column of a per-row statistic (ISATS τ* of one grid)
                self.row_arg[value] = arg
                # What is read is the loss's column: adding another (a grid) to the store leaves it unchanged.
                self._read[provider.name] = {**{k: v for k, v in entry.items() if k == "source"}, **wanted}
            else:
                self.static[arg] = value
                self._read[provider.name]["served"] = hashlib.sha256(value.numpy().tobytes()).hexdigest()
        self.rows = CachedRows(self.store, self.name, list(self.row_arg), decode_temperature=self.decode_temperature)

    def epoch_batches(self, plan: EpochPlan, batch_size: int) -> tuple[CachedBatches, Iterator[Any]]:
        batches = CachedBatches(self.rows, plan, batch_size)
        return batches, batches.side()

    def manifest_hash(self) -> str:
        """Hash of the whole manifest (recorded by a run, for the curious)."""
        return canonical_hash(self.store.manifest.to_dict())

    def input_record(self) -> dict[str, Any]:
        """What this run reads from the store: data, views, this teacher's logits and statistics (JSON).

        The logits and views enter by their chunk checksums (one SHA-256 of them all). Adding another
        teacher to a shared store, or re-running `kdcache stats` to the same result, leaves it
        unchanged, so `--resume` still works; a run records it to name what changed when it does not.
        """
        s = self.store
        sums = np.asarray(s.logit_checksums(self.name)[:]).tobytes() + np.asarray(s.view_checksums()[:]).tobytes()
        return copy.deepcopy({"dataset": s.dataset.identity(), "views": s.views.identity(),
                              "teacher": s.card(self.name).identity(), "stats": self._read,
                              "chunks": hashlib.sha256(sums).hexdigest()})

    def input_hash(self) -> str:
        """Hash of :meth:`input_record` (what a resumed run compares)."""
        return canonical_hash(self.input_record())

    def logits(self, batch: dict[str, Any], rows: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if rows is None:
            raise KdcacheBug("cached teacher logits were not read for this batch")
        return rows["teacher_logits"]

    def call_inputs(self, rows: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.static)
        for stored, arg in self.row_arg.items():
            if rows is None or stored not in rows:  # never fall back to the loss's own estimate silently
                raise KdcacheBug(f"the per-row statistic {stored} was not read for this batch")
            out[arg] = rows[stored]
        return out


class OnlineLogits(LogitSource):
    """A live teacher network, run on its own rendering of each view (views drawn from the seed)."""

    def __init__(self, cfg: DistillConfig, source: DataSource, device: torch.device) -> None:
        if cfg.views is None or cfg.views < 1:
            raise KdcacheBug("OnlineLogits built from a DistillConfig without views (DistillConfig.check refuses it)")
        self.recipe = _online_recipe(cfg.recipe, source)
        self.render = self.recipe.render
        in_channels = self.render.channels or source.channels
        self.model, card = build_model(cfg.teacher or "", source.num_classes, in_channels, cfg.weights)
        h, w = self.render.size or self.recipe.output_size(source.image_size(0))
        check_output_width(self.model, in_channels, (h, w), source.num_classes,
                           micro_batch=2)  # a width check, not a full micro-batch of work
        self.model = self.model.to(device)
        self.card = {**card, "render": self.render.to_dict()}
        self.seed = cfg.seed if cfg.view_seed is None else cfg.view_seed  # --view-seed replays another seed's views
        self.num_views = cfg.views
        self.micro_batch = cfg.micro_batch
        self.device = device

    def renders(self, student: Render) -> list[Render]:
        return [student, self.render]

    def logits(self, batch: dict[str, Any], rows: dict[str, torch.Tensor] | None) -> torch.Tensor:
        x = batch["images"][1].to(self.device, non_blocking=True)
        return run_model(self.model, x, micro_batch=self.micro_batch)


def _online_recipe(name: str | None, source: DataSource) -> Recipe:
    recipe = resolve_recipe(name, source)
    if name is None:
        log.info("recipe: %s (the default for %s; give a recipe to choose another)", recipe.name, source.spec)
    return recipe
