"""Where a distill step's teacher logits come from: the store (cached) or a live network (online).

:class:`CachedLogits` reads a complete teacher from a store (read-only);
:class:`OnlineLogits` runs the teacher network on its own rendering of each
view. Both give the training loop the same three things: the renders the
dataset must produce, the teacher logits of a batch, and the extra inputs the
loss declares (store statistics).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdcache import losses
from kdcache.data import DataSource
from kdcache.errors import KdcacheError, StoreIncompleteError, StoreMismatchError
from kdcache.loader import CachedRows
from kdcache.models import build_model, check_output_width, run_model
from kdcache.store import Store
from kdcache.training import canonical_hash
from kdcache.views import Recipe, Render, load_recipe

if TYPE_CHECKING:
    from kdcache.distill import DistillConfig


def check_store_matches_data(store: Store, source: DataSource, teacher: str) -> None:
    """Refuse a store made from other data than ``source``, saying which property differs."""
    d = store.manifest["dataset"]
    made = f"{d['spec']} ({d['num_samples']:,} samples, {d['num_classes']} classes)"
    fix = "pass the --data the store was made from, or precompute a store for this data"
    if len(source) != d["num_samples"]:
        raise StoreMismatchError(
            f"{store.path} was made from {made}, but --data {source.spec} has {len(source):,} samples; {fix}"
        )
    if source.num_classes != d["num_classes"] or store.logits(teacher).shape[2] != source.num_classes:
        raise StoreMismatchError(
            f"{store.path} holds {store.logits(teacher).shape[2]}-class logits from {made}, but --data "
            f"{source.spec} has {source.num_classes} classes; {fix}"
        )
    if source.fingerprint() != d["fingerprint"]:
        raise StoreMismatchError(
            f"{store.path} was made from {made} with fingerprint {d['fingerprint'][:23]}..., but --data "
            f"{source.spec} has fingerprint {source.fingerprint()[:23]}... (other images, labels or split); {fix}"
        )


class LogitSource:
    """Where a step's teacher logits come from: the store (cached) or a live network (online)."""

    seed: int
    num_views: int
    recipe: Recipe
    card: dict[str, Any]
    render: Render

    def renders(self, student: Render) -> list[Render]:
        return [student]

    def epoch_rows(self, plan: Any, batch_size: int) -> Iterator[dict[str, torch.Tensor]] | None:
        return None

    def logits(self, batch: dict[str, Any], rows: dict[str, torch.Tensor] | None) -> torch.Tensor:
        raise NotImplementedError


