"""Statistic providers: what ``kdcache stats`` computes over a store and how a loss receives it.

A provider is registered under the name it is stored and listed under
(``isats_tau``, ``class_table``, ``accuracy``). It says

* how it is computed: :meth:`StatProvider.start` returns an accumulator that
  sees every cached chunk once (:meth:`Accumulator.update`) and writes its
  result through a :class:`~kdcache.store.stat_io.StatWriter`
  (:meth:`Accumulator.finish`, which returns the card entry's parameters);
* what it writes: ``per_row`` (a (V, N) array read along with the logits) or
  a static array;
* how a loss receives it: ``loss_arg`` is the keyword of the loss function
  (a :class:`~kdcache.losses.LossSpec` declares the statistics it needs under
  that keyword), and :meth:`StatProvider.serve` checks the stored parameters
  against the loss's and returns the static tensor (per-row values come with
  the rows).

Adding a statistic is one module with one :func:`register` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from kdcache.errors import KdcacheBug, StoreIncompleteError
from kdcache.registry import Registry
from kdcache.store import Store
from kdcache.store.stat_io import StatWriter


@dataclass(frozen=True)
class StatsOptions:
    """What the user asked ``kdcache stats`` for (each provider reads what concerns it)."""

    tau0: tuple[float, ...]
    grid: tuple[float, ...]


@dataclass(frozen=True)
class StatContext:
    """The store being summarised: sizes and labels."""

    store: Store
    teacher: str
    num_views: int
    num_samples: int
    num_classes: int
    labels: np.ndarray


class Accumulator:
    """One provider's running state over one pass through the cached chunks."""

    def begin(self, writer: StatWriter) -> None:
        """Called once before the pass (a per-row statistic creates its array here)."""

    def update(self, view: int, chunk: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        raise NotImplementedError

    def finish(self, writer: StatWriter) -> dict[str, Any]:
        """Write the result; return the card entry's parameters (JSON)."""
        raise NotImplementedError


class StatProvider:
    """Base of a registered statistic (see the module docstring)."""

    name: ClassVar[str]
    per_row: ClassVar[bool] = False
    loss_arg: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def start(self, ctx: StatContext, options: StatsOptions, previous: Mapping[str, Any] | None) -> Accumulator:
        """An accumulator for this pass; ``previous`` is the card's entry from an earlier run, if any."""
        raise NotImplementedError

    def serve(self, store: Store, teacher: str, entry: Mapping[str, Any], wanted: Mapping[str, Any],
              fix: str) -> torch.Tensor | str | None:
        """Check the stored ``entry`` against the loss's ``wanted`` parameters; the static tensor, or for
        a per-row statistic the row key to read (:func:`~kdcache.store.stat_io.row_key`: one column of a
        (V, N, K) array; None: the provider's (V, N) array). ``fix`` is the command that would compute
        what is missing."""
        raise NotImplementedError

    def fix_options(self, wanted: Mapping[str, Any]) -> str:
        """The ``kdcache stats`` options that compute this statistic with ``wanted`` parameters."""
        return ""

    def made_with(self, entry: Mapping[str, Any]) -> str:
        """The ``kdcache stats`` options that compute this statistic again with the parameters its card
        ``entry`` records (what rewrites it, unchanged, when its array is damaged)."""
        return ""


# An unknown statistic name comes from code (a loss declaration, a provider), never from a user.
PROVIDERS: Registry[StatProvider] = Registry("statistic", KdcacheBug)


def register(provider: type[StatProvider]) -> type[StatProvider]:
    """Class decorator: register a provider under its ``name`` (names are unique)."""
    PROVIDERS.add(provider.name, provider())
    return provider


def providers() -> dict[str, StatProvider]:
    """Every registered provider by name, in registration order."""
    return dict(PROVIDERS.items())


def for_loss_arg(arg: str) -> StatProvider:
    """The provider that serves loss keyword ``arg`` (e.g. ``tau_star``)."""
    for p in PROVIDERS.values():
        if p.loss_arg == arg:
            return p
    raise KdcacheBug(f"no store statistic serves the loss input {arg!r}; known: "
                     f"{', '.join(str(p.loss_arg) for p in PROVIDERS.values() if p.loss_arg)}")


def option_number(value: float) -> str:
    """``value`` as a command-line number that parses back to the same float (``3``, ``1.2``, ``0.123456789``)."""
    short = f"{float(value):g}"
    return short if float(short) == float(value) else repr(float(value))


def repair_command(store: Store, teacher: str) -> str:
    """The ``kdcache stats`` command that rewrites every statistic ``teacher``'s card lists as it is
    (a damaged one included), with the recorded parameters of all of them."""
    return stats_command(store, teacher)


def stats_command(store: Store, teacher: str, provider: StatProvider | None = None,
                  wanted: Mapping[str, Any] | None = None) -> str:
    """The ``kdcache stats`` command that makes ``provider``'s statistic with ``wanted`` parameters (if
    given) and keeps every statistic the card lists as it is.

    One run recomputes every statistic from the options it is given (the library's defaults for
    those left out), so the others' recorded parameters are restated: adding the class table a loss
    asks for, or repairing one, must not recompute τ* over the default grid instead of the recorded one.
    """
    listed = store.card(teacher).stats
    asked = provider.fix_options(wanted or {}) if provider is not None else ""
    others = "".join(p.made_with(listed[name]) for name, p in PROVIDERS.items()
                     if name in listed and (provider is None or name != provider.name))
    return f"kdcache stats {store.path} --teacher-name {teacher}{asked}{others}"


def missing(store: Store, teacher: str, name: str, fix: str) -> StoreIncompleteError:
    """The error for a statistic the card does not list."""
    return StoreIncompleteError(f"{store.path}: teacher {teacher!r} has no statistic {name!r}; {fix}")
