"""ATS: asymmetric temperature scaling, a higher teacher temperature on the label class (docs/methods.md, ATS).

:func:`asymmetric_kd` is the ATS term with per-row temperatures; ISATS reuses it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdcache.losses._numerics import cross_entropy, xent_rows
from kdcache.losses._registry import fraction, positive, register
from kdcache.losses.mixed import MixedLabels, mix_rows, mixed_rule

ATS_RULES = ("dominant", "both")
"""The rules ATS and ISATS offer on mixed views (docs/methods.md, ATS, "Mixed views")."""


def asymmetric_rows(s: Tensor, t: Tensor, y: Tensor, tau_label: Any, tau_other: Any, student_temperature: float) -> Tensor:
    """Per-row ``X(σ(t_b; τ_b), σ(s_b; τs))`` (no τs²), τ_b = τ_label at y_b, τ_other elsewhere.

    ``tau_label``/``tau_other`` are floats (ATS) or (B,) tensors (ISATS).
    """
    taus = torch.as_tensor(tau_other, dtype=t.dtype, device=t.device).reshape(-1, 1).expand_as(t).clone()
    label_tau = torch.as_tensor(tau_label, dtype=t.dtype, device=t.device).reshape(-1, 1).expand(t.shape[0], 1)
    taus.scatter_(1, y[:, None], label_tau)
    log_p = torch.log_softmax(t / taus, dim=1)  # one softmax over the element-wise scaled row
    log_q = torch.log_softmax(s / student_temperature, dim=1)
    return xent_rows(log_p, log_q)


def asymmetric_kd(s: Tensor, t: Tensor, y: Tensor, tau_label: Any, tau_other: Any, student_temperature: float) -> Tensor:
    """ATS term ``τs² · mean_b X(σ(t_b; τ_b), σ(s_b; τs))``, τ_b = τ_label at y_b, τ_other elsewhere."""
    return student_temperature**2 * asymmetric_rows(s, t, y, tau_label, tau_other, student_temperature).mean()


def mixed_asymmetric_kd(s: Tensor, t: Tensor, labels: MixedLabels, rule: str, taus_own: tuple[Any, Any],
                        taus_partner: tuple[Any, Any], student_temperature: float) -> Tensor:
    """The ATS term on mixed views: at the dominant label (with its temperatures), or ``both`` labels'
    rows mixed by λ. ``taus_*`` are (τ_label, τ_other) for the view's own label and for the partner's."""
    if rule == "dominant":
        pick = labels.lam >= 0.5
        taus = [torch.where(pick, torch.as_tensor(a, dtype=t.dtype), torch.as_tensor(b, dtype=t.dtype))
                for a, b in zip(taus_own, taus_partner)]
        rows = asymmetric_rows(s, t, labels.dominant(), taus[0], taus[1], student_temperature)
    else:
        rows = mix_rows(labels.lam, asymmetric_rows(s, t, labels.label, *taus_own, student_temperature),
                        asymmetric_rows(s, t, labels.partner, *taus_partner, student_temperature))
    return student_temperature**2 * rows.mean()


@register(
    "ats",
    teacher_temperature="tau2",
    parsers={"tau1": positive, "tau2": positive, "student_temperature": positive, "lam": fraction},
    summary="Asymmetric temperature scaling: higher teacher T on the label class (docs/methods.md, ATS)",
    mixed_rules=ATS_RULES,
)
def ats(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    tau1: float = 4.0,
    tau2: float = 3.0,
    student_temperature: float = 1.0,
    lam: float = 0.5,
    mixed: str | None = None,
) -> dict[str, Tensor]:
    """Asymmetric temperature scaling (docs/methods.md, ATS): ``loss = (1−lam)·ce + lam·kd``.

    ``kd = τs²·mean_b X(σ(t_b; τ_b), σ(s_b; τs))`` with the per-class teacher
    temperature ``τ_{b,c} = tau1`` at the label, ``tau2`` elsewhere (X form,
    as ATS-LargeKD). Default τ1=4, τ2=3 is an in-grid point with τ1−τ2 ∈ [1, 2].
    Mixed views have no default rule: ``mixed="dominant"`` or ``"both"``
    (docs/methods.md, ATS, "Mixed views"); ``ce`` is timm's mixed CE.
    """
    rule = mixed_rule("ats", labels, mixed, ATS_RULES)
    if isinstance(labels, MixedLabels):
        kd_value = mixed_asymmetric_kd(student_logits, teacher_logits, labels, str(rule), (tau1, tau2), (tau1, tau2),
                                       student_temperature)
    else:
        kd_value = asymmetric_kd(student_logits, teacher_logits, labels, tau1, tau2, student_temperature)
    ce_value = cross_entropy(student_logits, labels)
    return {"loss": (1.0 - lam) * ce_value + lam * kd_value, "ce": ce_value, "kd": kd_value}
