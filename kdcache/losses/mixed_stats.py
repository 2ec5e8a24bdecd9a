"""The store statistics on mixed views (docs/methods.md, ISATS and FGCR, "Mixed views").

:func:`kdcache.losses.isats_tau_star` and :func:`kdcache.losses.class_table_sums`
hand :class:`~kdcache.losses.mixed.MixedLabels` to the functions here; plain
labels never reach them, so unmixed statistics are unchanged bit for bit.

* ISATS τ*: searched once with the view's own label and once with the
  partner's, (B, 2). The loss's rule (``dominant`` or ``both``) then picks or
  mixes them, so the statistic serves either rule.
* FGCR class table: a row counts ``λ`` toward its own class's table row and
  ``1 − λ`` toward the partner's, weights instead of counts, so the table is
  the λ-weighted mean; an unmixed row (λ = 1) counts 1 toward its class as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import check_logits, compute_dtype
from kdcache.losses.mixed import MixedLabels, check_mixed

__all__ = ["mixed_class_table_sums", "mixed_tau_star"]


def mixed_tau_star(teacher_logits: Tensor, labels: MixedLabels, grid: Sequence[float]) -> Tensor:
    """ISATS τ* of mixed rows, (B, 2): column 0 searched with ``label``, column 1 with ``partner``."""
    from kdcache.losses._stats import parse_grid, tau_star_index  # _stats dispatches here

    where = "isats_tau_star"
    grid_t = parse_grid(where, grid)
    t = check_logits(where, "teacher_logits", teacher_logits)
    mixed = check_mixed(where, labels, t.shape[0], t.shape[1])
    t = t.detach().to(compute_dtype(t))
    values = torch.tensor(grid_t, dtype=t.dtype, device=t.device)
    return torch.stack([values[tau_star_index(t, y, grid_t)] for y in (mixed.label, mixed.partner)], dim=1)


def mixed_class_table_sums(teacher_logits: Tensor, labels: MixedLabels, num_classes: int, tau0: float
                           ) -> tuple[Tensor, Tensor]:
    """λ-weighted per-class sums of ``σ(t;τ0)`` (float64 (C, C)) and weights (float64 (C,)).

    Row b adds ``λ_b·σ(t_b;τ0)`` to class ``label_b`` and ``(1 − λ_b)·σ(t_b;τ0)``
    to class ``partner_b``; the weights add up the same way. Finish with
    :func:`kdcache.losses.class_table_from_sums`.
    """
    from kdcache.losses._stats import _parse_temperature  # _stats dispatches here

    where = "class_table"
    tau0 = _parse_temperature(where, "tau0", tau0)
    t = check_logits(where, "teacher_logits", teacher_logits)
    if t.shape[1] != num_classes:
        raise LossConfigError(f"{where}: teacher_logits have {t.shape[1]} classes, num_classes is {num_classes}.")
    mixed = check_mixed(where, labels, t.shape[0], num_classes)
    p = torch.softmax(t.detach().to(torch.float64) / tau0, dim=1)
    lam = mixed.lam.to(torch.float64)
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=t.device)
    sums.index_add_(0, mixed.label, lam[:, None] * p).index_add_(0, mixed.partner, (1.0 - lam)[:, None] * p)
    weights = torch.zeros(num_classes, dtype=torch.float64, device=t.device)
    weights.index_add_(0, mixed.label, lam).index_add_(0, mixed.partner, 1.0 - lam)
    return sums, weights
