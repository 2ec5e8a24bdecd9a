"""RandAugment, TrivialAugment (wide) and AutoAugment as recorded, replayable recipe ops.

torchvision's classes draw from torch's global generator and apply at once.
Here each op draws its choices from the view's generator, records them, and
renders them with ``torchvision.transforms.v2.functional`` exactly as
torchvision's ``_AutoAugmentBase`` does (same functional, same arguments,
uint8 image, nearest interpolation). Which random calls torchvision makes is
its own business; what must agree is the op applied and its magnitude, which
the tests check op by op against torchvision's own tables and functional.

Every slot records three integers (docs/data-and-views.md):

``op<k>``
    the index of the drawn op in the op space (:data:`SPACES`, in
    torchvision's order);
``magnitude<k>``
    the signed magnitude in hundredths of a bin: ``|m| / 100`` is the
    position in the op's magnitude table (``num_magnitude_bins`` entries),
    the sign is the op's sign. Ops without a magnitude record 0, and so does a
    signed op at bin 0 (its value is 0 either way);
``applied<k>``
    1 if the op was applied, 0 if its probability said no.

A whole-bin position renders torchvision's own table value (a float32
``linspace`` entry), so ``rand_augment`` without magnitude noise applies
exactly what ``torchvision.transforms.v2.RandAugment`` would for the same
choice. A fractional position (``magnitude_std``, timm's per-op noise) is
interpolated linearly between the two neighbouring table entries.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from kdcache.errors import RecipeError
from kdcache.validate import Invalid, choice, fraction, int_in, is_int, non_negative
from kdcache.views.ops import register
from kdcache.views.pixel import PixelOp

if TYPE_CHECKING:
    from kdcache.views.recipe import Render

__all__ = ["AUTO_AUGMENT_POLICIES", "MAGNITUDE_SCALE", "SPACES", "OpKind", "apply_op", "op_value"]

MAGNITUDE_SCALE = 100
"""Recorded magnitudes are in 1/100 of a bin."""

@dataclass(frozen=True)
class OpKind:
    """One op of an op space: its torchvision name, its magnitude table and whether it is signed.

    ``table``: ``("linspace", lo, hi)`` is ``torch.linspace(lo, hi, bins)``;
    ``("linspace_width", f)`` / ``("linspace_height", f)`` is
    ``torch.linspace(0, f * width_or_height, bins)`` (translation in pixels);
    ``("posterize", d)`` is ``(8 - arange(bins) / ((bins - 1) / d)).round().int()``
    (bits kept); ``None``: the op takes no magnitude.
    """

    name: str
    table: tuple[Any, ...] | None
    signed: bool


def _kinds(*rows: tuple[str, tuple[Any, ...] | None, bool]) -> tuple[OpKind, ...]:
    return tuple(OpKind(*row) for row in rows)


_TRANSLATE = 150.0 / 331.0

# torchvision 0.29's op spaces (transforms/v2/_auto_augment.py), in its order.
# Copied, not read from torchvision's private tables, so a recorded op index
# keeps its meaning; tests/test_views_strong.py checks they still agree.
SPACES: dict[str, tuple[OpKind, ...]] = {
    "rand_augment": _kinds(
        ("Identity", None, False),
        ("ShearX", ("linspace", 0.0, 0.3), True),
        ("ShearY", ("linspace", 0.0, 0.3), True),
        ("TranslateX", ("linspace_width", _TRANSLATE), True),
        ("TranslateY", ("linspace_height", _TRANSLATE), True),
        ("Rotate", ("linspace", 0.0, 30.0), True),
        ("Brightness", ("linspace", 0.0, 0.9), True),
        ("Color", ("linspace", 0.0, 0.9), True),
        ("Contrast", ("linspace", 0.0, 0.9), True),
        ("Sharpness", ("linspace", 0.0, 0.9), True),
        ("Posterize", ("posterize", 4), False),
        ("Solarize", ("linspace", 1.0, 0.0), False),
        ("AutoContrast", None, False),
        ("Equalize", None, False),
    ),
    "trivial_augment": _kinds(
        ("Identity", None, False),
        ("ShearX", ("linspace", 0.0, 0.99), True),
        ("ShearY", ("linspace", 0.0, 0.99), True),
        ("TranslateX", ("linspace", 0.0, 32.0), True),
        ("TranslateY", ("linspace", 0.0, 32.0), True),
        ("Rotate", ("linspace", 0.0, 135.0), True),
        ("Brightness", ("linspace", 0.0, 0.99), True),
        ("Color", ("linspace", 0.0, 0.99), True),
        ("Contrast", ("linspace", 0.0, 0.99), True),
        ("Sharpness", ("linspace", 0.0, 0.99), True),
        ("Posterize", ("posterize", 6), False),
        ("Solarize", ("linspace", 1.0, 0.0), False),
        ("AutoContrast", None, False),
        ("Equalize", None, False),
    ),
    "auto_augment": _kinds(
        ("ShearX", ("linspace", 0.0, 0.3), True),
        ("ShearY", ("linspace", 0.0, 0.3), True),
        ("TranslateX", ("linspace_width", _TRANSLATE), True),
        ("TranslateY", ("linspace_height", _TRANSLATE), True),
        ("Rotate", ("linspace", 0.0, 30.0), True),
        ("Brightness", ("linspace", 0.0, 0.9), True),
        ("Color", ("linspace", 0.0, 0.9), True),
        ("Contrast", ("linspace", 0.0, 0.9), True),
        ("Sharpness", ("linspace", 0.0, 0.9), True),
        ("Posterize", ("posterize", 4), False),
        ("Solarize", ("linspace", 1.0, 0.0), False),
        ("AutoContrast", None, False),
        ("Equalize", None, False),
        ("Invert", None, False),
    ),
}

_AUTO_BINS = 10  # AutoAugment's magnitude ids index a 10-bin table

# torchvision 0.29's AutoAugment policies: 25 sub-policies of two (op, probability, magnitude id).
AUTO_AUGMENT_POLICIES: dict[str, tuple[tuple[tuple[str, float, int | None], ...], ...]] = {
    "imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
    "svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
}


# --------------------------------------------------------------------------- magnitudes and rendering


@functools.lru_cache(maxsize=1024)
def _table(kind: OpKind, bins: int, height: int, width: int) -> tuple[float, ...]:
    """The op's magnitude table, computed as torchvision computes it (float32 tensors), as floats."""
    assert kind.table is not None
    rule, *args = kind.table
    if rule == "linspace":
        values = torch.linspace(args[0], args[1], bins)
    elif rule == "linspace_width":
        values = torch.linspace(0.0, args[0] * width, bins)
    elif rule == "linspace_height":
        values = torch.linspace(0.0, args[0] * height, bins)
    else:  # posterize
        values = (8 - (torch.arange(bins) / ((bins - 1) / args[0]))).round().int()
    return tuple(float(v) for v in values)


