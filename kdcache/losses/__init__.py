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

Mixed views (mixup/cutmix): every loss and statistic also takes
:class:`MixedLabels` (docs/methods.md, "Mixed views"); :func:`require_mixed_rule`
checks before training that a method is defined on them.
"""

from __future__ import annotations

from kdcache.losses._registry import LOSSES, LossFn, LossSpec, get, names, register, spec
from kdcache.losses.options import parse_loss_opts
from kdcache.losses.mixed import MIXED_OPTION, MixedLabels, as_mixed, mixed_cross_entropy, require_mixed_rule
from kdcache.losses._stats import ISATS_GRID, class_table, class_table_from_sums, class_table_sums, isats_tau_star

# One module per method family (kdcache/losses/methods/). Importing a module
# registers its losses, so this order (that of docs/methods.md) is the order
# of names().
from kdcache.losses.methods.ce import ce
from kdcache.losses.methods.kd import kd
from kdcache.losses.methods.dkd import dkd
from kdcache.losses.methods.nkd import nkd, tf_nkd
from kdcache.losses.methods.la import la
from kdcache.losses.methods.dtd import dtd
from kdcache.losses.methods.ats import ats
from kdcache.losses.methods.isats import isats
from kdcache.losses.methods.fgcr import fgcr
from kdcache.losses.methods.slkd import slkd
from kdcache.losses.methods.regt import regt

__all__ = [
    "ISATS_GRID",
    "LOSSES",
    "LossFn",
    "LossSpec",
    "MIXED_OPTION",
    "MixedLabels",
    "as_mixed",
    "ats",
    "ce",
    "class_table",
    "class_table_from_sums",
    "class_table_sums",
    "dkd",
    "dtd",
    "fgcr",
    "get",
    "parse_loss_opts",
    "isats",
    "isats_tau_star",
    "kd",
    "la",
    "mixed_cross_entropy",
    "names",
    "nkd",
    "regt",
    "register",
    "require_mixed_rule",
    "slkd",
    "spec",
    "tf_nkd",
]
