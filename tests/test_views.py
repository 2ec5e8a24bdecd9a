"""The view-replay contract: a view is a pure function of (seed, sample, view)."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as F

from kdcache.data import open_data
from kdcache.errors import RecipeError, SpecError
from kdcache.views import (
    EvalDataset,
    Recipe,
    Render,
    ViewDataset,
    apply_params,
    eval_dataset,
    list_ops,
    list_presets,
    load_recipe,
    sample_params,
    view_generator,
    view_geometry,
)

# Pinned on purpose: a change to a preset, to the canonical JSON or to the
# recipe format changes these, and every store made before would stop matching.
PRESET_HASHES = {
    "cifar": "sha256:82badca5977dd59ae0dd90e077172f25082fbd7723c926d50d7a6aab88acf2a3",
    "fashion-mnist": "sha256:928c4f87272c8cd1788be26f0c0a18b2d68f871dadff7c9a7e4e691b2f7c19e1",
    # Changed (was sha256:0860785...) when imagenet gained its evaluation
    # geometry ("eval"); recipes without one keep their hashes.
    "imagenet": "sha256:3ac0a375bd261e960099230359721edb7920a890f2f42800b38b1ebde933fddb",
    "none": "sha256:ca9b9002b104bd13ae4ad4d58b8cc9c781f7fec450be2afd2ca12ed0fcbac99d",
}

SYNTH = "synthetic:samples=24,classes=4,size=20,channels=3,seed=3"

# Every op at once, on an RGB source, so replay is checked for all of them.
FULL_RECIPE = {
    "name": "full",
    "ops": [
        {"name": "resize", "configuration": {"size": 26}},
        {"name": "random_resized_crop", "configuration": {"size": [18, 18], "scale": [0.3, 1.0]}},
        {"name": "random_crop", "configuration": {"size": 16, "padding": 2, "fill": 7}},
        {"name": "horizontal_flip", "configuration": {"p": 0.5}},
        {
            "name": "color_jitter",
            "configuration": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
        },
        {"name": "center_crop", "configuration": {"size": 14}},
    ],
    "render": {"size": None, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channels": None},
}

RENDERS = [Render(size=(28, 28), mean=(0.4,), std=(0.2,)), Render(size=(9, 11), channels=1)]


@pytest.fixture(scope="module")
def synth():
    return open_data(SYNTH)


@pytest.fixture(scope="module")
def full():
    return Recipe.from_dict(FULL_RECIPE)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


# --------------------------------------------------------------------------- seeds and params


def test_view_generator_is_the_documented_derivation():
    ours = view_generator(7, 11, 2).integers(0, 2**62, size=4)
    spelled = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, 11, 2]))).integers(0, 2**62, size=4)
    assert np.array_equal(ours, spelled)
    # The first 64-bit word of the stream, pinned: a numpy change to
    # SeedSequence or PCG64 would alter every view, so it must fail loudly.
    assert int(view_generator(0, 0, 0).bit_generator.random_raw()) == 0xA30FEBCFD9C2825F


@pytest.mark.parametrize("bad", [(-1, 0, 0), (0, -2, 0), (0, 0, 1.5), ("1", 0, 0)])
def test_view_generator_rejects_bad_keys(bad):
    with pytest.raises(SpecError, match="non-negative integer"):
        view_generator(*bad)


def test_params_are_int32_and_named(full):
    params = sample_params(full, 0, 3, 1, (20, 20))
    assert params.dtype == np.int32 and params.shape == (len(full.param_names()),)
    assert full.param_names()[:4] == [
        "1.random_resized_crop.top",
        "1.random_resized_crop.left",
        "1.random_resized_crop.height",
        "1.random_resized_crop.width",
    ]
    assert np.array_equal(params, sample_params(full, 0, 3, 1, (20, 20)))


def test_drawn_params_are_pinned(full):
    # Integers, so machine independent: a change in the order or kind of the
    # draws (e.g. while moving code) would silently change every new store.
    pinned = {
        (0, 0): [2, 0, 22, 26, 3, 4, 1, 927, 704, 636, -100, 2, 3, 1, 0],
        (7, 1): [3, 1, 23, 25, 5, 0, 1, 879, 1322, 1120, 57, 1, 3, 0, 2],
        (23, 3): [7, 1, 15, 20, 6, 5, 0, 1370, 1330, 1106, -96, 3, 2, 0, 1],
    }
    for (sample, view), params in pinned.items():
        assert sample_params(full, 5, sample, view, (20, 20)).tolist() == params


def test_different_seeds_samples_and_views_differ(full, synth):
    keys = [(0, 5, 0), (1, 5, 0), (0, 6, 0), (0, 5, 1)]
    params = {k: tuple(sample_params(full, *k, (20, 20))) for k in keys}
    assert len(set(params.values())) == len(keys)
    image = synth.image(5)
    views = {digest(apply_params(full, image, np.array(params[k]), full.render)) for k in keys[:1] + keys[1:2] + keys[3:]}
    assert len(views) == 3


def test_replay_from_recorded_params_is_exact(full, synth):
    ds = ViewDataset(synth, full, seed=9, renders=RENDERS)
    for key in [(0, 0), (3, 1), (23, 4)]:
        item = ds[key]
        for render, image in zip(RENDERS, item["images"]):
            again = apply_params(full, synth.image(key[0]), item["params"].numpy(), render)
            assert torch.equal(again, image)


def test_item_layout_and_default_collate(full, synth):
    ds = ViewDataset(synth, full, seed=0, renders=RENDERS)
    item = ds[(2, 1)]
    assert item["sample"] == 2 and item["view"] == 1 and item["label"] == int(synth.labels[2])
    assert item["params"].dtype == torch.int32
    assert [tuple(x.shape) for x in item["images"]] == [(3, 28, 28), (1, 9, 11)]
    assert all(x.dtype == torch.float32 for x in item["images"])
    loader = DataLoader(ds, batch_sampler=[[(0, 0), (1, 0), (2, 3)]])
    batch = next(iter(loader))
    assert batch["sample"].tolist() == [0, 1, 2] and batch["view"].tolist() == [0, 0, 3]
    assert batch["params"].shape == (3, len(full.param_names()))
    assert batch["images"][0].shape == (3, 3, 28, 28) and batch["images"][1].shape == (3, 1, 9, 11)


def test_default_render_is_the_recipes(synth):
    recipe = load_recipe("cifar")
    ds = ViewDataset(open_data("synthetic:samples=4,size=32"), recipe, seed=0)
    assert ds.renders == (recipe.render,)
    assert ds[(0, 0)]["images"][0].shape == (3, 32, 32)


@pytest.mark.parametrize("key", [(24, 0), (-1, 0)])
def test_out_of_range_sample(full, synth, key):
    with pytest.raises(IndexError):
        ViewDataset(synth, full, seed=0)[key]


def test_malformed_key(full, synth):
    with pytest.raises(TypeError, match=r"\(sample, view\)"):
        ViewDataset(synth, full, seed=0)[3]
    with pytest.raises(SpecError):
        ViewDataset(synth, full, seed=0)[(1, -1)]


def test_recorded_params_are_rendered_not_drawn(synth):
    # A store whose recorded flips differ from what the seed draws: the key
    # with params must render the record (every flip forced to 1), mirrored.
    recipe = load_recipe("cifar")
    source = open_data("synthetic:samples=6,size=32,seed=4")
    ds = ViewDataset(source, recipe, seed=3, renders=[Render()])
    for sample in range(6):
        drawn = ds[(sample, 0)]
        top, left, flip = drawn["params"].tolist()
        forced = np.array([top, left, 1], dtype=np.int64)
        item = ds[(sample, 0, forced)]
        assert item["params"].dtype == torch.int32 and item["params"].tolist() == [top, left, 1]
        unflipped = ds[(sample, 0, np.array([top, left, 0], np.int32))]["images"][0]
        assert torch.equal(item["images"][0], F.horizontal_flip(unflipped))
        if flip:
            assert torch.equal(item["images"][0], drawn["images"][0])
        else:
            assert not torch.equal(item["images"][0], drawn["images"][0])
    # Recorded params that no seed would draw (offsets outside the drawn range
    # are still a valid box: they show the fill) render as recorded.
    far = ds[(0, 9, torch.tensor([0, 8, 1], dtype=torch.int32))]
    assert far["params"].tolist() == [0, 8, 1] and far["view"] == 9


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([1, 2], r"takes 3 integer params; got shape \(2,\)"),
        ([1, 2, 3, 4], r"takes 3 integer params; got shape \(4,\)"),
        ([1.0, 2.0, 1.0], r"takes 3 integer params; .* of float64"),
        ([True, False, True], r"takes 3 integer params; .* of bool"),
        ([[1, 2, 3]], r"takes 3 integer params; got shape \(1, 3\)"),
        ([0, 2**40, 1], r"do not fit int32"),
    ],
)
def test_recorded_params_are_validated(params, message):
    ds = ViewDataset(open_data("synthetic:samples=2,size=32"), load_recipe("cifar"), seed=0)
    with pytest.raises(RecipeError, match=message):
        ds[(0, 0, params)]


def test_eval_dataset_items_are_keyed_by_sample(synth):
    render = Render(size=(16, 16), mean=(0.5,), std=(0.25,))
    ds = eval_dataset(synth, load_recipe("cifar"), render)
    assert len(ds) == len(synth)
    item = ds[5]
    assert set(item) == {"sample", "label", "images"}
    assert item["sample"] == 5 and item["label"] == int(synth.labels[5])
    expected = F.normalize(
        F.resize(F.to_dtype(synth.image(5), torch.float32, scale=True), [16, 16], antialias=True), [0.5], [0.25]
    )
    assert torch.equal(item["images"][0], expected)
    batch = next(iter(DataLoader(ds, batch_sampler=[[0, 3, 7]])))
    assert batch["sample"].tolist() == [0, 3, 7] and batch["images"][0].shape == (3, 3, 16, 16)
    with pytest.raises(TypeError, match="sample indices"):
        ds[(0, 0)]
    with pytest.raises(IndexError):
        ds[len(synth)]


# --------------------------------------------------------------------------- bitwise replay across loaders


def _views(ds: ViewDataset, keys, batch_size: int, workers: int) -> dict:
    batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers)
    out = {}
    for batch in loader:
        for row, (s, v) in enumerate(zip(batch["sample"].tolist(), batch["view"].tolist())):
            out[(s, v)] = tuple(digest(images[row]) for images in batch["images"]) + (
                digest(batch["params"][row]),
            )
    return out


def test_bitwise_identical_across_batch_sizes_workers_and_orders(full, synth):
    ds = ViewDataset(synth, full, seed=5, renders=RENDERS)
    keys = [(s, v) for v in range(2) for s in range(len(synth))]
    shuffled = keys[:]
    random.Random(0).shuffle(shuffled)
    reference = _views(ds, keys, batch_size=1, workers=0)
    assert len(reference) == len(keys)
    assert _views(ds, keys, batch_size=7, workers=0) == reference
    assert _views(ds, shuffled, batch_size=5, workers=0) == reference
    assert _views(ds, shuffled, batch_size=16, workers=2) == reference
    # A pickled (spawn-style) copy reloads its data and still agrees.
    assert _views(pickle.loads(pickle.dumps(ds)), keys[::-1], batch_size=3, workers=0) == reference


def test_bitwise_identical_in_a_fresh_process(full, synth):
    keys = [(0, 0), (7, 1), (23, 3)]
    ds = ViewDataset(synth, full, seed=5, renders=RENDERS)
    here = [[digest(x) for x in ds[k]["images"]] for k in keys]
    script = textwrap.dedent(
        f"""
        import hashlib, json
        from kdcache.data import open_data
        from kdcache.views import Recipe, Render, ViewDataset
        recipe = Recipe.from_dict(json.loads({json.dumps(json.dumps(FULL_RECIPE))}))
        renders = [Render(size=(28, 28), mean=(0.4,), std=(0.2,)), Render(size=(9, 11), channels=1)]
        ds = ViewDataset(open_data({SYNTH!r}), recipe, seed=5, renders=renders)
        out = [[hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest() for x in ds[tuple(k)]["images"]]
               for k in {keys!r}]
        print(json.dumps(out))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == here


