"""ISATS: instance-specific ATS, the teacher temperature of each row searched on a grid (docs/methods.md, ISATS).

The per-row temperature τ* is computed once over a store by
:func:`kdcache.losses.isats_tau_star` (see ``kdcache/losses/_stats.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import cross_entropy
from kdcache.losses._registry import fraction, positive, register, temperature_grid
from kdcache.losses._stats import ISATS_GRID, tau_star_index
from kdcache.losses.methods.ats import ATS_RULES, asymmetric_kd, mixed_asymmetric_kd
from kdcache.losses.mixed import MixedLabels, mixed_rule


def _parse_tau_star(tau_star: object, batch: int, grid: tuple[float, ...], like: Tensor) -> Tensor:
    if not isinstance(tau_star, Tensor):
        raise LossConfigError(f"isats: tau_star must be a torch.Tensor of shape ({batch},), got {type(tau_star).__name__}.")
    if not tau_star.is_floating_point():
        # A uint8 grid index (how a store may keep τ*) must not be read as a temperature.
        raise LossConfigError(
            f"isats: tau_star must hold temperatures (floating point), got {tau_star.dtype}; "
            "convert stored grid indices with torch.tensor(grid)[index]."
        )
    if tuple(tau_star.shape) != (batch,):
        raise LossConfigError(f"isats: tau_star must have shape ({batch},), got {tuple(tau_star.shape)}.")
    tau_star = tau_star.detach().to(like.dtype)
    allowed = torch.tensor(grid, dtype=like.dtype, device=tau_star.device)
    # Snap to the nearest grid point: a store may keep τ* in float32 or
    # float16, where a grid value such as 0.1 is not exact.
    distance, nearest = (tau_star[:, None] - allowed[None, :]).abs().min(dim=1)
    if not bool((distance <= 1e-3 * allowed[nearest]).all()):
        raise LossConfigError(
            f"isats: tau_star holds values outside grid={list(grid)}; it was computed with another grid. "
            "Pass the grid it was computed with."
        )
    return allowed[nearest]


@register(
    "isats",
    parsers={"grid": temperature_grid, "student_temperature": positive, "lam": fraction},
    call_inputs=("tau_star",),
    stats={
        "tau_star": {
            "required": False,
            "params": ["grid"],
        }
    },
    summary="Instance-specific ATS: per-row teacher temperature searched on a grid (docs/methods.md, ISATS)",
    mixed_rules=ATS_RULES,
)
def isats(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    grid: Sequence[float] = ISATS_GRID,
    student_temperature: float = 1.0,
    lam: float = 0.5,
    tau_star: Tensor | None = None,
    mixed: str | None = None,
) -> dict[str, Tensor]:
    """Instance-specific ATS (docs/methods.md, ISATS): ``loss = (1−lam)·ce + lam·kd``.

    ATS per row with ``τ1 = τ*_b + 1`` (label) and ``τ2 = τ*_b``, where
    ``τ*_b`` (see :func:`isats_tau_star`) comes from the store as
    ``tau_star`` (a (B,) float tensor of grid values, snapped to the nearest
    grid point within 0.1%) or, when absent, is searched on the fly over
    ``grid``.

    Mixed views have no default rule: ``mixed="dominant"`` or ``"both"``
    (docs/methods.md, ISATS, "Mixed views"). ``tau_star`` is then (B, 2): τ*
    searched with the view's own label and with the partner's
    (``isats_tau_star`` of the :class:`MixedLabels`).
    """
    grid = tuple(grid)
    t, y = teacher_logits, labels
    rule = mixed_rule("isats", labels, mixed, ATS_RULES)
    if isinstance(y, MixedLabels):
        return _isats_mixed(student_logits, t, y, str(rule), grid, student_temperature, lam, tau_star)
    if tau_star is None:
        tau_star = torch.tensor(grid, dtype=t.dtype, device=t.device)[tau_star_index(t, y, grid)]
    else:
        tau_star = _parse_tau_star(tau_star, t.shape[0], grid, t)
    kd_value = asymmetric_kd(student_logits, t, y, tau_star + 1.0, tau_star, student_temperature)
    ce_value = cross_entropy(student_logits, y)
    return {"loss": (1.0 - lam) * ce_value + lam * kd_value, "ce": ce_value, "kd": kd_value}


def _isats_mixed(s: Tensor, t: Tensor, labels: MixedLabels, rule: str, grid: tuple[float, ...],
                 student_temperature: float, lam: float, tau_star: Tensor | None) -> dict[str, Tensor]:
    """ISATS on mixed views: τ* searched with each label (the statistic's rule), then ATS's rule."""
    if tau_star is None:
        values = torch.tensor(grid, dtype=t.dtype, device=t.device)
        columns = [values[tau_star_index(t, y, grid)] for y in (labels.label, labels.partner)]
    else:
        if not isinstance(tau_star, Tensor) or tuple(tau_star.shape) != (t.shape[0], 2):
            shape = tuple(tau_star.shape) if isinstance(tau_star, Tensor) else type(tau_star).__name__
            raise LossConfigError(
                f"isats: on mixed views tau_star must have shape ({t.shape[0]}, 2) (own label, partner), got {shape}.")
        columns = [_parse_tau_star(tau_star[:, k], t.shape[0], grid, t) for k in range(2)]
    kd_value = mixed_asymmetric_kd(s, t, labels, rule, (columns[0] + 1.0, columns[0]), (columns[1] + 1.0, columns[1]),
                                   student_temperature)
    ce_value = cross_entropy(s, labels)
    return {"loss": (1.0 - lam) * ce_value + lam * kd_value, "ce": ce_value, "kd": kd_value}