def op_value(kind: OpKind, magnitude: int, bins: int, height: int, width: int) -> float:
    """The value the op applies for a recorded ``magnitude`` (signed hundredths of a bin).

    A whole bin is torchvision's table entry; a fraction interpolates the two
    neighbouring entries (posterize rounds the interpolated bit count, half
    to even, as its table does); the sign negates. 0.0 for ops without a table.
    """
    if kind.table is None:
        return 0.0
    bin_, rest = divmod(abs(magnitude), MAGNITUDE_SCALE)
    table = _table(kind, bins, height, width)
    if rest == 0:
        value = table[bin_]
    elif kind.table[0] == "posterize":
        value = float(round(8 - (abs(magnitude) / MAGNITUDE_SCALE) / ((bins - 1) / kind.table[1])))
    else:
        lo, hi = table[bin_], table[bin_ + 1]
        value = lo + (hi - lo) * (rest / MAGNITUDE_SCALE)
    return -value if magnitude < 0 else value


def apply_op(
    image: torch.Tensor, name: str, value: float, fill: int | float | list[float] | None
) -> torch.Tensor:
    """``name`` at ``value`` on a uint8 image: torchvision v2's ``_apply_image_or_video_transform``, spelled out.

    Nearest interpolation; geometric ops fill the area outside the image with
    ``fill`` (None: torchvision's default, zeros).
    """
    nearest = InterpolationMode.NEAREST
    if name == "Identity":
        return image
    if name == "ShearX":
        return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[math.degrees(math.atan(value)), 0.0], interpolation=nearest, fill=fill, center=[0, 0])
    if name == "ShearY":
        return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[0.0, math.degrees(math.atan(value))], interpolation=nearest, fill=fill, center=[0, 0])
    if name == "TranslateX":
        return F.affine(image, angle=0.0, translate=[int(value), 0], scale=1.0, interpolation=nearest,
                        shear=[0.0, 0.0], fill=fill)
    if name == "TranslateY":
        return F.affine(image, angle=0.0, translate=[0, int(value)], scale=1.0, interpolation=nearest,
                        shear=[0.0, 0.0], fill=fill)
    if name == "Rotate":
        return F.rotate(image, angle=value, interpolation=nearest, fill=fill)
    if name == "Brightness":
        return F.adjust_brightness(image, brightness_factor=1.0 + value)
    if name == "Color":
        return F.adjust_saturation(image, saturation_factor=1.0 + value)
    if name == "Contrast":
        return F.adjust_contrast(image, contrast_factor=1.0 + value)
    if name == "Sharpness":
        return F.adjust_sharpness(image, sharpness_factor=1.0 + value)
    if name == "Posterize":
        return F.posterize(image, bits=int(value))
    if name == "Solarize":
        return F.solarize(image, threshold=255.0 * value)  # uint8's bound, as torchvision's _max_value
    if name == "AutoContrast":
        return F.autocontrast(image)
    if name == "Equalize":
        return F.equalize(image)
    if name == "Invert":
        return F.invert(image)
    raise RecipeError(f"no op named {name!r}")


