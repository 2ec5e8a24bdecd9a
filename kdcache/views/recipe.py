"""Recipes and renders as data: what a view is (a :class:`Recipe`) and how a consumer sees it (a :class:`Render`).

A recipe is JSON data, validated and normalised on construction and hashed
over its canonical JSON, so equal recipes have equal hashes and a store can
refuse views made with another recipe. Presets ship as package data in
``kdcache/recipes/*.json``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcache.data.registry import get_scheme
from kdcache.errors import RecipeError, SpecError
from kdcache.validate import check, is_int, is_number
from kdcache.views.geometry import check_image_size
from kdcache.views.mix import Mix, check_mix, find_mix
from kdcache.views.ops import Op, compile_ops, size as size_parser
from kdcache.views.pixel import PixelOp, check_pixel_order

if TYPE_CHECKING:
    from kdcache.data import DataSource

__all__ = ["RECIPE_FORMAT", "Recipe", "Render", "list_presets", "load_recipe", "resolve_recipe"]

# Version of the recipe JSON and of the parameter encoding of every op. It is
# part of the hashed JSON, so a change of encoding changes every recipe hash.
RECIPE_FORMAT = 1


def _floats(v: Any, what: str) -> tuple[float, ...]:
    if is_number(v):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or not all(is_number(x) for x in v):
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
            size = tuple(check(size_parser, size, RecipeError, "render: size"))
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        if len(mean) != len(std):
            raise RecipeError(f"render: mean has {len(mean)} values but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise RecipeError(f"render: std={list(std)} must be positive")
        if self.channels is not None and (not is_int(self.channels) or self.channels not in (1, 3)):
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
    """An augmentation recipe: named ops, a default :class:`Render`, and how validation images are rendered.

    Constructing one validates it; ``ops`` is normalised (every configuration
    key present, sizes as ``[H, W]``), so equal recipes have equal JSON and hash.

    ``eval_ops`` (JSON key ``"eval"``) are the deterministic ops (no params:
    ``resize``, ``center_crop``) that render a validation image, e.g.
    imagenet's resize then centre crop; empty means the image as it is. They
    are part of the JSON and hash only when present, so a recipe without them
    keeps the hash it had before they existed.
    """

    name: str
    ops: tuple[dict[str, Any], ...] = ()
    render: Render = field(default_factory=Render)
    eval_ops: tuple[dict[str, Any], ...] = ()
    _compiled: tuple[Op, ...] = field(init=False, repr=False, compare=False)
    _compiled_eval: tuple[Op, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise RecipeError(f"recipe name must be a non-empty string, got {self.name!r}")
        compiled = compile_ops(self.name, self.ops)
        compiled_eval = compile_ops(self.name, self.eval_ops, what="eval")
        check_mix(self.name, compiled)  # first: "mix must be last" says more than the pixel-order rule
        check_pixel_order(self.name, compiled)
        for op in compiled_eval:
            if op.param_keys or isinstance(op, PixelOp):
                raise RecipeError(
                    f"{op.where}: evaluation must not be random; use ops without params (resize, center_crop)"
                )
        render = self.render
        if isinstance(render, Mapping):
            render = Render.from_dict(render)
        if not isinstance(render, Render):
            raise RecipeError(f"recipe {self.name!r}: render must be a Render, got {render!r}")
        object.__setattr__(self, "ops", tuple(op.to_dict() for op in compiled))
        object.__setattr__(self, "render", render)
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "eval_ops", tuple(op.to_dict() for op in compiled_eval))
        object.__setattr__(self, "_compiled_eval", compiled_eval)

    def __hash__(self) -> int:
        return hash(self.to_json())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with the format version of the parameter encoding.

        ``"eval"`` appears only when the recipe has evaluation ops (see the class).
        """
        d: dict[str, Any] = {
            "format": RECIPE_FORMAT,
            "name": self.name,
            "ops": copy.deepcopy(list(self.ops)),
            "render": self.render.to_dict(),
        }
        if self.eval_ops:
            d["eval"] = copy.deepcopy(list(self.eval_ops))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        """Validate a dict (from :meth:`to_dict` or a JSON file) into a Recipe."""
        if not isinstance(d, Mapping):
            raise RecipeError(f"a recipe must be a JSON object, got {type(d).__name__}")
        extra = sorted(set(d) - {"format", "name", "ops", "render", "eval"})
        if extra:
            raise RecipeError(
                f"recipe: unknown key(s) {', '.join(extra)}; expected format, name, ops, render, eval"
            )
        if d.get("format", RECIPE_FORMAT) != RECIPE_FORMAT:
            raise RecipeError(
                f"recipe format {d.get('format')!r} is not supported; this kdcache reads format {RECIPE_FORMAT}"
            )
        if "name" not in d:
            raise RecipeError("recipe: key 'name' is missing")
        ops, eval_ops = d.get("ops", []), d.get("eval", [])
        return cls(
            name=d["name"],
            ops=tuple(ops) if isinstance(ops, list) else ops,
            render=Render.from_dict(d.get("render", {})),
            eval_ops=tuple(eval_ops) if isinstance(eval_ops, list) else eval_ops,
        )

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces; what :meth:`hash` covers."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def hash(self) -> str:
        """``"sha256:<hex>"`` of :meth:`to_json`, stable across runs and machines."""
        return "sha256:" + hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def param_names(self) -> list[str]:
        """Names of the P integers :func:`sample_params` returns: ``"<op index>.<op>.<param>"``."""
        return [f"{i}.{op.name}.{key}" for i, op in enumerate(self._compiled) for key in op.param_keys]

    @property
    def mix(self) -> Mix | None:
        """The recipe's ``mix`` op (its last), or None: a recipe with it renders each view from two images."""
        return find_mix(self._compiled)

    def eval_recipe(self) -> Recipe:
        """The deterministic recipe validation images are rendered with: :attr:`eval_ops`, no params."""
        return Recipe(name=f"{self.name}.eval", ops=self.eval_ops, render=self.render)

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The recipe's own output ``(H, W)`` for a source of ``image_size``.

        It never depends on random draws; raises RecipeError when an op
        cannot apply to an image of that size.
        """
        size = check_image_size(image_size)
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


def resolve_recipe(name: str | None, source: DataSource) -> Recipe:
    """The recipe ``name`` (a preset or a JSON file), or for ``None`` the one ``source``'s scheme declares.

    Each data scheme declares the preset that fits its images (cifar10/100:
    ``cifar``; fashion-mnist, embedded: ``fashion-mnist``; imagefolder:
    ``imagenet``; digits, synthetic: ``none``), so no dataset silently gets
    another dataset's crops and normalisation. Callers print the choice.
    """
    if name is not None:
        return load_recipe(name)
    try:
        default = get_scheme(source.name).default_recipe
    except SpecError:
        raise RecipeError(f"data {source.spec!r} declares no default recipe; pass --recipe") from None
    return load_recipe(default)
