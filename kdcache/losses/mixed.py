"""Labels of mixed views (mixup / cutmix with a partner sample) and the rules the losses follow on them.

A mixed view shows a fraction ``lam`` of its own sample (label ``label``) and
``1 − lam`` of a partner sample (label ``partner``), as timm's per-sample
Mixup makes it. timm trains on the mixed one-hot target
``lam·onehot(label) + (1 − lam)·onehot(partner)``; its soft-target CE is
``lam·CE(label) + (1 − lam)·CE(partner)``, which :func:`mixed_cross_entropy`
computes.

Every registered loss takes either a plain ``(B,)`` label tensor (unchanged
results) or :class:`MixedLabels`. What a method's "label" means on a mixed
view is a rule per method (docs/methods.md, "Mixed views"):

* ``both``: the method's label-dependent row terms evaluated for each label
  and weighted ``lam`` / ``1 − lam`` (the loss's expectation when the label
  is drawn from the mixed target);
* ``dominant``: the label with the larger weight (``label`` at a tie), the
  convention of the reference code that takes ``argmax`` of a soft label.

A method whose paper does not settle the rule refuses mixed labels in one
line until the loss option ``mixed=`` chooses one (:func:`mixed_rule`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcache.errors import LossConfigError

__all__ = ["MIXED_OPTION", "MixedLabels", "as_mixed", "check_mixed", "mix_rows", "mixed_cross_entropy",
           "mixed_rule", "refusal", "require_mixed_rule"]

MIXED_OPTION = "mixed"
"""The loss option (``--loss-opt mixed=RULE``) that chooses a method's rule on mixed views."""


@dataclass(frozen=True)
class MixedLabels:
    """The labels of a batch of (possibly) mixed views.

    Attributes:
        label: (B,) int64, each view's own sample's class.
        partner: (B,) int64, the partner sample's class (equal to ``label``
            where a view is not mixed).
        lam: (B,) float, the weight of ``label`` in the mixed target, in
            [0, 1] (1 where a view is not mixed; a cutmix λ is already
            corrected to the pasted box's area).
    """

    label: Tensor
    partner: Tensor
    lam: Tensor

    def dominant(self) -> Tensor:
        """The label with the larger weight per row; ``label`` where ``lam == 0.5``."""
        return torch.where(self.lam >= 0.5, self.label, self.partner)

    def soft_target(self, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """timm's mixed one-hot target ``lam·onehot(label) + (1 − lam)·onehot(partner)`` (B, C)."""
        lam = self.lam.to(dtype)[:, None]
        out = torch.zeros(self.label.shape[0], num_classes, dtype=dtype, device=self.label.device)
        out.scatter_add_(1, self.label[:, None], lam)
        return out.scatter_add_(1, self.partner[:, None], 1.0 - lam)

    def __len__(self) -> int:
        return int(self.label.shape[0])


def as_mixed(labels: Tensor | MixedLabels) -> MixedLabels:
    """``labels`` as :class:`MixedLabels`: a plain tensor becomes ``partner = label``, ``lam = 1``."""
    if isinstance(labels, MixedLabels):
        return labels
    labels = labels.long()
    return MixedLabels(labels, labels, torch.ones(labels.shape, dtype=torch.float32, device=labels.device))


def check_mixed(where: str, labels: MixedLabels, batch: int, num_classes: int) -> MixedLabels:
    """Validate mixed labels (shapes, ranges, λ in [0, 1]); returns them with int64 labels."""
    from kdcache.losses._numerics import check_labels  # _numerics imports this module

    label = check_labels(where, labels.label, batch, num_classes)
    partner = check_labels(f"{where} (partner)", labels.partner, batch, num_classes)
    lam = labels.lam
    if not isinstance(lam, Tensor) or not lam.is_floating_point() or tuple(lam.shape) != (batch,):
        shape = tuple(lam.shape) if isinstance(lam, Tensor) else type(lam).__name__
        raise LossConfigError(f"{where}: mixed labels need lam as a floating ({batch},) tensor, got {shape}.")
    if not bool(((lam >= 0) & (lam <= 1)).all()):  # also refuses NaN
        raise LossConfigError(f"{where}: mixed labels need lam in [0, 1], got min {float(lam.min())}, max {float(lam.max())}.")
    return MixedLabels(label, partner, lam.detach())


def mix_rows(lam: Tensor, own: Tensor, partner: Tensor) -> Tensor:
    """``lam·own + (1 − lam)·partner`` per row; exactly ``own`` where lam = 1, ``partner`` where lam = 0."""
    lam = lam.to(own.dtype)
    return lam * own + (1.0 - lam) * partner


def mixed_cross_entropy(s: Tensor, labels: MixedLabels) -> Tensor:
    """``mean_b [lam_b·CE(s_b, label_b) + (1 − lam_b)·CE(s_b, partner_b)]``, timm's soft-target CE.

    Reduced by the same ``nll_loss`` as ``F.cross_entropy``, so ``lam = 1``
    everywhere gives ``F.cross_entropy(s, label)`` bit for bit.
    """
    log_p = torch.log_softmax(s, dim=1)
    own = log_p.gather(1, labels.label[:, None])
    other = log_p.gather(1, labels.partner[:, None])
    rows = mix_rows(labels.lam[:, None], own, other)
    return F.nll_loss(rows, torch.zeros_like(labels.label))


def refusal(name: str, rules: Sequence[str]) -> str:
    """The one-line refusal of a method with no default rule on mixed views."""
    options = " or ".join(f"{MIXED_OPTION}={r}" for r in rules)
    return (f"{name}: has no single definition on mixed (mixup/cutmix) views; choose a rule with the loss "
            f"option {options} (docs/methods.md, {name}, Mixed views).")


def mixed_rule(name: str, labels: Tensor | MixedLabels, mixed: str | None, rules: Sequence[str]) -> str | None:
    """The rule a method applies to ``labels``: None for plain labels, else ``mixed`` (checked against
    ``rules``); mixed labels with no rule chosen are refused in one line naming the option."""
    if not isinstance(labels, MixedLabels):
        return None
    if mixed is None:
        raise LossConfigError(refusal(name, rules))
    if mixed not in rules:
        raise LossConfigError(f"{name}: {MIXED_OPTION} must be one of {', '.join(rules)}, got {mixed!r}.")
    return mixed


def require_mixed_rule(spec: Any, hparams: Mapping[str, Any] | None = None) -> str | None:
    """Check, before training, that ``spec``'s loss is defined on mixed views under ``hparams``.

    For a store whose views are mixed: returns the rule the method will apply
    (None for methods whose label enters only through CE, which is always
    mixed as timm's), or raises the same one-line :class:`LossConfigError`
    the loss would raise on its first batch.
    """
    resolved = spec.resolve(hparams)
    if not spec.mixed_rules:
        return None
    rule = resolved.get(MIXED_OPTION, spec.mixed_default)
    if rule is None:
        raise LossConfigError(refusal(spec.name, spec.mixed_rules))
    return rule
