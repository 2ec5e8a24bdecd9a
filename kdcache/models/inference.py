"""Running a model: :func:`run_model`, batch-invariant by construction, and the checks before a long run.

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

import torch
from torch import nn

from kdcache.errors import KdcacheBug, ModelError, ModelInputError
from kdcache.models.checkpoints import first_line

__all__ = ["DEFAULT_MICRO_BATCH", "check_output_width", "check_row_independence", "run_model"]

#: Micro-batch size of :func:`run_model` unless the caller picks another. A
#: store must record the size it was made with: other sizes give other bits.
DEFAULT_MICRO_BATCH = 64


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
    except (ModelError, KdcacheBug, torch.OutOfMemoryError):
        raise  # a model error already says what; a bug keeps its traceback; memory is not the input's shape
    # A foreign model's forward can raise anything: most often it cannot take this input; say which it got.
    except Exception as e:  # noqa: BLE001
        raise ModelInputError(
            f"{role} failed on a batch of shape ({micro_batch}, {in_channels}, "
            f"{x.shape[-2]}, {x.shape[-1]}): {type(e).__name__}: {first_line(e)}"
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
