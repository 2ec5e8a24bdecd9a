"""Networks by spec string, checkpoints, and batch-invariant inference.

A model is named by a spec (``docs/models.md``)::

    torchvision:NAME              a torchvision classification model, fresh weights
    kdcache:NAME                  a model of kdcache's zoo (``list_models()``)
    import:module.path:factory    any callable returning an nn.Module
    torchscript:PATH              a saved TorchScript program (carries its weights)
    export:PATH                   a saved torch.export program (carries its weights)

plus, for the first three, an optional checkpoint loaded with
``torch.load(..., weights_only=True)``. :func:`build_model` returns the model
in eval mode and a JSON-able *card* that a store records per teacher, so a
store can refuse to be used with other weights.

:func:`run_model` is the one way kdcache runs a teacher. Its micro-batching
(fixed size, aligned to the start of the input, last one zero-padded) makes
every forward call see the same tensor shape, and the measurements in
``docs/models.md`` show that, on CPU float32 with a fixed shape, a row's
logits do not depend on its position in the micro-batch nor on the other
rows. Hence logits stored by a precompute in dataset order are bitwise equal
to logits recomputed for the same images in shuffled batches of any size.
They *do* depend on the micro-batch size (a batch of 1 takes other kernels),
so producer and consumer must use the same ``micro_batch``.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import inspect
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Union

import torch
from torch import nn

from kdcache import zoo
from kdcache.errors import ModelError, SpecError

PathLike = Union[str, "os.PathLike[str]"]

#: Micro-batch size of :func:`run_model` unless the caller picks another. A
#: store must record the size it was made with: other sizes give other bits.
DEFAULT_MICRO_BATCH = 64

SPEC_KINDS = ("torchvision", "kdcache", "import", "torchscript", "export")
_PROGRAM_KINDS = ("torchscript", "export")


def list_models() -> list[str]:
    """Names usable as ``kdcache:NAME`` (the registered zoo models), sorted."""
    return zoo.list_models()


def list_torchvision_models() -> list[str]:
    """Names usable as ``torchvision:NAME`` (torchvision's classification models)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


# --------------------------------------------------------------------------- building


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"kind:rest"`` into ``(kind, rest)``, raising :class:`SpecError` on bad specs."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"model spec must be a non-empty string, got {spec!r}")
    kind, sep, rest = spec.strip().partition(":")
    if not sep or kind not in SPEC_KINDS:
        hint = ""
        name = spec.strip()
        if name in list_models():
            hint = f"; did you mean 'kdcache:{name}'?"
        elif name.lower() in list_torchvision_models():
            hint = f"; did you mean 'torchvision:{name.lower()}'?"
        raise SpecError(
            f"model spec {spec!r} must start with one of "
            f"{', '.join(k + ':' for k in SPEC_KINDS)}{hint}"
        )
    if not rest:
        raise SpecError(f"model spec {spec!r} names no model after '{kind}:'")
    return kind, rest


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
    kind, rest = parse_spec(spec)
    if kind in _PROGRAM_KINDS:
        rest = os.path.abspath(os.path.expanduser(rest))
    spec = f"{kind}:{rest}"
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    if not isinstance(random_init, bool):
        raise ModelError(f"random_init must be True or False, got {random_init!r}")
    if random_init and weights is not None:
        raise ModelError(
            f"{role} {spec}: --weights and --random-init contradict each other; pass one of them"
        )

    program_sha256: str | None = None
    if kind in _PROGRAM_KINDS:
        if weights is not None or random_init:
            raise ModelError(
                f"{spec} is a saved program that carries its own weights; "
                f"{'drop --weights' if weights is not None else 'it cannot start untrained: drop --random-init'}, "
                "or use an architecture spec (kdcache:, torchvision:, import:)"
            )
        model, program_sha256 = _load_program(kind, rest)
    elif kind == "torchvision":
        model = _build_torchvision(rest, num_classes, in_channels)
    elif kind == "kdcache":
        model = zoo.create_model(rest, num_classes, in_channels)
    else:
        model = _build_import(rest, num_classes, in_channels)

    # After building, so an unknown name is what a typo reports.
    if kind in ("kdcache", "torchvision") and weights is None and not random_init:
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
        trained, weights_sha256 = _load_weights_into(model, weights_path, spec, num_classes, in_channels)
    elif kind == "import" and not random_init:
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


def _check_positive_int(name: str, value: object) -> None:
    # bool is an int subclass; True classes is a caller bug, not 1 class.
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")


def _set_eval(model: nn.Module) -> None:
    try:
        model.eval()
    except NotImplementedError:
        # torch.export programs refuse eval(): their train/eval behaviour was
        # fixed when they were exported (docs/models.md asks for eval mode).
        pass


def _build_torchvision(name: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    valid = list_torchvision_models()
    if name.lower() not in valid:
        close = difflib.get_close_matches(name.lower(), valid, n=5, cutoff=0.5)
        some = close or valid[:8]
        raise SpecError(
            f"unknown torchvision classification model {name!r}; "
            f"{'close names' if close else 'some valid names'}: {', '.join(some)} "
            "(all: python -c 'import kdcache.models as m; print(m.list_torchvision_models())')"
        )
    model = torchvision.models.get_model(name.lower(), weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels, f"torchvision:{name}")
    return model


def _replace_first_conv(model: nn.Module, in_channels: int, spec: str) -> None:
    """Swap the first registered Conv2d for one taking ``in_channels``.

    In every torchvision classifier the first registered Conv2d is the stem
    (registration order follows ``__init__``), so this is where the image
    channels enter. The new layer copies every other argument and gets a
    fresh initialisation; with ``weights=None`` nothing is lost.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise ModelError(
                    f"{spec}: its first convolution {name!r} is grouped "
                    f"(groups={module.groups}); kdcache cannot adapt it to {in_channels} channels"
                )
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                kernel_size=module.kernel_size,  # type: ignore[arg-type]
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                groups=1,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, new)
            return
    raise ModelError(f"{spec} has no Conv2d to adapt to {in_channels} input channels")


def _build_import(target: str, num_classes: int, in_channels: int) -> nn.Module:
    module_name, sep, attr_path = target.rpartition(":")
    if not sep or not module_name or not attr_path:
        raise SpecError(
            f"import spec 'import:{target}' must look like 'import:module.path:factory'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise SpecError(
            f"import:{target}: cannot import module {module_name!r} ({e}); "
            "is it installed or on PYTHONPATH?"
        ) from e
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError(
                f"import:{target}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(obj):
        raise SpecError(f"import:{target}: {attr_path!r} is not callable")

    kwargs = _accepted_kwargs(obj, {"num_classes": num_classes, "in_channels": in_channels})
    model = obj(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"import:{target} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _accepted_kwargs(factory: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``offered`` that ``factory``'s signature takes by keyword."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        # Builtins and some C extensions have no signature: call them bare.
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: v for k, v in offered.items() if k in params and params[k].kind in keyword_kinds}


def _load_program(kind: str, path_str: str) -> tuple[nn.Module, str]:
    path = Path(path_str)
    if not path.is_file():
        raise ModelError(f"{kind}:{path_str}: no such file")
    digest = sha256_file(path)
    try:
        if kind == "torchscript":
            with warnings.catch_warnings():
                # torch deprecates TorchScript in favour of torch.export; the
                # user chose this format, so the notice is noise here.
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        else:
            model = torch.export.load(str(path)).module()
    # A foreign file can fail to parse in many ways (zip, pickle, schema);
    # all of them mean the same to the user.
    except Exception as e:  # noqa: BLE001
        how = "torch.jit.save" if kind == "torchscript" else "torch.export.save"
        raise ModelError(
            f"{kind}:{path_str} is not a program saved with {how}: {_first_line(e)}"
        ) from e
    return model, digest


# --------------------------------------------------------------------------- checkpoints


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
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over it.

    A reader never sees half a file, and an interrupted save leaves the old
    file intact (checkpoints, run states).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
            f"{os.fspath(path)} is not a torch checkpoint: {type(e).__name__}: {_first_line(e)}"
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


def _load_weights_into(
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


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# --------------------------------------------------------------------------- running


def run_model(
    model: nn.Module, x: torch.Tensor, micro_batch: int = DEFAULT_MICRO_BATCH
) -> torch.Tensor:
    """Float32 logits ``(len(x), C)`` of ``model`` on ``x``, bitwise independent of batching.

    ``x`` is cut into micro-batches of exactly ``micro_batch`` rows, aligned
    to its start, the last one zero-padded, and each is run under
    ``torch.inference_mode()``. Every forward call thus sees one tensor
    shape, so the kernels (and their summation orders) are the same for
    every call; with that, a row's logits were measured not to depend on its
    position in the micro-batch or on its neighbours (docs/models.md), so
    they do not depend on how the caller batched or shuffled the rows.
    Different ``micro_batch`` values can give different bits.

    ``x`` is made contiguous (a channels-last input would take other
    kernels) and moved to the model's device and floating dtype; the result
    is on ``x``'s device. The model must be in eval mode: in training mode
    BatchNorm mixes the rows of a batch.
    """
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1:
        raise ModelError(f"micro_batch must be a positive integer, got {micro_batch!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ModelError("run_model needs a tensor of shape (rows, ...)")
    if model.training and not isinstance(model, torch.fx.GraphModule):
        raise ModelError(
            "run_model needs the model in eval mode (model.eval()): in training mode "
            "BatchNorm and dropout make a row's logits depend on its neighbours and on chance"
        )
    device, dtype = _device_and_dtype(model)
    out_device = x.device
    x = x.to(device=device or x.device, dtype=dtype if x.is_floating_point() else None)
    x = x.contiguous()
    n = x.shape[0]
    pieces: list[torch.Tensor] = []
    with torch.inference_mode():
        # At least one call, so an empty x still yields (0, C).
        for start in range(0, max(n, 1), micro_batch):
            chunk = x[start : start + micro_batch]
            rows = chunk.shape[0]
            if rows < micro_batch:
                pad = chunk.new_zeros((micro_batch - rows, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            logits = _logits_of(model(chunk))
            if logits.dim() != 2 or logits.shape[0] != micro_batch:
                raise ModelError(
                    f"model output has shape {tuple(logits.shape)}; expected "
                    f"({micro_batch}, num_classes) for a batch of {micro_batch}"
                )
            pieces.append(logits[:rows].float())
    # Concatenated outside inference mode: the result is an ordinary tensor
    # that a loss may save for backward (inference tensors cannot be).
    return torch.cat(pieces).to(out_device)


def _logits_of(output: object) -> torch.Tensor:
    # Models that also return features -- mdistiller's (logits, feats) tuples,
    # Hugging Face outputs with .logits -- are common as teachers.
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise ModelError(
        f"model returned a {type(output).__name__}; kdcache needs a logits tensor, "
        "a tuple whose first item is one, or an object with a .logits tensor"
    )


def _device_and_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype]:
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.device, t.dtype
    return None, torch.float32


def _input_batch(in_channels: int, image_size: int | tuple[int, int]) -> torch.Tensor:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return torch.zeros(1, in_channels, h, w)


def check_output_width(
    model: nn.Module,
    in_channels: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    *,
    micro_batch: int = DEFAULT_MICRO_BATCH,
    role: str = "teacher",
) -> None:
    """Run one zero micro-batch and check the model emits ``num_classes`` logits.

    Catches, before any long run, a checkpoint or program made for another
    dataset and a model that does not take ``in_channels`` x ``image_size``
    inputs. It runs through :func:`run_model` with the same ``micro_batch``
    as the real run, so a program exported with a fixed batch size is
    checked with the shape it will get.
    """
    x = _input_batch(in_channels, image_size)
    try:
        logits = run_model(model, x, micro_batch)
    except ModelError:
        raise
    # A foreign model's forward can raise anything; say which input it got.
    except Exception as e:  # noqa: BLE001
        raise ModelError(
            f"{role} failed on a batch of shape ({micro_batch}, {in_channels}, "
            f"{x.shape[-2]}, {x.shape[-1]}): {type(e).__name__}: {_first_line(e)}"
        ) from e
    width = logits.shape[1]
    if width != num_classes:
        raise ModelError(
            f"{role} outputs {width} classes but the dataset has {num_classes}; "
            "use weights and a model built for this dataset"
        )


def check_row_independence(
    model: nn.Module,
    in_channels: int,
    image_size: int | tuple[int, int],
    *,
    micro_batch: int = DEFAULT_MICRO_BATCH,
    seed: int = 0,
) -> None:
    """Check on this machine that a row's logits ignore its position and neighbours.

    Runs two micro-batches of random rows, the second holding the first's
    rows shifted by one position with one row replaced, and raises
    :class:`ModelError` unless every shared row's logits are bitwise equal.
    It costs two micro-batches, and guards the property the store's replay
    contract rests on against models in training mode, batch-dependent
    layers, and kernels that behave otherwise than those measured here.
    """
    if micro_batch < 2:
        return  # a single-row batch has no position or neighbours
    g = torch.Generator().manual_seed(seed)
    h, w = _input_batch(in_channels, image_size).shape[-2:]
    a = torch.randn(micro_batch, in_channels, h, w, generator=g)
    b = torch.cat([torch.randn(1, in_channels, h, w, generator=g), a[:-1]])
    la, lb = run_model(model, a, micro_batch), run_model(model, b, micro_batch)
    differ = (la[:-1] != lb[1:]).any(dim=1).nonzero().flatten().tolist()
    if differ:
        raise ModelError(
            f"{len(differ)} of {micro_batch - 1} rows got different logits when moved one "
            "position with other neighbours; this model is not batch-invariant here "
            "(training mode? batch statistics?), so stored logits would not replay "
            "exactly: see docs/models.md"
        )
