"""LA: logits adjustment of wrong teacher rows (swap or label smoothing), then KD (docs/methods.md, LA)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import cross_entropy, kl_rows, kl_rows_prob
from kdcache.losses._registry import choice, fraction, non_negative, optional, positive, register
from kdcache.losses.mixed import MixedLabels, mixed_rule

# "both" is not offered: LA(y) would "correct" a teacher that rightly ranks the partner first.
_LA_RULES = ("dominant",)


def _la_finalize(hp: dict[str, Any]) -> dict[str, Any]:
    if hp["variant"] == "lsr" and hp["epsilon"] is None:
        raise LossConfigError(
            "la: variant='lsr' needs an explicit epsilon (the paper's value is unknown); e.g. epsilon=0.1."
        )
    if hp["variant"] == "ps" and hp["epsilon"] is not None:
        raise LossConfigError("la: epsilon only applies to variant='lsr'; drop it or set variant='lsr'.")
    return hp


@register(
    "la",
    teacher_temperature="temperature",
    parsers={
        "temperature": positive,
        "ce_weight": non_negative,
        "kd_weight": non_negative,
        "variant": choice("ps", "lsr"),
        "epsilon": optional(fraction),
    },
    finalize=_la_finalize,
    mixed_rules=_LA_RULES,
    summary="Logits adjustment: fix wrong teacher rows (swap or LSR), then KD (docs/methods.md, LA)",
)
def la(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 4.0,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
    variant: str = "ps",
    epsilon: float | None = None,
    mixed: str | None = None,
) -> dict[str, Tensor]:
    """Logits adjustment (docs/methods.md, LA) then KD: ``loss = ce_weight·ce + kd_weight·kd``.

    A teacher row is wrong when ``t_y < max_c t_c`` (ties are not wrong).
    ``variant="ps"`` (default, probability shift): swap ``t_y`` with the
    teacher's maximum; equal to swapping the probabilities at any T.
    ``variant="lsr"``: wrong rows use the label-smoothed target
    ``(1−ε)·onehot(y) + ε/C`` (not tempered) instead of ``σ(t;T)``.
    ``kd = T²·mean_b KL(target_b ‖ σ(s_b;T))``; rows where the teacher is right
    are exactly KD's. ``teacher_wrong`` is the fraction of rows adjusted
    (diagnostic). Defaults: those of KD; no published values. Mixed views
    have no default rule: ``mixed="dominant"`` adjusts toward the dominant
    label (docs/methods.md, LA, "Mixed views"); ``ce`` is timm's mixed CE.
    """
    mixed_rule("la", labels, mixed, _LA_RULES)
    t = teacher_logits
    y = labels.dominant() if isinstance(labels, MixedLabels) else labels
    t_label = t.gather(1, y[:, None])
    t_max, argmax = t.max(dim=1, keepdim=True)
    wrong = t_label < t_max  # (B, 1)
    log_q = torch.log_softmax(student_logits / temperature, dim=1)
    if variant == "ps":
        # Write t_max at the label and t_y at the argmax; on right rows both
        # writes put back the value already there (t_y == t_max at a tie).
        swapped = t.scatter(1, y[:, None], t_max).scatter(1, argmax, t_label)
        adjusted = torch.where(wrong, swapped, t)
        kd_rows = kl_rows(torch.log_softmax(adjusted / temperature, dim=1), log_q)
    else:
        assert epsilon is not None  # guaranteed by _la_finalize
        classes = t.shape[1]
        smooth = torch.full_like(t, epsilon / classes).scatter_add_(
            1, y[:, None], torch.full_like(t_label, 1.0 - epsilon)
        )
        # Right rows through KD's own log-space path, so they are exactly KD;
        # wrong rows through xlogy, as an ε=0 target holds exact zeros.
        kd_rows = torch.where(
            wrong.squeeze(1),
            kl_rows_prob(smooth, log_q),
            kl_rows(torch.log_softmax(t / temperature, dim=1), log_q),
        )
    kd_value = temperature**2 * kd_rows.mean()
    ce_value = cross_entropy(student_logits, labels)
    return {
        "loss": ce_weight * ce_value + kd_weight * kd_value,
        "ce": ce_value,
        "kd": kd_value,
        "teacher_wrong": wrong.to(ce_value.dtype).mean(),
    }
