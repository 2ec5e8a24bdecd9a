"""DKD: decoupled KD, target-class and non-target-class terms with an epoch warm-up (docs/methods.md, DKD)."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import cross_entropy, gather_label, kl_rows, non_label, scalar
from kdcache.losses._registry import non_negative, positive, register
from kdcache.losses.mixed import MixedLabels, mix_rows, mixed_rule

_DKD_RULES = ("dominant", "both")


def _parse_epoch(epoch: object) -> int:
    if epoch is None:
        raise LossConfigError("dkd: needs epoch=<1-based epoch index> for its warm-up factor min(epoch/warmup, 1).")
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
        raise LossConfigError(f"dkd: epoch must be an integer >= 1 (1-based, as mdistiller counts), got {epoch!r}.")
    return int(epoch)


def _dkd_rows(zs: Tensor, zt: Tensor, lse_s: Tensor, lse_t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row TCKD and NCKD KLs (no T²) with target class ``y``, from the tempered logits."""
    ns, nt = non_label(zs, y), non_label(zt, y)
    log_b_s = torch.stack([gather_label(zs, y) - lse_s, torch.logsumexp(ns, dim=1) - lse_s], dim=1)
    log_b_t = torch.stack([gather_label(zt, y) - lse_t, torch.logsumexp(nt, dim=1) - lse_t], dim=1)
    return kl_rows(log_b_t, log_b_s), kl_rows(torch.log_softmax(nt, dim=1), torch.log_softmax(ns, dim=1))


@register(
    "dkd",
    teacher_temperature="temperature",
    parsers={
        "alpha": non_negative,
        "beta": non_negative,
        "temperature": positive,
        "warmup": positive,
        "ce_weight": non_negative,
    },
    call_inputs=("epoch",),
    mixed_rules=_DKD_RULES,
    summary="Decoupled KD: target-class + non-target-class KD with epoch warm-up (docs/methods.md, DKD)",
)
def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    warmup: float = 20.0,
    ce_weight: float = 1.0,
    epoch: int | None = None,
    mixed: str | None = None,
) -> dict[str, Tensor]:
    """Decoupled KD (docs/methods.md, DKD): ``loss = ce_weight·ce + warmup_factor·(alpha·tckd + beta·nckd)``.

    * ``tckd = T²·mean_b KL([β_tgt(t), β_oth(t)] ‖ [β_tgt(s), β_oth(s)])``, the
      binary target/non-target split;
    * ``nckd = T²·mean_b KL(σ(t_{¬y};T) ‖ σ(s_{¬y};T))``, label column removed;
    * ``warmup_factor = min(epoch / warmup, 1)`` with a 1-based ``epoch``
      (diagnostic entry, no gradient).

    Both binary probabilities are formed in log space
    (``log β_oth = LSE(v_{¬y}/T) − LSE(v/T)``), not as ``log(Σ p)`` or
    ``1 − β_tgt``: the reference code returns ``inf`` once the student's
    non-target mass underflows; this agrees with it wherever it is finite.
    Defaults: CIFAR-100 β=8 (per-pair 2/6/8; ImageNet T=1, warmup=1, β=0.5/2).
    Mixed views have no default rule: ``mixed="dominant"`` or ``"both"``
    (docs/methods.md, DKD, "Mixed views"); ``ce`` is timm's mixed CE.
    """
    epoch = _parse_epoch(epoch)
    rule = mixed_rule("dkd", labels, mixed, _DKD_RULES)
    y = labels
    zs, zt = student_logits / temperature, teacher_logits / temperature
    lse_s, lse_t = torch.logsumexp(zs, dim=1), torch.logsumexp(zt, dim=1)
    if isinstance(y, MixedLabels):
        if rule == "dominant":
            tckd_rows, nckd_rows = _dkd_rows(zs, zt, lse_s, lse_t, y.dominant())
        else:  # both: each label as the target class, weighted by λ
            own, other = _dkd_rows(zs, zt, lse_s, lse_t, y.label), _dkd_rows(zs, zt, lse_s, lse_t, y.partner)
            tckd_rows, nckd_rows = mix_rows(y.lam, own[0], other[0]), mix_rows(y.lam, own[1], other[1])
    else:
        tckd_rows, nckd_rows = _dkd_rows(zs, zt, lse_s, lse_t, y)
    tckd = temperature**2 * tckd_rows.mean()
    nckd = temperature**2 * nckd_rows.mean()
    factor = min(epoch / warmup, 1.0)
    ce_value = cross_entropy(student_logits, y)
    return {
        "loss": ce_weight * ce_value + factor * (alpha * tckd + beta * nckd),
        "ce": ce_value,
        "tckd": tckd,
        "nckd": nckd,
        "warmup_factor": scalar(factor, ce_value),
    }
