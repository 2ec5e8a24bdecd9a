"""Replayable augmented views: a view is a pure function of ``(seed, sample, view)``.

This module carries the view-replay contract (``/work/shared/DESIGN.md``): the
image a student sees for ``(sample i, view v)`` is the image the teacher saw
when its logits for ``(i, v)`` were stored. Three rules make that hold:

1. Every random draw for a view comes from :func:`view_generator`, seeded by
   ``(seed, sample, view)`` alone, and happens in :func:`sample_params` only.
2. :func:`sample_params` returns integers (crop offsets, flip flags, jitter
   factors in per-mille); :func:`apply_params` turns them into pixels with no
   randomness, so recorded parameters re-render a view exactly.
3. A :class:`Recipe` is JSON data, hashed; the geometric ops of a recipe
   compose into one exact crop box in source pixels, and each consumer
   (:class:`Render`) resizes that box straight to its own size, so a teacher
   at 64x64 and a student at 32x32 see the same geometric view with a single
   resampling each.

Formats and encodings are documented in ``docs/data-and-views.md``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from kdcache.errors import RecipeError, SpecError

if TYPE_CHECKING:
    from kdcache.data import DataSource

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
    "sample_params",
    "view_generator",
    "view_geometry",
]

# Version of the recipe JSON and of the parameter encoding of every op. It is
# part of the hashed JSON, so a change of encoding changes every recipe hash.
RECIPE_FORMAT = 1


# --------------------------------------------------------------------------- seeds


def _non_negative(value: Any, what: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise SpecError(f"{what} must be a non-negative integer, got {value!r}") from None
    if number < 0:
        raise SpecError(f"{what} must be a non-negative integer, got {number}")
    return number


def view_generator(seed: int, sample: int, view: int) -> np.random.Generator:
    """The generator every random draw of view ``(sample, view)`` comes from.

    ``np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, sample, view])))``:
    this derivation is a stable contract (docs/data-and-views.md). It depends on
    nothing else, so batch size, workers, rank, order and epoch cannot change a view.
    """
    entropy = [_non_negative(seed, "seed"), _non_negative(sample, "sample"), _non_negative(view, "view")]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


# --------------------------------------------------------------------------- config parsing helpers


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(float(v))


def _pair(v: Any, where: str, key: str, check: Callable[[Any], bool], expect: str) -> list[Any]:
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(check(x) for x in v):
        raise RecipeError(f"{where}: {key}={v!r} is not {expect}")
    return list(v)


def _p_size(v: Any, where: str, key: str) -> list[int]:
    """A crop or output size: ``S`` (square) or ``[H, W]``, positive integers."""
    if _is_int(v):
        v = [v, v]
    h, w = _pair(v, where, key, _is_int, "an integer or a pair [H, W] of integers")
    if h < 1 or w < 1:
        raise RecipeError(f"{where}: {key}={v!r} must be positive")
    return [int(h), int(w)]


def _p_resize_size(v: Any, where: str, key: str) -> int | list[int]:
    """``S`` (the shorter side, as torchvision's Resize) or ``[H, W]``."""
    if _is_int(v):
        if v < 1:
            raise RecipeError(f"{where}: {key}={v!r} must be positive")
        return int(v)
    return _p_size(v, where, key)


def _p_padding(v: Any, where: str, key: str) -> int:
    if not _is_int(v) or v < 0:
        raise RecipeError(f"{where}: {key}={v!r} is not a non-negative integer")
    return int(v)


def _p_fill(v: Any, where: str, key: str) -> int:
    if not _is_int(v) or not 0 <= v <= 255:
        raise RecipeError(f"{where}: {key}={v!r} is not an integer 0..255 (a uint8 pixel value)")
    return int(v)


def _p_probability(v: Any, where: str, key: str) -> float:
    if not _is_number(v) or not 0.0 <= float(v) <= 1.0:
        raise RecipeError(f"{where}: {key}={v!r} is not a probability in [0, 1]")
    return float(v)


def _p_positive_range(v: Any, where: str, key: str) -> list[float]:
    lo, hi = _pair(v, where, key, _is_number, "a pair [min, max] of numbers")
    if not 0.0 < float(lo) <= float(hi):
        raise RecipeError(f"{where}: {key}={v!r} needs 0 < min <= max")
    return [float(lo), float(hi)]


def _p_jitter(v: Any, where: str, key: str) -> list[float] | None:
    """torchvision's ColorJitter convention: ``b`` means ``[max(0, 1-b), 1+b]``; 0 or null: off."""
    if v is None:
        return None
    if _is_number(v):
        if float(v) < 0:
            raise RecipeError(f"{where}: {key}={v!r} must be >= 0")
        return None if float(v) == 0 else [max(0.0, 1.0 - float(v)), 1.0 + float(v)]
    lo, hi = _pair(v, where, key, _is_number, "null, a number or a pair [min, max]")
    if not 0.0 <= float(lo) <= float(hi):
        raise RecipeError(f"{where}: {key}={v!r} needs 0 <= min <= max")
    return [float(lo), float(hi)]


def _p_hue(v: Any, where: str, key: str) -> list[float] | None:
    """``h`` means ``[-h, h]``, within [-0.5, 0.5]; 0 or null: off."""
    if v is None:
        return None
    if _is_number(v):
        if not 0.0 <= float(v) <= 0.5:
            raise RecipeError(f"{where}: {key}={v!r} must be in [0, 0.5]")
        return None if float(v) == 0 else [-float(v), float(v)]
    lo, hi = _pair(v, where, key, _is_number, "null, a number or a pair [min, max]")
    if not -0.5 <= float(lo) <= float(hi) <= 0.5:
        raise RecipeError(f"{where}: {key}={v!r} needs -0.5 <= min <= max <= 0.5")
    return [float(lo), float(hi)]


_REQUIRED = object()


# --------------------------------------------------------------------------- geometry


class _Geo(NamedTuple):
    """The current (logical) image as an exact box in source pixel coordinates.

    ``top``/``left``/``height``/``width`` are Fractions, so composing crops and
    resizes loses nothing; ``size`` is the logical image size a
    torchvision-style pipeline would have at this point.
    """

    top: Fraction
    left: Fraction
    height: Fraction
    width: Fraction
    size: tuple[int, int]
    flip: bool
    fill: int

    def crop(self, top: int, left: int, height: int, width: int, fill: int | None = None) -> _Geo:
        """Crop in logical coordinates (may reach outside: padding)."""
        h_now, w_now = self.size
        if self.flip:  # a column range of the mirrored image, mapped back
            left = w_now - left - width
        sy = self.height / h_now
        sx = self.width / w_now
        return self._replace(
            top=self.top + top * sy,
            left=self.left + left * sx,
            height=height * sy,
            width=width * sx,
            size=(height, width),
            fill=self.fill if fill is None else fill,
        )


@dataclass(frozen=True)
class ViewGeometry:
    """Where a view comes from in its source image, in whole source pixels.

    The box may reach outside the image (padding), which shows ``fill``.
    ``size`` is the recipe's own output size, used when a Render has none.
    """

    top: int
    left: int
    height: int
    width: int
    flip: bool
    size: tuple[int, int]
    fill: int


# --------------------------------------------------------------------------- ops


class _Op:
    """One named op of a recipe, with its validated configuration.

    ``draw`` is the only place an op touches randomness; ``advance`` and
    ``adjust`` are pure functions of the drawn integers.
    """

    name: ClassVar[str]
    keys: ClassVar[dict[str, tuple[Callable[[Any, str, str], Any], Any]]]
    param_keys: ClassVar[tuple[str, ...]] = ()
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
                config[key] = parse(configuration[key], where, key)
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

    def advance(self, geo: _Geo, params: Sequence[int]) -> _Geo:
        return geo

    def adjust(self, image: torch.Tensor, params: Sequence[int]) -> torch.Tensor:
        return image


_OPS: dict[str, type[_Op]] = {}


def _register(cls: type[_Op]) -> type[_Op]:
    if cls.name in _OPS:
        raise RuntimeError(f"op {cls.name!r} registered twice")
    _OPS[cls.name] = cls
    return cls


def list_ops() -> list[str]:
    """Names of the ops a recipe may use."""
    return sorted(_OPS)


@_register
class _RandomCrop(_Op):
    """torchvision's RandomCrop: pad by ``padding`` (constant ``fill``), crop ``size``.

    Params: ``top``, ``left`` of the crop in the padded image.
    """

    name = "random_crop"
    keys = {"size": (_p_size, _REQUIRED), "padding": (_p_padding, 0), "fill": (_p_fill, 0)}
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

    def advance(self, geo: _Geo, params: Sequence[int]) -> _Geo:
        (h, w), pad = self.config["size"], self.config["padding"]
        return geo.crop(params[0] - pad, params[1] - pad, h, w, fill=self.config["fill"])


@_register
class _RandomResizedCrop(_Op):
    """torchvision's RandomResizedCrop, its ``get_params`` drawn from the view's generator.

    Params: ``top``, ``left``, ``height``, ``width`` of the box before resizing to ``size``.
    """

    name = "random_resized_crop"
    keys = {
        "size": (_p_size, _REQUIRED),
        "scale": (_p_positive_range, [0.08, 1.0]),
        "ratio": (_p_positive_range, [3.0 / 4.0, 4.0 / 3.0]),
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

    def advance(self, geo: _Geo, params: Sequence[int]) -> _Geo:
        top, left, h, w = params
        if h < 1 or w < 1:
            raise RecipeError(f"{self.where}: recorded box height={h}, width={w} is empty")
        out_h, out_w = self.config["size"]
        return geo.crop(top, left, h, w)._replace(size=(out_h, out_w))


@_register
class _HorizontalFlip(_Op):
    """Mirror left-right with probability ``p``. Params: ``flip`` (0 or 1)."""

    name = "horizontal_flip"
    keys = {"p": (_p_probability, 0.5)}
    param_keys = ("flip",)

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        # Always one draw, even for p in {0, 1}, so the stream shape is fixed.
        return [int(rng.random() < self.config["p"])]

    def advance(self, geo: _Geo, params: Sequence[int]) -> _Geo:
        return geo._replace(flip=geo.flip != bool(params[0]))


@_register
class _Resize(_Op):
    """Resize to ``[H, W]``, or the shorter side to ``S`` (torchvision's rule). No params.

    Only the logical size changes: pixels are resampled once, at render time.
    """

    name = "resize"
    keys = {"size": (_p_resize_size, _REQUIRED)}

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        target = self.config["size"]
        if isinstance(target, list):
            return (target[0], target[1])
        h, w = size
        short, long = (h, w) if h <= w else (w, h)
        # torchvision's _compute_resized_output_size: the long side truncates.
        new_short, new_long = target, int(target * long / short)
        return (new_short, new_long) if h <= w else (new_long, new_short)

    def advance(self, geo: _Geo, params: Sequence[int]) -> _Geo:
        return geo._replace(size=self.out_size(geo.size))


@_register
class _CenterCrop(_Op):
    """Crop ``size`` at the centre (torchvision's rounding); a larger crop pads. No params."""

    name = "center_crop"
    keys = {"size": (_p_size, _REQUIRED)}

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = self.config["size"]
        return (h, w)

    def advance(self, geo: _Geo, params: Sequence[int]) -> _Geo:
        h, w = self.config["size"]
        top = int(round((geo.size[0] - h) / 2.0))
        left = int(round((geo.size[1] - w) / 2.0))
        return geo.crop(top, left, h, w)


_JITTER = ("brightness", "contrast", "saturation", "hue")
_PER_MILLE = 1000


@_register
class _ColorJitter(_Op):
    """torchvision's ColorJitter with factors drawn as integers per mille.

    Params: ``brightness``, ``contrast``, ``saturation`` (factor x 1000),
    ``hue`` (shift x 1000), then ``order0..order3``, the permutation of
    (0 brightness, 1 contrast, 2 saturation, 3 hue) in which they apply.
    An adjustment left off records its identity (1000, or 0 for hue).
    Saturation and hue are skipped on 1-channel images: they are identities there.
    """

    name = "color_jitter"
    keys = {
        "brightness": (_p_jitter, None),
        "contrast": (_p_jitter, None),
        "saturation": (_p_jitter, None),
        "hue": (_p_hue, None),
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


def _compile(recipe_name: str, ops: Sequence[Any]) -> tuple[_Op, ...]:
    """Validate op dicts into op objects, naming the op in every error."""
    if isinstance(ops, (str, bytes, Mapping)) or not isinstance(ops, Sequence):
        raise RecipeError(f"recipe {recipe_name!r}: ops must be a list of {{'name', 'configuration'}} objects")
    compiled: list[_Op] = []
    for index, op in enumerate(ops):
        where = f"recipe {recipe_name!r}, op {index}"
        if not isinstance(op, Mapping) or not isinstance(op.get("name"), str):
            raise RecipeError(
                f"{where}: expected an object {{'name': ..., 'configuration': {{...}}}}, got {op!r}"
            )
        extra = sorted(set(op) - {"name", "configuration"})
        if extra:
            raise RecipeError(
                f"{where} ({op['name']}): unknown key(s) {', '.join(extra)}; expected name, configuration"
            )
        cls = _OPS.get(op["name"])
        if cls is None:
            raise RecipeError(f"{where}: unknown op {op['name']!r}; known ops: {', '.join(list_ops())}")
        configuration = op.get("configuration", {})
        if not isinstance(configuration, Mapping):
            raise RecipeError(f"{where} ({cls.name}): configuration must be an object, got {configuration!r}")
        compiled.append(cls(configuration, f"{where} ({cls.name})"))
    fills = {op.config["fill"] for op in compiled if isinstance(op, _RandomCrop)}
    if len(fills) > 1:
        # One box, one fill: the padding of every op is the same region type.
        raise RecipeError(
            f"recipe {recipe_name!r}: random_crop ops disagree on fill ({sorted(fills)}); use one value"
        )
    return tuple(compiled)


# --------------------------------------------------------------------------- Render and Recipe


def _floats(v: Any, what: str) -> tuple[float, ...]:
    if _is_number(v):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or not all(_is_number(x) for x in v):
        raise RecipeError(f"render: {what}={v!r} is not a non-empty list of numbers")
    return tuple(float(x) for x in v)


@dataclass(frozen=True)
class Render:
    """How one consumer (teacher or student) sees a view.

    ``size``: output ``(H, W)``, or None for the recipe's own output size.
    ``channels``: None keeps the source's; 3 repeats a grayscale image; 1 turns
    RGB to grayscale. ``mean``/``std`` normalise the [0, 1] float image; a
    single value applies to every channel.
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: int | None = None

    def __post_init__(self) -> None:
        size = self.size
        if size is not None:
            size = tuple(_p_size(size, "render", "size"))
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        if len(mean) != len(std):
            raise RecipeError(f"render: mean has {len(mean)} values but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise RecipeError(f"render: std={list(std)} must be positive")
        if self.channels is not None and (not _is_int(self.channels) or self.channels not in (1, 3)):
            raise RecipeError(f"render: channels={self.channels!r}; expected null, 1 or 3")
        if self.channels is not None and len(mean) not in (1, self.channels):
            raise RecipeError(f"render: {len(mean)} mean/std values for {self.channels} channels")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "channels", None if self.channels is None else int(self.channels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``size`` as ``[H, W]`` or null)."""
        return {
            "size": None if self.size is None else list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Render:
        """Validate a dict from :meth:`to_dict` (missing keys take the defaults)."""
        if not isinstance(d, Mapping):
            raise RecipeError(f"render must be an object, got {d!r}")
        extra = sorted(set(d) - {"size", "mean", "std", "channels"})
        if extra:
            raise RecipeError(f"render: unknown key(s) {', '.join(extra)}; expected size, mean, std, channels")
        return cls(**d)


@dataclass(frozen=True)
class Recipe:
    """An augmentation recipe: named ops and a default :class:`Render`.

    Constructing one validates it; ``ops`` is normalised (every configuration
    key present, sizes as ``[H, W]``), so equal recipes have equal JSON and hash.
    """

    name: str
    ops: tuple[dict[str, Any], ...] = ()
    render: Render = field(default_factory=Render)
    _compiled: tuple[_Op, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise RecipeError(f"recipe name must be a non-empty string, got {self.name!r}")
        compiled = _compile(self.name, self.ops)
        render = self.render
        if isinstance(render, Mapping):
            render = Render.from_dict(render)
        if not isinstance(render, Render):
            raise RecipeError(f"recipe {self.name!r}: render must be a Render, got {render!r}")
        object.__setattr__(self, "ops", tuple(op.to_dict() for op in compiled))
        object.__setattr__(self, "render", render)
        object.__setattr__(self, "_compiled", compiled)

    def __hash__(self) -> int:
        return hash(self.to_json())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with the format version of the parameter encoding."""
        return {
            "format": RECIPE_FORMAT,
            "name": self.name,
            "ops": copy.deepcopy(list(self.ops)),
            "render": self.render.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        """Validate a dict (from :meth:`to_dict` or a JSON file) into a Recipe."""
        if not isinstance(d, Mapping):
            raise RecipeError(f"a recipe must be a JSON object, got {type(d).__name__}")
        extra = sorted(set(d) - {"format", "name", "ops", "render"})
        if extra:
            raise RecipeError(f"recipe: unknown key(s) {', '.join(extra)}; expected format, name, ops, render")
        if d.get("format", RECIPE_FORMAT) != RECIPE_FORMAT:
            raise RecipeError(
                f"recipe format {d.get('format')!r} is not supported; this kdcache reads format {RECIPE_FORMAT}"
            )
        if "name" not in d:
            raise RecipeError("recipe: key 'name' is missing")
        ops = d.get("ops", [])
        if isinstance(ops, list):
            ops = tuple(ops)
        return cls(name=d["name"], ops=ops, render=Render.from_dict(d.get("render", {})))

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces; what :meth:`hash` covers."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def hash(self) -> str:
        """``"sha256:<hex>"`` of :meth:`to_json`, stable across runs and machines."""
        return "sha256:" + hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def param_names(self) -> list[str]:
        """Names of the P integers :func:`sample_params` returns: ``"<op index>.<op>.<param>"``."""
        return [f"{i}.{op.name}.{key}" for i, op in enumerate(self._compiled) for key in op.param_keys]

    def eval_recipe(self) -> Recipe:
        """The deterministic recipe validation images are rendered with (it takes no params)."""
        return Recipe(name=f"{self.name}.eval", ops=(), render=self.render)

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The recipe's own output ``(H, W)`` for a source of ``image_size``.

        It never depends on random draws; raises RecipeError when an op
        cannot apply to an image of that size.
        """
        size = _check_image_size(image_size)
        for op in self._compiled:
            size = op.out_size(size)
        return size


_PRESETS_PACKAGE = "kdcache.recipes"


def list_presets() -> list[str]:
    """Names of the preset recipes shipped in ``kdcache/recipes/*.json``."""
    folder = resources.files(_PRESETS_PACKAGE)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_recipe(name_or_path: str) -> Recipe:
    """A preset by name (``cifar``, ``imagenet``, ``fashion-mnist``, ``none``) or a JSON file.

    A file without a ``name`` takes its file name's stem.
    """
    presets = list_presets()
    if name_or_path in presets:
        where = f"preset {name_or_path!r}"
        text = resources.files(_PRESETS_PACKAGE).joinpath(f"{name_or_path}.json").read_text("utf-8")
        stem = name_or_path
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise RecipeError(
                f"unknown recipe {name_or_path!r}: neither a preset ({', '.join(presets)}) nor a JSON file"
            )
        where, stem = str(path), path.stem
        text = path.read_text("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecipeError(f"recipe {where} is not valid JSON: {err}") from None
    if isinstance(data, dict) and "name" not in data:
        data = {**data, "name": stem}
    return Recipe.from_dict(data)


# --------------------------------------------------------------------------- sampling and applying


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or not all(_is_int(s) and s >= 1 for s in image_size):
        raise SpecError(f"image_size must be (H, W) of positive integers, got {image_size!r}")
    return (int(image_size[0]), int(image_size[1]))


def sample_params(
    recipe: Recipe, seed: int, sample: int, view: int, image_size: tuple[int, int]
) -> np.ndarray:
    """Draw the parameters of view ``(sample, view)``: an int32 vector ``(P,)``.

    The only function that draws randomness for a view; its values are named
    by ``recipe.param_names()`` and are recorded in the store.
    """
    rng = view_generator(seed, sample, view)
    size = _check_image_size(image_size)
    params: list[int] = []
    for op in recipe._compiled:
        next_size = op.out_size(size)  # raises before drawing if the op cannot apply
        params.extend(op.draw(rng, size))
        size = next_size
    return np.asarray(params, dtype=np.int32)


def _split_params(recipe: Recipe, params: Any) -> list[Sequence[int]]:
    flat = np.asarray(params)
    expected = len(recipe.param_names())
    if flat.shape != (expected,) or not np.issubdtype(flat.dtype, np.integer):
        raise RecipeError(
            f"recipe {recipe.name!r} takes {expected} integer params; got shape {flat.shape} of {flat.dtype}"
        )
    values = [int(v) for v in flat]
    out, start = [], 0
    for op in recipe._compiled:
        out.append(values[start : start + len(op.param_keys)])
        start += len(op.param_keys)
    return out


def view_geometry(recipe: Recipe, params: Any, image_size: tuple[int, int]) -> ViewGeometry:
    """The exact source box, flip and output size that ``params`` select.

    Box edges are rounded (half to even) to whole source pixels only here, at
    the end, so composed crops and resizes do not accumulate rounding.
    """
    h, w = _check_image_size(image_size)
    geo = _Geo(Fraction(0), Fraction(0), Fraction(h), Fraction(w), (h, w), False, 0)
    for op, p in zip(recipe._compiled, _split_params(recipe, params)):
        geo = op.advance(geo, p)
    top, left = round(geo.top), round(geo.left)
    height = max(1, round(geo.top + geo.height) - top)
    width = max(1, round(geo.left + geo.width) - left)
    return ViewGeometry(top, left, height, width, geo.flip, geo.size, geo.fill)


def _crop_box(image: torch.Tensor, geo: ViewGeometry) -> torch.Tensor:
    """The box's pixels; parts outside the image show ``geo.fill``."""
    _, h, w = image.shape
    t0, l0 = max(geo.top, 0), max(geo.left, 0)
    t1, l1 = min(geo.top + geo.height, h), min(geo.left + geo.width, w)
    if (t0, l0, t1, l1) == (geo.top, geo.left, geo.top + geo.height, geo.left + geo.width):
        return F.crop(image, geo.top, geo.left, geo.height, geo.width)
    out = torch.full((image.shape[0], geo.height, geo.width), geo.fill, dtype=image.dtype)
    if t0 < t1 and l0 < l1:
        out[:, t0 - geo.top : t1 - geo.top, l0 - geo.left : l1 - geo.left] = image[:, t0:t1, l0:l1]
    return out


def _prepare(recipe: Recipe, image: torch.Tensor, params: Any) -> tuple[torch.Tensor, tuple[int, int]]:
    """The view at source resolution: box, flip, photometric ops; float32 in [0, 1].

    Shared by every Render of a view, so renders differ only in the final
    resize, channel count and normalisation.
    """
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3:
        raise TypeError(f"expected a uint8 image tensor (C, H, W), got {getattr(image, 'dtype', type(image))}")
    split = _split_params(recipe, params)
    geo = view_geometry(recipe, params, (image.shape[1], image.shape[2]))
    x = F.to_dtype(_crop_box(image, geo), torch.float32, scale=True)
    if geo.flip:
        x = F.horizontal_flip(x)
    # Photometric ops run on the source-resolution crop, after the geometry,
    # so every render gets the same colours (e.g. contrast's mean) before its
    # own single resize.
    for op, p in zip(recipe._compiled, split):
        if op.photometric:
            x = op.adjust(x, p)
    return x, geo.size


def _render(x: torch.Tensor, recipe_size: tuple[int, int], render: Render) -> torch.Tensor:
    size = render.size or recipe_size
    if tuple(x.shape[-2:]) != size:
        x = F.resize(x, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    if render.channels == 3 and x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    elif render.channels == 1 and x.shape[0] == 3:
        x = F.rgb_to_grayscale(x)
    channels = x.shape[0]
    mean, std = render.mean, render.std
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    if len(mean) != channels:
        raise RecipeError(
            f"render: {len(mean)} mean/std values for a {channels}-channel image; set channels or mean/std"
        )
    return F.normalize(x, list(mean), list(std)).contiguous()


def apply_params(recipe: Recipe, image: torch.Tensor, params: Any, render: Render) -> torch.Tensor:
    """Render view ``params`` of ``image`` (uint8 ``(C, H, W)``) as float32 ``(C', H', W')``.

    Pure: the same inputs give the same bits. The source box is resized
    straight to ``render.size`` (antialiased bilinear), never resampled twice.
    """
    x, recipe_size = _prepare(recipe, image, params)
    return _render(x, recipe_size, render)


# --------------------------------------------------------------------------- dataset


class ViewDataset(torch.utils.data.Dataset):
    """Views of a DataSource, keyed by ``(sample, view)`` or ``(sample, view, params)``.

    Use with a ``batch_sampler`` yielding lists of keys; the default collate
    stacks the items. An item is
    ``{"sample", "view", "label", "params": int32 (P,), "images": [float32 per render]}``.
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
        self.seed = _non_negative(seed, "seed")
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
            _non_negative(view, "view")
            params = _recorded_params(self.recipe, key[2], sample, view)
        else:
            params = sample_params(self.recipe, self.seed, sample, view, (image.shape[1], image.shape[2]))
        x, recipe_size = _prepare(self.recipe, image, params)
        return {
            "sample": sample,
            "view": view,
            "label": int(self.source.labels[sample]),
            "params": torch.from_numpy(params),
            "images": [_render(x, recipe_size, r) for r in self.renders],
        }


def _recorded_params(recipe: Recipe, params: Any, sample: int, view: int) -> np.ndarray:
    """Recorded params as the int32 vector :func:`sample_params` would return.

    Refuses anything but integers of the recipe's length (floats, bools, a
    wrong count, values outside int32): a silent cast would render a view
    the store never recorded.
    """
    if isinstance(params, torch.Tensor):
        params = params.detach().cpu().numpy()
    flat = np.asarray(params)
    expected = len(recipe.param_names())
    if flat.shape != (expected,) or not np.issubdtype(flat.dtype, np.integer):
        raise RecipeError(
            f"view ({sample}, {view}): recipe {recipe.name!r} takes {expected} integer params; "
            f"got shape {flat.shape} of {flat.dtype}"
        )
    info = np.iinfo(np.int32)
    if flat.size and (flat.min() < info.min or flat.max() > info.max):
        raise RecipeError(f"view ({sample}, {view}): recorded params {flat.tolist()} do not fit int32")
    return flat.astype(np.int32, copy=True)


class EvalDataset(torch.utils.data.Dataset):
    """Validation images of a DataSource, keyed by int sample index.

    An item is ``{"sample", "label", "images": [float32]}``: the image
    rendered by the recipe's evaluation geometry (no randomness) with one
    Render, the student's, so it is evaluated at its training size and
    normalisation. Use with a ``batch_sampler`` of lists of ints.
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
        return {
            "sample": sample,
            "label": int(self.source.labels[sample]),
            "images": [apply_params(self._eval, image, _NO_PARAMS, self.render)],
        }


_NO_PARAMS = np.zeros(0, dtype=np.int32)


def eval_dataset(source: DataSource, recipe: Recipe, render: Render) -> torch.utils.data.Dataset:
    """Validation images of ``source`` as ``recipe`` says to render them, at ``render``.

    Keyed by int sample index; items ``{"sample", "label", "images": [tensor]}``.
    """
    return EvalDataset(source, recipe, render)
