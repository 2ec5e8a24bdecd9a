"""NKD and its teacher-free variant tf-NKD (docs/methods.md, NKD and tf-NKD)."""

from __future__ import annotations

import torch
from torch import Tensor

from kdcache.losses._numerics import gather_label, non_label, xent_rows
from kdcache.losses._registry import non_negative, positive, register


@register(
    "nkd",
    teacher_temperature="temperature",
    parsers={"gamma": non_negative, "temperature": positive},
    summary="Normalized KD: teacher-weighted target term + non-target cross-entropy (docs/methods.md, NKD)",
)
def nkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    gamma: float = 3.5,
    temperature: float = 3.0,
) -> dict[str, Tensor]:
    """NKD (docs/methods.md, NKD, cls_KD HEAD): ``loss = ce + soft + gamma·distributed``.

    * ``soft = −mean_b sg(σ(t;1)_y)·logσ(s;1)_y``: temperature 1, no T²;
    * ``distributed = −T²·mean_b Σ_c σ(t_{¬y};T)_c·logσ(s_{¬y};T)_c``: a
      CROSS-ENTROPY between the renormalised non-target distributions (it
      includes the teacher's non-target entropy), as the code computes it.

    Defaults: CIFAR-100 R34→R18 config (γ=3.5, T=3; the paper's table prefers
    T=2). ImageNet: γ=1.5, T=1.
    """
    y = labels
    log_s1 = torch.log_softmax(student_logits, dim=1)
    teacher_label_prob = gather_label(torch.log_softmax(teacher_logits, dim=1), y).exp()
    soft = -(teacher_label_prob * gather_label(log_s1, y)).mean()
    log_pt = torch.log_softmax(non_label(teacher_logits, y) / temperature, dim=1)
    log_ps = torch.log_softmax(non_label(student_logits, y) / temperature, dim=1)
    distributed = temperature**2 * xent_rows(log_pt, log_ps).mean()
    ce_value = -gather_label(log_s1, y).mean()
    return {"loss": ce_value + soft + gamma * distributed, "ce": ce_value, "soft": soft, "distributed": distributed}


@register("tf_nkd", parsers={}, needs_teacher=False,
          summary="teacher-free NKD: self-weighted target term (docs/methods.md, tf-NKD)")
def tf_nkd(student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor) -> dict[str, Tensor]:
    """Teacher-free NKD (docs/methods.md, tf-NKD): ``loss = ce + tf``. Teacher ignored (may be ``None``).

    ``tf = −mean_b w_b·log S_b`` with ``S_b = σ(s_b;1)_{y_b}`` and the fully
    detached weight ``w_b = S_b + 1 − mean_{b'} S_{b'}`` (hard labels: V=1).
    The batch mean makes the value depend on the batch's composition, as in
    the original (per-device) code.
    """
    log_label = gather_label(torch.log_softmax(student_logits, dim=1), labels)
    prob = log_label.detach().exp()
    weight = prob + 1.0 - prob.mean()
    tf = -(weight * log_label).mean()
    ce_value = -log_label.mean()
    return {"loss": ce_value + tf, "ce": ce_value, "tf": tf}
