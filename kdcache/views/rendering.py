"""Sampling a view's params (the only random draws) and rendering params into pixels (none).

:func:`sample_params` returns integers (crop offsets, flip flags, jitter
factors in per-mille); :func:`apply_params` turns them into pixels with no
randomness, so recorded parameters re-render a view exactly. The ops of a
recipe compose into one exact box in source pixels, and each consumer
(:class:`~kdcache.views.Render`) resizes that box straight to its own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from kdcache.errors import KdcacheBug, RecipeError
from kdcache.views.geometry import Geo, ViewGeometry, check_image_size
from kdcache.views.pixel import PixelOp, has_pixel_ops
from kdcache.views.recipe import Recipe, Render
from kdcache.views.ops import Op
from kdcache.views.seeds import partner_generator, view_generator

__all__ = ["Partners", "apply_params", "mix_partner", "recorded_params", "sample_params", "view_geometry"]


class Partners(Protocol):
    """What drawing a mixed view needs of its data: the number of samples and each one's image size."""

    def __len__(self) -> int: ...

    def image_size(self, i: int) -> tuple[int, int]: ...


def _draw(ops: Sequence[Op], rng: np.random.Generator, size: tuple[int, int]) -> tuple[list[int], tuple[int, int]]:
    params: list[int] = []
    for op in ops:
        next_size = op.out_size(size)  # raises before drawing if the op cannot apply
        params.extend(op.draw(rng, size))
        size = next_size
    return params, size


def sample_params(
    recipe: Recipe, seed: int, sample: int, view: int, image_size: tuple[int, int],
    partners: Partners | None = None,
) -> np.ndarray:
    """Draw the parameters of view ``(sample, view)``: an int32 vector ``(P,)``.

    The only function that draws randomness for a view; its values are named
    by ``recipe.param_names()`` and are recorded in the store. A recipe with
    ``mix`` needs ``partners`` (the data source: its length and each image's
    size), as its partner is another sample whose view is drawn too.
    """
    rng = view_generator(seed, sample, view)
    mix = recipe.mix
    ops = recipe._compiled[:-1] if mix is not None else recipe._compiled
    params, size = _draw(ops, rng, check_image_size(image_size))
    if mix is not None:
        if partners is None:
            raise KdcacheBug(f"recipe {recipe.name!r} mixes views: sample_params needs the data source")

        def partner_params(partner: int) -> list[int]:
            drawn, _ = _draw(ops, partner_generator(seed, sample, view),
                                        check_image_size(partners.image_size(partner)))
            return drawn

        params.extend(mix.draw_mix(rng, size, sample, len(partners), partner_params))
    return np.asarray(params, dtype=np.int32)


def _split_params(recipe: Recipe, params: Any) -> list[Sequence[int]]:
    flat = np.asarray(params)
    expected = len(recipe.param_names())
    if flat.shape != (expected,) or not np.issubdtype(flat.dtype, np.integer):
        raise RecipeError(
            f"recipe {recipe.name!r} takes {expected} integer params; got shape {flat.shape} of {flat.dtype}"
        )
    return _split_values(recipe._compiled, [int(v) for v in flat])


def _split_values(ops: Sequence[Op], values: list[int]) -> list[Sequence[int]]:
    out, start = [], 0
    for op in ops:
        out.append(values[start : start + len(op.param_keys)])
        start += len(op.param_keys)
    return out


def view_geometry(recipe: Recipe, params: Any, image_size: tuple[int, int]) -> ViewGeometry:
    """The exact source box, flip and output size that ``params`` select (a mixed view's own image).

    Box edges are rounded (half to even) to whole source pixels only here, at
    the end, so composed crops and resizes do not accumulate rounding.
    """
    return _geometry(recipe._compiled, _split_params(recipe, params), image_size)


def _geometry(ops: Sequence[Op], split: Sequence[Sequence[int]], image_size: tuple[int, int]) -> ViewGeometry:
    geo = Geo.whole(check_image_size(image_size))
    for op, p in zip(ops, split):
        geo = op.advance(geo, p)
    return geo.rounded()


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


