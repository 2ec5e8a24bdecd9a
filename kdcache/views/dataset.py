"""Datasets of views: :class:`ViewDataset` (training views) and :func:`eval_dataset` (validation images)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdcache.views.recipe import Recipe, Render
from kdcache.views.mix import LAM_SCALE
from kdcache.views.rendering import mix_partner, prepare, recorded_params, render_prepared, sample_params
from kdcache.views.seeds import non_negative

if TYPE_CHECKING:
    from kdcache.data import DataSource

__all__ = ["EvalDataset", "ViewDataset", "eval_dataset"]


class ViewDataset(torch.utils.data.Dataset):
    """Views of a DataSource, keyed by ``(sample, view)`` or ``(sample, view, params)``.

    Use with a ``batch_sampler`` yielding lists of keys; the default collate
    stacks the items. An item is
    ``{"sample", "view", "label", "params": int32 (P,), "images": [float32 per render]}``,
    and for a recipe with ``mix`` also ``"partner_label"`` (the partner
    sample's label; the view's own where it is not mixed) and ``"lam"``
    (float32, the own label's weight; 1 where not mixed), from which the
    training step builds :class:`~kdcache.losses.mixed.MixedLabels`.
    ``len()`` is the number of samples, not of keys.

    A ``(sample, view)`` key draws the view's params from the seed (used where
    views are created). A ``(sample, view, params)`` key renders exactly the
    given RECORDED params and draws nothing: a store is replayed from what it
    recorded, whatever today's seed derivation would draw.
    """

    def __init__(
        self,
        source: DataSource,
        recipe: Recipe,
        seed: int,
        renders: Sequence[Render] | None = None,
    ) -> None:
        self.source = source
        self.recipe = recipe
        self.seed = non_negative(seed, "seed")
        self.renders = tuple(renders) if renders else (recipe.render,)
        for r in self.renders:
            if not isinstance(r, Render):
                raise TypeError(f"renders must be Render objects, got {type(r).__name__}")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int] | tuple[int, int, Any]) -> dict[str, Any]:
        if not isinstance(key, (tuple, list)) or len(key) not in (2, 3):
            raise TypeError(
                f"ViewDataset keys are (sample, view) or (sample, view, params), got {key!r}"
            )
        try:
            sample, view = operator.index(key[0]), operator.index(key[1])
        except TypeError:
            raise TypeError(
                f"ViewDataset keys are (sample, view) pairs of integers, got {key!r}"
            ) from None
        if not 0 <= sample < len(self.source):
            raise IndexError(f"sample {sample} out of range ({len(self.source)} samples)")
        image = self.source.image(sample)
        if len(key) == 3:
            non_negative(view, "view")
            params = recorded_params(self.recipe, key[2], sample, view)
        else:
            params = sample_params(self.recipe, self.seed, sample, view, (image.shape[1], image.shape[2]),
                                   self.source)
        item: dict[str, Any] = {"sample": sample, "view": view, "label": int(self.source.labels[sample])}
        partner_image = None
        mix = self.recipe.mix
        if mix is not None:
            # A mixed view reads a second image: its recorded partner's (kdcache.views.mix).
            _, partner, lam_q, _, _ = mix.split(params[-len(mix.param_keys):].tolist())
            if not 0 <= partner < len(self.source):
                raise IndexError(f"view ({sample}, {view}): recorded mix_partner {partner} is outside the "
                                 f"{len(self.source)} samples")
            if mix_partner(self.recipe, params) is not None:
                partner_image = self.source.image(partner)
            item["partner_label"] = int(self.source.labels[partner])
            item["lam"] = torch.tensor(lam_q / LAM_SCALE, dtype=torch.float32)
        x, recipe_size = prepare(self.recipe, image, params, partner_image)
        item["params"] = torch.from_numpy(params)
        item["images"] = [render_prepared(x, recipe_size, r) for r in self.renders]
        return item


class EvalDataset(torch.utils.data.Dataset):
    """Validation images of a DataSource, keyed by int sample index.

    An item is ``{"sample", "label", "images": [float32]}``: the image
    rendered by the recipe's evaluation geometry (its ``eval`` ops, no
    randomness) with the student's Render, at the size the student trained
    at: ``render.size``, or else the recipe's own output size for that image.
    So a folder of mixed-size images evaluates at one size, the training one.
    Use with a ``batch_sampler`` of lists of ints.
    """

    def __init__(self, source: DataSource, recipe: Recipe, render: Render) -> None:
        if not isinstance(render, Render):
            raise TypeError(f"render must be a Render, got {type(render).__name__}")
        self.source = source
        self.recipe = recipe
        self.render = render
        self._eval = recipe.eval_recipe()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, sample: int) -> dict[str, Any]:
        try:
            sample = operator.index(sample)
        except TypeError:
            raise TypeError(f"eval dataset keys are sample indices (int), got {sample!r}") from None
        if not 0 <= sample < len(self.source):
            raise IndexError(f"sample {sample} out of range ({len(self.source)} samples)")
        image = self.source.image(sample)
        x, _ = prepare(self._eval, image, _NO_PARAMS)
        trained_at = self.render.size or self.recipe.output_size((image.shape[1], image.shape[2]))
        return {
            "sample": sample,
            "label": int(self.source.labels[sample]),
            "images": [render_prepared(x, trained_at, self.render)],
        }


_NO_PARAMS = np.zeros(0, dtype=np.int32)


def eval_dataset(source: DataSource, recipe: Recipe, render: Render) -> torch.utils.data.Dataset:
    """Validation images of ``source`` as ``recipe`` says to render them, at ``render``.

    Keyed by int sample index; items ``{"sample", "label", "images": [tensor]}``.
    """
    return EvalDataset(source, recipe, render)
