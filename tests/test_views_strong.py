"""Strong augmentation ops (rand_augment, trivial_augment, auto_augment, random_erasing), recorded and replayed.

* Op by op, rendering from recorded params equals torchvision v2 applied with those parameters, bit for bit
  on uint8 images: the value from torchvision's own magnitude table, applied by torchvision's own
  ``_apply_image_or_video_transform`` and by the functional call spelled out here, for every op of every op
  space (identity and the ops that need a fill included).
* A whole view equals the torchvision pipeline (resized_crop, flip, the ops, to float, erase) at its params.
* Recorded params replay bitwise; draws are pinned and follow the configuration.
* Through the CLI: a recipe file with these ops precomputes, rows are identical at two batch sizes (and with
  workers), and ``verify --replay`` passes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import zarr
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from kdcache.data import open_data
from kdcache.errors import RecipeError
from kdcache.views import Recipe, Render, ViewDataset, sample_params, view_geometry
from kdcache.views.autoaugment import AUTO_AUGMENT_POLICIES, MAGNITUDE_SCALE, SPACES
from kdcache.views.recipe import load_recipe
from tests.cli_helpers import assert_one_line_error, run_cli

TV_CLASSES = {"rand_augment": T.RandAugment, "trivial_augment": T.TrivialAugmentWide, "auto_augment": T.AutoAugment}
NEAREST = InterpolationMode.NEAREST


def _image(channels: int, seed: int = 0, size: tuple[int, int] = (21, 26)) -> torch.Tensor:
    """A uint8 image with structure (a gradient and noise) within [20, 230], so every op visibly changes it."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    ramp = (torch.arange(h)[:, None] * 7 + torch.arange(w)[None, :] * 5) % 170
    noise = torch.randint(0, 40, (channels, h, w), generator=g)
    return (20 + ramp[None] + noise).to(torch.uint8)


def _functional(image: torch.Tensor, name: str, value: float, fill) -> torch.Tensor:
    """torchvision v2 functional applied with (name, value, fill), as torchvision's auto-augment classes call it."""
    calls = {
        "Identity": lambda: image,
        "ShearX": lambda: F.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                                   shear=[math.degrees(math.atan(value)), 0.0], interpolation=NEAREST, fill=fill,
                                   center=[0, 0]),
        "ShearY": lambda: F.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                                   shear=[0.0, math.degrees(math.atan(value))], interpolation=NEAREST, fill=fill,
                                   center=[0, 0]),
        "TranslateX": lambda: F.affine(image, angle=0.0, translate=[int(value), 0], scale=1.0,
                                       interpolation=NEAREST, shear=[0.0, 0.0], fill=fill),
        "TranslateY": lambda: F.affine(image, angle=0.0, translate=[0, int(value)], scale=1.0,
                                       interpolation=NEAREST, shear=[0.0, 0.0], fill=fill),
        "Rotate": lambda: F.rotate(image, angle=value, interpolation=NEAREST, fill=fill),
        "Brightness": lambda: F.adjust_brightness(image, 1.0 + value),
        "Color": lambda: F.adjust_saturation(image, 1.0 + value),
        "Contrast": lambda: F.adjust_contrast(image, 1.0 + value),
        "Sharpness": lambda: F.adjust_sharpness(image, 1.0 + value),
        "Posterize": lambda: F.posterize(image, int(value)),
        "Solarize": lambda: F.solarize(image, 255.0 * value),
        "AutoContrast": lambda: F.autocontrast(image),
        "Equalize": lambda: F.equalize(image),
        "Invert": lambda: F.invert(image),
    }
    return calls[name]()


def _torchvision(space: str, image: torch.Tensor, name: str, value: float, fill) -> torch.Tensor:
    """What torchvision's own class runs for (name, value): its ``_apply_image_or_video_transform``."""
    tv = TV_CLASSES[space](fill=fill)
    return tv._apply_image_or_video_transform(image, name, value, interpolation=NEAREST, fill=tv._fill)


