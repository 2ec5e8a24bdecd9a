"""The ops a recipe is made of, one registered class each.

An op validates its configuration, says how it changes the logical image
size, draws its integer params from the view's generator (``draw``, the only
place an op touches randomness), and turns params into geometry (``advance``)
or colours (``adjust``) with no randomness. Adding an op is one class here
with ``@register``; its params and their encoding are part of the recipe
format (docs/data-and-views.md).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from kdcache.errors import RecipeError
from kdcache.registry import Registry
from kdcache.validate import (
    Invalid,
    Parser,
    check,
    fraction,
    int_in,
    integer,
    is_int,
    is_number,
    non_negative_int,
    number,
    pair,
)
from kdcache.views.geometry import Geo

__all__ = ["list_ops", "register"]


# --------------------------------------------------------------------------- configuration parsers


_int_pair = pair(integer, "an integer or a pair [H, W] of integers")
_number_pair = pair(number, "a pair [min, max] of numbers")
_optional_number_pair = pair(number, "null, a number or a pair [min, max]")


def size(value: Any) -> list[int]:
    """A crop or output size: ``S`` (square) or ``[H, W]``, positive integers."""
    h, w = _int_pair([value, value] if is_int(value) else value)
    if h < 1 or w < 1:
        raise Invalid("must be positive")
    return [h, w]


def _resize_size(value: Any) -> int | list[int]:
    """``S`` (the shorter side, as torchvision's Resize) or ``[H, W]``."""
    if is_int(value):
        if value < 1:
            raise Invalid("must be positive")
        return int(value)
    return size(value)


def _positive_range(value: Any) -> list[float]:
    lo, hi = _number_pair(value)
    if not 0.0 < lo <= hi:
        raise Invalid("must have 0 < min <= max")
    return [lo, hi]


def _jitter(value: Any) -> list[float] | None:
    """torchvision's ColorJitter convention: ``b`` means ``[max(0, 1-b), 1+b]``; 0 or null: off."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        if not is_number(value):
            raise Invalid("must be null, a number or a pair [min, max]")
        b = number(value)
        if b < 0:
            raise Invalid("must be >= 0")
        return None if b == 0 else [max(0.0, 1.0 - b), 1.0 + b]
    lo, hi = _optional_number_pair(value)
    if not 0.0 <= lo <= hi:
        raise Invalid("must have 0 <= min <= max")
    return [lo, hi]


def _hue(value: Any) -> list[float] | None:
    """``h`` means ``[-h, h]``, within [-0.5, 0.5]; 0 or null: off."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        if not is_number(value):
            raise Invalid("must be null, a number or a pair [min, max]")
        h = number(value)
        if not 0.0 <= h <= 0.5:
            raise Invalid("must be in [0, 0.5]")
        return None if h == 0 else [-h, h]
    lo, hi = _optional_number_pair(value)
    if not -0.5 <= lo <= hi <= 0.5:
        raise Invalid("must have -0.5 <= min <= max <= 0.5")
    return [lo, hi]


_REQUIRED = object()


# --------------------------------------------------------------------------- ops


class Op:
    """One named op of a recipe, with its validated configuration.

    ``draw`` is the only place an op touches randomness; ``advance`` and
    ``adjust`` are pure functions of the drawn integers.
    """

    name: ClassVar[str]
    keys: ClassVar[dict[str, tuple[Parser, Any]]]
    param_keys: ClassVar[tuple[str, ...]] = ()
    # Params whose values may not fit int16 (kdcache.views.packing stores them in two halves).
    wide_keys: ClassVar[tuple[str, ...]] = ()
    photometric: ClassVar[bool] = False

    def __init__(self, configuration: Mapping[str, Any], where: str) -> None:
        self.where = where
        extra = sorted(set(configuration) - set(self.keys))
        if extra:
            raise RecipeError(
                f"{where}: unknown configuration key(s) {', '.join(extra)}; "
                f"expected {', '.join(self.keys)}"
            )
        config: dict[str, Any] = {}
        for key, (parse, default) in self.keys.items():
            if key in configuration:
                config[key] = check(parse, configuration[key], RecipeError, f"{where}: {key}")
            elif default is _REQUIRED:
                raise RecipeError(f"{where}: configuration key {key!r} is missing")
            else:
                config[key] = copy.deepcopy(default)
        self.config = config

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "configuration": copy.deepcopy(self.config)}

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Logical size after this op; raises RecipeError when the op cannot apply."""
        return size

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        return []

    def advance(self, geo: Geo, params: Sequence[int]) -> Geo:
        return geo

    def adjust(self, image: torch.Tensor, params: Sequence[int]) -> torch.Tensor:
        return image


OPS: Registry[type[Op]] = Registry("op", RecipeError)


def register(cls: type[Op]) -> type[Op]:
    """Make ``cls`` usable in recipes under ``cls.name`` (class decorator; a name is registered once)."""
    return OPS.add(cls.name, cls)


def list_ops() -> list[str]:
    """Names of the ops a recipe may use."""
    return sorted(OPS)


@register
class RandomCrop(Op):
    """torchvision's RandomCrop: pad by ``padding`` (constant ``fill``), crop ``size``.

    Params: ``top``, ``left`` of the crop in the padded image.
    """

    name = "random_crop"
    keys = {"size": (size, _REQUIRED), "padding": (non_negative_int, 0), "fill": (int_in(0, 255), 0)}
    param_keys = ("top", "left")

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        (h, w), pad = self.config["size"], self.config["padding"]
        if h > size[0] + 2 * pad or w > size[1] + 2 * pad:
            raise RecipeError(
                f"{self.where}: a {h}x{w} crop does not fit a {size[0]}x{size[1]} image padded by {pad}; "
                "raise padding or resize first"
            )
        return (h, w)

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        (h, w), pad = self.config["size"], self.config["padding"]
        top = int(rng.integers(0, size[0] + 2 * pad - h, endpoint=True))
        left = int(rng.integers(0, size[1] + 2 * pad - w, endpoint=True))
        return [top, left]

    def advance(self, geo: Geo, params: Sequence[int]) -> Geo:
        (h, w), pad = self.config["size"], self.config["padding"]
        return geo.crop(params[0] - pad, params[1] - pad, h, w, fill=self.config["fill"])


@register
class RandomResizedCrop(Op):
    """torchvision's RandomResizedCrop, its ``get_params`` drawn from the view's generator.

    Params: ``top``, ``left``, ``height``, ``width`` of the box before resizing to ``size``.
    """

    name = "random_resized_crop"
    keys = {
        "size": (size, _REQUIRED),
        "scale": (_positive_range, [0.08, 1.0]),
        "ratio": (_positive_range, [3.0 / 4.0, 4.0 / 3.0]),
    }
    param_keys = ("top", "left", "height", "width")

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = self.config["size"]
        return (h, w)

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        height, width = size
        area = height * width
        lo_scale, hi_scale = self.config["scale"]
        lo_ratio, hi_ratio = self.config["ratio"]
        log_ratio = (math.log(lo_ratio), math.log(hi_ratio))
        for _ in range(10):
            target_area = area * rng.uniform(lo_scale, hi_scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h, endpoint=True))
                left = int(rng.integers(0, width - w, endpoint=True))
                return [top, left, h, w]
        # torchvision's fallback: the central crop closest to the allowed ratios.
        in_ratio = width / height
        if in_ratio < lo_ratio:
            w, h = width, int(round(width / lo_ratio))
        elif in_ratio > hi_ratio:
            h, w = height, int(round(height * hi_ratio))
        else:
            h, w = height, width
        return [(height - h) // 2, (width - w) // 2, h, w]

    def advance(self, geo: Geo, params: Sequence[int]) -> Geo:
        top, left, h, w = params
        if h < 1 or w < 1:
            raise RecipeError(f"{self.where}: recorded box height={h}, width={w} is empty")
        out_h, out_w = self.config["size"]
        return geo.crop(top, left, h, w)._replace(size=(out_h, out_w))


@register
class HorizontalFlip(Op):
    """Mirror left-right with probability ``p``. Params: ``flip`` (0 or 1)."""

    name = "horizontal_flip"
    keys = {"p": (fraction, 0.5)}
    param_keys = ("flip",)

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        # Always one draw, even for p in {0, 1}, so the stream shape is fixed.
        return [int(rng.random() < self.config["p"])]

    def advance(self, geo: Geo, params: Sequence[int]) -> Geo:
        return geo._replace(flip=geo.flip != bool(params[0]))


@register
class Resize(Op):
    """Resize to ``[H, W]``, or the shorter side to ``S`` (torchvision's rule). No params.

    Only the logical size changes: pixels are resampled once, at render time.
    """

    name = "resize"
    keys = {"size": (_resize_size, _REQUIRED)}

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        target = self.config["size"]
        if isinstance(target, list):
            return (target[0], target[1])
        h, w = size
        short, long = (h, w) if h <= w else (w, h)
        # torchvision's _compute_resized_output_size: the long side truncates.
        new_short, new_long = target, int(target * long / short)
        return (new_short, new_long) if h <= w else (new_long, new_short)

    def advance(self, geo: Geo, params: Sequence[int]) -> Geo:
        return geo._replace(size=self.out_size(geo.size))


@register
class CenterCrop(Op):
    """Crop ``size`` at the centre (torchvision's rounding); a larger crop pads. No params."""

    name = "center_crop"
    keys = {"size": (size, _REQUIRED)}

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = self.config["size"]
        return (h, w)

    def advance(self, geo: Geo, params: Sequence[int]) -> Geo:
        h, w = self.config["size"]
        top = int(round((geo.size[0] - h) / 2.0))
        left = int(round((geo.size[1] - w) / 2.0))
        return geo.crop(top, left, h, w)


_JITTER = ("brightness", "contrast", "saturation", "hue")
_PER_MILLE = 1000


@register
class ColorJitter(Op):
    """torchvision's ColorJitter with factors drawn as integers per mille.

    Params: ``brightness``, ``contrast``, ``saturation`` (factor x 1000),
    ``hue`` (shift x 1000), then ``order0..order3``, the permutation of
    (0 brightness, 1 contrast, 2 saturation, 3 hue) in which they apply.
    An adjustment left off records its identity (1000, or 0 for hue).
    Saturation and hue are skipped on 1-channel images: they are identities there.
    """

    name = "color_jitter"
    keys = {
        "brightness": (_jitter, None),
        "contrast": (_jitter, None),
        "saturation": (_jitter, None),
        "hue": (_hue, None),
    }
    param_keys = (*_JITTER, "order0", "order1", "order2", "order3")
    photometric = True

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        order = [int(k) for k in rng.permutation(4)]
        factors = []
        for key in _JITTER:
            bounds = self.config[key]
            if bounds is None:
                factors.append(0 if key == "hue" else _PER_MILLE)
                continue
            lo, hi = (int(round(b * _PER_MILLE)) for b in bounds)
            factors.append(int(rng.integers(lo, hi, endpoint=True)))
        return factors + order

    def adjust(self, image: torch.Tensor, params: Sequence[int]) -> torch.Tensor:
        adjusters = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        for k in params[4:8]:
            if not 0 <= k < 4:
                raise RecipeError(
                    f"{self.where}: recorded order {list(params[4:8])} is not a permutation of 0..3"
                )
            if self.config[_JITTER[k]] is None or (k >= 2 and image.shape[-3] == 1):
                continue
            image = adjusters[k](image, params[k] / _PER_MILLE)
        return image


def compile_ops(recipe_name: str, ops: Sequence[Any], what: str = "ops") -> tuple[Op, ...]:
    """Validate op dicts into op objects, naming the op in every error."""
    if isinstance(ops, (str, bytes, Mapping)) or not isinstance(ops, Sequence):
        raise RecipeError(f"recipe {recipe_name!r}: {what} must be a list of {{'name', 'configuration'}} objects")
    compiled: list[Op] = []
    for index, op in enumerate(ops):
        where = f"recipe {recipe_name!r}, {'op' if what == 'ops' else what + ' op'} {index}"
        if not isinstance(op, Mapping) or not isinstance(op.get("name"), str):
            raise RecipeError(
                f"{where}: expected an object {{'name': ..., 'configuration': {{...}}}}, got {op!r}"
            )
        extra = sorted(set(op) - {"name", "configuration"})
        if extra:
            raise RecipeError(
                f"{where} ({op['name']}): unknown key(s) {', '.join(extra)}; expected name, configuration"
            )
        cls = OPS.get(op["name"], where=where)
        configuration = op.get("configuration", {})
        if not isinstance(configuration, Mapping):
            raise RecipeError(f"{where} ({cls.name}): configuration must be an object, got {configuration!r}")
        compiled.append(cls(configuration, f"{where} ({cls.name})"))
    fills = {op.config["fill"] for op in compiled if isinstance(op, RandomCrop)}
    if len(fills) > 1:
        # One box, one fill: the padding of every op is the same region type.
        raise RecipeError(
            f"recipe {recipe_name!r}: random_crop ops disagree on fill ({sorted(fills)}); use one value"
        )
    return tuple(compiled)