# --------------------------------------------------------------------------- recipes as data


@pytest.mark.parametrize("name", sorted(PRESET_HASHES))
def test_preset_hash_is_pinned_and_round_trips(name):
    recipe = load_recipe(name)
    assert recipe.hash() == PRESET_HASHES[name]
    assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe
    assert Recipe.from_dict(recipe.to_dict()).hash() == recipe.hash()
    assert pickle.loads(pickle.dumps(recipe)) == recipe


def test_presets_listed():
    assert list_presets() == ["cifar", "cifar-autoaugment", "fashion-mnist", "imagenet", "imagenet-randaug",
                              "imagenet-trivial", "none"]
    assert set(list_ops()) >= {"random_crop", "random_resized_crop", "horizontal_flip", "color_jitter", "resize", "center_crop"}


def test_canonical_json_normalises_equivalent_spellings():
    short = Recipe.from_dict({"name": "r", "ops": [{"name": "random_crop", "configuration": {"size": 32}}]})
    long = Recipe.from_dict(
        {
            "format": 1,
            "name": "r",
            "ops": [{"name": "random_crop", "configuration": {"fill": 0, "padding": 0, "size": [32, 32]}}],
            "render": {"mean": [0.0], "std": [1.0]},
        }
    )
    assert short == long and short.hash() == long.hash()
    assert json.loads(short.to_json())["ops"][0]["configuration"] == {"size": [32, 32], "padding": 0, "fill": 0}