def _tv_value(space: str, name: str, bins: int, magnitude: int, size: tuple[int, int]) -> float:
    """The value for a recorded magnitude, from torchvision's own table (a fraction: linear between entries)."""
    table_fn, _ = TV_CLASSES[space]._AUGMENTATION_SPACE[name]
    table = table_fn(bins, *size)
    if table is None:
        return 0.0
    whole, rest = divmod(abs(magnitude), MAGNITUDE_SCALE)
    if rest == 0:
        value = float(table[whole])
    elif name == "Posterize":
        d = 4 if space != "trivial_augment" else 6
        value = float(round(8 - (abs(magnitude) / 100) / ((bins - 1) / d)))
    else:
        value = float(table[whole]) + (float(table[whole + 1]) - float(table[whole])) * rest / 100
    return -value if magnitude < 0 else value


def _op(space: str, **config):
    """A one-op recipe's compiled op of ``space`` (rand_augment with one slot)."""
    if space == "rand_augment":
        config.setdefault("num_ops", 1)
    recipe = Recipe.from_dict({"name": "one", "ops": [{"name": space, "configuration": config}]})
    return recipe._compiled[0]


def _cases():
    for space, kinds in SPACES.items():
        for index, kind in enumerate(kinds):
            yield pytest.param(space, index, id=f"{space}-{kind.name}")


# --------------------------------------------------------------------------- op spaces


@pytest.mark.parametrize("space", sorted(SPACES))
def test_op_spaces_are_torchvision_s(space):
    tv = TV_CLASSES[space]._AUGMENTATION_SPACE
    assert [k.name for k in SPACES[space]] == list(tv)
    for kind in SPACES[space]:
        fn, signed = tv[kind.name]
        assert kind.signed == signed, kind.name
        for bins in (2, 10, 11, 31):
            for size in ((21, 26), (224, 224)):
                table = fn(bins, *size)
                ours = [_tv_value(space, kind.name, bins, b * MAGNITUDE_SCALE, size) for b in range(bins)]
                assert (table is None) == (kind.table is None)
                if table is not None:
                    assert ours == [float(v) for v in table]


@pytest.mark.parametrize("policy", sorted(AUTO_AUGMENT_POLICIES))
def test_auto_augment_policies_are_torchvision_s(policy):
    tv = T.AutoAugment(T.AutoAugmentPolicy(policy))._policies
    assert [tuple(sub) for sub in tv] == [tuple(sub) for sub in AUTO_AUGMENT_POLICIES[policy]]


# --------------------------------------------------------------------------- op-by-op parity