# --------------------------------------------------------------------------- configuration


def _fill(value: Any) -> int | list[int] | None:
    """null (torchvision's default), a uint8 value, or one uint8 value per channel."""
    if value is None:
        return None
    if is_int(value):
        if not 0 <= value <= 255:
            raise Invalid("must be null, an integer 0..255 or a list of them")
        return int(value)
    if isinstance(value, (list, tuple)) and value and all(is_int(v) and 0 <= v <= 255 for v in value):
        return [int(v) for v in value]
    raise Invalid("must be null, an integer 0..255 or a list of them")


def _torchvision_fill(fill: int | list[int] | None) -> int | list[float] | None:
    """The fill as torchvision's ``_convert_fill_arg`` hands it to the functional."""
    return [float(v) for v in fill] if isinstance(fill, list) else fill


class _Augment(PixelOp):
    """Shared by the three augment ops: ``slots`` recorded slots of (op, magnitude, applied)."""

    space_name: str
    uint8 = True

    def __init__(self, configuration: Mapping[str, Any], where: str) -> None:
        super().__init__(configuration, where)
        self.space = SPACES[self.space_name]
        self.param_keys = tuple(f"{key}{k}" for k in range(self.slots) for key in ("op", "magnitude", "applied"))

    @property
    def slots(self) -> int:
        raise NotImplementedError

    @property
    def bins(self) -> int:
        raise NotImplementedError

    def _magnitude(self, kind: OpKind, position: float | int, negative: bool) -> int:
        """Recorded magnitude of ``kind`` at bin ``position`` (hundredths), negated for a signed op."""
        if kind.table is None:
            return 0
        magnitude = int(round(position * MAGNITUDE_SCALE)) if isinstance(position, float) else position * MAGNITUDE_SCALE
        return -magnitude if kind.signed and negative else magnitude

    def pixels(self, image: torch.Tensor, params: Sequence[int], render: Render) -> torch.Tensor:
        if image.dtype != torch.uint8:
            raise RecipeError(f"{self.where}: needs the uint8 image; put it before random_erasing")
        channels, height, width = image.shape[-3:]
        fill = _torchvision_fill(self.config["fill"])
        if isinstance(fill, list) and len(fill) not in (1, channels):
            raise RecipeError(f"{self.where}: fill has {len(fill)} values for a {channels}-channel image; "
                              f"give 1 or {channels}")
        limit = (self.bins - 1) * MAGNITUDE_SCALE
        for k in range(self.slots):
            op, magnitude, applied = params[3 * k : 3 * k + 3]
            if not 0 <= op < len(self.space):
                raise self.bad_param(f"op{k}", op, f"an op index 0..{len(self.space) - 1}")
            if not -limit <= magnitude <= limit:
                raise self.bad_param(f"magnitude{k}", magnitude, f"a magnitude within +-{limit}")
            if applied not in (0, 1):
                raise self.bad_param(f"applied{k}", applied, "0 or 1")
            if applied:
                kind = self.space[op]
                image = apply_op(image, kind.name, op_value(kind, magnitude, self.bins, height, width), fill)
        return image