def test_hash_changes_with_any_field():
    base = load_recipe("cifar").to_dict()
    changed = json.loads(json.dumps(base))
    changed["ops"][0]["configuration"]["padding"] = 3
    renamed = dict(base, name="cifar2")
    hashes = {Recipe.from_dict(d).hash() for d in (base, changed, renamed)}
    assert len(hashes) == 3


def test_load_recipe_from_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"ops": [{"name": "horizontal_flip", "configuration": {"p": 1}}]}))
    recipe = load_recipe(str(path))
    assert recipe.name == "mine" and recipe.ops[0]["configuration"] == {"p": 1.0}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecipeError, match="not valid JSON"):
        load_recipe(str(bad))
    with pytest.raises(RecipeError, match="neither a preset .*cifar.* nor a JSON file"):
        load_recipe("cifar11")


def _op(name, **configuration):
    return {"name": "r", "ops": [{"name": name, "configuration": configuration}]}


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (_op("rotate", degrees=3), r"op 0: unknown op 'rotate'; known: .*center_crop"),
        (_op("random_crop"), r"op 0 \(random_crop\): configuration key 'size' is missing"),
        (_op("random_crop", size=32, pad=4), r"op 0 \(random_crop\): unknown configuration key\(s\) pad"),
        (_op("random_crop", size="32"), r"random_crop\): size='32' must be an integer or a pair"),
        (_op("random_crop", size=[32, 0]), r"random_crop\): size=\[32, 0\] must be positive"),
        (_op("random_crop", size=32, padding=-1), r"padding=-1 must be a non-negative integer"),
        (_op("random_crop", size=32, fill=300), r"fill=300 must be an integer 0..255"),
        (_op("random_crop", size=True), r"size=True must be an integer"),
        (_op("horizontal_flip", p=1.5), r"horizontal_flip\): p=1.5 must be in \[0, 1\]"),
        (_op("random_resized_crop", size=8, scale=[0.9, 0.1]), r"scale=\[0.9, 0.1\] must have 0 < min <= max"),
        (_op("random_resized_crop", size=8, ratio=[1.0]), r"ratio=\[1.0\] must be a pair"),
        (_op("color_jitter", hue=0.7), r"color_jitter\): hue=0.7 must be in \[0, 0.5\]"),
        (_op("color_jitter", brightness=-0.1), r"brightness=-0.1 must be >= 0"),
        (_op("resize", size=0), r"resize\): size=0 must be positive"),
        ({"name": "r", "ops": [{"name": "resize", "config": {}}]}, r"op 0 \(resize\): unknown key\(s\) config"),
        ({"name": "r", "ops": ["resize"]}, r"op 0: expected an object"),
        ({"name": "r", "ops": {"name": "resize"}}, r"ops must be a list"),
        ({"name": "r", "steps": []}, r"unknown key\(s\) steps"),
        (
            {"name": "r", "eval": [{"name": "horizontal_flip", "configuration": {}}]},
            r"eval op 0 \(horizontal_flip\): evaluation must not be random",
        ),
        ({"name": "r", "eval": [{"name": "resize", "configuration": {"size": 0}}]}, r"eval op 0 \(resize\): size=0"),
        ({"name": "r", "eval": "resize"}, r"eval must be a list"),
        ({"ops": []}, r"key 'name' is missing"),
        ({"name": "r", "format": 2}, r"recipe format 2 is not supported"),
        ({"name": "r", "render": {"std": [0.0]}}, r"render: std=\[0.0\] must be positive"),
        ({"name": "r", "render": {"mean": [0.1, 0.2], "std": [1.0]}}, r"mean has 2 values but std has 1"),
        ({"name": "r", "render": {"channels": 2}}, r"channels=2; expected null, 1 or 3"),
        ({"name": "r", "render": {"size": [4, 4], "dpi": 3}}, r"render: unknown key\(s\) dpi"),
        (
            {"name": "r", "ops": [_op("random_crop", size=8, padding=1, fill=0)["ops"][0]] * 1
             + [_op("random_crop", size=6, padding=1, fill=9)["ops"][0]]},
            r"random_crop ops disagree on fill",
        ),
    ],
)
def test_invalid_recipes_are_rejected_with_a_clear_message(recipe, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(recipe)


def test_impossible_sizes_fail_when_the_image_size_is_known():
    recipe = Recipe.from_dict(_op("random_crop", size=32, padding=1))
    assert recipe.output_size((30, 30)) == (32, 32)
    with pytest.raises(RecipeError, match=r"op 0 \(random_crop\): a 32x32 crop does not fit a 28x28 image padded by 1"):
        sample_params(recipe, 0, 0, 0, (28, 28))
    with pytest.raises(RecipeError, match="takes 2 integer params"):
        apply_params(recipe, torch.zeros(1, 30, 30, dtype=torch.uint8), np.zeros(3, np.int32), Render())


# --------------------------------------------------------------------------- geometry and rendering


def _image(channels: int, h: int, w: int) -> torch.Tensor:
    return torch.arange(channels * h * w, dtype=torch.int64).reshape(channels, h, w).mul(37).remainder(251).to(torch.uint8)


def test_random_crop_and_flip_match_torchvision():
    recipe = load_recipe("cifar")
    image = _image(3, 32, 32)
    for view in range(6):
        params = sample_params(recipe, 1, 2, view, (32, 32))
        top, left, flip = params.tolist()
        expected = F.crop(F.pad(image, [4, 4, 4, 4], fill=0), top, left, 32, 32)
        if flip:
            expected = F.horizontal_flip(expected)
        expected = F.normalize(F.to_dtype(expected, torch.float32, scale=True), list(recipe.render.mean), list(recipe.render.std))
        assert torch.equal(apply_params(recipe, image, params, recipe.render), expected)


def test_random_resized_crop_matches_torchvision_given_the_box():
    recipe = Recipe.from_dict(_op("random_resized_crop", size=[24, 20]))
    image = _image(3, 50, 40)
    for view in range(6):
        params = sample_params(recipe, 0, 0, view, (50, 40))
        top, left, h, w = params.tolist()
        assert 0 <= top <= 50 - h and 0 <= left <= 40 - w
        expected = F.resized_crop(F.to_dtype(image, torch.float32, scale=True), top, left, h, w, [24, 20], antialias=True)
        assert torch.equal(apply_params(recipe, image, params, Render()), expected)


def test_color_jitter_matches_torchvision_in_the_recorded_order():
    recipe = Recipe.from_dict(_op("color_jitter", brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2))
    image = _image(3, 10, 12)
    params = sample_params(recipe, 4, 4, 4, (10, 12))
    factors, order = params[:4].tolist(), params[4:].tolist()
    assert sorted(order) == [0, 1, 2, 3] and 500 <= factors[0] <= 1500 and -200 <= factors[3] <= 200
    fns = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    expected = F.to_dtype(image, torch.float32, scale=True)
    for k in order:
        expected = fns[k](expected, factors[k] / 1000)
    assert torch.equal(apply_params(recipe, image, params, Render()), expected)


def test_color_jitter_skips_saturation_and_hue_on_grayscale():
    recipe = Recipe.from_dict(_op("color_jitter", brightness=0.5, saturation=0.9, hue=0.4))
    image = _image(1, 10, 12)
    for view in range(4):
        params = sample_params(recipe, 0, 0, view, (10, 12))
        expected = F.adjust_brightness(F.to_dtype(image, torch.float32, scale=True), params[0] / 1000)
        assert torch.equal(apply_params(recipe, image, params, Render()), expected)
        # Off adjustments record their identity.
        assert params[1] == 1000


def test_teacher_and_student_share_the_crop_box():
    recipe = load_recipe("imagenet")
    image = _image(3, 120, 90)
    params = sample_params(recipe, 0, 1, 0, (120, 90))
    geo = view_geometry(recipe, params, (120, 90))
    top, left, h, w, flip = params.tolist()
    assert (geo.top, geo.left, geo.height, geo.width, geo.flip) == (top, left, h, w, bool(flip))
    crop = F.crop(F.to_dtype(image, torch.float32, scale=True), top, left, h, w)
    if flip:
        crop = F.horizontal_flip(crop)
    for size in [(64, 64), (32, 32)]:
        render = Render(size=size)
        # One resampling, straight from the source box to this consumer's size.
        expected = F.resize(crop, list(size), antialias=True)
        assert torch.equal(apply_params(recipe, image, params, render), expected)
    # On a smooth image, the teacher's view shrunk to the student's size is
    # the student's view up to resampling error; a box one pixel off is not.
    yy, xx = torch.meshgrid(torch.arange(120.0), torch.arange(90.0), indexing="ij")
    smooth = ((torch.sin(yy / 9) + torch.cos(xx / 7)) * 60 + 128).to(torch.uint8).expand(3, -1, -1)
    teacher = apply_params(recipe, smooth, params, Render(size=(64, 64)))
    student = apply_params(recipe, smooth, params, Render(size=(32, 32)))
    shifted = params.copy()
    shifted[0] += 1 if top == 0 else -1
    off = apply_params(recipe, smooth, shifted, Render(size=(32, 32)))
    error = (F.resize(teacher, [32, 32], antialias=True) - student).abs().mean()
    assert error < 0.01 < (off - student).abs().mean()


def test_composed_geometry_is_exact():
    # resize (shorter side 64: 100x64) then centre crop 32 at (34, 16): in
    # source pixels (scale 2) the box is 64x64 at (68, 32).
    recipe = Recipe.from_dict(
        {"name": "eval", "ops": [{"name": "resize", "configuration": {"size": 64}}, {"name": "center_crop", "configuration": {"size": 32}}]}
    )
    geo = view_geometry(recipe, np.zeros(0, np.int32), (200, 128))
    assert (geo.top, geo.left, geo.height, geo.width, geo.size) == (68, 32, 64, 64, (32, 32))
    # A crop after a flip is mirrored back into source coordinates.
    flipped = Recipe.from_dict(
        {"name": "f", "ops": [{"name": "horizontal_flip", "configuration": {"p": 1}}, {"name": "random_crop", "configuration": {"size": [4, 3]}}]}
    )
    geo = view_geometry(flipped, np.array([1, 2, 0], np.int32), (10, 8))
    assert (geo.top, geo.left, geo.height, geo.width, geo.flip) == (2, 5, 4, 3, True)
    image = _image(1, 10, 8)
    expected = F.horizontal_flip(F.to_dtype(image, torch.float32, scale=True))[:, 2:6, 0:3]
    assert torch.equal(apply_params(flipped, image, np.array([1, 2, 0], np.int32), Render()), expected)


def test_padding_shows_the_fill_value():
    recipe = Recipe.from_dict(_op("random_crop", size=6, padding=3, fill=255))
    image = torch.zeros(1, 6, 6, dtype=torch.uint8)
    out = apply_params(recipe, image, np.array([0, 0], np.int32), Render())
    assert out[0, :3].eq(1.0).all() and out[0, :, :3].eq(1.0).all() and out[0, 3:, 3:].eq(0.0).all()


def test_render_channels_and_normalisation():
    recipe = load_recipe("fashion-mnist")
    image = _image(1, 28, 28)
    params = sample_params(recipe, 0, 0, 0, (28, 28))
    gray = apply_params(recipe, image, params, recipe.render)
    rgb = apply_params(recipe, image, params, Render(mean=recipe.render.mean, std=recipe.render.std, channels=3))
    assert gray.shape == (1, 28, 28) and rgb.shape == (3, 28, 28)
    assert torch.equal(rgb[2], gray[0])
    raw = apply_params(recipe, image, params, Render())
    assert torch.allclose(gray, (raw - 0.286) / 0.353)
    with pytest.raises(RecipeError, match="3 mean/std values for a 1-channel image"):
        apply_params(recipe, image, params, Render(mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0)))