def _magnitudes(space: str, bins: int, signed: bool, has_table: bool) -> list[int]:
    if not has_table:
        return [0]
    whole = [0, 1, bins // 2, bins - 1]
    out = [b * MAGNITUDE_SCALE for b in whole]
    if space == "rand_augment":
        out += [937, (bins - 2) * MAGNITUDE_SCALE + 1]  # fractional bins (magnitude noise)
    return out + ([-m for m in out if m] if signed else [])


@pytest.mark.parametrize("space,index", list(_cases()))
@pytest.mark.parametrize("channels,fill", [(3, None), (3, 128), (3, [10, 200, 30]), (1, None), (1, 77)])
def test_each_op_renders_as_torchvision_applies_it(space, index, channels, fill):
    kind = SPACES[space][index]
    bins = 10 if space == "auto_augment" else 31
    config = {"fill": fill} if space != "rand_augment" else {"fill": fill, "num_magnitude_bins": bins}
    op = _op(space, **config)
    image = _image(channels, seed=index)
    tv_fill = [float(v) for v in fill] if isinstance(fill, list) else fill
    changed = False
    for magnitude in _magnitudes(space, bins, kind.signed, kind.table is not None):
        params = [index, magnitude, 1] * op.slots
        if space == "auto_augment":
            params = [index, magnitude, 1, 0, 0, 0]  # the second slot drawn but not applied
        ours = op.pixels(image, params, Render())
        value = _tv_value(space, kind.name, bins, magnitude, tuple(image.shape[-2:]))
        expected = _functional(image, kind.name, value, tv_fill)
        assert ours.dtype == torch.uint8 and torch.equal(ours, expected), (kind.name, magnitude)
        assert torch.equal(ours, _torchvision(space, image, kind.name, value, fill)), (kind.name, magnitude)
        changed |= not torch.equal(ours, image)
        # Not applied: the image as it was.
        assert torch.equal(op.pixels(image, [index, magnitude, 0] + [0, 0, 0] * (op.slots - 1), Render()), image)
    assert changed or kind.name == "Identity" or (channels == 1 and kind.name == "Color"), kind.name


@pytest.mark.parametrize("space,index", [c for c in _cases() if SPACES[c.values[0]][c.values[1]].signed])
def test_a_zero_magnitude_renders_the_same_with_either_sign(space, index):
    """Why a zero magnitude records no sign: torchvision's -0.0 renders as 0.0 for every signed op."""
    name = SPACES[space][index].name
    for channels in (1, 3):
        image = _image(channels, seed=3)
        assert torch.equal(_functional(image, name, 0.0, None), _functional(image, name, -0.0, None)), name


def test_magnitude_noise_interpolates_between_torchvision_s_table_entries():
    op = _op("rand_augment", num_magnitude_bins=11)
    rotate = [kind.name for kind in SPACES["rand_augment"]].index("Rotate")  # 0..30 degrees over 11 bins
    image = _image(3)
    for magnitude, degrees in ((900, 27.0), (950, 28.5), (-925, -27.75), (1000, 30.0)):
        value = _tv_value("rand_augment", "Rotate", 11, magnitude, (21, 26))
        assert value == pytest.approx(degrees, abs=1e-5)
        assert torch.equal(op.pixels(image, [rotate, magnitude, 1], Render()),
                           F.rotate(image, angle=value, interpolation=NEAREST)), magnitude


# --------------------------------------------------------------------------- erasing parity


MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


@pytest.mark.parametrize("value", [0.0, -1.5, [0.0, 1.0, -2.0], "random"])
def test_erasing_renders_as_torchvision_erase(value):
    recipe = Recipe.from_dict({"name": "e", "ops": [
        {"name": "random_erasing", "configuration": {"p": 1.0, "value": value}}],
        "render": {"mean": list(MEAN), "std": list(STD)}})
    op = recipe._compiled[0]
    image = F.to_dtype(_image(3), torch.float32, scale=True)
    params = [1, 4, 7, 9, 12] + ([123456] if value == "random" else [])
    ours = op.pixels(image, params, recipe.render)
    if value == "random":
        z = np.random.Generator(np.random.PCG64(np.random.SeedSequence([123456]))).standard_normal(
            (3, 9, 12), dtype=np.float32)
        z = torch.from_numpy(z)
    else:
        z = torch.tensor(value if isinstance(value, list) else [value] * 3, dtype=torch.float32)[:, None, None]
    fill = torch.tensor(MEAN)[:, None, None] + torch.tensor(STD)[:, None, None] * z
    expected = F.erase(image, 4, 7, 9, 12, fill)
    assert torch.equal(ours, expected)
    # Normalised with the recipe's render, the erased box holds the value (to float32 rounding), as after Normalize.
    normalised = F.normalize(ours, list(MEAN), list(STD))[:, 4:13, 7:19]
    assert torch.allclose(normalised, z.expand(3, 9, 12), atol=1e-5)
    assert torch.equal(op.pixels(image, [0, 0, 0, 0, 0] + ([0] if value == "random" else []), recipe.render), image)


def test_erasing_draws_torchvision_s_box_rule():
    recipe = Recipe.from_dict({"name": "e", "ops": [{"name": "random_erasing", "configuration": {
        "p": 1.0, "scale": [0.1, 0.3], "ratio": [0.5, 2.0]}}]})
    boxes = np.stack([sample_params(recipe, 0, i, 0, (40, 30)) for i in range(300)])
    applied, top, left, h, w = boxes.T
    assert applied.all()
    area = h * w / (40 * 30)
    assert area.min() >= 0.08 and area.max() <= 0.33  # scale, up to rounding of h and w
    assert (h < 40).all() and (w < 30).all() and (top + h <= 40).all() and (left + w <= 30).all()
    assert 0.3 < (h / w).min() and (h / w).max() < 2.8  # ratio is height / width here, as torchvision's
    half = Recipe.from_dict({"name": "e", "ops": [{"name": "random_erasing", "configuration": {"p": 0.5}}]})
    rate = np.mean([sample_params(half, 0, i, 0, (40, 30))[0] for i in range(400)])
    assert 0.4 < rate < 0.6


# --------------------------------------------------------------------------- whole views

SYNTH = "synthetic:samples=24,classes=4,size=20,channels=3,seed=3"

STRONG = {
    "name": "strong",
    "ops": [
        {"name": "random_resized_crop", "configuration": {"size": [18, 16], "scale": [0.3, 1.0]}},
        {"name": "horizontal_flip", "configuration": {"p": 0.5}},
        {"name": "color_jitter", "configuration": {"brightness": 0.3, "saturation": 0.3, "hue": 0.05}},
        {"name": "rand_augment", "configuration": {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 11,
                                                   "magnitude_std": 0.5, "p": 0.8, "fill": [124, 116, 104]}},
        {"name": "trivial_augment", "configuration": {}},
        {"name": "auto_augment", "configuration": {"policy": "cifar10", "fill": 9}},
        {"name": "random_erasing", "configuration": {"p": 0.5, "value": "random"}},
    ],
    "render": {"size": None, "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.3], "channels": None},
}


@pytest.fixture(scope="module")
def synth():
    return open_data(SYNTH)


@pytest.fixture(scope="module")
def strong():
    return Recipe.from_dict(STRONG)


def _pipeline(recipe: Recipe, image: torch.Tensor, params: np.ndarray) -> torch.Tensor:
    """The view through torchvision directly: resized_crop and flip on uint8, the ops as its classes apply
    them, float, erase (at mean + std * value), normalise."""
    geo = view_geometry(recipe, params, tuple(image.shape[-2:]))
    x = F.resized_crop(image, geo.top, geo.left, geo.height, geo.width, list(geo.size),
                       interpolation=InterpolationMode.BILINEAR, antialias=True)
    if geo.flip:
        x = F.horizontal_flip(x)
    names, values = recipe.param_names(), [int(p) for p in params]
    by_op: dict[int, dict[str, int]] = {}
    for name, value in zip(names, values):
        index, _, key = name.split(".")
        by_op.setdefault(int(index), {})[key] = value
    mean, std = torch.tensor(recipe.render.mean)[:, None, None], torch.tensor(recipe.render.std)[:, None, None]
    for index, op in enumerate(recipe.ops):
        p, config = by_op.get(index, {}), op["configuration"]
        if op["name"] == "color_jitter":  # on uint8, in the recorded order (torchvision's ColorJitter on a tensor)
            adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
            keys = ("brightness", "contrast", "saturation", "hue")
            for k in (p[f"order{i}"] for i in range(4)):
                if config[keys[k]] is not None and not (k >= 2 and x.shape[0] == 1):
                    x = adjust[k](x, p[keys[k]] / 1000)
        elif op["name"] in SPACES:
            bins = 10 if op["name"] == "auto_augment" else config["num_magnitude_bins"]
            fill = config["fill"]
            fill = [float(v) for v in fill] if isinstance(fill, list) else fill
            k = 0
            while f"op{k}" in p:
                if p[f"applied{k}"]:
                    name = SPACES[op["name"]][p[f"op{k}"]].name
                    value = _tv_value(op["name"], name, bins, p[f"magnitude{k}"], tuple(x.shape[-2:]))
                    x = _torchvision(op["name"], x, name, value, fill)
                k += 1
        elif op["name"] == "random_erasing":
            x = F.to_dtype(x, torch.float32, scale=True) if x.dtype == torch.uint8 else x
            if p["applied"]:
                z = torch.from_numpy(np.random.Generator(np.random.PCG64(np.random.SeedSequence([p["noise"]])))
                                     .standard_normal((x.shape[0], p["height"], p["width"]), dtype=np.float32))
                x = F.erase(x, p["top"], p["left"], p["height"], p["width"], mean + std * z)
    if x.dtype == torch.uint8:
        x = F.to_dtype(x, torch.float32, scale=True)
    return F.normalize(x, list(recipe.render.mean), list(recipe.render.std))


def test_a_view_is_the_torchvision_pipeline_at_its_params(synth, strong):
    ds = ViewDataset(synth, strong, 5)
    seen_ops = set()
    for sample in range(12):
        for view in range(3):
            item = ds[(sample, view)]
            expected = _pipeline(strong, synth.image(sample), item["params"].numpy())
            assert torch.equal(item["images"][0], expected), (sample, view)
            seen_ops.update(int(v) for v in item["params"][13:19:3])  # rand_augment's op0, op1
    assert len(seen_ops) > 5


def test_recorded_params_replay_bitwise_and_draws_are_pure(synth, strong):
    ds = ViewDataset(synth, strong, 5, [strong.render, Render(size=(9, 8), channels=1)])
    for sample, view in [(0, 0), (3, 2), (23, 7)]:
        drawn = ds[(sample, view)]
        replayed = ViewDataset(synth, strong, 999, ds.renders)[(sample, view, drawn["params"].numpy())]
        assert torch.equal(drawn["params"], replayed["params"])
        for a, b in zip(drawn["images"], replayed["images"]):
            assert torch.equal(a, b)
        # A fresh dataset, in another order: the same bits.
        again = ViewDataset(open_data(SYNTH), Recipe.from_dict(STRONG), 5, ds.renders)[(sample, view)]
        assert all(torch.equal(a, b) for a, b in zip(drawn["images"], again["images"]))


PINNED = [0, 0, 18, 16, 1, 1248, 1000, 1002, 11, 1, 2, 0, 3, 13, 0, 1, 10, 889, 1, 10, 2200, 1, 8, -100, 1, 8, -300, 1,
          1, 7, 2, 10, 7, 1321529464]


def test_strong_params_are_pinned(strong):
    # Integers, so machine independent: a change in the order or kind of the draws changes new stores.
    names = strong.param_names()
    assert len(names) == 4 + 1 + 8 + 6 + 3 + 6 + 6
    assert names[13:16] == ["3.rand_augment.op0", "3.rand_augment.magnitude0", "3.rand_augment.applied0"]
    assert names[-6:] == ["6.random_erasing." + k for k in ("applied", "top", "left", "height", "width", "noise")]
    assert sample_params(strong, 0, 0, 0, (20, 20)).tolist() == PINNED


def test_draws_follow_the_configuration():
    def draws(config, n=300, space="rand_augment"):
        recipe = Recipe.from_dict({"name": "d", "ops": [{"name": space, "configuration": config}]})
        return np.stack([sample_params(recipe, 1, i, 0, (32, 32)) for i in range(n)]).reshape(n, -1, 3)

    plain = draws({"num_ops": 2, "magnitude": 9})
    assert set(plain[..., 0].ravel()) == set(range(14))  # every op of the space drawn
    assert set(np.abs(plain[..., 1]).ravel()) <= {0, 900} and (plain[..., 2] == 1).all()
    signed = [k for k, kind in enumerate(SPACES["rand_augment"]) if kind.signed]
    mags = plain[..., 1][np.isin(plain[..., 0], signed)]
    assert 0.35 < np.mean(mags < 0) < 0.65
    noisy = draws({"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 11, "magnitude_std": 0.5, "p": 0.5})
    with_table = np.isin(noisy[..., 0], [k for k, kind in enumerate(SPACES["rand_augment"]) if kind.table])
    m = np.abs(noisy[..., 1][with_table]) / 100
    assert m.max() <= 10 and 8.7 < m.mean() < 9.1 and 0.3 < m.std() < 0.6 and len(set(m)) > 20
    assert 0.4 < noisy[..., 2].mean() < 0.6
    trivial = draws({"num_magnitude_bins": 31}, space="trivial_augment")
    with_table = np.isin(trivial[..., 0], [k for k, kind in enumerate(SPACES["trivial_augment"]) if kind.table])
    assert set(np.abs(trivial[..., 1][with_table]).ravel() // 100) == set(range(31))
    auto = draws({"policy": "svhn"}, space="auto_augment", n=400)
    names = [kind.name for kind in SPACES["auto_augment"]]
    pairs = {tuple((names[o], abs(mag) // 100 if SPACES["auto_augment"][o].table else None) for o, mag, _ in row)
             for row in auto}
    policy = {tuple((name, mid) for name, _, mid in sub) for sub in AUTO_AUGMENT_POLICIES["svhn"]}
    assert pairs == policy  # every sub-policy drawn, none invented


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("ops,needle", [
    ([{"name": "rand_augment"}, {"name": "random_crop", "configuration": {"size": 8}}],
     "op 1 (random_crop): a geometric op after rand_augment"),
    ([{"name": "random_erasing"}, {"name": "trivial_augment"}], "op 1 (trivial_augment): a uint8 op after random_erasing"),
    ([{"name": "random_erasing"}, {"name": "color_jitter", "configuration": {"brightness": 0.2}}],
     "a uint8 op after random_erasing"),
    ([{"name": "rand_augment", "configuration": {"magnitude": 31}}], "magnitude=31 must be below num_magnitude_bins=31"),
    ([{"name": "rand_augment", "configuration": {"fill": 300}}], "fill=300 must be null"),
    ([{"name": "auto_augment", "configuration": {"policy": "mnist"}}], "policy='mnist' must be one of"),
    ([{"name": "random_erasing", "configuration": {"value": "noise"}}], 'or "random"'),
    ([{"name": "random_erasing", "configuration": {"scale": [0.5, 1.5]}}], "0 < min <= max <= 1"),
    ([{"name": "trivial_augment", "configuration": {"magnitude": 3}}], "unknown configuration key(s) magnitude"),
])
def test_bad_recipes_are_one_line(ops, needle):
    with pytest.raises(RecipeError) as err:
        Recipe.from_dict({"name": "bad", "ops": ops})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_damaged_records_are_refused_naming_the_param(synth, strong):
    params = sample_params(strong, 5, 0, 0, (20, 20))
    names = strong.param_names()
    for name, value, needle in (("3.rand_augment.op0", 14, "op0=14"), ("3.rand_augment.magnitude0", 1001,
                                "magnitude0=1001"), ("3.rand_augment.applied0", 2, "applied0=2"),
                                ("6.random_erasing.top", 30, "box"), ("6.random_erasing.noise", -1, "noise=-1")):
        bad = params.copy()
        bad[names.index("6.random_erasing.applied")] = 1  # erased, so its box and noise are read
        bad[names.index(name)] = value
        with pytest.raises(RecipeError, match=needle):
            ViewDataset(synth, strong, 5)[(0, 0, bad)]


def test_per_channel_values_must_fit_the_channels():
    gray = open_data("synthetic:samples=4,classes=2,size=20,channels=1,seed=0")
    for op, needle in (({"name": "random_erasing", "configuration": {"p": 1.0, "value": [0.1, 0.2, 0.3]}},
                        "3 value values for a 1-channel image"),
                       ({"name": "trivial_augment", "configuration": {"fill": [1, 2, 3]}},
                        "fill has 3 values for a 1-channel image")):
        with pytest.raises(RecipeError, match=needle):
            ViewDataset(gray, Recipe.from_dict({"name": "e", "ops": [op]}), 0)[(0, 0)]


def test_a_misordered_recipe_file_is_one_line_through_the_cli(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"ops": [{"name": "trivial_augment"},
                                        {"name": "random_crop", "configuration": {"size": 16}}]}))
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "kdcache:tiny_cnn", "--random-init",
                         "--recipe", path, "--out", tmp_path / "s.zarr")
    assert_one_line_error(code, text, "op 1 (random_crop): a geometric op after trivial_augment")
    assert not (tmp_path / "s.zarr" / "zarr.json").exists()


def test_presets_keep_rendering_as_before_pixel_ops():
    """A recipe without pixel ops does not take the uint8 path (existing stores' views are unchanged)."""
    recipe = load_recipe("cifar")
    item = ViewDataset(open_data("synthetic:samples=4,classes=2,size=32,channels=3,seed=0"), recipe, 0)[(1, 0)]
    image = open_data("synthetic:samples=4,classes=2,size=32,channels=3,seed=0").image(1)
    geo = view_geometry(recipe, item["params"].numpy(), (32, 32))
    assert geo.size == (32, 32)
    padded = torch.zeros(3, 40, 40, dtype=torch.uint8)
    padded[:, 4:36, 4:36] = image
    x = F.to_dtype(padded[:, geo.top + 4 : geo.top + 36, geo.left + 4 : geo.left + 36], torch.float32, scale=True)
    x = F.horizontal_flip(x) if geo.flip else x
    assert torch.equal(item["images"][0], F.normalize(x, list(recipe.render.mean), list(recipe.render.std)))


# --------------------------------------------------------------------------- through the CLI

DATA = "synthetic:samples=160,classes=4,size=20,channels=3,seed=5"


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "strong.json"
    config = json.loads(json.dumps(STRONG))
    config["ops"][-1]["configuration"]["p"] = 0.5
    path.write_text(json.dumps(config))
    return path


def _precompute(out: Path, recipe: Path, *extra: str) -> Path:
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "kdcache:tiny_cnn", "--random-init",
                         "--views", "2", "--seed", "4", "--recipe", recipe, "--out", out, "--chunk-rows", "128",
                         "--encoding", "float32", *extra)
    assert code == 0, text
    return out


def test_precompute_rows_do_not_depend_on_batch_size_or_workers_and_replay(tmp_path, recipe_file):
    # --batch-size rounds to the teacher's micro-batch (64): 16 scores 64-row batches, 128 whole chunks.
    a = _precompute(tmp_path / "a.zarr", recipe_file, "--batch-size", "16")
    b = _precompute(tmp_path / "b.zarr", recipe_file, "--batch-size", "128", "--workers", "2")
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    assert np.array_equal(ga["views/params"][:], gb["views/params"][:])
    names = ga["views/params"].attrs["names"]
    # format 2: int16 columns, the 31-bit noise seed in two halves (docs/store-format.md)
    assert "3.rand_augment.magnitude0" in names and "6.random_erasing.noise.hi" in names
    (teacher,) = list(ga["teachers"].group_keys())
    la, lb = ga[f"teachers/{teacher}/logits"][:], gb[f"teachers/{teacher}/logits"][:]
    assert la.tobytes() == lb.tobytes()
    erased = ga["views/params"][:, :, names.index("6.random_erasing.applied")]
    assert 0.3 < erased.mean() < 0.7
    code, text = run_cli("verify", a, "--replay", "12", "--data", DATA)
    assert code == 0 and "bitwise equal" in text, text


def test_the_documented_param_names_decode_a_plain_zarr_store(tmp_path, recipe_file):
    """docs/store-format.md: a reader with zarr alone finds each slot's op, magnitude and whether it applied."""
    store = _precompute(tmp_path / "s.zarr", recipe_file, "--batch-size", "64")
    g = zarr.open_group(store, mode="r")
    names = list(g["views/params"].attrs["names"])
    params = g["views/params"][0, :].astype(np.int64)  # (N, columns) int16: a wide param in .hi/.lo halves
    recipe = json.loads(json.dumps(g.attrs["kdcache"]["views"]["recipe"]))
    ops = {f"{i}.{op['name']}": op for i, op in enumerate(recipe["ops"])}
    op_col = names.index("3.rand_augment.op0")
    mag_col = names.index("3.rand_augment.magnitude0")
    bins = ops["3.rand_augment"]["configuration"]["num_magnitude_bins"]
    assert params[:, op_col].min() >= 0 and params[:, op_col].max() < 14
    assert np.abs(params[:, mag_col]).max() <= (bins - 1) * 100
    ds = ViewDataset(open_data(DATA), Recipe.from_dict(recipe), 4)
    wide = [n[: -len(".hi")] for n in names if n.endswith(".hi")]
    assert wide == ["6.random_erasing.noise"]
    for sample in (0, 17, 159):
        row = {n: params[sample, j] for j, n in enumerate(names)}
        for n in wide:  # value = hi * 65536 + (lo read as uint16)
            row[n] = row.pop(n + ".hi") * 65536 + (row.pop(n + ".lo") & 0xFFFF)
        decoded = [row[n] for n in Recipe.from_dict(recipe).param_names()]
        assert torch.equal(torch.tensor(decoded, dtype=torch.int32), ds[(sample, 0)]["params"])
