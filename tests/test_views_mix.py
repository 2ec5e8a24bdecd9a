"""The ``mix`` op (timm's per-sample mixup/cutmix, the partner a pure function of (seed, sample, view)) and the
strong-augmentation presets.

* λ, mode and box follow timm's ``Mixup`` (mode ``elem``, ``correct_lam``): checked against timm's own
  ``cutmix_bbox_and_lam`` fed the same draws, and an independent reimplementation of the draws.
* The partner is another valid sample, a pure function of (seed, sample, view); its view is recorded and
  the mixed pixels are exactly ``λ·own + (1 − λ)·partner`` or the pasted box.
* Through the CLI: a recipe with rand_augment, random_erasing (p 0.5) and mix (prob 1.0) gives bitwise-equal
  ``views/params`` and logits at two batch sizes (after the teacher's rounding), with workers and with
  2 torchrun ranks; ``verify --replay`` passes; cached distill equals online distill bitwise; the rows a
  loss sees carry MixedLabels from the store's labels and the recorded partner and λ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from kdcache import losses
from kdcache.data import open_data
from kdcache.errors import RecipeError
from kdcache.store import Store
from kdcache.views import Recipe, Render, ViewDataset, load_recipe, sample_params
from kdcache.views.mix import LAM_SCALE, mixed_labels
from kdcache.views.seeds import partner_generator
from tests.cli_helpers import run_cli

SYNTH = "synthetic:samples=40,classes=4,size=20,channels=3,seed=5"
BASE_OPS = [
    {"name": "random_resized_crop", "configuration": {"size": [16, 16], "scale": [0.3, 1.0]}},
    {"name": "horizontal_flip", "configuration": {"p": 0.5}},
    {"name": "rand_augment", "configuration": {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 11,
                                               "magnitude_std": 0.5, "p": 0.5, "fill": [124, 116, 104]}},
    {"name": "random_erasing", "configuration": {"p": 0.5, "value": "random"}},
]
MIX = {"name": "mix", "configuration": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5}}
RENDER = {"size": None, "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.3], "channels": None}
MIXED = {"name": "mixed", "ops": [*BASE_OPS, MIX], "render": RENDER}

# Pinned: a change to a preset, to the canonical JSON or to the recipe format changes these.
NEW_PRESET_HASHES = {
    "imagenet-randaug": "sha256:67121200b8428",
    "imagenet-trivial": "sha256:d32fbe25b01c7",
    "cifar-autoaugment": "sha256:a3d4cf6e0473f",
}


@pytest.fixture(scope="module")
def synth():
    return open_data(SYNTH)


def _mix_only(**config) -> Recipe:
    return Recipe.from_dict({"name": "m", "ops": [{"name": "mix", "configuration": config}], "render": RENDER})


# --------------------------------------------------------------------------- timm's semantics


def _timm_reference(seed: int, sample: int, view: int, n: int, size: tuple[int, int], config: dict,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, float, tuple[int, int, int, int]]:
    """(mode, partner, λ, (top, left, height, width)) of a mix-only recipe, drawn independently.

    The draws are this module's reading of docs/data-and-views.md ("Mixing"); the box and the corrected
    λ come from timm's own ``cutmix_bbox_and_lam``, its ``np.random.randint`` fed from the same generator.
    """
    import timm.data.mixup as timm_mixup

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, sample, view])))
    if not rng.random() < config["prob"]:
        return 0, sample, 1.0, (0, 0, 0, 0)
    mixup_alpha = config["mixup_alpha"]
    cutmix_alpha = 1.0 if config.get("cutmix_minmax") else config["cutmix_alpha"]
    if mixup_alpha > 0 and cutmix_alpha > 0:
        cutmix = rng.random() < config["switch_prob"]
    else:
        cutmix = cutmix_alpha > 0
    lam = rng.beta(cutmix_alpha, cutmix_alpha) if cutmix else rng.beta(mixup_alpha, mixup_alpha)
    partner = int(rng.integers(0, n - 1))
    partner += partner >= sample
    if not cutmix:
        return 1, partner, float(lam), (0, 0, 0, 0)
    monkeypatch.setattr(timm_mixup.np.random, "randint", lambda lo, hi, size=None: int(rng.integers(lo, hi)))
    (yl, yh, xl, xh), lam = timm_mixup.cutmix_bbox_and_lam((3, *size), lam, ratio_minmax=config.get("cutmix_minmax"),
                                                           correct_lam=True)
    monkeypatch.undo()
    return 2, partner, float(lam), (int(yl), int(xl), int(yh - yl), int(xh - xl))


@pytest.mark.parametrize("config", [
    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 0.7, "switch_prob": 0.5},
    {"mixup_alpha": 0.2, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.5},
    {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5},
    {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "cutmix_minmax": [0.2, 0.8], "prob": 1.0, "switch_prob": 0.5},
])
def test_lambda_mode_and_box_follow_timm(config, monkeypatch):
    pytest.importorskip("timm")
    recipe = _mix_only(**config)
    size, n = (20, 24), 50
    names = recipe.param_names()
    modes = []
    for sample in range(0, 50, 7):
        for view in range(12):
            p = dict(zip(names, sample_params(recipe, 3, sample, view, size, _Sizes(n, size)).tolist()))
            mode, partner, lam, box = _timm_reference(3, sample, view, n, size, config, monkeypatch)
            modes.append(mode)
            assert p["0.mix.mode"] == mode and p["0.mix.mix_partner"] == partner, (sample, view)
            assert abs(p["0.mix.lam"] / LAM_SCALE - lam) <= 0.5 / LAM_SCALE, (sample, view)
            assert (p["0.mix.top"], p["0.mix.left"], p["0.mix.height"], p["0.mix.width"]) == box
            if mode == 2:  # the corrected λ is the box's complement, to the recorded resolution
                assert p["0.mix.lam"] == round(LAM_SCALE * (1 - box[2] * box[3] / (size[0] * size[1])))
    if config["prob"] < 1:
        assert 0 in modes and 1 in modes and 2 in modes
    else:
        assert 0 not in modes


class _Sizes:
    """A stand-in data source for drawing: ``n`` samples of one size."""

    def __init__(self, n: int, size: tuple[int, int]) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def image_size(self, i: int) -> tuple[int, int]:
        return self.size


def test_bad_mix_recipes_are_one_line():
    with pytest.raises(RecipeError, match="mix must be the recipe's last op"):
        Recipe.from_dict({"name": "r", "ops": [MIX, {"name": "horizontal_flip"}]})
    with pytest.raises(RecipeError, match="both 0"):
        _mix_only(mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(RecipeError, match="evaluation must not be random"):
        Recipe.from_dict({"name": "r", "ops": [], "eval": [MIX]})
    with pytest.raises(RecipeError, match="cutmix_minmax"):
        _mix_only(cutmix_minmax=[0.5, 0.2])


# --------------------------------------------------------------------------- partner and pixels


def test_partner_is_another_sample_and_a_pure_function_of_seed_sample_view(synth):
    recipe = Recipe.from_dict(MIXED)
    names = recipe.param_names()
    col = names.index("4.mix.mix_partner")
    partner_cols = [i for i, n in enumerate(names) if n.startswith("4.mix.partner.")]
    ds = ViewDataset(synth, recipe, 9)
    rows = np.stack([ds[(i, v)]["params"].numpy() for i in range(len(synth)) for v in range(3)])
    samples = np.repeat(np.arange(len(synth)), 3)
    assert np.all(rows[:, col] != samples) and rows[:, col].min() >= 0 and rows[:, col].max() < len(synth)
    assert len(set(rows[:, col].tolist())) > len(synth) // 2  # spread over the data, not a fixed pairing
    # The partner's view was drawn from its own stream, with the partner's image size.
    for row, (i, v) in zip(rows[:5], [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        base = Recipe.from_dict({"name": "b", "ops": BASE_OPS, "render": RENDER})
        rng = partner_generator(9, i, v)
        expected = []
        size = synth.image_size(int(row[col]))
        for op in base._compiled:
            expected += op.draw(rng, size)
            size = op.out_size(size)
        assert rows[3 * i + v, partner_cols].tolist() == expected
    # A fresh dataset, other keys first: the same params.
    again = ViewDataset(open_data(SYNTH), Recipe.from_dict(MIXED), 9)
    assert np.array_equal(again[(7, 2)]["params"].numpy(), rows[7 * 3 + 2])


def test_mixed_pixels_are_the_blend_or_the_pasted_box_of_the_two_recorded_views(synth):
    recipe = Recipe.from_dict(MIXED)
    # The same render (erasing fills in its units); the views compared in [0, 1], before normalising.
    base = Recipe.from_dict({"name": "b", "ops": BASE_OPS, "render": RENDER})
    names = recipe.param_names()
    k = names.index("4.mix.mode")
    unit = Render()
    ds = ViewDataset(synth, recipe, 9, [unit])
    own_ds = ViewDataset(synth, base, 0, [unit])
    seen = set()
    for i in range(12):
        item = ds[(i, 1)]
        p = item["params"].numpy()
        mode, partner, lam_q, top, left, h, w = p[k : k + 7].tolist()
        own = own_ds[(i, 1, p[:k])]["images"][0]
        other = own_ds[(partner, 1, p[k + 7 :])]["images"][0]
        lam = torch.tensor(lam_q / LAM_SCALE)
        if mode == 1:
            expected = own * lam + other * (1 - lam)
        else:
            expected = own.clone()
            expected[:, top : top + h, left : left + w] = other[:, top : top + h, left : left + w]
        assert torch.equal(item["images"][0], expected), (i, mode)
        assert item["partner_label"] == int(synth.labels[partner]) and float(item["lam"]) == lam_q / LAM_SCALE
        seen.add(mode)
    assert seen == {1, 2}


def test_recorded_mix_params_replay_and_damaged_ones_are_refused(synth):
    recipe = Recipe.from_dict(MIXED)
    ds = ViewDataset(synth, recipe, 9)
    drawn = ds[(3, 0)]
    replayed = ViewDataset(synth, recipe, 12345)[(3, 0, drawn["params"].numpy())]
    assert torch.equal(drawn["images"][0], replayed["images"][0])
    names = recipe.param_names()
    bad = drawn["params"].numpy().copy()
    bad[names.index("4.mix.mode")] = 5
    with pytest.raises(RecipeError, match="recorded mode=5"):
        ds[(3, 0, bad)]
    bad = drawn["params"].numpy().copy()
    bad[names.index("4.mix.mix_partner")] = 10_000
    with pytest.raises(IndexError, match="mix_partner 10000"):
        ds[(3, 0, bad)]


def test_a_single_sample_mixes_with_itself():
    one = open_data("synthetic:samples=1,classes=1,size=20,channels=3,seed=5")
    recipe = Recipe.from_dict(MIXED)
    p = ViewDataset(one, recipe, 9)[(0, 0)]["params"].numpy()
    assert p[recipe.param_names().index("4.mix.mix_partner")] == 0


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", sorted(NEW_PRESET_HASHES))
def test_new_presets_load_and_are_pinned(name):
    recipe = load_recipe(name)
    assert recipe.hash().startswith(NEW_PRESET_HASHES[name])
    assert (recipe.mix is not None) == name.startswith("imagenet")
    if name.startswith("imagenet"):
        assert [op["name"] for op in recipe.eval_ops] == ["resize", "center_crop"]


def test_preset_views_render(synth):
    big = open_data("synthetic:samples=6,classes=2,size=40,channels=3,seed=1")
    for name in ("imagenet-randaug", "imagenet-trivial"):
        item = ViewDataset(big, load_recipe(name), 0)[(2, 0)]
        assert item["images"][0].shape == (3, 224, 224) and "lam" in item
    item = ViewDataset(open_data("synthetic:samples=6,classes=2,size=32,channels=3,seed=1"),
                       load_recipe("cifar-autoaugment"), 0)[(1, 0)]
    assert item["images"][0].shape == (3, 32, 32) and "lam" not in item


# --------------------------------------------------------------------------- through the CLI

DATA = "synthetic:samples=160,classes=4,size=20,channels=3,seed=5"
VAL = "synthetic:samples=32,classes=4,size=20,channels=3,seed=5,split=test"


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "mixed.json"
    path.write_text(json.dumps(MIXED))
    return path


def _precompute(out: Path, recipe: Path, *extra: str) -> Path:
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                         "--seed", "4", "--recipe", recipe, "--out", out, "--chunk-rows", "128",
                         "--encoding", "float32", *extra)
    assert code == 0, text
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory, recipe_file) -> Path:
    return _precompute(tmp_path_factory.mktemp("s") / "a.zarr", recipe_file, "--batch-size", "16")


def _plain_params(g: zarr.Group, *index: int) -> tuple[list[str], np.ndarray]:
    """``views/params[index]`` decoded with plain zarr as docs/store-format.md says: the params' names and
    their values, a wide param's from its ``.hi``/``.lo`` int16 halves (format 2)."""
    columns = list(g["views/params"].attrs["names"])
    stored = np.asarray(g["views/params"][index] if index else g["views/params"][:]).astype(np.int64)
    names = [c for c in columns if not c.endswith(".lo")]
    names = [c[: -len(".hi")] if c.endswith(".hi") else c for c in names]
    values = [stored[..., columns.index(n)] if n in columns else
              stored[..., columns.index(n + ".hi")] * 65536 + (stored[..., columns.index(n + ".lo")] & 0xFFFF)
              for n in names]
    return names, np.stack(values, axis=-1)