def test_view_dataset_pickles_cheaply(full, synth):
    ds = ViewDataset(synth, full, seed=1, renders=RENDERS)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000
    again = pickle.loads(blob)
    assert torch.equal(again[(4, 2)]["images"][0], ds[(4, 2)]["images"][0])


@settings(max_examples=40, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    sample=st.integers(0, 2**32),
    view=st.integers(0, 1000),
    h=st.integers(8, 64),
    w=st.integers(8, 64),
)
def test_property_params_stay_in_bounds_and_replay(seed, sample, view, h, w):
    recipe = Recipe.from_dict(
        {
            "name": "p",
            "ops": [
                {"name": "random_resized_crop", "configuration": {"size": 12}},
                {"name": "random_crop", "configuration": {"size": 10, "padding": 3}},
                {"name": "horizontal_flip", "configuration": {}},
                {"name": "color_jitter", "configuration": {"brightness": 0.3, "hue": 0.05}},
            ],
        }
    )
    params = sample_params(recipe, seed, sample, view, (h, w))
    top, left, ch, cw, ctop, cleft, flip = params[:7].tolist()
    assert 0 < ch <= h and 0 < cw <= w and 0 <= top <= h - ch and 0 <= left <= w - cw
    assert 0 <= ctop <= 8 and 0 <= cleft <= 8 and flip in (0, 1)  # 12 + 2*3 - 10
    assert 700 <= params[7] <= 1300 and -50 <= params[10] <= 50
    image = _image(3, h, w)
    once = apply_params(recipe, image, params, Render(size=(8, 8)))
    assert torch.equal(once, apply_params(recipe, image, params.copy(), Render(size=(8, 8))))
    assert torch.isfinite(once).all()


