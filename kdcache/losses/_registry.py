"""The loss registry: one name -> one pure loss function plus its :class:`LossSpec`.

A method is a loss function plus a declaration of what it needs beyond
(student logits, teacher logits, labels): hyper-parameters with defaults and
validators, the epoch index, statistics precomputed from the store, extra
trainable networks. The distill loop reads that declaration instead of
branching on method names.

Hyper-parameter defaults live in ONE place, the keyword-only defaults of the
loss function's signature; :func:`register` reads them from there, so
``help(losses.kd)`` and ``losses.spec("kd").defaults`` cannot disagree.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from kdcache.encodings import accepted_forms
from kdcache.errors import LossConfigError
from kdcache.losses._numerics import prepare_inputs
from kdcache.registry import Registry
from kdcache.validate import Invalid, Parser, choice, flag, fraction, non_negative, optional, positive

__all__ = [
    "LOSSES",
    "LossFn",
    "LossSpec",
    "Parser",
    "choice",
    "flag",
    "fraction",
    "get",
    "names",
    "non_negative",
    "optional",
    "positive",
    "register",
    "spec",
    "temperature_grid",
]

LossFn = Callable[..., dict[str, Tensor]]
"""``fn(student_logits, teacher_logits, labels, **hparams_and_inputs) -> {"loss": ..., ...}``."""

Finalizer = Callable[[dict[str, Any]], dict[str, Any]]
"""Fills derived defaults / checks combinations after every value was parsed."""


# --------------------------------------------------------------------------
# Value parsers: the shared checks of kdcache.validate. Each returns the
# normalised value (floats as float, grids as tuples) so that resolved
# hyper-parameters are JSON-able and comparable, and raises ValueError
# (validate.Invalid) with the "must be ..." half of a message;
# LossSpec.resolve adds the loss name, key and offending value.


def temperature_grid(value: Any) -> tuple[float, ...]:
    """A non-empty set of positive temperatures, returned sorted ascending.

    Sorting makes "ties go to the smallest τ" a plain first-maximum rule and
    makes two spellings of the same grid resolve (and key the store) alike.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise Invalid("must be a sequence of positive numbers")
    grid = sorted(positive(v) for v in value)
    if not grid:
        raise Invalid("must not be empty")
    if len(set(grid)) != len(grid):
        raise Invalid("must not repeat a temperature")
    return tuple(grid)