class CachedLogits(LogitSource):
    def __init__(self, store_path: str, name: str | None, source: DataSource, spec: losses.LossSpec,
                 hparams: dict[str, Any]) -> None:
        self.store = Store.open(store_path)  # read-only: distill can never change a store
        self.name = self.store.require_complete(name)
        check_store_matches_data(self.store, source, self.name)
        m = self.store.manifest
        self.seed = int(m["views"]["seed"])
        self.num_views = int(m["views"]["num_views"])
        self.recipe = Recipe.from_dict(m["views"]["recipe"])
        self.card = self.store.teacher_card(self.name)
        self.render = Render.from_dict(self.card["render"])
        self.static: dict[str, torch.Tensor] = {}
        row_stats: list[str] = []
        stats_path = self.store.stats_group_path(self.name)
        # Only statistics recorded in the card are trusted: the card is written
        # after the arrays, so an interrupted `kdcache stats` leaves none listed.
        recorded = self.card.get("stats", {})

        def fix(extra: str = "") -> str:
            return f"run `kdcache stats {self.store.path} --teacher {self.name}{extra}`"

        for need, params in spec.store_stats(hparams).items():
            if need == "class_table":
                key = f"{stats_path}/class_table"
                tau0_opt = f" --tau0 {float(params['tau0']):g}"
                if "class_table" not in recorded:
                    raise StoreIncompleteError(f"loss {spec.name!r} needs a class table; {fix(tau0_opt)}")
                arr = self.store.group[key]
                tau0s = [float(t) for t in arr.attrs["tau0"]]
                if float(params["tau0"]) not in tau0s:
                    raise StoreIncompleteError(
                        f"loss {spec.name!r} needs the class table for tau0={params['tau0']}, the store has "
                        f"{tau0s}; {fix(tau0_opt)}"
                    )
                self.static["class_table"] = torch.from_numpy(
                    np.asarray(arr[tau0s.index(float(params["tau0"]))], dtype=np.float32))
            elif need == "tau_star":
                key = f"{stats_path}/isats_tau"
                if "isats_tau" not in recorded:
                    raise StoreIncompleteError(f"loss {spec.name!r} needs the ISATS tau*; {fix()}")
                grid = [float(g) for g in self.store.group[key].attrs["grid"]]
                if grid != [float(g) for g in params["grid"]]:
                    raise StoreIncompleteError(
                        f"the store's tau* was searched over {grid}, the loss asks {list(params['grid'])}; "
                        f"{fix(' --grid ' + ','.join(f'{g:g}' for g in params['grid']))}"
                    )
                row_stats.append("isats_tau")
            else:  # a LossSpec declaring a statistic this version cannot serve is a bug
                raise KdcacheError(f"loss {spec.name!r} needs store statistic {need!r}, unknown to this kdcache")
        self.rows = CachedRows(self.store, self.name, row_stats)
        self.row_arg = {"isats_tau": "tau_star"}

    def epoch_rows(self, plan: Any, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        return self.rows.iterate(plan, batch_size)

    def input_hash(self) -> str:
        """Hash of what this run reads from the store: data, views, this teacher and its statistics.

        Adding another teacher to a shared store, or re-running `kdcache stats`
        to the same result, leaves it unchanged, so `--resume` still works.
        """
        m = self.store.manifest
        card = {k: v for k, v in self.card.items() if k not in ("started", "finished")}
        card["stats"] = {k: v for k, v in card.get("stats", {}).items() if k != "computed"}
        return canonical_hash({"dataset": m["dataset"], "views": m["views"], "teacher": card})

    def logits(self, batch: dict[str, Any], rows: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if rows is None:
            raise RuntimeError("cached rows missing")
        return rows["teacher_logits"]

    def call_inputs(self, rows: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.static)
        if rows:
            for key, arg in self.row_arg.items():
                if key in rows:
                    out[arg] = rows[key]
        return out


class OnlineLogits(LogitSource):
    def __init__(self, cfg: DistillConfig, source: DataSource, device: torch.device) -> None:
        if cfg.views is None or cfg.views < 1:
            raise KdcacheError("online mode (--teacher) needs --views K (the views the teacher is run on)")
        self.recipe = load_recipe(cfg.recipe or "fashion-mnist")
        self.render = self.recipe.render
        in_channels = self.render.channels or source.channels
        self.model, card = build_model(cfg.teacher or "", source.num_classes, in_channels, cfg.weights)
        h, w = self.render.size or self.recipe.output_size(source.image_size(0))
        check_output_width(self.model, in_channels, (h, w), source.num_classes,
                               micro_batch=2)  # a width check, not a full micro-batch of work
        self.model = self.model.to(device)
        self.card = {**card, "render": self.render.to_dict()}
        self.seed = cfg.seed
        self.num_views = cfg.views
        self.micro_batch = cfg.micro_batch
        self.device = device

    def renders(self, student: Render) -> list[Render]:
        return [student, self.render]

    def logits(self, batch: dict[str, Any], rows: dict[str, torch.Tensor] | None) -> torch.Tensor:
        x = batch["images"][1].to(self.device, non_blocking=True)
        return run_model(self.model, x, micro_batch=self.micro_batch)

    def call_inputs(self, rows: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        return {}
