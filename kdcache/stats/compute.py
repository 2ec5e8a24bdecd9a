"""``kdcache stats``: statistics computed once from the cached logits and written into the store.

Every registered provider (:mod:`kdcache.stats.providers`) sees each cached
chunk once, in one pass over the store (memory: one chunk plus what the
providers accumulate, e.g. K·C² sums for the class tables). Each chunk read is
checked against its checksum. The results are published by
:class:`~kdcache.store.stat_io.StatWriter`, which replaces listed statistics
atomically for readers: an interrupted run leaves every listed statistic
complete and unchanged, and re-running is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdcache import losses
from kdcache.errors import KdcacheWarning, UsageError, warn
from kdcache.losses._registry import temperature_grid
from kdcache.progress import make_progress, rate_text
from kdcache.stats import providers as _providers  # noqa: F401 - registers the built-in statistics
from kdcache.stats.registry import StatContext, StatsOptions, providers
from kdcache.store import Store, locate, writer_lock
from kdcache.store.stat_io import StatWriter
from kdcache.views.mix import mixed_labels

DEFAULT_GRID: tuple[float, ...] = (1, 2, 3, 4, 5, 6, 8)


@dataclass
class StatsResult:
    """What a ``kdcache stats`` run wrote: ``grid`` is the ISATS grid it was asked for and
    ``tau_star_histogram`` the rows per τ* over it; ``grids`` every grid the store now holds τ* for."""

    teacher: str
    tau0: list[float]
    grid: list[float]
    accuracy_per_view: list[float]
    tau_star_histogram: dict[float, int]
    seconds: float
    grids: list[list[float]] = field(default_factory=list)


def _options(tau0: Sequence[float], grid: Sequence[float]) -> StatsOptions:
    tau0s = sorted({float(t) for t in tau0})
    if not tau0s or any(t <= 0 for t in tau0s):
        raise UsageError(f"--tau0 values must be positive (got {list(tau0)})")
    try:  # sorted, as a loss resolves its grid: `--grid 4 --grid 1 --grid 2` serves grid=[1,2,4]
        grid_t = temperature_grid([float(g) for g in grid])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--grid values {exc} (got {list(grid)})") from None
    return StatsOptions(tau0=tuple(tau0s), grid=grid_t)


def densest_source(store: Store, name: str) -> tuple[str, str]:
    """The teacher whose logits ``name``'s statistics are computed from, and how the card records it.

    A float16/float32 teacher is its own source. A compact encoding made by
    ``kdcache convert`` from a float teacher still in the store is computed
    from that teacher (the same logits, before the encoding lost anything);
    otherwise from its own decoded rows (a topk rebuild at T=1, a sample's
    pseudo-logits), which the record says.
    """
    card = store.card(name)
    enc = store.encoding(name)
    if enc.lossless_dense:
        return name, f"{name} ({card.encoding})"
    src = card.extra_dict().get("converted_from")
    if (isinstance(src, str) and src in store.teacher_names() and store.card(src).status == "complete"
            and store.encoding(src).lossless_dense):
        return src, f"{src} ({store.card(src).encoding}), the teacher {name} was converted from"
    how = "pseudo-logits of the sample" if enc.kind == "probabilities" else "dense rebuild at T=1"
    return name, f"{name} ({card.encoding}, {how})"


# Statistics with one value per (row, label): not stored for mixed rows yet.
_PER_LABEL_ROWS = frozenset({"isats_tau"})


def compute_stats(
    path: str | Path,
    *,
    teacher: str | None = None,
    tau0: Sequence[float] = (3.0,),
    grid: Sequence[float] = DEFAULT_GRID,
    progress: bool = True,
) -> StatsResult:
    """Compute every registered statistic for one teacher and publish them in the store."""
    options = _options(tau0, grid)
    t_start = time.perf_counter()
    store_path = locate(path)  # a local directory or an object-store URL
    Store.open(store_path)  # clear errors for a missing or foreign store before locking
    with writer_lock(store_path):
        store = Store.open(store_path, mode="r+")
        name = store.require_complete(teacher)
        read_from, source = densest_source(store, name)
        labels_all = store.labels()
        ctx = StatContext(store=store, teacher=name, num_views=store.num_views, num_samples=store.num_samples,
                          num_classes=store.card(name).num_classes, labels=labels_all)
        before = store.card(name).stats
        writer = StatWriter(store, name)
        recipe = store.recipe()
        mixing = recipe.mix is not None
        # ISATS tau* of a mixed row is two values per grid (own label, partner), which the store's per-row
        # layout cannot hold yet: on a mixing store it is left out, said once, and the rest computed.
        skipped = [n for n in providers() if mixing and n in _PER_LABEL_ROWS]
        if skipped:
            warn(f"{', '.join(skipped)} is not computed on a store whose recipe mixes views (a mixed row needs "
                 "one value per label, which the store's layout does not hold yet); the other statistics are",
                 KdcacheWarning)
        accs = {n: p.start(ctx, options, before.get(n)) for n, p in providers().items() if n not in skipped}
        for acc in accs.values():
            acc.begin(writer)
        grid_obj = store.grid
        with make_progress(enabled=progress) as bar:
            task = bar.add_task(f"stats {name}", total=store.num_views * store.num_samples, rate="")
            done = 0
            for v, j in store.iter_chunks():
                start, stop = grid_obj.bounds(j)
                t = torch.from_numpy(store.read_logits_chunk(read_from, v, j).astype(np.float32))
                y = torch.from_numpy(labels_all[start:stop])
                if mixing:  # mixed views: own label, the recorded partner's and λ (kdcache.views.mix)
                    _, partner, lam = mixed_labels(recipe, store.read_params_chunk(v, j), labels_all,
                                                   np.arange(start, stop))
                    y = losses.MixedLabels(y, torch.from_numpy(partner), torch.from_numpy(lam))
                for acc in accs.values():
                    acc.update(v, j, t, y)
                done += stop - start
                bar.update(task, advance=stop - start, rate=rate_text(done, time.perf_counter() - t_start, "rows"))
        # Each entry records the logits it was computed from (docs/encodings.md, "Statistics").
        entries = {n: {**acc.finish(writer), "source": source} for n, acc in accs.items()}
        writer.publish(entries)
    hist = getattr(accs.get("isats_tau"), "hist", {})
    return StatsResult(
        teacher=name, tau0=list(entries.get("class_table", {}).get("tau0", [])), grid=list(options.grid),
        accuracy_per_view=list(entries.get("accuracy", {}).get("values", [])),
        tau_star_histogram=dict(hist.get(options.grid, {})), seconds=time.perf_counter() - t_start,
        grids=[list(g) for g in entries.get("isats_tau", {}).get("grids", [])],
    )


def format_stats(result: StatsResult) -> str:
    """Human summary of a stats run."""
    total = sum(result.tau_star_histogram.values()) or 1
    hist = ", ".join(f"τ*={g:g}: {n / total:.1%}" for g, n in sorted(result.tau_star_histogram.items()))
    acc = ", ".join(f"{a:.2%}" for a in result.accuracy_per_view[:8])
    others = [g for g in result.grids if g != result.grid]
    kept = f"\n  ISATS τ* also kept for grid{'s' if len(others) > 1 else ''} {', '.join(map(str, others))}" \
        if others else ""
    return (
        f"teacher {result.teacher}: statistics written in {result.seconds:.1f}s\n"
        f"  ISATS τ* over grid {result.grid}: {hist}{kept}\n"
        f"  FGCR class tables for τ0 = {result.tau0}\n"
        f"  accuracy per view: {acc}{' ...' if len(result.accuracy_per_view) > 8 else ''}"
    )
