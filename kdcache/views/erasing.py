"""RandomErasing as a recorded, replayable recipe op (torchvision's ``RandomErasing`` semantics).

The box is drawn as torchvision's ``make_params`` draws it, from the view's
generator; the fill is a number, one number per channel, or ``"random"``:
standard normal noise per pixel and channel (timm's ``mode='pixel'``),
generated from a seed the op draws from the view's generator and records, so
a store records the noise's sub-stream, not its pixels, and it replays.

Values are in the units of the recipe's render normalisation, as
torchvision's and timm's erasing are (they run after ``Normalize``): value
``v`` of channel ``c`` erases to the [0, 1] pixel value ``mean[c] + std[c] * v``,
so 0 erases to the mean colour and noise has unit variance once normalised.
Erasing runs before the render's resize and normalisation, so every render
of the view sees the same erased pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from kdcache.errors import RecipeError
from kdcache.validate import Invalid, fraction, is_number, number, pair
from kdcache.views.ops import register
from kdcache.views.pixel import PixelOp

if TYPE_CHECKING:
    from kdcache.views.recipe import Render

__all__ = ["RandomErasing", "erase_noise"]

_NOISE_SEEDS = 2**31  # a recorded noise seed fits int32


def _scale(value: Any) -> list[float]:
    lo, hi = pair(number, "a pair [min, max] of numbers")(value)
    if not 0.0 < lo <= hi <= 1.0:
        raise Invalid("must have 0 < min <= max <= 1")
    return [lo, hi]


def _ratio(value: Any) -> list[float]:
    lo, hi = pair(number, "a pair [min, max] of numbers")(value)
    if not 0.0 < lo <= hi:
        raise Invalid("must have 0 < min <= max")
    return [lo, hi]


def _value(value: Any) -> float | list[float] | str:
    """A number, a non-empty list of numbers (one per channel), or "random"."""
    if value == "random":
        return "random"
    if is_number(value):
        return float(value)
    if isinstance(value, (list, tuple)) and value and all(is_number(v) for v in value):
        return [float(v) for v in value]
    raise Invalid('must be a number, a list of numbers (one per channel) or "random"')


def erase_noise(noise_seed: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """The standard normal fill of a ``"random"`` erasing with recorded seed ``noise_seed``, float32 ``shape``.

    ``np.random.Generator(np.random.PCG64(np.random.SeedSequence([noise_seed]))).standard_normal(shape, dtype=np.float32)``
    (docs/data-and-views.md).
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(noise_seed)])))
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))


def _per_channel(values: Sequence[float], channels: int, what: str, where: str) -> torch.Tensor:
    if len(values) not in (1, channels):
        raise RecipeError(f"{where}: {len(values)} {what} values for a {channels}-channel image; give 1 or {channels}")
    return torch.tensor(list(values), dtype=torch.float32).reshape(-1, 1, 1)


@register
class RandomErasing(PixelOp):
    """torchvision's RandomErasing: with probability ``p`` erase a box of area fraction in ``scale``, aspect in ``ratio``.

    Params: ``applied`` (0/1), ``top``, ``left``, ``height``, ``width`` of the box,
    and with ``value: "random"`` the ``noise`` seed of its fill. A view that is
    not erased (``p`` said no, or no box fitted in 10 tries) records zeros.
    """

    name = "random_erasing"
    keys = {
        "p": (fraction, 0.5),
        "scale": (_scale, [0.02, 0.33]),
        "ratio": (_ratio, [0.3, 3.3]),
        "value": (_value, 0.0),
    }
    uint8 = False
    wide_keys = ("noise",)  # a 31-bit seed

    def __init__(self, configuration: Mapping[str, Any], where: str) -> None:
        super().__init__(configuration, where)
        random = self.config["value"] == "random"
        self.param_keys = ("applied", "top", "left", "height", "width", *(("noise",) if random else ()))

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        not_erased = [0] * len(self.param_keys)
        if not rng.random() < self.config["p"]:
            return not_erased
        height, width = size
        area = height * width
        lo_scale, hi_scale = self.config["scale"]
        log_ratio = (math.log(self.config["ratio"][0]), math.log(self.config["ratio"][1]))
        for _ in range(10):
            erase_area = area * rng.uniform(lo_scale, hi_scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            # torchvision's rule: the height takes the aspect ratio (RandomResizedCrop's width does).
            h = int(round(math.sqrt(erase_area * aspect)))
            w = int(round(math.sqrt(erase_area / aspect)))
            if not (h < height and w < width):
                continue
            top = int(rng.integers(0, height - h, endpoint=True))
            left = int(rng.integers(0, width - w, endpoint=True))
            noise = [int(rng.integers(0, _NOISE_SEEDS))] if len(self.param_keys) == 6 else []
            return [1, top, left, h, w, *noise]
        return not_erased

    def fill(self, channels: int, height: int, width: int, noise: int, render: Render) -> torch.Tensor:
        """The erased pixels, in [0, 1] pixel units: ``mean + std * value`` per channel (see the module)."""
        mean = _per_channel(render.mean, channels, "mean/std", f"{self.where}: the recipe's render has")
        std = _per_channel(render.std, channels, "mean/std", f"{self.where}: the recipe's render has")
        value = self.config["value"]
        if value == "random":
            z = erase_noise(noise, (channels, height, width))
        elif isinstance(value, list):
            z = _per_channel(value, channels, "value", self.where)
        else:
            z = torch.tensor([value], dtype=torch.float32).reshape(1, 1, 1)
        return mean + std * z

    def pixels(self, image: torch.Tensor, params: Sequence[int], render: Render) -> torch.Tensor:
        if not image.is_floating_point():
            raise RecipeError(f"{self.where}: needs the float image")
        applied, top, left, h, w = params[:5]
        if applied not in (0, 1):
            raise self.bad_param("applied", applied, "0 or 1")
        if not applied:
            return image
        channels, height, width = image.shape
        if not (0 <= top and 0 <= left and 0 <= h and 0 <= w and top + h <= height and left + w <= width):
            raise self.bad_param("box", [top, left, h, w], f"a box inside the {height}x{width} image")
        noise = params[5] if len(params) > 5 else 0
        if not 0 <= noise < _NOISE_SEEDS:
            raise self.bad_param("noise", noise, f"a seed 0..{_NOISE_SEEDS - 1}")
        return F.erase(image, top, left, h, w, self.fill(channels, h, w, noise, render))
