"""Data-parallel training under torchrun: DDP wrapping, SyncBatchNorm, each rank's slice of a global batch.

The epoch plan is a pure function of (seed, epoch), so every rank builds the
same global batches. Each global batch of n rows is cut into W contiguous
slices (rank r takes rows ``[r*n//W, (r+1)*n//W)``), so a rank renders and
trains on its own rows only. DDP averages gradients over ranks, i.e. the mean
of per-rank means; each rank's loss is scaled by ``local rows * W / n`` so that
the update is the gradient of the global batch's mean even when the last,
short batch does not split evenly (exactly the 1-rank update up to summation
order, for losses that are means over rows).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kdcache import distributed
from kdcache.errors import UsageError

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def rank_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a global batch of ``n`` rows that ``rank`` of ``world`` trains on."""
    return rank * n // world, (rank + 1) * n // world


def check_batches(num_samples: int, batch_size: int, world: int, option: str = "--batch-size") -> None:
    """Refuse a split that would leave a rank without rows in some batch (it could not take part).

    ``option`` names the setting in the message (the Python API's ``batch_size``)."""
    if world <= 1:
        return
    last = num_samples % batch_size or batch_size
    if batch_size < world or last < world:
        raise UsageError(f"{option} {batch_size} over {num_samples} samples leaves a batch of "
                         f"{min(last, batch_size)} rows for {world} ranks; choose a {option} of at least "
                         f"{world} whose last batch (samples mod batch size) is 0 or at least {world}")


class RankSlices:
    """A ``batch_sampler`` that hands this rank its slice of each global batch of keys.

    For every global batch it records ``(n, lo, hi)`` in a FIFO, popped by the training loop with the
    batch (the DataLoader returns batches in the order it took them), so the loop knows the global
    row count (for the loss scale) and which rows of the batch's side input are this rank's.
    """

    def __init__(self, keys: Iterable[list[Any]], rank: int, world: int) -> None:
        self.keys = keys
        self.rank = rank
        self.world = world
        self.fifo: collections.deque[tuple[int, int, int]] = collections.deque()

    def __iter__(self) -> Iterator[list[Any]]:
        self.fifo.clear()
        for batch in self.keys:
            n = len(batch)
            lo, hi = rank_bounds(n, self.rank, self.world)
            self.fifo.append((n, lo, hi))
            yield batch[lo:hi]

    def __len__(self) -> int:
        return len(self.keys)  # type: ignore[arg-type]

    def pop(self) -> tuple[int, int, int]:
        return self.fifo.popleft()


def slice_side(side: Any, n: int, lo: int, hi: int) -> Any:
    """This rank's rows ``[lo, hi)`` of a batch's side input (a dict of per-row tensors, or None)."""
    if side is None:
        return None
    if isinstance(side, dict):
        return {k: (v[lo:hi] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n else v)
                for k, v in side.items()}
    raise TypeError(f"cannot split a side input of type {type(side).__name__} across ranks")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks with autograd: the gradient of every rank's input is the sum of the ranks' gradients.

    (torch.distributed.nn's version of this is deprecated and its replacement is not differentiable.)
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, for CPU (gloo) jobs.

    Written here because torch's ``nn.SyncBatchNorm`` refuses CPU tensors (its kernels are GPU-only);
    on CUDA kdcache uses torch's. Mean and variance are computed in two passes over all ranks with
    autograd-aware all-reduces (``torch.distributed.nn``), so gradients flow through the statistics
    exactly as in one process; running statistics are updated as ``F.batch_norm`` does.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=input.dtype, device=input.device)
        summed = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))
        total = summed[-1].detach()
        mean = summed[:-1] / total
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / total
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                unbiased = var.detach() * total / max(float(total) - 1.0, 1.0)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        return out


def convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` (in place, same parameters and buffers) by a synchronised one."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlooSyncBatchNorm):
            new = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            with torch.no_grad():
                if child.affine:
                    new.weight = child.weight
                    new.bias = child.bias
                new.running_mean = child.running_mean
                new.running_var = child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            module.add_module(name, new)
        else:
            convert_sync_bn(child, device)
    return module


def wrap_modules(modules: dict[str, nn.Module], device: torch.device, sync_bn: bool) -> dict[str, nn.Module]:
    """The modules a data-parallel step calls: DDP around every trained one (SyncBN first if asked).

    Returns ``modules`` itself in a single process. The unwrapped modules stay what is saved and evaluated.
    """
    if not distributed.current().enabled:
        return modules
    out: dict[str, nn.Module] = {}
    for name, module in modules.items():
        if sync_bn:
            convert_sync_bn(module, device)
        if any(p.requires_grad for p in module.parameters()):
            out[name] = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
        else:
            out[name] = module
    return out


def autocast(device: torch.device, precision: str | None) -> torch.autocast:
    """The autocast context of ``precision`` (disabled for fp32, or None: a card that records none);
    training, evaluation and a teacher's scoring and replay all use it."""
    dtype = PRECISIONS[precision or "fp32"]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def reduce_parts(values: dict[str, float], local_rows: int, global_rows: int) -> dict[str, float]:
    """The global batch's mean of each loss part, from every rank's local means (identical on all ranks)."""
    if not distributed.current().enabled:
        return values
    sums = distributed.all_sum([v * local_rows for v in values.values()])
    return {k: s / global_rows for k, s in zip(values, sums, strict=True)}
