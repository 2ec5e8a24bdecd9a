"""Checkpoint I/O: safe loading (never unpickling foreign objects), atomic saving, model cards.

A kdcache checkpoint is ``{"state_dict": ..., "card": ...}`` written
atomically; other trainers' layouts load too. Cards are JSON-able dicts, as
they are copied into store manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from kdcache.durable import replace_durably
from kdcache.errors import ModelError

__all__ = ["PathLike", "atomic_torch_save", "load_checkpoint", "save_checkpoint", "sha256_file", "state_dict_sha256"]

PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes (what ``sha256sum`` prints), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: PathLike, model: nn.Module, card: dict[str, Any]) -> None:
    """Write ``{"state_dict": ..., "card": card}`` to ``path`` atomically.

    The file is written next to ``path`` under a temporary name and moved
    into place with ``os.replace``, so a reader never sees half a
    checkpoint and an interrupted save leaves the old file intact. ``card``
    must be JSON-able (it is copied into store manifests); tensors are
    saved on the CPU so the file loads anywhere.
    """
    _check_card(card, "checkpoint card")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    atomic_torch_save(path, {"state_dict": state, "card": card})


def atomic_torch_save(path: PathLike, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` durably (``kdcache.durable``: temp file, fsync, rename, fsync the directory).

    A reader never sees half a file, and an interrupted save leaves the old
    file intact (checkpoints, run states). The parent directory is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_durably(path, lambda f: torch.save(obj, f), binary=True)


def _check_card(card: object, what: str) -> None:
    """A card goes into JSON manifests: it must be a JSON-able dict."""
    if not isinstance(card, dict):
        raise ModelError(f"{what} must be a dict, got {type(card).__name__}")
    try:
        json.dumps(card, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{what} must be JSON-able: {e}") from e


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a checkpoint safely; return ``{"state_dict": {name: tensor}, "card": dict | None}``.

    Reads with ``torch.load(weights_only=True, map_location="cpu")``, which
    refuses files holding arbitrary Python objects instead of running their
    code. Accepted layouts: kdcache's own ``{"state_dict", "card"}``, a plain
    state dict, and ``{"model": state_dict, ...}`` / ``{"state_dict": ...}``
    as other trainers (mdistiller, Lightning) write them.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"checkpoint {os.fspath(path)} does not exist")
    if not p.is_file():
        raise ModelError(f"checkpoint {os.fspath(path)} is not a file")
    if p.stat().st_size == 0:
        raise ModelError(f"checkpoint {os.fspath(path)} is empty")
    try:
        with warnings.catch_warnings():
            # Plain pickles trip a protocol notice just before torch refuses
            # them; the error below says all the user needs.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise ModelError(
            f"checkpoint {os.fspath(path)} is not a weights-only torch checkpoint "
            f"({_unpickling_reason(e)}); "
            "kdcache never unpickles arbitrary Python objects, as that can run code. "
            "Re-save it with torch.save(model.state_dict(), path)"
        ) from e
    # torch.load raises KeyError, EOFError, RuntimeError, ... for files that
    # are not checkpoints at all; they all mean the same to the user.
    except Exception as e:  # noqa: BLE001
        raise ModelError(
            f"{os.fspath(path)} is not a torch checkpoint: {type(e).__name__}: {first_line(e)}"
        ) from e
    return _normalise_checkpoint(obj, os.fspath(path))


def _normalise_checkpoint(obj: object, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ModelError(f"checkpoint {where} holds a {type(obj).__name__}, not a state dict")
    card = None
    if isinstance(obj.get("state_dict"), Mapping):
        state, card = obj["state_dict"], obj.get("card")
    elif isinstance(obj.get("model"), Mapping):
        state = obj["model"]
    else:
        state = obj
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"checkpoint {where} is not a state dict (name -> tensor): entries such as "
            f"{', '.join(map(repr, bad[:3]))} are not tensors; "
            "save model.state_dict() or use kdcache.models.save_checkpoint"
        )
    if card is not None:
        _check_card(card, f"checkpoint {where}: its card")
    return {"state_dict": dict(state), "card": card}


def load_weights_into(
    model: nn.Module, path: PathLike, spec: str, num_classes: int, in_channels: int
) -> tuple[dict[str, Any] | None, str]:
    ckpt = load_checkpoint(path)
    digest = sha256_file(path)
    expected = model.state_dict()
    state = _strip_common_prefix(ckpt["state_dict"], expected)
    # Checkpoints from before BatchNorm counted batches lack this buffer; it
    # plays no part in eval mode, so keep the model's own.
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    problems = _describe_mismatch(state, expected)
    if problems:
        saved = ckpt["card"] or {}
        origin = ""
        if "spec" in saved or "num_classes" in saved:
            origin = (
                f"; the checkpoint says it was saved from {saved.get('spec', '?')} "
                f"with num_classes={saved.get('num_classes', '?')}, "
                f"in_channels={saved.get('in_channels', '?')}"
            )
        raise ModelError(
            f"weights {os.fspath(path)} do not fit {spec} with num_classes={num_classes}, "
            f"in_channels={in_channels}: {problems}{origin}"
        )
    model.load_state_dict(state, strict=True)
    return _training_record(ckpt["card"]), digest


def _training_record(saved: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a checkpoint's card says about how its weights were made.

    ``train-teacher`` saves a whole model card whose ``"trained"`` entry is
    the training record (``{**card, "trained": {...}}``); hand on that entry
    rather than nesting a card in a card. Any other card is the record itself.
    """
    if saved is not None and "spec" in saved and isinstance(saved.get("trained"), dict):
        return saved["trained"]
    return saved


def _strip_common_prefix(
    state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    # DataParallel / DDP checkpoints prefix every key with "module.".
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state) and not any(
        k.startswith(prefix) for k in expected
    ):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _describe_mismatch(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], limit: int = 3
) -> str:
    """One line naming the first few differing keys and shapes; empty if they fit."""
    shapes = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    parts = []
    for label, items in (
        ("shape mismatch", shapes),
        ("missing from checkpoint", missing),
        ("not in model", unexpected),
    ):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def _unpickling_reason(e: BaseException) -> str:
    """The diagnosis inside torch's weights_only error, e.g. "Unsupported operand 149".

    torch's message is mostly a how-to for ``weights_only=False``, exactly
    what must not be done with a file of unknown origin; keep its diagnosis.
    """
    for line in str(e).splitlines():
        at = line.lower().find("unsupported")
        if at >= 0:
            reason = line[at:].strip()
            return reason[0].upper() + reason[1:].split(". ")[0].rstrip(".")
    return "torch refused to load it"


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def state_dict_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of a model's state: every entry's name, dtype, shape and bytes, in order.

    Identifies weights that come from code rather than a file (an ``import:``
    factory), so a store can notice when the factory returns other weights.
    """
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
