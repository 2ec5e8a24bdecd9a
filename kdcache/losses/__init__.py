"""Distillation losses by name (formulas: docs/methods.md; interface: docs/losses.md).

    from kdcache import losses
    spec = losses.spec("dkd")               # what the method needs, declared
    hp = spec.resolve({"beta": 6})          # defaults merged, values validated
    parts = spec.fn(s, t, y, **hp, epoch=3) # {"loss": total, "ce": ..., "tckd": ..., ...}
    parts["loss"].backward()

Every loss is a pure function of tensors (no trainer or config object
inside). What a method needs beyond (student, teacher, labels) is declared in
its :class:`LossSpec`: ``needs_epoch``, ``stats`` / ``store_stats`` (store
statistics, passed under the same keyword), ``extra_networks`` (their logits
as ``slt_logits``). The distill loop reads those fields and never branches
on a method's name.

Statistics computed once from a store: :func:`isats_tau_star`,
:func:`class_table` (and :func:`class_table_sums` /
:func:`class_table_from_sums` for chunked passes). The teacher-training
regulariser :func:`regt` is not a distillation loss and is not registered.
"""

from __future__ import annotations

from kdcache.losses._methods import ats, ce, dkd, dtd, fgcr, isats, kd, la, nkd, regt, slkd, tf_nkd
from kdcache.losses._registry import LossFn, LossSpec, get, names, register, spec
from kdcache.losses._stats import ISATS_GRID, class_table, class_table_from_sums, class_table_sums, isats_tau_star

__all__ = [
    "ISATS_GRID",
    "LossFn",
    "LossSpec",
    "ats",
    "ce",
    "class_table",
    "class_table_from_sums",
    "class_table_sums",
    "dkd",
    "dtd",
    "fgcr",
    "get",
    "isats",
    "isats_tau_star",
    "kd",
    "la",
    "names",
    "nkd",
    "regt",
    "register",
    "slkd",
    "spec",
    "tf_nkd",
]