# --------------------------------------------------------------------------- evaluation geometry


def test_eval_geometry_is_part_of_the_recipe_and_its_hash():
    imagenet = load_recipe("imagenet")
    assert [op["name"] for op in imagenet.eval_ops] == ["resize", "center_crop"]
    assert json.loads(imagenet.to_json())["eval"][1] == {"name": "center_crop", "configuration": {"size": [224, 224]}}
    assert Recipe.from_dict(json.loads(imagenet.to_json())) == imagenet
    plain = imagenet.to_dict()
    del plain["eval"]
    assert Recipe.from_dict(plain).hash() != imagenet.hash()
    # Absent means "as it is": not written, so older recipes keep their hash.
    assert "eval" not in load_recipe("cifar").to_dict() and load_recipe("cifar").eval_ops == ()


def _smooth(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    return ((torch.sin(yy / 17) + torch.cos(xx / 13)) * 60 + 128).to(torch.uint8).expand(3, -1, -1).contiguous()


@pytest.mark.parametrize("size", [(300, 400), (500, 260), (224, 224)])
def test_imagenet_eval_is_torchvisions_resize_then_centre_crop(size):
    # torchvision's reference evaluation: Resize(256) then CenterCrop(224).
    # kdcache resamples the same source box once instead of twice, so the
    # result agrees up to resampling error; a box off by a few pixels does not.
    recipe = load_recipe("imagenet")
    image = _smooth(*size)
    ours = EvalDataset(_OneImage(image), recipe, recipe.render)[0]["images"][0]
    x = F.to_dtype(image, torch.float32, scale=True)
    reference = F.center_crop(F.resize(x, 256, antialias=True), [224, 224])
    reference = F.normalize(reference, list(recipe.render.mean), list(recipe.render.std))
    assert ours.shape == (3, 224, 224)
    assert (ours - reference).abs().mean() < 0.02
    shifted = F.normalize(F.center_crop(F.resize(x, 240, antialias=True), [224, 224]), list(recipe.render.mean), list(recipe.render.std))
    assert (ours - shifted).abs().mean() > 2 * (ours - reference).abs().mean()


class _OneImage:
    def __init__(self, image):
        self._image = image
        self.labels = np.zeros(1, np.int64)

    def __len__(self):
        return 1

    def image(self, i):
        return self._image


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
def test_mixed_size_imagefolder_evaluates_at_the_training_size(tmp_path):
    from torchvision.io import write_png

    sizes = [(40, 60), (90, 50), (33, 33), (120, 80)]
    for k, (h, w) in enumerate(sizes):
        folder = tmp_path / f"c{k % 2}"
        folder.mkdir(exist_ok=True)
        write_png(_smooth(h, w), str(folder / f"{k}.png"))
    source = open_data(f"imagefolder:{tmp_path}")
    assert {source.image_size(i) for i in range(len(source))} == set(sizes)
    everything = [list(range(len(source)))]
    # The student's render size wins; the student's normalisation is applied.
    student = Render(size=(32, 32), mean=(0.5,), std=(0.25,))
    batch = next(iter(DataLoader(eval_dataset(source, load_recipe("imagenet"), student), batch_sampler=everything)))
    assert batch["images"][0].shape == (4, 3, 32, 32)
    first = eval_dataset(source, load_recipe("imagenet"), Render(size=(32, 32)))[0]["images"][0]
    assert torch.allclose(batch["images"][0][0], (first - 0.5) / 0.25)
    # No render size: the recipe's own training size (224 for imagenet, 32
    # for cifar's crop), never each image's native size.
    for name, side in [("imagenet", 224), ("cifar", 32)]:
        recipe = load_recipe(name)
        loader = DataLoader(eval_dataset(source, recipe, recipe.render), batch_sampler=everything)
        assert next(iter(loader))["images"][0].shape == (4, 3, side, side)
        train = ViewDataset(source, recipe, seed=0)
        assert {tuple(train[(i, 0)]["images"][0].shape) for i in range(len(source))} == {(3, side, side)}
