"""RegT: the teacher-training regulariser (docs/methods.md, RegT).

Not a distillation loss and not registered: it trains the teacher, before its
logits are cached (``kdcache train-teacher --regt``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import check_labels, check_logits, compute_dtype, gather_label, non_label


def regt(logits: Tensor, labels: Tensor, *, beta: float, ddof: int = 0) -> dict[str, Tensor]:
    """RegT teacher-training loss (docs/methods.md, RegT): ``loss = ce + beta·reg``.

    ``reg = mean_b [σ(z_b;1)_y − std(σ(z_b;1)_{¬y})]`` with the POPULATION
    std (``ddof=0``, as the authors' numpy analysis; torch's default would be
    ``ddof=1``) of the C−1 non-label entries of the full softmax. Not a
    distillation loss: it trains the network whose ``logits`` are given
    (gradients flow into them), before caching. Where every non-label
    probability is equal the std has no gradient; those rows get 0 there.
    Paper values: β ∈ {0.01, 0.001}.
    """
    where = "regt"
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta >= 0):
        raise LossConfigError(f"{where}: beta must be a finite number >= 0, got {beta!r}.")
    z = check_logits(where, "logits", logits)
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise LossConfigError(f"{where}: ddof must be 0 (population std, default) or 1, got {ddof!r}.")
    if z.shape[1] - 1 - ddof <= 0:
        raise LossConfigError(f"{where}: std over C-1={z.shape[1] - 1} non-label entries needs ddof < {z.shape[1] - 1}.")
    y = check_labels(where, labels, z.shape[0], z.shape[1])
    z = z.to(compute_dtype(z))
    log_p = torch.log_softmax(z, dim=1)
    prob = log_p.exp()
    q = non_label(prob, y)
    var = (q - q.mean(1, keepdim=True)).square().sum(1) / (q.shape[1] - ddof)
    positive_var = var > 0
    # sqrt'(0) is infinite; route zero-variance rows through a dummy value so
    # their gradient is 0 instead of NaN (torch.where alone would not do).
    std = torch.where(positive_var, torch.where(positive_var, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
    reg = (gather_label(prob, y) - std).mean()
    ce_value = -gather_label(log_p, y).mean()
    return {"loss": ce_value + beta * reg, "ce": ce_value, "reg": reg}
