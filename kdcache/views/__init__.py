"""Replayable augmented views: a view is a pure function of ``(seed, sample, view)``.

This package carries the view-replay contract: the image a student sees for
``(sample i, view v)`` is the image the teacher saw when its logits for
``(i, v)`` were stored. Three rules make that hold:

1. Every random draw for a view comes from :func:`view_generator`, seeded by
   ``(seed, sample, view)`` alone (``seeds``), and happens in
   :func:`sample_params` only (``rendering``).
2. :func:`sample_params` returns integers (crop offsets, flip flags, jitter
   factors in per-mille); :func:`apply_params` turns them into pixels with no
   randomness, so recorded parameters re-render a view exactly, and a store
   is replayed from its record (``ViewDataset[(sample, view, params)]``).
3. A :class:`Recipe` is JSON data, hashed (``recipe``); the geometric ops of a
   recipe (``ops``) compose into one exact crop box in source pixels
   (``geometry``), and each consumer (:class:`Render`) resizes that box
   straight to its own size, so a teacher at 64x64 and a student at 32x32
   see the same geometric view with a single resampling each.

Where things live: ``seeds`` (seed derivation), ``geometry`` (exact boxes),
``ops`` (the op registry), ``pixel``, ``autoaugment`` and ``erasing``
(ops rendered on pixels at the recipe's size: RandAugment, TrivialAugment,
AutoAugment, RandomErasing), ``mix`` (mixup/cutmix with a partner view
drawn per ``(seed, sample, view)``), ``packing`` (an int16 layout of the
recorded params), ``recipe`` (Recipe, Render, presets),
``rendering`` (sample_params, apply_params), ``dataset`` (ViewDataset,
eval_dataset). Formats and encodings are documented in
``docs/data-and-views.md``.
"""

from __future__ import annotations

# Registers the pixel ops (rand_augment, trivial_augment, auto_augment, random_erasing) with the op registry.
from kdcache.views import autoaugment as _autoaugment, erasing as _erasing  # noqa: F401
from kdcache.views.dataset import EvalDataset, ViewDataset, eval_dataset
from kdcache.views.geometry import ViewGeometry
from kdcache.views.ops import list_ops
from kdcache.views.recipe import RECIPE_FORMAT, Recipe, Render, list_presets, load_recipe, resolve_recipe
from kdcache.views.rendering import apply_params, sample_params, view_geometry
from kdcache.views.seeds import view_generator

__all__ = [
    "RECIPE_FORMAT",
    "EvalDataset",
    "Recipe",
    "Render",
    "ViewDataset",
    "ViewGeometry",
    "apply_params",
    "eval_dataset",
    "list_ops",
    "list_presets",
    "load_recipe",
    "resolve_recipe",
    "sample_params",
    "view_generator",
    "view_geometry",
]
