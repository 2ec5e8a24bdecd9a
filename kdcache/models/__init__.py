"""Networks by spec string, checkpoints, and batch-invariant inference.

A model is named by a spec (``docs/models.md``)::

    torchvision:NAME              a torchvision classification model
    kdcache:NAME                  a model of kdcache's zoo (``list_models()``)
    import:module.path:factory    any callable returning an nn.Module
    torchscript:PATH              a saved TorchScript program (carries its weights)
    export:PATH                   a saved torch.export program (carries its weights)
    timm:NAME                     a timm model (optional extra: pip install 'kdcache[timm]')

plus, for all but the programs, a checkpoint loaded with
``torch.load(..., weights_only=True)``: required for ``torchvision:``,
``kdcache:`` and ``timm:`` unless the network is meant to start untrained
(``random_init``, as students do).
:func:`build_model` returns the model in eval mode and a JSON-able *card*
that a store records per teacher, so a store can refuse other weights.

:func:`run_model` is the one way kdcache runs a teacher; its fixed-shape
micro-batching makes a row's logits independent of how rows are batched.

Where things live: ``kinds`` (the spec-kind registry) and one module per
kind (``torchvision_kind``, ``zoo_kind``, ``import_kind``, ``programs``,
``timm_kind``),
``build`` (build_model, cards), ``checkpoints`` (safe load, atomic save),
``inference`` (run_model and the checks before a long run).
"""

from __future__ import annotations

# The spec kinds, in the order errors list them; importing one registers it.
from kdcache.models import torchvision_kind, zoo_kind, import_kind, programs, timm_kind  # noqa: F401  isort: skip
from kdcache.models.build import build_model
from kdcache.models.checkpoints import (
    PathLike,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
    state_dict_sha256,
)
from kdcache.models.inference import DEFAULT_MICRO_BATCH, check_output_width, check_row_independence, run_model
from kdcache.models.kinds import SpecKind, list_kinds, parse_spec, register_kind
from kdcache.models.torchvision_kind import list_torchvision_models
from kdcache.models.zoo_kind import list_models

#: The spec kinds known at import time (``list_kinds()`` includes later registrations).
SPEC_KINDS = tuple(list_kinds())

__all__ = [
    "DEFAULT_MICRO_BATCH",
    "SPEC_KINDS",
    "PathLike",
    "SpecKind",
    "atomic_torch_save",
    "build_model",
    "check_output_width",
    "check_row_independence",
    "list_kinds",
    "list_models",
    "list_torchvision_models",
    "load_checkpoint",
    "parse_spec",
    "register_kind",
    "run_model",
    "save_checkpoint",
    "sha256_file",
    "state_dict_sha256",
]
