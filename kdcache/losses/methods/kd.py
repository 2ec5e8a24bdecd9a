"""KD: Hinton knowledge distillation, KL form (docs/methods.md, KD).

:func:`kd_term` is the tempered KL term itself; SLKD reuses it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdcache.losses._numerics import cross_entropy, kl_rows
from kdcache.losses._registry import non_negative, positive, register


def kd_term(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    """``KD_T(s ← t) = T² · mean_b KL(σ(t;T) ‖ σ(s;T))`` (KL form, mdistiller)."""
    log_p = torch.log_softmax(t / temperature, dim=1)
    log_q = torch.log_softmax(s / temperature, dim=1)
    return temperature**2 * kl_rows(log_p, log_q).mean()


@register(
    "kd",
    teacher_temperature="temperature", linear_teacher=True,
    parsers={"temperature": positive, "ce_weight": non_negative, "kd_weight": non_negative},
    summary="Hinton KD, KL form (docs/methods.md, KD)",
)
def kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 4.0,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
) -> dict[str, Tensor]:
    """Hinton KD (docs/methods.md, KD): ``loss = ce_weight·ce + kd_weight·kd``.

    ``kd = T² · mean_b KL(σ(t;T) ‖ σ(s;T))``: the KL form of mdistiller
    (cls_KD's cross-entropy form differs in value by ``T²·H(σ(t;T))``, not in
    gradient). Defaults: CIFAR-100 mdistiller (ImageNet: T=1, 0.5/0.5).
    """
    ce_value = cross_entropy(student_logits, labels)
    kd_value = kd_term(student_logits, teacher_logits, temperature)
    return {"loss": ce_weight * ce_value + kd_weight * kd_value, "ce": ce_value, "kd": kd_value}