def prepare(recipe: Recipe, image: torch.Tensor, params: Any, partner_image: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, tuple[int, int]]:
    """The view at source resolution: box, flip, photometric ops; float32 in [0, 1].

    A recipe with pixel ops (``kdcache.views.pixel``) gives the view at the
    recipe's output size instead, its ops applied on those pixels. A recipe
    with ``mix`` renders the view and, when it is mixed, its partner's view
    (of ``partner_image``, the recorded partner's source image) in pixel
    mode, and mixes them (``kdcache.views.mix``). Shared by every Render of a
    view, so renders differ only in the final resize, channel count and
    normalisation.
    """
    _check_image(image)
    split = _split_params(recipe, params)
    ops = recipe._compiled
    mix = recipe.mix
    if mix is not None:
        base = ops[:-1]
        geo = _geometry(base, split, (image.shape[1], image.shape[2]))
        own = _prepare_pixels(base, recipe.render, image, split, geo)
        mode, partner, _, _, partner_values = mix.split(split[-1])
        other = None
        if mode != 0:
            if partner_image is None:
                raise KdcacheBug(f"recipe {recipe.name!r}: a mixed view was rendered without its partner's image")
            _check_image(partner_image)
            partner_split = _split_values(base, partner_values)
            partner_geo = _geometry(base, partner_split, (partner_image.shape[1], partner_image.shape[2]))
            other = _prepare_pixels(base, recipe.render, partner_image, partner_split, partner_geo)
        return mix.mix(own, other, split[-1]), geo.size
    geo = _geometry(ops, split, (image.shape[1], image.shape[2]))
    if has_pixel_ops(ops):
        return _prepare_pixels(ops, recipe.render, image, split, geo), geo.size
    x = F.to_dtype(_crop_box(image, geo), torch.float32, scale=True)
    if geo.flip:
        x = F.horizontal_flip(x)
    # Photometric ops run on the source-resolution crop, after the geometry,
    # so every render gets the same colours (e.g. contrast's mean) before its
    # own single resize.
    for op, p in zip(ops, split):
        if op.photometric:
            x = op.adjust(x, p)
    return x, geo.size


def mix_partner(recipe: Recipe, params: Any) -> int | None:
    """The sample whose image a view with recorded ``params`` mixes in, or None (no mix, or not mixed)."""
    mix = recipe.mix
    if mix is None:
        return None
    mode, partner, _, _, _ = mix.split(_split_params(recipe, params)[-1])
    return partner if mode != 0 else None


def _check_image(image: Any) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3:
        raise TypeError(f"expected a uint8 image tensor (C, H, W), got {getattr(image, 'dtype', type(image))}")


def _prepare_pixels(ops: Sequence[Op], render: Render, image: torch.Tensor, split: Sequence[Sequence[int]],
                    geo: ViewGeometry) -> torch.Tensor:
    """Pixel mode (``kdcache.views.pixel``): the box resized on uint8 to the recipe's size, then its ops in order.

    The uint8 path of a torchvision pipeline: ``resized_crop`` and ``flip`` on
    the uint8 tensor, ``color_jitter`` and the augment ops on uint8, then
    float32 in [0, 1] for erasing and for the renders.
    """
    x = _crop_box(image, geo)
    if tuple(x.shape[-2:]) != geo.size:
        x = F.resize(x, list(geo.size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    if geo.flip:
        x = F.horizontal_flip(x)
    for op, p in zip(ops, split):
        if isinstance(op, PixelOp):
            if not op.uint8 and x.dtype == torch.uint8:
                x = F.to_dtype(x, torch.float32, scale=True)
            x = op.pixels(x, p, render)
        elif op.photometric:
            x = op.adjust(x, p)
    if x.dtype == torch.uint8:
        x = F.to_dtype(x, torch.float32, scale=True)
    return x


def render_prepared(x: torch.Tensor, recipe_size: tuple[int, int], render: Render) -> torch.Tensor:
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


def apply_params(recipe: Recipe, image: torch.Tensor, params: Any, render: Render,
                 partner_image: torch.Tensor | None = None) -> torch.Tensor:
    """Render view ``params`` of ``image`` (uint8 ``(C, H, W)``) as float32 ``(C', H', W')``.

    Pure: the same inputs give the same bits. The source box is resized
    straight to ``render.size`` (antialiased bilinear), never resampled twice.
    A mixed view (a recipe with ``mix``) also takes its partner's source
    image (:func:`mix_partner` names the sample).
    """
    x, recipe_size = prepare(recipe, image, params, partner_image)
    return render_prepared(x, recipe_size, render)


def recorded_params(recipe: Recipe, params: Any, sample: int, view: int) -> np.ndarray:
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
