"""NKD and its teacher-free variant tf-NKD (docs/methods.md, NKD and tf-NKD)."""

from __future__ import annotations

import torch
from torch import Tensor

from kdcache.losses._numerics import gather_label, non_label, xent_rows
from kdcache.losses._registry import non_negative, positive, register
from kdcache.losses.mixed import MixedLabels, mix_rows, mixed_rule

_NKD_RULES = ("dominant", "both")


def _nkd_rows(log_s1: Tensor, log_t1: Tensor, s: Tensor, t: Tensor, y: Tensor, temperature: float
              ) -> tuple[Tensor, Tensor, Tensor]:
    """NKD's per-row terms for labels ``y``: (−logσ(s)_y, −σ(t)_y·logσ(s)_y, X(σ(t_{¬y};T), σ(s_{¬y};T)))."""
    log_label = gather_label(log_s1, y)
    soft = -(gather_label(log_t1, y).exp() * log_label)
    log_pt = torch.log_softmax(non_label(t, y) / temperature, dim=1)
    log_ps = torch.log_softmax(non_label(s, y) / temperature, dim=1)
    return -log_label, soft, xent_rows(log_pt, log_ps)


def _nkd_mixed(s: Tensor, t: Tensor, labels: MixedLabels, gamma: float, temperature: float, rule: str
               ) -> dict[str, Tensor]:
    """NKD on mixed views (docs/methods.md, NKD, "Mixed views"): ce is timm's mixed CE; ``dominant`` takes
    soft and distributed at the dominant label (the authors' argmax of the soft label), ``both`` mixes
    each label's rows by λ."""
    log_s1, log_t1 = torch.log_softmax(s, dim=1), torch.log_softmax(t, dim=1)
    own = _nkd_rows(log_s1, log_t1, s, t, labels.label, temperature)
    other = _nkd_rows(log_s1, log_t1, s, t, labels.partner, temperature)
    ce_value = mix_rows(labels.lam, own[0], other[0]).mean()
    if rule == "dominant":
        _, soft_rows, dist_rows = _nkd_rows(log_s1, log_t1, s, t, labels.dominant(), temperature)
    else:
        soft_rows, dist_rows = mix_rows(labels.lam, own[1], other[1]), mix_rows(labels.lam, own[2], other[2])
    soft = soft_rows.mean()
    distributed = temperature**2 * dist_rows.mean()
    return {"loss": ce_value + soft + gamma * distributed, "ce": ce_value, "soft": soft, "distributed": distributed}


@register(
    "nkd",
    teacher_temperature="temperature",
    parsers={"gamma": non_negative, "temperature": positive},
    summary="Normalized KD: teacher-weighted target term + non-target cross-entropy (docs/methods.md, NKD)",
    mixed_rules=_NKD_RULES,
)
def nkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    gamma: float = 3.5,
    temperature: float = 3.0,
    mixed: str | None = "dominant",
) -> dict[str, Tensor]:
    """NKD (docs/methods.md, NKD, cls_KD HEAD): ``loss = ce + soft + gamma·distributed``.

    * ``soft = −mean_b sg(σ(t;1)_y)·logσ(s;1)_y``: temperature 1, no T²;
    * ``distributed = −T²·mean_b Σ_c σ(t_{¬y};T)_c·logσ(s_{¬y};T)_c``: a
      CROSS-ENTROPY between the renormalised non-target distributions (it
      includes the teacher's non-target entropy), as the code computes it.

    Defaults: CIFAR-100 R34→R18 config (γ=3.5, T=3; the paper's table prefers
    T=2). ImageNet: γ=1.5, T=1. Mixed views: ``mixed="dominant"`` (default, the authors' code) or
    ``"both"`` (docs/methods.md, NKD, "Mixed views").
    """
    rule = mixed_rule("nkd", labels, mixed, _NKD_RULES)
    if rule is not None:
        return _nkd_mixed(student_logits, teacher_logits, labels, gamma, temperature, rule)
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
    the original (per-device) code. Mixed views follow the authors' own
    two-target rule (docs/methods.md, tf-NKD, "Mixed views").
    """
    if isinstance(labels, MixedLabels):
        return _tf_nkd_mixed(student_logits, labels)
    log_label = gather_label(torch.log_softmax(student_logits, dim=1), labels)
    prob = log_label.detach().exp()
    weight = prob + 1.0 - prob.mean()
    tf = -(weight * log_label).mean()
    ce_value = -log_label.mean()
    return {"loss": ce_value + tf, "ce": ce_value, "tf": tf}


def _tf_nkd_mixed(s: Tensor, labels: MixedLabels) -> dict[str, Tensor]:
    """tf-NKD on mixed views, as the authors' code treats a soft label: each of its two entries
    ``(v_k, y_k)``, larger value first (the view's own label at a tie), gets
    ``−mean_b w_k·log S_k`` with ``w_k = sg(S_k + v_k − mean S_k)`` and ``w_k = 0``
    where ``v_k = 0``; ``mean S_2`` is over the rows that have a second entry.
    ce is timm's mixed CE. A partner of the view's own class gives one entry of weight 1."""
    log_p = torch.log_softmax(s, dim=1)
    lam = labels.lam.to(log_p.dtype)
    same = labels.partner == labels.label
    own_first = labels.lam >= 0.5  # entries in the code's order: larger value first (the own label at a tie)
    first = torch.where(own_first, labels.label, labels.partner)
    second = torch.where(own_first, labels.partner, labels.label)
    v_first = torch.where(same, torch.ones_like(lam), torch.where(own_first, lam, 1.0 - lam))
    v_second = torch.where(same, torch.zeros_like(lam), torch.where(own_first, 1.0 - lam, lam))
    terms = []
    entries = ((v_first, gather_label(log_p, first)), (v_second, gather_label(log_p, second)))
    for k, (v, log_label) in enumerate(entries):
        prob = log_label.detach().exp()
        # Batch mean of S_k over the rows that have a k-th entry: every row for the first (as the
        # plain loss); for the second the authors' code would add the probability of whichever
        # zero-valued class its sort put second, an artefact of tie order that is left out here.
        present = v > 0
        mean = prob.mean() if k == 0 else (prob * present).sum() / present.sum().clamp_min(1)
        weight = torch.where(present, prob + v - mean, torch.zeros_like(v))
        terms.append(-(weight * log_label).mean())
    tf = terms[0] + terms[1]
    ce_value = -mix_rows(labels.lam, gather_label(log_p, labels.label), gather_label(log_p, labels.partner)).mean()
    return {"loss": ce_value + tf, "ce": ce_value, "tf": tf}