def test_rows_do_not_depend_on_batch_size_or_workers_partners_are_valid_and_replay(tmp_path, recipe_file, store):
    # --batch-size rounds to the teacher's micro-batch (64): 16 scores 64-row batches, 128 whole chunks.
    b = _precompute(tmp_path / "b.zarr", recipe_file, "--batch-size", "128", "--workers", "2")
    ga, gb = zarr.open_group(store, mode="r"), zarr.open_group(b, mode="r")
    assert np.array_equal(ga["views/params"][:], gb["views/params"][:])
    la, lb = ga["teachers/tiny/logits"][:], gb["teachers/tiny/logits"][:]
    assert la.tobytes() == lb.tobytes()
    names, params = _plain_params(ga)
    partners = params[:, :, names.index("4.mix.mix_partner")]
    samples = np.arange(partners.shape[1])[None, :]
    valid = (partners != samples) & (partners >= 0) & (partners < partners.shape[1])
    assert valid.mean() >= 0.9
    code, text = run_cli("verify", store, "--replay", "12", "--data", DATA)
    assert code == 0 and "bitwise equal" in text, text


def test_plain_zarr_reader_decodes_the_mix_as_documented(store):
    """docs/store-format.md: partner, λ and mode from names alone; λ builds the labels the losses get."""
    g = zarr.open_group(store, mode="r")
    names, params = _plain_params(g, 1)  # view 1, (N, P)
    labels = g["labels"][:]
    assert g["views/params"].dtype == np.int16 and "4.mix.mix_partner.hi" in g["views/params"].attrs["names"]
    mode = params[:, names.index("4.mix.mode")]
    partner = params[:, names.index("4.mix.mix_partner")]
    lam = params[:, names.index("4.mix.lam")].astype(np.float32) / 16384
    assert set(mode.tolist()) == {1, 2} and (lam > 0).all() and (lam <= 1).all()
    box = params[:, [names.index(f"4.mix.{k}") for k in ("top", "left", "height", "width")]]
    cut = mode == 2
    area = box[cut, 2] * box[cut, 3] / (16 * 16)
    assert np.abs(lam[cut] - (1 - area)).max() <= 0.5 / 16384
    recipe = Recipe.from_dict(g.attrs["kdcache"]["views"]["recipe"])
    assert names == recipe.param_names()
    own, other, weights = mixed_labels(recipe, params, labels, np.arange(len(labels)))
    assert np.array_equal(other, labels[partner]) and np.array_equal(weights, lam)