@register
class RandAugment(_Augment):
    """torchvision's RandAugment (its 14-op space), with timm's optional per-op magnitude noise.

    Per slot: an op drawn uniformly; whether it applies (``random() < p``,
    always drawn; timm's ops apply with p 0.5, torchvision's always); the
    sign (``random() < 0.5``, always drawn); with ``magnitude_std`` > 0 one
    ``standard_normal()`` noise draw, the bin position being
    ``clip(magnitude + magnitude_std * noise, 0, num_magnitude_bins - 1)``
    recorded to 1/100 of a bin.
    """

    name = "rand_augment"
    space_name = "rand_augment"
    keys = {
        "num_ops": (int_in(1, 16), 2),
        "magnitude": (int_in(0, None), 9),
        "num_magnitude_bins": (int_in(2, 256), 31),
        "magnitude_std": (non_negative, 0.0),
        "p": (fraction, 1.0),
        "fill": (_fill, None),
    }

    def __init__(self, configuration: Mapping[str, Any], where: str) -> None:
        super().__init__(configuration, where)
        if self.config["magnitude"] >= self.config["num_magnitude_bins"]:
            raise RecipeError(
                f"{where}: magnitude={self.config['magnitude']} must be below "
                f"num_magnitude_bins={self.config['num_magnitude_bins']}"
            )

    @property
    def slots(self) -> int:
        return int(self.config["num_ops"])

    @property
    def bins(self) -> int:
        return int(self.config["num_magnitude_bins"])

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        c = self.config
        out: list[int] = []
        for _ in range(self.slots):
            kind = self.space[int(rng.integers(0, len(self.space)))]
            applied = int(rng.random() < c["p"])
            negative = bool(rng.random() < 0.5)
            if c["magnitude_std"] > 0:
                noisy = c["magnitude"] + c["magnitude_std"] * float(rng.standard_normal())
                position: float | int = min(max(noisy, 0.0), float(self.bins - 1))
            else:
                position = int(c["magnitude"])
            out += [self.space.index(kind), self._magnitude(kind, position, negative), applied]
        return out


@register
class TrivialAugment(_Augment):
    """torchvision's TrivialAugmentWide: one op and one bin, both uniform; signed ops flip with p 0.5.

    Draws, in order: the op, the bin (``integers(0, num_magnitude_bins)``) and
    the sign, every time (the bin and sign of an op without magnitude are
    drawn and not used). Always applied.
    """

    name = "trivial_augment"
    space_name = "trivial_augment"
    keys = {"num_magnitude_bins": (int_in(2, 256), 31), "fill": (_fill, None)}

    @property
    def slots(self) -> int:
        return 1

    @property
    def bins(self) -> int:
        return int(self.config["num_magnitude_bins"])

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        op = int(rng.integers(0, len(self.space)))
        bin_ = int(rng.integers(0, self.bins))
        negative = bool(rng.random() < 0.5)
        return [op, self._magnitude(self.space[op], bin_, negative), 1]


@register
class AutoAugment(_Augment):
    """torchvision's AutoAugment: one of the policy's 25 sub-policies, each of its two ops applied with its probability.

    Draws, in order: the sub-policy (``integers(0, 25)``), then per op
    whether it applies (``random() < probability``) and its sign
    (``random() < 0.5``), both always. Records the two ops as slots (op index
    in this op space, the policy's magnitude id as the bin of a 10-bin table).
    """

    name = "auto_augment"
    space_name = "auto_augment"
    keys = {"policy": (choice(*AUTO_AUGMENT_POLICIES), "imagenet"), "fill": (_fill, None)}

    @property
    def slots(self) -> int:
        return 2

    @property
    def bins(self) -> int:
        return _AUTO_BINS

    def draw(self, rng: np.random.Generator, size: tuple[int, int]) -> list[int]:
        policies = AUTO_AUGMENT_POLICIES[self.config["policy"]]
        names = [kind.name for kind in self.space]
        out: list[int] = []
        for name, probability, magnitude_id in policies[int(rng.integers(0, len(policies)))]:
            applied = int(rng.random() < probability)
            negative = bool(rng.random() < 0.5)
            op = names.index(name)
            out += [op, self._magnitude(self.space[op], magnitude_id or 0, negative), applied]
        return out