# --------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class LossSpec:
    """Everything the distill loop needs to know about one loss, by declaration.

    Attributes:
        name: registry name (``"kd"``, ``"dkd"``, ...).
        fn: the loss function (validates its inputs, then does pure maths).
        defaults: hyper-parameter defaults (docs/methods.md, "Defaults at a glance"; CIFAR flavour).
            ``None`` means "derived from the others" (see :meth:`resolve`).
            Treat as read-only.
        needs_teacher: False for methods that ignore teacher logits (``ce``,
            ``tf_nkd``); the loop may then pass ``None``.
        needs_epoch: the loss needs the 1-based ``epoch`` keyword (DKD warm-up).
        stats: statistics the method reads from the store, by the keyword the
            loss function takes them under. Each entry says which
            hyper-parameters key it (``params``) and whether it is
            ``required`` (an optional one that a store lacks is computed by
            the loss from the batch). Which store statistic serves a keyword,
            and how, is said by its provider in :mod:`kdcache.stats`.
        extra_networks: trainable networks the loop must own besides the
            student, each with its own optimizer (SLKD: 2 networks of the
            TEACHER's architecture).
        extra_networks_arg: the keyword under which the list of their logits
            is passed (``"slt_logits"`` for SLKD); ``None`` when there are none.
        call_inputs: keywords that are per-call tensors/values rather than
            hyper-parameters (``epoch``, ``tau_star``, ``class_table``,
            ``slt_logits``).
        summary: one line for listings.
        teacher_temperature: the hyper-parameter holding the temperature the
            teacher is read at (``"temperature"`` for KD); a ``topk`` store is
            decoded for it (docs/encodings.md). None: temperature 1.
        linear_teacher: the teacher enters the loss's gradient only linearly
            through ``σ(t; T)`` at that temperature (KD, SLKD), so an unbiased
            sample of that distribution (a ``sample:N@T`` store) gives an
            unbiased gradient; every other method needs dense logits.
        mixed_rules: the rules the loss option ``mixed=`` may choose for mixed
            (mixup/cutmix) views (kdcache/losses/mixed.py); empty when the
            method has one rule. ``mixed`` is resolved only when given, so
            resolved defaults and run records without it are unchanged.
        mixed_default: the rule used when ``mixed`` is not given; None: the
            method refuses mixed labels until a rule is chosen.
    """

    name: str
    fn: LossFn
    defaults: dict[str, Any]
    needs_teacher: bool = True
    needs_epoch: bool = False
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_networks: int = 0
    extra_networks_arg: str | None = None
    call_inputs: tuple[str, ...] = ()
    summary: str = ""
    teacher_temperature: str | None = None
    linear_teacher: bool = False
    parsers: dict[str, Parser] = field(default_factory=dict, repr=False, compare=False)
    finalize: Finalizer | None = field(default=None, repr=False, compare=False)
    mixed_rules: tuple[str, ...] = ()
    mixed_default: str | None = None

    def resolve(self, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return a fresh, complete and validated hyper-parameter dict.

        Merges :attr:`defaults` under ``hparams``, rejects unknown keys (the
        message lists the valid ones), normalises every value and fills the
        derived defaults (``dtd`` β per variant, ``fgcr`` τ0 = τ − 1).
        """
        hparams = dict(hparams or {})
        mixed = hparams.pop("mixed", None) if self.mixed_rules else None
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            valid = ", ".join(self.defaults) or "(none)"
            msg = f"loss {self.name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; valid: {valid}."
            misplaced = [k for k in unknown if k in self.call_inputs]
            if misplaced:
                msg += f" {', '.join(misplaced)} is a call-time input: pass it to the loss function, not as a hyper-parameter."
            raise LossConfigError(msg)
        resolved: dict[str, Any] = {}
        for key, default in self.defaults.items():
            value = hparams.get(key, default)
            try:
                resolved[key] = self.parsers[key](value)
            except ValueError as exc:
                raise LossConfigError(f"{self.name}: {key} {exc}, got {value!r}.") from None
        if mixed is not None:
            if mixed not in self.mixed_rules:
                raise LossConfigError(f"{self.name}: mixed must be one of {', '.join(self.mixed_rules)}, got {mixed!r}.")
            resolved["mixed"] = mixed
        return self.finalize(resolved) if self.finalize else resolved

    def store_stats(self, hparams: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Which store statistics to load for these hyper-parameters.

        Returns ``{stat_name: {param: value}}``, e.g. ``fgcr`` ->
        ``{"class_table": {"tau0": 3.0}}``, ``isats`` ->
        ``{"tau_star": {"grid": [1.0, ..., 8.0]}}``, others ``{}``. The loop
        fetches each statistic computed with exactly those parameters and
        passes it to :attr:`fn` under the same keyword (optional ones may be
        omitted when the store lacks them).
        """
        resolved = self.resolve(hparams)
        return {
            stat: {p: _jsonable(resolved[p]) for p in info["params"]}
            for stat, info in self.stats.items()
        }

    def read_temperature(self, hparams: Mapping[str, Any] | None = None) -> float:
        """The temperature the teacher is read at under ``hparams`` (1 when the method declares none)."""
        if self.teacher_temperature is None:
            return 1.0
        return float(self.resolve(hparams)[self.teacher_temperature])

    def accepts(self, kind: str, temperature: float | None, hparams: Mapping[str, Any] | None = None) -> bool:
        """Whether an encoding of ``kind`` ("dense" or "probabilities" drawn at ``temperature``) is exact
        for this method: dense logits always; probabilities only for a linear teacher term at that T."""
        if not self.needs_teacher or kind == "dense":
            return True
        return self.linear_teacher and temperature is not None and float(temperature) == self.read_temperature(hparams)

    def accepted_encodings(self, hparams: Mapping[str, Any] | None = None) -> str:
        """The encodings this method consumes exactly, as a user reads them."""
        if not self.needs_teacher:
            return "any (it reads no teacher)"
        return accepted_forms(self.read_temperature(hparams) if self.linear_teacher else None)

    def config(self, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """JSON-able named configuration ``{"name": ..., "configuration": {...}}`` for run records."""
        resolved = self.resolve(hparams)
        return {"name": self.name, "configuration": {k: _jsonable(v) for k, v in resolved.items()}}


LOSSES: Registry[LossSpec] = Registry("loss", LossConfigError)


def register(
    name: str,
    *,
    parsers: Mapping[str, Parser],
    summary: str,
    needs_teacher: bool = True,
    call_inputs: Sequence[str] = (),
    stats: Mapping[str, dict[str, Any]] | None = None,
    extra_networks: int = 0,
    extra_networks_arg: str | None = None,
    finalize: Finalizer | None = None,
    teacher_temperature: str | None = None,
    linear_teacher: bool = False,
    mixed_rules: Sequence[str] = (),
) -> Callable[[LossFn], LossFn]:
    """Register a loss implementation under ``name``; a taken name raises
    :class:`~kdcache.registry.DuplicateNameError`.

    The decorated implementation takes already validated tensors (student in
    the maths dtype, teacher detached, labels int64) and fully resolved
    keyword-only hyper-parameters. Its keyword-only parameters are the
    hyper-parameters (each needs a default and a parser) plus ``call_inputs``.
    The decorator returns the public wrapper, which accepts user input:
    it resolves hyper-parameters, validates shapes and dtypes, detaches the
    teacher, then calls the implementation.
    """

    def decorate(impl: LossFn) -> LossFn:
        kwonly = {
            p.name: p.default
            for p in inspect.signature(impl).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        # ``mixed`` (the rule on mixed views) is an option outside the defaults, read when given.
        defaults = {k: v for k, v in kwonly.items() if k not in call_inputs and k != "mixed"}
        if bool(mixed_rules) != ("mixed" in kwonly):
            raise TypeError(f"{name}: a loss with mixed_rules takes them as its keyword-only 'mixed'")
        # Programming errors in a registration, caught at import time.
        if set(parsers) != set(defaults) or any(v is inspect.Parameter.empty for v in defaults.values()):
            raise TypeError(f"{name}: every keyword-only hyper-parameter needs a default and a parser")
        if not set(call_inputs) <= set(kwonly):
            raise TypeError(f"{name}: call inputs {call_inputs} must be keyword-only parameters")
        if teacher_temperature is not None and teacher_temperature not in defaults:
            raise TypeError(f"{name}: teacher_temperature {teacher_temperature!r} must be a hyper-parameter")
        if linear_teacher and teacher_temperature is None:
            raise TypeError(f"{name}: a linear teacher term is linear in σ(t; T): name T's hyper-parameter")
        if bool(extra_networks) != (extra_networks_arg is not None) or (
            extra_networks_arg is not None and extra_networks_arg not in call_inputs
        ):
            raise TypeError(f"{name}: extra networks need extra_networks_arg, one of the call inputs")

        @functools.wraps(impl)
        def fn(student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor, **kwargs: Any) -> dict[str, Tensor]:
            inputs = {k: kwargs.pop(k) for k in call_inputs if k in kwargs}
            hparams = loss_spec.resolve(kwargs)
            s, t, y = prepare_inputs(name, student_logits, teacher_logits, labels, needs_teacher=needs_teacher)
            return impl(s, t, y, **hparams, **inputs)

        loss_spec = LossSpec(
            name=name,
            fn=fn,
            defaults=defaults,
            needs_teacher=needs_teacher,
            needs_epoch="epoch" in call_inputs,
            stats=dict(stats or {}),
            extra_networks=extra_networks,
            extra_networks_arg=extra_networks_arg,
            call_inputs=tuple(call_inputs),
            summary=summary,
            teacher_temperature=teacher_temperature,
            linear_teacher=linear_teacher,
            parsers=dict(parsers),
            finalize=finalize,
            mixed_rules=tuple(mixed_rules),
            mixed_default=kwonly.get("mixed"),
        )
        LOSSES.add(name, loss_spec)
        return fn

    return decorate


def names() -> list[str]:
    """Registered loss names, in registration order (the order of docs/methods.md)."""
    return LOSSES.names()


def spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of ``name``; unknown names raise listing the valid ones."""
    return LOSSES.get(name)


def get(name: str) -> LossFn:
    """The loss function registered as ``name``."""
    return spec(name).fn