def test_api_batches_carry_mixed_labels_from_the_record(store):
    import kdcache

    cached = kdcache.open_store(store)
    b = next(iter(cached.batches(1, batch_size=32, seed=0, loss="kd")))
    assert isinstance(b.labels, losses.MixedLabels)
    g = zarr.open_group(store, mode="r")
    names, params = _plain_params(g)
    labels = g["labels"][:]
    rows = params[b.views.numpy(), b.samples.numpy()]
    assert torch.equal(b.labels.label, torch.from_numpy(labels[b.samples.numpy()]))
    assert torch.equal(b.labels.partner, torch.from_numpy(labels[rows[:, names.index("4.mix.mix_partner")]]))
    assert torch.equal(b.labels.lam, torch.from_numpy(rows[:, names.index("4.mix.lam")] / np.float32(16384)))


def test_info_shows_the_recipe_and_the_recorded_bytes_per_view(store):
    code, text = run_cli("info", store)
    assert code == 0, text
    assert "recipe     random_resized_crop" in text and "mix mixup_alpha=0.8" in text
    count = len(Recipe.from_dict(MIXED).param_names())
    line = next(x for x in text.splitlines() if x.startswith("params"))
    arr = zarr.open_group(store, mode="r")["views/params"]
    columns = len(arr.attrs["names"])
    assert arr.dtype == np.int16 and columns > count  # wide params in two int16 halves (format 2)
    assert f"{count} recorded per view ({columns} int16 columns)" in line and f"{columns * 2} B per view" in line


