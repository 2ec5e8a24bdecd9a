"""Building a model from its spec: :func:`build_model` and the card a store records.

The kinds of spec (``torchvision:``, ``kdcache:``, ``import:``,
``torchscript:``, ``export:``) are registered in :mod:`kdcache.models.kinds`;
this module applies what every kind shares: where the weights come from,
the refusal of an architecture without weights, and the card.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from kdcache.errors import ModelError
from kdcache.models.checkpoints import PathLike, load_weights_into, state_dict_sha256
from kdcache.models.kinds import SpecKind, get_kind, parse_spec
from kdcache.validate import check, flag, positive_int

__all__ = ["build_model"]


def build_model(
    spec: str,
    num_classes: int,
    in_channels: int = 3,
    weights: PathLike | None = None,
    random_init: bool = False,
    *,
    role: str = "teacher",
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model ``spec`` names, load ``weights`` if given, return it in eval mode.

    ``num_classes`` and ``in_channels`` shape the models kdcache constructs
    (``torchvision:``, ``kdcache:``, and ``import:`` factories that accept
    them). Programs (``torchscript:``, ``export:``) and argument-less
    factories are taken as they are: call :func:`check_output_width` once
    the input size is known to catch a wrong number of classes or channels.

    A ``kdcache:`` or ``torchvision:`` spec without ``weights`` is refused
    (:class:`ModelError`, naming ``role``) unless ``random_init`` is True:
    an untrained teacher silently fills a store with noise, while a student
    is meant to start untrained, so its callers pass ``random_init=True``.
    An ``import:`` factory is user code that may load its own weights, so it
    is not refused; the card records the SHA-256 of the state it returned
    (``state_sha256``), so a factory that returns other weights is noticed.
    Programs carry their weights: neither ``weights`` nor ``random_init``
    applies to them.

    Returns ``(model, card)``; the card is JSON-able::

        {"spec", "weights", "weights_sha256", "program_sha256", "state_sha256",
         "random_init", "num_classes", "in_channels", "trained"}

    where ``weights`` is the checkpoint's absolute path, ``trained`` says
    how the weights were made: the card stored in a kdcache checkpoint (its
    ``"trained"`` entry when that card is itself a model card, as
    ``train-teacher`` writes), else ``None``; ``program_sha256`` is the hash
    of a ``torchscript:``/``export:`` file (whose path the spec records
    absolute); ``state_sha256`` the hash of an ``import:`` factory's state
    when no weights were given (else ``None``).
    """
    kind_name, rest = parse_spec(spec)
    kind = get_kind(kind_name)
    rest = kind.canonical(rest)
    spec = f"{kind_name}:{rest}"
    # bool is an int subclass; True classes is a caller bug, not 1 class (kdcache.validate refuses it).
    check(positive_int, num_classes, ModelError, "num_classes")
    check(positive_int, in_channels, ModelError, "in_channels")
    _check_weights_choice(kind, spec, weights, random_init, role)
    model, program_sha256 = kind.build(rest, num_classes, in_channels)

    # After building, so an unknown name is what a typo reports.
    if kind.weights == "checkpoint" and weights is None and not random_init:
        raise ModelError(
            f"{role} {spec} has no --weights: pass --weights CKPT, "
            "or --random-init to use an untrained network on purpose"
        )

    weights_sha256: str | None = None
    state_sha256: str | None = None
    trained: dict[str, Any] | None = None
    weights_path: str | None = None
    if weights is not None:
        weights_path = os.path.abspath(os.path.expanduser(os.fspath(weights)))
        trained, weights_sha256 = load_weights_into(model, weights_path, spec, num_classes, in_channels)
    elif kind.weights == "factory" and not random_init:
        state_sha256 = state_dict_sha256(model)

    _set_eval(model)
    card: dict[str, Any] = {
        "spec": spec,
        "weights": weights_path,
        "weights_sha256": weights_sha256,
        "program_sha256": program_sha256,
        "state_sha256": state_sha256,
        "random_init": random_init,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "trained": trained,
    }
    return model, card


def _check_weights_choice(
    kind: SpecKind, spec: str, weights: PathLike | None, random_init: object, role: str
) -> None:
    """Refuse weights and random_init where they contradict each other or the kind."""
    check(flag, random_init, ModelError, "random_init")
    if random_init and weights is not None:
        raise ModelError(
            f"{role} {spec}: --weights and --random-init contradict each other; pass one of them"
        )
    if kind.weights == "program" and (weights is not None or random_init):
        raise ModelError(
            f"{spec} is a saved program that carries its own weights; "
            f"{'drop --weights' if weights is not None else 'it cannot start untrained: drop --random-init'}, "
            "or use an architecture spec (kdcache:, torchvision:, import:)"
        )


def _set_eval(model: nn.Module) -> None:
    try:
        model.eval()
    except NotImplementedError:
        # torch.export programs refuse eval(): their train/eval behaviour was
        # fixed when they were exported (docs/models.md asks for eval mode).
        pass
