"""Mixup and cutmix with a partner image, as a recorded, replayable recipe op (timm's per-sample Mixup).

timm mixes a batch with itself flipped, so a view's partner depends on the
batch. Here the partner is a pure function of ``(seed, sample, view)``: the
``mix`` op draws, from the view's own generator, whether to mix, mixup or
cutmix, λ, the cutmix box and the partner's sample index (never the sample
itself when there are two or more), and the partner's view is drawn from its
own stream (:func:`~kdcache.views.seeds.partner_generator`) through the same
recipe ops as the view's. Everything is recorded, so a store replays the mixed
image from its record alone, at any batch size, worker count or world size.

``mix`` is the last op of a recipe: timm and torchvision mix whole
transformed images (after erasing). Rendering a mixed view reads two images
(``ViewDataset``); both are rendered in pixel mode at the recipe's output
size, then mixed on float32 in [0, 1], before any render's resize, so every
render (teacher, student) sees the same mixed pixels.

Recorded params (docs/data-and-views.md, "Mixing"): ``mode`` (0 none, 1 mixup,
2 cutmix), ``mix_partner`` (the partner's sample index), ``lam`` (λ in units
of 1/16384, the own image's weight; a cutmix λ is the box-corrected one),
``top``, ``left``, ``height``, ``width`` (the pasted box, cutmix only), then
``partner.<name>`` for every param of the ops before ``mix``: the partner's
own view. A view that is not mixed records mode 0, itself as partner, λ 1
(16384) and zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdcache.errors import RecipeError
from kdcache.validate import Invalid, fraction, non_negative, number, pair
from kdcache.views.ops import Op, register
from kdcache.views.pixel import PixelOp

if TYPE_CHECKING:
    from kdcache.views.recipe import Render

__all__ = ["LAM_SCALE", "MODES", "Mix", "mixed_labels"]

LAM_SCALE = 16384
"""Recorded λ is in units of 1/2**14: exact in float32, and 1.0 (16384) fits int16."""

MODES = ("none", "mixup", "cutmix")
"""Recorded ``mode`` values, by index."""

_MIX_KEYS = ("mode", "mix_partner", "lam", "top", "left", "height", "width")


def _minmax(value: Any) -> list[float] | None:
    """null, or timm's ``cutmix_minmax`` ``[lo, hi]`` fractions of the image side, 0 < lo < hi <= 1."""
    if value is None:
        return None
    lo, hi = pair(number, "null or a pair [min, max] of numbers")(value)
    if not 0.0 < lo < hi <= 1.0:
        raise Invalid("must have 0 < min < max <= 1")
    return [lo, hi]


