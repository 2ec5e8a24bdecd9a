"""FGCR: fusing global class relations, the teacher target mixed with its class-mean row (docs/methods.md, FGCR).

The class table is computed once over a store by :func:`kdcache.losses.class_table`
(see ``kdcache/losses/_stats.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import cross_entropy
from kdcache.losses._registry import fraction, optional, positive, register
from kdcache.losses.mixed import MixedLabels, mix_rows, mixed_rule

_FGCR_RULES = ("both", "dominant")


def _fgcr_finalize(hp: dict[str, Any]) -> dict[str, Any]:
    if hp["tau0"] is None:
        hp["tau0"] = hp["tau"] - 1.0  # paper §6: τ0 = τ − 1
        if hp["tau0"] <= 0:
            raise LossConfigError(
                f"fgcr: tau0 defaults to tau - 1 = {hp['tau0']:g}, which is not a valid temperature; pass tau0 > 0 explicitly."
            )
    return hp


def _parse_class_table(table: object, classes: int, like: Tensor) -> Tensor:
    if table is None:
        raise LossConfigError(
            "fgcr: needs class_table=<(C, C) tensor> from the store (compute it with losses.class_table)."
        )
    if not isinstance(table, Tensor) or not table.is_floating_point():
        raise LossConfigError(f"fgcr: class_table must be a floating torch.Tensor of shape ({classes}, {classes}).")
    if tuple(table.shape) != (classes, classes):
        raise LossConfigError(
            f"fgcr: class_table must have shape ({classes}, {classes}) for C={classes} logits, got {tuple(table.shape)}."
        )
    table = table.detach().to(like.dtype)
    # Catches per-class SUMS passed instead of means (class_table_sums output).
    if not bool(torch.allclose(table.sum(1), torch.ones_like(table[:, 0]), atol=1e-3)):
        raise LossConfigError("fgcr: class_table rows must each sum to 1 (a mean of distributions); use losses.class_table.")
    return table


@register(
    "fgcr",
    teacher_temperature="tau",
    parsers={"tau": positive, "alpha": fraction, "student_temperature": positive, "lam": fraction, "tau0": optional(positive)},
    call_inputs=("class_table",),
    finalize=_fgcr_finalize,
    stats={
        "class_table": {
            "required": True,
            "params": ["tau0"],
        }
    },
    summary="Fusing global class relations: teacher target mixed with its class-mean row (docs/methods.md, FGCR)",
    mixed_rules=_FGCR_RULES,
)
def fgcr(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    tau: float = 4.0,
    alpha: float = 0.5,
    student_temperature: float = 1.0,
    lam: float = 0.5,
    tau0: float | None = None,
    class_table: Tensor | None = None,
    mixed: str | None = "both",
) -> dict[str, Tensor]:
    """FGCR (docs/methods.md, FGCR): ``loss = (1−lam)·ce + lam·kd``.

    ``kd = τs²·mean_b X(p̂_b, σ(s_b;τs))`` with the fused target
    ``p̂_b = (1−α)·σ(t_b;τ) + α·m_{y_b}`` and ``m = class_table`` (C, C) from
    the store. ``tau0`` (default τ−1) only names which stored table to use
    (see ``LossSpec.store_stats``); the maths here never reads it.
    ``student_temperature=tau`` gives the paper's Eq. 2 variant. Mixed
    views: ``mixed="both"`` (default) fuses ``λ·m_y + (1−λ)·m_partner``,
    ``"dominant"`` the dominant label's row (docs/methods.md, FGCR, "Mixed views").
    """
    t, y = teacher_logits, labels
    rule = mixed_rule("fgcr", labels, mixed, _FGCR_RULES)
    table = _parse_class_table(class_table, t.shape[1], t)
    if isinstance(y, MixedLabels):
        # X is linear in the target, so mixing the class rows is mixing each label's row loss by λ.
        rows = table[y.dominant()] if rule == "dominant" else mix_rows(y.lam[:, None], table[y.label], table[y.partner])
    else:
        rows = table[y]
    target = (1.0 - alpha) * torch.softmax(t / tau, dim=1) + alpha * rows
    log_q = torch.log_softmax(student_logits / student_temperature, dim=1)
    kd_value = student_temperature**2 * (-(target * log_q).sum(1)).mean()
    ce_value = cross_entropy(student_logits, y)
    return {"loss": (1.0 - lam) * ce_value + lam * kd_value, "ce": ce_value, "kd": kd_value}
