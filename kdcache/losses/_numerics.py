"""Input validation and the numerically careful building blocks (docs/methods.md, "Numerical care").

Rules every loss follows, through these helpers:

* maths in float32 at least: float16/bfloat16 logits (a half-precision cache)
  are upcast, float64 stays float64, so tests can compare in float64;
* log-softmax everywhere, never ``log(softmax)``; probabilities of the
  teacher come from ``exp`` of a log-softmax, so an underflowed probability is
  an exact 0 multiplying a FINITE log, which is the ``0·log 0 = 0`` convention
  without special cases;
* the label column is removed by gathering the other C−1 entries, never by
  subtracting a large constant (equal only while |logit/T| ≪ 1000);
* teacher logits are detached: a cached teacher is a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses.mixed import MixedLabels, check_mixed, mixed_cross_entropy


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float32, or float64 when any input is float64 (never a half type)."""
    dtype = torch.float32
    for x in tensors:
        if x is not None:
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def check_logits(where: str, what: str, x: object, shape: tuple[int, ...] | None = None) -> Tensor:
    """Check ``x`` is a floating (B, C) tensor with C >= 2 (and ``shape`` if given)."""
    if not isinstance(x, Tensor):
        raise LossConfigError(f"{where}: {what} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise LossConfigError(f"{where}: {what} must be floating point, got {x.dtype}.")
    if x.dim() != 2:
        raise LossConfigError(f"{where}: {what} must have shape (B, C), got {tuple(x.shape)}.")
    if shape is not None and tuple(x.shape) != shape:
        raise LossConfigError(f"{where}: {what} must have shape {shape} like the student logits, got {tuple(x.shape)}.")
    if x.shape[1] < 2:
        raise LossConfigError(f"{where}: {what} needs at least 2 classes, got C={x.shape[1]}.")
    return x


def check_labels(where: str, labels: object, batch: int, num_classes: int) -> Tensor:
    """Check hard labels: an integer (B,) tensor with values in [0, C); returns int64."""
    if not isinstance(labels, Tensor):
        raise LossConfigError(f"{where}: labels must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype is torch.bool:
        raise LossConfigError(
            f"{where}: labels must be integer class indices of shape ({batch},), got dtype {labels.dtype}. "
            "Mixed (mixup/cutmix) views: pass kdcache.losses.MixedLabels(label, partner, lam)."
        )
    if tuple(labels.shape) != (batch,):
        raise LossConfigError(f"{where}: labels must have shape ({batch},), got {tuple(labels.shape)}.")
    # One host sync per call; an out-of-range label would otherwise be an
    # opaque gather error on CPU and a device-side assert on CUDA.
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise LossConfigError(f"{where}: labels must lie in [0, {num_classes}), got min {int(labels.min())}, max {int(labels.max())}.")
    return labels.long()


def prepare_inputs(
    where: str, student: object, teacher: object, labels: object, *, needs_teacher: bool = True
) -> tuple[Tensor, Tensor | None, Tensor | MixedLabels]:
    """Validate (student, teacher, labels) and cast them to the maths dtype.

    The student keeps its autograd graph (the cast is differentiable); the
    teacher is detached. Methods without a teacher get ``None`` whatever was
    passed, so nothing downstream can use it by accident. ``labels`` is a
    plain (B,) tensor or :class:`~kdcache.losses.mixed.MixedLabels` (mixed
    views), validated either way.
    """
    s = check_logits(where, "student_logits", student)
    t: Tensor | None = None
    if needs_teacher:
        if teacher is None:
            raise LossConfigError(f"{where}: needs teacher_logits, got None.")
        t = check_logits(where, "teacher_logits", teacher, tuple(s.shape))
    if isinstance(labels, MixedLabels):
        y: Tensor | MixedLabels = check_mixed(where, labels, s.shape[0], s.shape[1])
    else:
        y = check_labels(where, labels, s.shape[0], s.shape[1])
    dtype = compute_dtype(s, t)
    return s.to(dtype), (t.detach().to(dtype) if t is not None else None), y


def as_student_like(where: str, what: str, x: object, student: Tensor) -> Tensor:
    """Validate a trainable (B, C) input such as an SL-T's logits; keeps its graph."""
    x = check_logits(where, what, x, tuple(student.shape))
    return x.to(compute_dtype(student, x))


def gather_label(v: Tensor, labels: Tensor) -> Tensor:
    """``v[b, y_b]`` as a (B,) tensor."""
    return v.gather(1, labels[:, None]).squeeze(1)


def non_label(v: Tensor, labels: Tensor) -> Tensor:
    """``v_{¬y}``: the (B, C−1) entries of each row other than its label column, in order."""
    batch, classes = v.shape
    idx = torch.arange(classes - 1, device=v.device).expand(batch, classes - 1)
    # Columns at or after the label shift right by one, skipping it.
    idx = idx + (idx >= labels[:, None]).long()
    return v.gather(1, idx)


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row ``KL(p‖q)`` from log-probabilities, (B,). Exact zeros of p contribute 0."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)


def xent_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row ``X(p, q) = −Σ p log q`` from log-probabilities, (B,)."""
    return -(log_p.exp() * log_q).sum(1)


def kl_rows_prob(p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row ``KL(p‖q)`` with ``p`` given as probabilities that may hold exact zeros."""
    return (torch.xlogy(p, p) - p * log_q).sum(1)


def cross_entropy(s: Tensor, labels: Tensor | MixedLabels) -> Tensor:
    """``CE(s, y) = mean_b −logσ(s_b;1)_{y_b}``; on mixed labels timm's
    ``mean_b [λ·CE(y) + (1−λ)·CE(y_partner)]`` (equal to the plain CE at λ = 1)."""
    if isinstance(labels, MixedLabels):
        return mixed_cross_entropy(s, labels)
    return F.cross_entropy(s, labels)


def scalar(x: float, like: Tensor) -> Tensor:
    """A 0-dim constant in ``like``'s dtype/device, for diagnostic entries of a loss dict."""
    return torch.tensor(x, dtype=like.dtype, device=like.device)
