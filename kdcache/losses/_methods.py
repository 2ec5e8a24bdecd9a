"""The registered distillation losses, one pure function each (formulas: docs/methods.md).

Every function has the signature

    fn(student_logits, teacher_logits, labels, **hparams_and_call_inputs) -> dict[str, Tensor]

and returns 0-dim tensors: ``"loss"`` is the TOTAL student objective of the
method's section, CE included with the section's weight; the other keys are
its named terms. Convention for the terms (so they mean the same thing in
every method): ``"ce"`` is always the plain, unweighted ``CE(s, y)`` of the
student; method terms include the temperature factors that are part of their
definition (``T²``, ``τs²``) but none of the loss weights (``w_ce``, ``w_kd``,
α, β, γ, λ, a, b, P, the warm-up factor). Each docstring gives ``loss`` as a
combination of the terms. Entries that are diagnostics rather than terms say
so and carry no gradient.

The bodies below receive validated inputs (see ``register``): student logits
in the maths dtype with their graph, teacher logits detached in the same
dtype (``None`` for teacher-free methods), int64 labels, and resolved
hyper-parameters.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import (
    as_student_like,
    check_labels,
    check_logits,
    compute_dtype,
    cross_entropy,
    gather_label,
    kl_rows,
    kl_rows_prob,
    non_label,
    scalar,
    xent_rows,
)
from kdcache.losses._registry import choice, flag, fraction, non_negative, optional, positive, register, temperature_grid
from kdcache.losses._stats import ISATS_GRID, tau_star_index


def _kd_term(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    """``KD_T(s ← t) = T² · mean_b KL(σ(t;T) ‖ σ(s;T))`` (KL form, mdistiller)."""
    log_p = torch.log_softmax(t / temperature, dim=1)
    log_q = torch.log_softmax(s / temperature, dim=1)
    return temperature**2 * kl_rows(log_p, log_q).mean()


def _asymmetric_kd(s: Tensor, t: Tensor, y: Tensor, tau_label: Any, tau_other: Any, student_temperature: float) -> Tensor:
    """ATS term ``τs² · mean_b X(σ(t_b; τ_b), σ(s_b; τs))``, τ_b = τ_label at y_b, τ_other elsewhere.

    ``tau_label``/``tau_other`` are floats (ATS) or (B,) tensors (ISATS).
    """
    taus = torch.as_tensor(tau_other, dtype=t.dtype, device=t.device).reshape(-1, 1).expand_as(t).clone()
    label_tau = torch.as_tensor(tau_label, dtype=t.dtype, device=t.device).reshape(-1, 1).expand(t.shape[0], 1)
    taus.scatter_(1, y[:, None], label_tau)
    log_p = torch.log_softmax(t / taus, dim=1)  # one softmax over the element-wise scaled row
    log_q = torch.log_softmax(s / student_temperature, dim=1)
    return student_temperature**2 * xent_rows(log_p, log_q).mean()


# ---------------------------------------------------------------------------- CE


@register("ce", parsers={}, needs_teacher=False, summary="plain cross-entropy with the hard label (baseline)")
def ce(student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor) -> dict[str, Tensor]:
    """Plain cross-entropy, the no-distillation baseline. ``loss = ce``. Teacher ignored."""
    value = cross_entropy(student_logits, labels)
    return {"loss": value, "ce": value}


# ---------------------------------------------------------------------------- KD


@register(
    "kd",
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
    kd_value = _kd_term(student_logits, teacher_logits, temperature)
    return {"loss": ce_weight * ce_value + kd_weight * kd_value, "ce": ce_value, "kd": kd_value}


# ---------------------------------------------------------------------------- DKD


def _parse_epoch(epoch: object) -> int:
    if epoch is None:
        raise LossConfigError("dkd: needs epoch=<1-based epoch index> for its warm-up factor min(epoch/warmup, 1).")
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
        raise LossConfigError(f"dkd: epoch must be an integer >= 1 (1-based, as mdistiller counts), got {epoch!r}.")
    return int(epoch)


@register(
    "dkd",
    parsers={
        "alpha": non_negative,
        "beta": non_negative,
        "temperature": positive,
        "warmup": positive,
        "ce_weight": non_negative,
    },
    call_inputs=("epoch",),
    summary="Decoupled KD: target-class + non-target-class KD with epoch warm-up (docs/methods.md, DKD)",
)
def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    warmup: float = 20.0,
    ce_weight: float = 1.0,
    epoch: int | None = None,
) -> dict[str, Tensor]:
    """Decoupled KD (docs/methods.md, DKD): ``loss = ce_weight·ce + warmup_factor·(alpha·tckd + beta·nckd)``.

    * ``tckd = T²·mean_b KL([β_tgt(t), β_oth(t)] ‖ [β_tgt(s), β_oth(s)])``, the
      binary target/non-target split;
    * ``nckd = T²·mean_b KL(σ(t_{¬y};T) ‖ σ(s_{¬y};T))``, label column removed;
    * ``warmup_factor = min(epoch / warmup, 1)`` with a 1-based ``epoch``
      (diagnostic entry, no gradient).

    Both binary probabilities are formed in log space
    (``log β_oth = LSE(v_{¬y}/T) − LSE(v/T)``), not as ``log(Σ p)`` or
    ``1 − β_tgt``: the reference code returns ``inf`` once the student's
    non-target mass underflows; this agrees with it wherever it is finite.
    Defaults: CIFAR-100 β=8 (per-pair 2/6/8; ImageNet T=1, warmup=1, β=0.5/2).
    """
    epoch = _parse_epoch(epoch)
    y = labels
    zs, zt = student_logits / temperature, teacher_logits / temperature
    lse_s, lse_t = torch.logsumexp(zs, dim=1), torch.logsumexp(zt, dim=1)
    ns, nt = non_label(zs, y), non_label(zt, y)
    log_b_s = torch.stack([gather_label(zs, y) - lse_s, torch.logsumexp(ns, dim=1) - lse_s], dim=1)
    log_b_t = torch.stack([gather_label(zt, y) - lse_t, torch.logsumexp(nt, dim=1) - lse_t], dim=1)
    tckd = temperature**2 * kl_rows(log_b_t, log_b_s).mean()
    nckd = temperature**2 * kl_rows(torch.log_softmax(nt, dim=1), torch.log_softmax(ns, dim=1)).mean()
    factor = min(epoch / warmup, 1.0)
    ce_value = cross_entropy(student_logits, y)
    return {
        "loss": ce_weight * ce_value + factor * (alpha * tckd + beta * nckd),
        "ce": ce_value,
        "tckd": tckd,
        "nckd": nckd,
        "warmup_factor": scalar(factor, ce_value),
    }


# ---------------------------------------------------------------------------- NKD


@register(
    "nkd",
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


# ---------------------------------------------------------------------------- tf-NKD


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


# ---------------------------------------------------------------------------- LA


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
    parsers={
        "temperature": positive,
        "ce_weight": non_negative,
        "kd_weight": non_negative,
        "variant": choice("ps", "lsr"),
        "epsilon": optional(fraction),
    },
    finalize=_la_finalize,
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
) -> dict[str, Tensor]:
    """Logits adjustment (docs/methods.md, LA) then KD: ``loss = ce_weight·ce + kd_weight·kd``.

    A teacher row is wrong when ``t_y < max_c t_c`` (ties are not wrong).
    ``variant="ps"`` (default, probability shift): swap ``t_y`` with the
    teacher's maximum; equal to swapping the probabilities at any T.
    ``variant="lsr"``: wrong rows use the label-smoothed target
    ``(1−ε)·onehot(y) + ε/C`` (not tempered) instead of ``σ(t;T)``.
    ``kd = T²·mean_b KL(target_b ‖ σ(s_b;T))``; rows where the teacher is right
    are exactly KD's. ``teacher_wrong`` is the fraction of rows adjusted
    (diagnostic). Defaults: those of KD; no published values.
    """
    t, y = teacher_logits, labels
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
    ce_value = cross_entropy(student_logits, y)
    return {
        "loss": ce_weight * ce_value + kd_weight * kd_value,
        "ce": ce_value,
        "kd": kd_value,
        "teacher_wrong": wrong.to(ce_value.dtype).mean(),
    }


# ---------------------------------------------------------------------------- DTD

_DTD_BETA = {"flsw": 1.0, "cwsm": 0.05}


def _dtd_finalize(hp: dict[str, Any]) -> dict[str, Any]:
    if hp["beta"] is None:  # the sensible scale differs by a factor ~C between variants
        hp["beta"] = _DTD_BETA[hp["variant"]]
    return hp


@register(
    "dtd",
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


# ---------------------------------------------------------------------------- ATS


@register(
    "ats",
    parsers={"tau1": positive, "tau2": positive, "student_temperature": positive, "lam": fraction},
    summary="Asymmetric temperature scaling: higher teacher T on the label class (docs/methods.md, ATS)",
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
) -> dict[str, Tensor]:
    """Asymmetric temperature scaling (docs/methods.md, ATS): ``loss = (1−lam)·ce + lam·kd``.

    ``kd = τs²·mean_b X(σ(t_b; τ_b), σ(s_b; τs))`` with the per-class teacher
    temperature ``τ_{b,c} = tau1`` at the label, ``tau2`` elsewhere (X form,
    as ATS-LargeKD). Default τ1=4, τ2=3 is an in-grid point with τ1−τ2 ∈ [1, 2].
    """
    kd_value = _asymmetric_kd(student_logits, teacher_logits, labels, tau1, tau2, student_temperature)
    ce_value = cross_entropy(student_logits, labels)
    return {"loss": (1.0 - lam) * ce_value + lam * kd_value, "ce": ce_value, "kd": kd_value}


# ---------------------------------------------------------------------------- ISATS


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
) -> dict[str, Tensor]:
    """Instance-specific ATS (docs/methods.md, ISATS): ``loss = (1−lam)·ce + lam·kd``.

    ATS per row with ``τ1 = τ*_b + 1`` (label) and ``τ2 = τ*_b``, where
    ``τ*_b`` (see :func:`isats_tau_star`) comes from the store as
    ``tau_star`` (a (B,) float tensor of grid values, snapped to the nearest
    grid point within 0.1%) or, when absent, is searched on the fly over
    ``grid``.
    """
    grid = tuple(grid)
    t, y = teacher_logits, labels
    if tau_star is None:
        tau_star = torch.tensor(grid, dtype=t.dtype, device=t.device)[tau_star_index(t, y, grid)]
    else:
        tau_star = _parse_tau_star(tau_star, t.shape[0], grid, t)
    kd_value = _asymmetric_kd(student_logits, t, y, tau_star + 1.0, tau_star, student_temperature)
    ce_value = cross_entropy(student_logits, y)
    return {"loss": (1.0 - lam) * ce_value + lam * kd_value, "ce": ce_value, "kd": kd_value}


# ---------------------------------------------------------------------------- FGCR


def _fgcr_finalize(hp: dict[str, Any]) -> dict[str, Any]:
    if hp["tau0"] is None:
        hp["tau0"] = hp["tau"] - 1.0  # paper §6: τ0 = τ − 1
        if hp["tau0"] <= 0:
            raise LossConfigError(
                f"fgcr: tau0 defaults to tau - 1 = {hp['tau0']:g}, which is not a valid temperature; pass tau0 > 0 explicitly."
            )
    return hp


def _parse_class_table(table: object, classes: int, like: Tensor) -> Tensor:
    if table is None:
        raise LossConfigError(
            "fgcr: needs class_table=<(C, C) tensor> from the store (compute it with losses.class_table)."
        )
    if not isinstance(table, Tensor) or not table.is_floating_point():
        raise LossConfigError(f"fgcr: class_table must be a floating torch.Tensor of shape ({classes}, {classes}).")
    if tuple(table.shape) != (classes, classes):
        raise LossConfigError(
            f"fgcr: class_table must have shape ({classes}, {classes}) for C={classes} logits, got {tuple(table.shape)}."
        )
    table = table.detach().to(like.dtype)
    # Catches per-class SUMS passed instead of means (class_table_sums output).
    if not bool(torch.allclose(table.sum(1), torch.ones_like(table[:, 0]), atol=1e-3)):
        raise LossConfigError("fgcr: class_table rows must each sum to 1 (a mean of distributions); use losses.class_table.")
    return table


@register(
    "fgcr",
    parsers={"tau": positive, "alpha": fraction, "student_temperature": positive, "lam": fraction, "tau0": optional(positive)},
    call_inputs=("class_table",),
    finalize=_fgcr_finalize,
    stats={
        "class_table": {
            "required": True,
            "params": ["tau0"],
        }
    },
    summary="Fusing global class relations: teacher target mixed with its class-mean row (docs/methods.md, FGCR)",
)
def fgcr(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    tau: float = 4.0,
    alpha: float = 0.5,
    student_temperature: float = 1.0,
    lam: float = 0.5,
    tau0: float | None = None,
    class_table: Tensor | None = None,
) -> dict[str, Tensor]:
    """FGCR (docs/methods.md, FGCR): ``loss = (1−lam)·ce + lam·kd``.

    ``kd = τs²·mean_b X(p̂_b, σ(s_b;τs))`` with the fused target
    ``p̂_b = (1−α)·σ(t_b;τ) + α·m_{y_b}`` and ``m = class_table`` (C, C) from
    the store. ``tau0`` (default τ−1) only names which stored table to use
    (see ``LossSpec.store_stats``); the maths here never reads it.
    ``student_temperature=tau`` gives the paper's Eq. 2 variant.
    """
    t, y = teacher_logits, labels
    table = _parse_class_table(class_table, t.shape[1], t)
    target = (1.0 - alpha) * torch.softmax(t / tau, dim=1) + alpha * table[y]
    log_q = torch.log_softmax(student_logits / student_temperature, dim=1)
    kd_value = student_temperature**2 * (-(target * log_q).sum(1)).mean()
    ce_value = cross_entropy(student_logits, y)
    return {"loss": (1.0 - lam) * ce_value + lam * kd_value, "ce": ce_value, "kd": kd_value}


# ---------------------------------------------------------------------------- SLKD


@register(
    "slkd",
    parsers={
        "temperature": positive,
        "a": non_negative,
        "b": non_negative,
        "p": non_negative,
        "a_cs": non_negative,
        "b_cs": non_negative,
        "detach_fused_slt": flag,
    },
    call_inputs=("slt_logits",),
    extra_networks=2,
    extra_networks_arg="slt_logits",
    summary="Self-learning teachers: two online teacher-sized networks distilled alongside (docs/methods.md, SLKD)",
)
def slkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 4.0,
    a: float = 0.1,
    b: float = 0.9,
    p: float = 1.0,
    a_cs: float = 1.0,
    b_cs: float = 1.0,
    detach_fused_slt: bool = False,
    slt_logits: Sequence[Tensor] | None = None,
) -> dict[str, Tensor]:
    """SLKD (docs/methods.md, SLKD), one objective for the student and both SL-Ts.

    With ``KD_T(a ← b) = T²·mean KL(σ(b;T) ‖ σ(a;T))`` and the fused SL-T
    logits ``f = 0.5·u¹ + 0.5·u²`` (``slt_logits = [u¹, u²]``, trainable):

    * ``ce = CE(s,y)``, ``kd = KD_T(s ← t)``,
    * ``slt_ce = Σ_k CE(u^k,y)``, ``slt_kd = Σ_k KD_T(u^k ← t)``,
    * ``cs_kd = KD_T(s ← f)``;

    ``loss = a·ce + b·kd + a·slt_ce + b·slt_kd + p·(a_cs·ce + b_cs·cs_kd)``.
    As in the code, ``f`` is not detached, so the SL-Ts are also pulled toward
    the student; ``detach_fused_slt=True`` gives the paper's prose reading.
    """
    if slt_logits is None or isinstance(slt_logits, Tensor) or len(slt_logits) != 2:
        raise LossConfigError(
            "slkd: needs slt_logits=[u1, u2], the logits of its 2 self-learning teachers (same shape as the student's)."
        )
    s, t, y = student_logits, teacher_logits, labels
    u = [as_student_like("slkd", f"slt_logits[{k}]", x, s) for k, x in enumerate(slt_logits)]
    fused = 0.5 * u[0] + 0.5 * u[1]
    if detach_fused_slt:
        fused = fused.detach()
    ce_value = cross_entropy(s, y)
    kd_value = _kd_term(s, t, temperature)
    slt_ce = cross_entropy(u[0], y) + cross_entropy(u[1], y)
    slt_kd = _kd_term(u[0], t, temperature) + _kd_term(u[1], t, temperature)
    cs_kd = _kd_term(s, fused, temperature)
    loss = a * ce_value + b * kd_value + a * slt_ce + b * slt_kd + p * (a_cs * ce_value + b_cs * cs_kd)
    return {"loss": loss, "ce": ce_value, "kd": kd_value, "slt_ce": slt_ce, "slt_kd": slt_kd, "cs_kd": cs_kd}


# ---------------------------------------------------------------------------- RegT


def regt(logits: Tensor, labels: Tensor, *, beta: float, ddof: int = 0) -> dict[str, Tensor]:
    """RegT teacher-training loss (docs/methods.md, RegT): ``loss = ce + beta·reg``.

    ``reg = mean_b [σ(z_b;1)_y − std(σ(z_b;1)_{¬y})]`` with the POPULATION
    std (``ddof=0``, as the authors' numpy analysis; torch's default would be
    ``ddof=1``) of the C−1 non-label entries of the full softmax. Not a
    distillation loss: it trains the network whose ``logits`` are given
    (gradients flow into them), before caching. Where every non-label
    probability is equal the std has no gradient; those rows get 0 there.
    Paper values: β ∈ {0.01, 0.001}.
    """
    where = "regt"
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta >= 0):
        raise LossConfigError(f"{where}: beta must be a finite number >= 0, got {beta!r}.")
    z = check_logits(where, "logits", logits)
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise LossConfigError(f"{where}: ddof must be 0 (population std, default) or 1, got {ddof!r}.")
    if z.shape[1] - 1 - ddof <= 0:
        raise LossConfigError(f"{where}: std over C-1={z.shape[1] - 1} non-label entries needs ddof < {z.shape[1] - 1}.")
    y = check_labels(where, labels, z.shape[0], z.shape[1])
    z = z.to(compute_dtype(z))
    log_p = torch.log_softmax(z, dim=1)
    prob = log_p.exp()
    q = non_label(prob, y)
    var = (q - q.mean(1, keepdim=True)).square().sum(1) / (q.shape[1] - ddof)
    positive_var = var > 0
    # sqrt'(0) is infinite; route zero-variance rows through a dummy value so
    # their gradient is 0 instead of NaN (torch.where alone would not do).
    std = torch.where(positive_var, torch.where(positive_var, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
    reg = (gather_label(prob, y) - std).mean()
    ce_value = -gather_label(log_p, y).mean()
    return {"loss": ce_value + beta * reg, "ce": ce_value, "reg": reg}
