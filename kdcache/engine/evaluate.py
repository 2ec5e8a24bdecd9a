"""Validation: top-1 / top-5 accuracy on images rendered by the recipe's evaluation geometry."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdcache import distributed
from kdcache.data import DataSource
from kdcache.engine.parallel import autocast
from kdcache.views import Recipe, Render, eval_dataset


def eval_loader(source: DataSource, recipe: Recipe, render: Render, batch_size: int, workers: int) -> DataLoader:
    """Validation images of ``source`` as ``recipe`` evaluates them, at the trained model's ``render``.

    The recipe decides the geometry (e.g. imagenet: resize then centre crop),
    ``render`` the size and normalisation the model was trained at, so a model
    is evaluated at the resolution it saw in training.
    """
    dataset = eval_dataset(source, recipe, render)
    n = len(source)
    batches = [list(range(b, min(b + batch_size, n))) for b in range(0, n, batch_size)]
    # Under torchrun each rank evaluates every world-th batch; evaluate() sums the counts over ranks.
    batches = distributed.shard(batches)
    # Own generator: iterating the loader must not draw from torch's global RNG, which training owns.
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, generator=torch.Generator())


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """Top-1 and top-5 accuracy (top-5 is top-min(5, C)); the model's train/eval mode is kept.

    Under torchrun ``loader`` holds this rank's share (:func:`eval_loader`) and the counts are summed
    over ranks, so every rank returns the whole validation set's accuracy.
    """
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    for batch in loader:
        x = batch["images"][0].to(device, non_blocking=True)
        y = batch["label"].to(device)
        with autocast(device, precision):
            logits = model(x)
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += int(y.shape[0])
    model.train(was_training)
    correct1, correct5, total = distributed.all_sum([correct1, correct5, total], device)
    return {"val_top1": correct1 / max(1, total), "val_top5": correct5 / max(1, total)}
