"""CE: plain cross-entropy with the hard label, the no-distillation baseline (docs/methods.md)."""

from __future__ import annotations

from torch import Tensor

from kdcache.losses._numerics import cross_entropy
from kdcache.losses._registry import register


@register("ce", parsers={}, needs_teacher=False, summary="plain cross-entropy with the hard label (baseline)")
def ce(student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor) -> dict[str, Tensor]:
    """Plain cross-entropy, the no-distillation baseline. ``loss = ce``. Teacher ignored."""
    value = cross_entropy(student_logits, labels)
    return {"loss": value, "ce": value}
