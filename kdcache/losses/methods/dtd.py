"""DTD: dynamic temperature distillation, a per-row temperature from sample hardness (docs/methods.md, DTD)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import cross_entropy, xent_rows
from kdcache.losses._registry import choice, non_negative, optional, positive, register

_DTD_BETA = {"flsw": 1.0, "cwsm": 0.05}


def _dtd_finalize(hp: dict[str, Any]) -> dict[str, Any]:
    if hp["beta"] is None:  # the sensible scale differs by a factor ~C between variants
        hp["beta"] = _DTD_BETA[hp["variant"]]
    return hp


@register(
    "dtd",
    teacher_temperature="base_temperature",
    parsers={
        "variant": choice("flsw", "cwsm"),
        "base_temperature": positive,
        "beta": optional(non_negative),
        "gamma": non_negative,
        "scale": choice("none", "tau_sq"),
        "ce_weight": non_negative,
    },
    finalize=_dtd_finalize,
    summary="Dynamic temperature distillation: per-row temperature from sample hardness "
            "(docs/methods.md, DTD, unvalidated)",
)
def dtd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    variant: str = "flsw",
    base_temperature: float = 4.0,
    beta: float | None = None,
    gamma: float = 2.0,
    scale: str = "none",
    ce_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Dynamic temperature distillation (docs/methods.md, DTD): ``loss = ce_weight·ce + kd``.

    Per-row ``τ_b = T0 + β·(mean_{b'} w_{b'} − w_b)`` (no gradient) with
    FLSW ``w_b = (1 − cos(s_b, t_b))^γ`` on raw logits (norms + 1e-4) or CWSM
    ``w_b = 1/(max_c σ(s_b;1)_c + 1e-3)``. ``kd = mean_b X(σ(t_b;τ_b), σ(s_b;τ_b))``
    times ``τ_b²`` per row when ``scale="tau_sq"`` (default ``"none"``, as
    TextBrewer). ``beta=None`` means 1 for FLSW, 0.05 for CWSM; ``gamma`` is
    used by FLSW only. Raises if any ``τ_b ≤ 0``. ``tau_min``/``tau_max`` are
    diagnostics. Defaults are unvalidated (no paper values were readable).
    """
    s, t = student_logits, teacher_logits
    assert beta is not None  # filled by _dtd_finalize
    with torch.no_grad():
        sd = s.detach()
        if variant == "flsw":
            s_hat = sd / (sd.norm(dim=1, keepdim=True) + 1e-4)
            t_hat = t / (t.norm(dim=1, keepdim=True) + 1e-4)
            # Round-off can push the cosine a hair above 1; a negative base
            # would make a fractional power NaN.
            weight = (1.0 - (s_hat * t_hat).sum(1)).clamp_min(0.0) ** gamma
        else:
            weight = 1.0 / (torch.softmax(sd, dim=1).amax(dim=1) + 1e-3)
        tau = base_temperature + beta * (weight.mean() - weight)
    if not bool((tau > 0).all()):  # also catches NaN
        hint = f"CWSM needs beta ≲ base_temperature / C = {base_temperature / t.shape[1]:.3g}" if variant == "cwsm" else "lower beta"
        raise LossConfigError(
            f"dtd: per-row temperature τ_b = T0 + β·(mean w − w_b) reached {float(tau.min()):.4g} ≤ 0 "
            f"(variant={variant!r}, base_temperature={base_temperature}, beta={beta}); {hint}."
        )
    tau_col = tau[:, None]
    rows = xent_rows(torch.log_softmax(t / tau_col, dim=1), torch.log_softmax(s / tau_col, dim=1))
    if scale == "tau_sq":
        rows = rows * tau.square()
    kd_value = rows.mean()
    ce_value = cross_entropy(s, labels)
    return {
        "loss": ce_weight * ce_value + kd_value,
        "ce": ce_value,
        "kd": kd_value,
        "tau_min": tau.min(),
        "tau_max": tau.max(),
    }