@register
class Mix(PixelOp):
    """timm's per-sample (``mode='elem'``) Mixup/CutMix with ``correct_lam``, the partner drawn per view.

    With probability ``prob`` the view is mixed; when both alphas are > 0,
    cutmix is chosen with probability ``switch_prob``, else the one whose
    alpha is > 0 (``cutmix_minmax`` turns cutmix on, as timm sets its alpha
    to 1). λ ~ Beta(α, α) of the chosen mode. Mixup blends ``λ·own + (1 − λ)·partner``;
    cutmix pastes the partner's pixels in a box of side ``sqrt(1 − λ)``
    times the image's (or a side drawn from ``cutmix_minmax``), centred
    uniformly and clipped at the borders, and λ becomes
    ``1 − box area / image area``.
    """

    name = "mix"
    keys = {
        "mixup_alpha": (non_negative, 1.0),
        "cutmix_alpha": (non_negative, 0.0),
        "cutmix_minmax": (_minmax, None),
        "prob": (fraction, 1.0),
        "switch_prob": (fraction, 0.5),
    }
    uint8 = False

    def __init__(self, configuration: Mapping[str, Any], where: str) -> None:
        super().__init__(configuration, where)
        c = self.config
        if c["mixup_alpha"] <= 0 and c["cutmix_alpha"] <= 0 and c["cutmix_minmax"] is None:
            raise RecipeError(f"{where}: mixup_alpha and cutmix_alpha are both 0; set one of them above 0")
        self.base: tuple[Op, ...] = ()
        self.param_keys = _MIX_KEYS
        self.wide_keys = ("mix_partner",)

    def bind(self, base: Sequence[Op]) -> None:
        """Attach the ops before ``mix``: the partner is rendered through them, its params recorded after ours."""
        self.base = tuple(base)
        self.param_keys = (*_MIX_KEYS, *(f"partner.{i}.{op.name}.{key}"
                                         for i, op in enumerate(self.base) for key in op.param_keys))
        self.wide_keys = ("mix_partner", *(f"partner.{i}.{op.name}.{key}"
                                           for i, op in enumerate(self.base) for key in op.wide_keys))

    @property
    def cutmix_alpha(self) -> float:
        return 1.0 if self.config["cutmix_minmax"] is not None else float(self.config["cutmix_alpha"])

    # ------------------------------------------------------------------ draws

    def draw_mix(self, rng: np.random.Generator, size: tuple[int, int], sample: int, num_samples: int,
                 partner_params: Callable[[int], list[int]]) -> list[int]:
        """This op's params: the mix draws from the view's ``rng``, then ``partner_params(partner)``.

        Draws, in order: ``random() < prob``; if mixed, ``random() < switch_prob``
        (only when both alphas are > 0), ``beta(α, α)``, the partner
        ``integers(0, N − 1)`` (indices at or above ``sample`` shift up by one),
        and for cutmix the box (see :meth:`cutmix_box`).
        """
        partner_width = len(self.param_keys) - len(_MIX_KEYS)
        if not rng.random() < self.config["prob"]:
            return [0, sample, LAM_SCALE, 0, 0, 0, 0] + [0] * partner_width
        mixup_alpha, cutmix_alpha = float(self.config["mixup_alpha"]), self.cutmix_alpha
        if mixup_alpha > 0 and cutmix_alpha > 0:
            cutmix = bool(rng.random() < self.config["switch_prob"])
        else:
            cutmix = cutmix_alpha > 0
        alpha = cutmix_alpha if cutmix else mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if num_samples > 1:
            partner = int(rng.integers(0, num_samples - 1))
            partner += partner >= sample
        else:
            partner = sample
        box = [0, 0, 0, 0]
        if cutmix:
            box = self.cutmix_box(rng, size, lam)
            lam = 1.0 - (box[2] * box[3]) / float(size[0] * size[1])
        lam_q = int(round(lam * LAM_SCALE))
        drawn = partner_params(partner)
        if len(drawn) != partner_width:
            raise RecipeError(f"{self.where}: the partner's view has {len(drawn)} params, expected {partner_width}")
        return [2 if cutmix else 1, partner, lam_q, *box, *drawn]

    def cutmix_box(self, rng: np.random.Generator, size: tuple[int, int], lam: float) -> list[int]:
        """timm's ``rand_bbox`` (or ``rand_bbox_minmax``), from ``rng``: ``[top, left, height, width]``.

        Without minmax: cut side ``int(side·sqrt(1 − λ))``, centre ``cy =
        integers(0, H)``, ``cx = integers(0, W)``, edges ``clip(c ∓ cut // 2, 0, side)``.
        With minmax ``[a, b]``: ``cut_h = integers(int(H·a), int(H·b))``, ``cut_w``
        likewise, ``top = integers(0, H − cut_h + 1)``, ``left = integers(0, W − cut_w + 1)``.
        """
        h, w = size
        minmax = self.config["cutmix_minmax"]
        if minmax is not None:
            cut_h = int(rng.integers(int(h * minmax[0]), max(int(h * minmax[1]), int(h * minmax[0]) + 1)))
            cut_w = int(rng.integers(int(w * minmax[0]), max(int(w * minmax[1]), int(w * minmax[0]) + 1)))
            top = int(rng.integers(0, h - cut_h + 1))
            left = int(rng.integers(0, w - cut_w + 1))
            return [top, left, cut_h, cut_w]
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(h * ratio), int(w * ratio)
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = min(max(cy - cut_h // 2, 0), h), min(max(cy + (cut_h + 1) // 2, 0), h)
        x0, x1 = min(max(cx - cut_w // 2, 0), w), min(max(cx + (cut_w + 1) // 2, 0), w)
        return [y0, x0, y1 - y0, x1 - x0]

    # ------------------------------------------------------------------ rendering

    def split(self, params: Sequence[int]) -> tuple[int, int, int, list[int], list[int]]:
        """``(mode, partner, lam_q, box, partner params)`` of this op's recorded params, checked."""
        mode, partner, lam_q, *rest = params[: len(_MIX_KEYS)]
        box = list(rest)
        if mode not in (0, 1, 2):
            raise self.bad_param("mode", mode, "0 (none), 1 (mixup) or 2 (cutmix)")
        if not 0 <= lam_q <= LAM_SCALE:
            raise self.bad_param("lam", lam_q, f"0..{LAM_SCALE}")
        if partner < 0:
            raise self.bad_param("mix_partner", partner, "a sample index")
        return mode, partner, lam_q, box, list(params[len(_MIX_KEYS):])

    def mix(self, own: torch.Tensor, partner: torch.Tensor | None, params: Sequence[int]) -> torch.Tensor:
        """The mixed float32 image from the own and partner views (same size; partner None when not mixed)."""
        mode, _, lam_q, (top, left, h, w), _ = self.split(params)
        if mode == 0:
            return own
        if partner is None:
            raise RecipeError(f"{self.where}: a mixed view needs its partner's image")
        if partner.shape != own.shape:
            raise RecipeError(
                f"{self.where}: the view is {tuple(own.shape)} but its partner's is {tuple(partner.shape)}; mixing "
                "needs one output size: end the recipe's geometry with a fixed-size crop or resize [H, W]"
            )
        if mode == 1:
            lam = torch.tensor(lam_q / LAM_SCALE, dtype=torch.float32)  # exact: a multiple of 2**-14
            return own * lam + partner * (1.0 - lam)  # timm: x * lam + x_flipped * (1 - lam)
        _, height, width = own.shape
        if not (0 <= top and 0 <= left and 0 <= h and 0 <= w and top + h <= height and left + w <= width):
            raise self.bad_param("box", [top, left, h, w], f"a box inside the {height}x{width} image")
        out = own.clone()
        out[:, top : top + h, left : left + w] = partner[:, top : top + h, left : left + w]
        return out

    def pixels(self, image: torch.Tensor, params: Sequence[int], render: Render) -> torch.Tensor:
        raise RecipeError(f"{self.where}: mix renders through ViewDataset (it reads its partner's image)")


def find_mix(ops: Sequence[Op]) -> Mix | None:
    """The recipe's ``mix`` op (always the last), or None."""
    return ops[-1] if ops and isinstance(ops[-1], Mix) else None


def check_mix(recipe_name: str, ops: Sequence[Op]) -> None:
    """One ``mix`` at most, and last; bind it to the ops before it."""
    for index, op in enumerate(ops):
        if isinstance(op, Mix):
            if index != len(ops) - 1:
                raise RecipeError(
                    f"{op.where}: mix must be the recipe's last op (it mixes whole transformed images, as timm); "
                    f"move {ops[index + 1].name} before it"
                )
            op.bind(ops[:index])


def mixed_labels(recipe: Any, params: np.ndarray, labels: np.ndarray, samples: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(label, partner label, λ)`` of rows with recorded ``params`` (n, P), or None for a recipe without mix.

    ``labels`` are the store's (N,) labels; ``samples`` the rows' sample
    indices. λ is float32 ``lam / 16384``; an unmixed row is its own partner
    with λ 1. Raises RecipeError for a recorded partner outside ``labels``.
    """
    op = find_mix(recipe._compiled)
    if op is None:
        return None
    offset = len(recipe.param_names()) - len(op.param_keys)
    params = np.asarray(params)
    partners = params[:, offset + 1].astype(np.int64)
    if partners.size and (partners.min() < 0 or partners.max() >= len(labels)):
        raise RecipeError(f"{op.where}: a recorded mix_partner is outside the {len(labels)} samples")
    lam = (params[:, offset + 2].astype(np.float32) / np.float32(LAM_SCALE)).astype(np.float32)
    if lam.size and (lam.min() < 0 or lam.max() > 1):
        raise RecipeError(f"{op.where}: a recorded lam is outside 0..{LAM_SCALE}")
    return labels[np.asarray(samples, dtype=np.int64)], labels[partners], lam
