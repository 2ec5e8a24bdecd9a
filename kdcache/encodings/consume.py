"""Which encodings a loss can consume, and at which temperature a store is decoded for it.

A loss declares (``LossSpec.accepts``) whether it reads dense logits only,
or also probabilities at a fixed temperature (a linear teacher term, KD). A
combination that is not exact is refused with one line naming the accepted
encodings, unless the user allows the approximation explicitly
(``--allow-approximate-encoding``), which prints a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kdcache.encodings.base import Encoding
from kdcache.errors import UsageError

if TYPE_CHECKING:
    from kdcache.losses import LossSpec

ALLOW_FLAG = "--allow-approximate-encoding"


def check_consumption(encoding: Encoding, spec: LossSpec, hparams: Mapping[str, Any] | None,
                      allow_approximate: bool = False, flag: str = ALLOW_FLAG) -> tuple[float, str | None]:
    """The temperature to decode at for ``spec``, and a warning when an inexact combination is allowed.

    Raises :class:`UsageError` (one line) when ``spec`` cannot use ``encoding``
    exactly and ``allow_approximate`` is False. ``flag`` is how the caller allows it (the CLI's
    option, or the Python API's keyword), named in the message.
    """
    temperature = spec.read_temperature(hparams)
    if spec.accepts(encoding.kind, encoding.temperature, hparams):
        return temperature, None
    how = "" if spec.linear_teacher else " through a non-linear map"
    why = (f"loss {spec.name!r} reads the teacher at T={temperature:g}{how}, but a {encoding.spec} store "
           f"holds only a sample of softmax(t/{encoding.temperature:g})")
    if not allow_approximate:
        raise UsageError(f"{why}: it accepts {spec.accepted_encodings(hparams)}; pass {flag} "
                         "to train on the sample anyway (biased)")
    return temperature, (f"{why}; training on it anyway ({flag}): the loss and its gradient "
                         "are biased approximations")
