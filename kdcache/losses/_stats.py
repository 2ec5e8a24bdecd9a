"""Statistics of the cached teacher that some methods read (docs/methods.md, ISATS and FGCR).

* ISATS τ*: per cached row, the grid temperature at which the teacher's
  non-label probabilities are most spread out. Computed once per row by
  ``kdcache stats`` (or on the fly by the loss when the store has none).
* FGCR class table: ``m_c`` = mean teacher distribution at τ0 over training
  rows of class c. Computed once over the whole store; the store is larger
  than memory, so :func:`class_table_sums` returns float64 sums and counts that
  add up across chunks, and :func:`class_table_from_sums` finishes the mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import check_labels, check_logits, compute_dtype, gather_label
from kdcache.losses._registry import positive, temperature_grid
from kdcache.losses.mixed import MixedLabels
from kdcache.losses.mixed_stats import mixed_class_table_sums, mixed_tau_star

ISATS_GRID: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
"""Fan et al. §6 search grid G."""


def parse_grid(where: str, grid: Sequence[float]) -> tuple[float, ...]:
    try:
        return temperature_grid(grid)
    except ValueError as exc:
        raise LossConfigError(f"{where}: grid {exc}, got {grid!r}.") from None


def _parse_temperature(where: str, key: str, value: float) -> float:
    try:
        return positive(value)
    except ValueError as exc:
        raise LossConfigError(f"{where}: {key} {exc}, got {value!r}.") from None


def tau_star_index(t: Tensor, labels: Tensor, grid: tuple[float, ...]) -> Tensor:
    """Index into the ascending ``grid`` of each row's τ* (validated inputs; (B,) int64).

    Compares ``log Var(q)`` rather than ``Var(q)``, for ``q = σ(t;τ)_{¬y}``.
    With ``z = t/τ`` and ``m = max_{c≠y} z_c``:

        q_c = exp(m − LSE(z)) · r_c,   r_c = exp(z_c − m) ∈ (0, 1]
        log Var(q) = 2·(m − LSE(z)) + log Var(r)

    A very confident row (label ahead by more than ~100·τ in float32,
    ~745·τ in float64) has every q_c underflow to 0 at every grid point, and
    a plain evaluation would call that a tie and return the SMALLEST τ, the
    opposite of the true maximiser. ``r`` keeps its largest entry at 1, so
    nothing underflows; only genuine ties (all non-label logits equal, or
    C = 2) give ``log 0 = −inf`` everywhere and fall to the tie rule. Each
    grid point costs one (B, C) ``exp``; memory stays that of the logits.
    """
    label_col = torch.zeros_like(t, dtype=torch.bool).scatter_(1, labels[:, None], True)
    keep = (~label_col).to(t.dtype)
    n = t.shape[1] - 1
    log_variances = []
    for tau in grid:
        z = t / tau
        z_other = z.masked_fill(label_col, float("-inf"))
        m = z_other.amax(dim=1)
        r = torch.exp(z_other - m[:, None])  # 0 in the label column
        lse = m + torch.logaddexp(gather_label(z, labels) - m, r.sum(1).log())
        mean = r.sum(1, keepdim=True) / n
        # Population variance; ddof and std-vs-var cannot change the argmax.
        var_r = ((r - mean) * keep).square().sum(1) / n
        log_variances.append(2.0 * (m - lse) + var_r.log())
    # argmax returns the FIRST maximum, and the grid is ascending: ties -> smallest τ.
    return torch.stack(log_variances, dim=1).argmax(dim=1)


def isats_tau_star(
    teacher_logits: Tensor, labels: Tensor | MixedLabels, grid: Sequence[float] = ISATS_GRID
) -> Tensor:
    """ISATS per-row temperature τ* (Fan et al. Eq. 10), as a (B,) tensor of grid values.

    ``τ*_b = argmax_{τ∈G} Var(σ(t_b;τ)_{¬y_b})``: the variance of the C−1
    non-label entries of the full teacher softmax at τ. Ties (exact, e.g. all
    non-label probabilities underflowed, or C = 2) go to the smallest τ.
    The search runs in log space (robust to the underflow of very confident
    rows, see :func:`tau_star_index`) in the maths dtype; the result has that
    dtype (float32, or float64 for float64 logits) and holds exact grid values.
    Mixed labels give (B, 2): τ* with the own label and with the partner's
    (:func:`kdcache.losses.mixed_stats.mixed_tau_star`).
    """
    if isinstance(labels, MixedLabels):
        return mixed_tau_star(teacher_logits, labels, grid)
    where = "isats_tau_star"
    grid = parse_grid(where, grid)
    t = check_logits(where, "teacher_logits", teacher_logits)
    y = check_labels(where, labels, t.shape[0], t.shape[1])
    t = t.detach().to(compute_dtype(t))
    index = tau_star_index(t, y, grid)
    return torch.tensor(grid, dtype=t.dtype, device=t.device)[index]


def class_table_sums(
    teacher_logits: Tensor, labels: Tensor | MixedLabels, num_classes: int, tau0: float
) -> tuple[Tensor, Tensor]:
    """Per-class sums of ``σ(t;τ0)`` (float64, (C, C)) and row counts (int64, (C,)).

    Sums over disjoint chunks add up to the sums over their union, which is
    how ``kdcache stats`` builds the FGCR table over a store larger than
    memory; finish with :func:`class_table_from_sums`. Probabilities are
    computed and accumulated in float64 so the result does not depend on how
    the rows were chunked beyond float64 round-off. Mixed labels count λ toward
    the own class and 1 − λ toward the partner's, with float64 weights for
    counts (:func:`kdcache.losses.mixed_stats.mixed_class_table_sums`).
    """
    if isinstance(labels, MixedLabels):
        return mixed_class_table_sums(teacher_logits, labels, num_classes, tau0)
    where = "class_table"
    tau0 = _parse_temperature(where, "tau0", tau0)
    t = check_logits(where, "teacher_logits", teacher_logits)
    if t.shape[1] != num_classes:
        raise LossConfigError(f"{where}: teacher_logits have {t.shape[1]} classes, num_classes is {num_classes}.")
    y = check_labels(where, labels, t.shape[0], num_classes)
    p = torch.softmax(t.detach().to(torch.float64) / tau0, dim=1)
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=t.device).index_add_(0, y, p)
    counts = torch.bincount(y, minlength=num_classes)
    return sums, counts


def class_table_from_sums(sums: Tensor, counts: Tensor) -> Tensor:
    """``m_c = sums_c / counts_c`` in float64; fails loudly if any class has no rows.

    A class without rows has no defined relation row, and silently using zeros
    (or NaNs) would make FGCR pull that class's students toward nothing.
    """
    if sums.dim() != 2 or sums.shape[0] != sums.shape[1] or tuple(counts.shape) != (sums.shape[0],):
        raise LossConfigError(
            f"class_table: expected sums (C, C) and counts (C,), got {tuple(sums.shape)} and {tuple(counts.shape)}."
        )
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        shown = ", ".join(map(str, empty[:20])) + (", ..." if len(empty) > 20 else "")
        raise LossConfigError(
            f"class_table: {len(empty)} class(es) have no rows with a hard label: {shown}. "
            "FGCR needs every class in the rows the table is computed from (use the training split)."
        )
    return sums.to(torch.float64) / counts.to(torch.float64)[:, None]


def class_table(teacher_logits: Tensor, labels: Tensor | MixedLabels, num_classes: int, tau0: float) -> Tensor:
    """FGCR class-relation table ``m`` (C, C): row c = mean of ``σ(t_i;τ0)`` over rows with ``y_i = c``.

    Returned in the maths dtype of the logits (float32, or float64 for
    float64 logits); each row sums to 1.
    """
    sums, counts = class_table_sums(teacher_logits, labels, num_classes, tau0)
    return class_table_from_sums(sums, counts).to(compute_dtype(teacher_logits))
