"""Pixel ops: ops that act on the view's pixels at the recipe's output size, after its geometry.

The geometric ops of a recipe compose into one exact box (``geometry``) and
``color_jitter`` acts on the source-resolution crop, so a recipe of those
alone resamples each view once. Strong augmentation (RandAugment,
TrivialAugment, AutoAugment, RandomErasing) cannot work that way: a shear, a
posterize or an erased box is defined on the pixels of the image the op
sees, at the size the pipeline has there. So a recipe with any
:class:`PixelOp` renders in pixel mode (``rendering.prepare``), as a
torchvision pipeline does on a uint8 tensor:

1. crop the box from the uint8 source and resize it, on uint8, to the
   recipe's output size (antialiased bilinear: torchvision's
   ``resized_crop``), then flip;
2. run every non-geometric op in recipe order on that image: ``color_jitter``
   and the augment ops on uint8, then ``random_erasing`` on float32 in [0, 1];
3. hand the float32 image to each render (a render at another size
   resamples it a second time).

Recipes without pixel ops render exactly as before, so their views (and
hashes) do not change. Each pixel op still draws its params in ``draw`` (the
only place it touches randomness) and turns them into pixels in
:meth:`PixelOp.pixels` with no randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch

from kdcache.errors import RecipeError
from kdcache.views.ops import Op

if TYPE_CHECKING:
    from kdcache.views.recipe import Render

__all__ = ["PixelOp", "check_pixel_order", "has_pixel_ops"]


class PixelOp(Op):
    """An op rendered on pixels at the recipe's output size (see the module).

    ``uint8``: the op takes the uint8 image (the augment ops, which torchvision
    defines on uint8); otherwise it takes float32 in [0, 1] (erasing, which
    torchvision's pipelines run after the conversion to float).
    """

    uint8: ClassVar[bool] = True

    def pixels(self, image: torch.Tensor, params: Sequence[int], render: Render) -> torch.Tensor:
        """The op applied with ``params`` (pure); ``render`` is the recipe's own render."""
        raise NotImplementedError

    def bad_param(self, what: str, value: object, expected: str) -> RecipeError:
        """A recorded parameter that no draw of this op makes, named (a damaged or edited record)."""
        return RecipeError(f"{self.where}: recorded {what}={value!r}; expected {expected}")


def has_pixel_ops(ops: Sequence[Op]) -> bool:
    return any(isinstance(op, PixelOp) for op in ops)


def _stage(op: Op) -> int:
    """0 geometry, 1 uint8 pixels (color_jitter, augment ops), 2 float pixels (erasing)."""
    if isinstance(op, PixelOp):
        return 1 if op.uint8 else 2
    return 1 if op.photometric else 0


def check_pixel_order(recipe_name: str, ops: Sequence[Op]) -> None:
    """In a recipe with pixel ops: geometry first, then uint8 ops, then float ops; else one line.

    A crop after RandAugment, or RandAugment after erasing, is a pipeline the
    single-pass renderer cannot reproduce, so it is refused, not reordered.
    """
    if not has_pixel_ops(ops):
        return
    for later_index, later in enumerate(ops):
        for earlier in ops[:later_index]:
            if _stage(earlier) > _stage(later):
                what = "geometric op" if _stage(later) == 0 else "uint8 op"
                raise RecipeError(
                    f"{later.where}: a {what} after {earlier.name}; in a recipe with pixel ops "
                    "(rand_augment, trivial_augment, auto_augment, random_erasing) the geometric ops come first, "
                    "then color_jitter and the augment ops, then random_erasing"
                )
