"""SLKD: self-learning teachers, two online teacher-sized networks distilled alongside the student (docs/methods.md, SLKD)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from kdcache.errors import LossConfigError
from kdcache.losses._numerics import as_student_like, cross_entropy
from kdcache.losses._registry import flag, non_negative, positive, register
from kdcache.losses.methods.kd import kd_term


@register(
    "slkd",
    teacher_temperature="temperature", linear_teacher=True,
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
    kd_value = kd_term(s, t, temperature)
    slt_ce = cross_entropy(u[0], y) + cross_entropy(u[1], y)
    slt_kd = kd_term(u[0], t, temperature) + kd_term(u[1], t, temperature)
    cs_kd = kd_term(s, fused, temperature)
    loss = a * ce_value + b * kd_value + a * slt_ce + b * slt_kd + p * (a_cs * ce_value + b_cs * cs_kd)
    return {"loss": loss, "ce": ce_value, "kd": kd_value, "slt_ce": slt_ce, "slt_kd": slt_kd, "cs_kd": cs_kd}
