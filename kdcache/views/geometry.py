"""Exact view geometry: a view's box in source pixels, composed with rational arithmetic.

The geometric ops of a recipe (crops, resizes, flips) move one box over the
source image. Keeping its edges as Fractions until the very end means any
chain of crops and resizes composes without rounding, and every consumer
resamples the source box once, straight to its own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from kdcache.errors import SpecError
from kdcache.validate import is_int

__all__ = ["ViewGeometry"]


class Geo(NamedTuple):
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

    @classmethod
    def whole(cls, image_size: tuple[int, int]) -> Geo:
        """The whole source image, unflipped."""
        h, w = image_size
        return cls(Fraction(0), Fraction(0), Fraction(h), Fraction(w), (h, w), False, 0)

    def crop(self, top: int, left: int, height: int, width: int, fill: int | None = None) -> Geo:
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

    def rounded(self) -> ViewGeometry:
        """Box edges rounded (half to even) to whole source pixels, only here, at the end."""
        top, left = round(self.top), round(self.left)
        height = max(1, round(self.top + self.height) - top)
        width = max(1, round(self.left + self.width) - left)
        return ViewGeometry(top, left, height, width, self.flip, self.size, self.fill)


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


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of positive integers, or :class:`SpecError`."""
    if len(image_size) != 2 or not all(is_int(s) and s >= 1 for s in image_size):
        raise SpecError(f"image_size must be (H, W) of positive integers, got {image_size!r}")
    return (int(image_size[0]), int(image_size[1]))