def test_cached_distill_equals_online_distill_bitwise(tmp_path, store, recipe_file):
    def read(run: Path) -> list[float]:
        return [json.loads(x)["loss"] for x in (run / "steps.jsonl").read_text().splitlines()]

    common = ["distill", "--data", DATA, "--val-data", VAL, "--student", "import:tests.helpers:tiny", "--loss", "kd",
              "--epochs", "1", "--batch-size", "32", "--seed", "0", "--lr", "0.1"]
    cached, online = tmp_path / "cached", tmp_path / "online"
    code, text = run_cli(*common, "--out", cached, store)
    assert code == 0, text
    code, text = run_cli(*common, "--out", online, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                         "--recipe", recipe_file, "--view-seed", "4")
    assert code == 0, text
    a, b = read(cached), read(online)
    assert len(a) == len(b) >= 5 and a == b
    wa = torch.load(cached / "final.pt", weights_only=True)
    wb = torch.load(online / "final.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # a real 2-process torchrun job
def test_two_torchrun_ranks_write_the_single_process_store_bitwise(tmp_path, recipe_file, store):
    from tests.dist_helpers import torchrun

    out = tmp_path / "two.zarr"
    code, text = torchrun(2, "precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                          "--seed", "4", "--recipe", recipe_file, "--out", out, "--chunk-rows", "128",
                          "--encoding", "float32", "--batch-size", "64")
    assert code == 0, text
    ga, gb = zarr.open_group(store, mode="r"), zarr.open_group(out, mode="r")
    assert np.array_equal(ga["views/params"][:], gb["views/params"][:])
    assert ga["teachers/tiny/logits"][:].tobytes() == gb["teachers/tiny/logits"][:].tobytes()


# --------------------------------------------------------------------------- recorded bytes per view

# docs/data-and-views.md, "Recorded bytes per view": integers per view, bytes as int32 and packed as int16.
PRESET_BYTES = {"imagenet-randaug": (41, 164, 88), "imagenet-trivial": (33, 132, 68), "cifar-autoaugment": (14, 56, 28)}


@pytest.mark.parametrize("name", sorted(PRESET_BYTES))
def test_preset_bytes_per_view_are_as_documented_and_pack_losslessly(name):
    from kdcache.views.packing import pack_params, packed_names, unpack_params

    recipe = load_recipe(name)
    count, int32_bytes, int16_bytes = PRESET_BYTES[name]
    assert len(recipe.param_names()) == count and 4 * count == int32_bytes
    assert 2 * len(packed_names(recipe)) == int16_bytes <= 104  # ml-dr's upper per-view cost
    size = 40 if name.startswith("imagenet") else 32
    source = _Sizes(50000, (size, size))  # partners above 32767 take both int16 halves
    rows = np.stack([sample_params(recipe, 7, i, v, (size, size), source) for i in (0, 1, 40000, 49999)
                     for v in range(6)])
    packed = pack_params(recipe, rows)
    assert packed.dtype == np.int16 and packed.shape[1] == len(packed_names(recipe))
    assert np.array_equal(unpack_params(recipe, packed), rows)
    with pytest.raises(RecipeError, match="do not fit int16"):
        bad = rows.copy()
        bad[0, 0] = 40000
        pack_params(recipe, bad)


def test_stats_on_a_mixing_store_computes_what_it_can_and_says_what_it_left_out(tmp_path, store):
    import shutil

    copy = Path(shutil.copytree(store, tmp_path / "s.zarr"))
    code, text = run_cli("stats", copy)
    assert code == 0 and "Traceback" not in text, text
    assert "warning: isats_tau is not computed on a store whose recipe mixes views" in text, text
    stats = Store.open(copy).card().stats
    assert "class_table" in stats and "isats_tau" not in stats, stats
