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

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from kdcache.errors import RecipeError
from kdcache.validate import Invalid, choice, fraction, int_in, is_int, non_negative
from kdcache.views.augment_space import (  # noqa: F401 - re-exported
    _AUTO_BINS, AUTO_AUGMENT_POLICIES, MAGNITUDE_SCALE, SPACES, OpKind, op_value,
)
from kdcache.views.ops import register
from kdcache.views.pixel import PixelOp

if TYPE_CHECKING:
    from kdcache.views.recipe import Render

__all__ = ["AUTO_AUGMENT_POLICIES", "MAGNITUDE_SCALE", "SPACES", "OpKind", "apply_op", "op_value"]

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
