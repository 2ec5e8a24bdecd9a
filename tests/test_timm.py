"""`timm:NAME` model specs: timm's own num_classes/in_chans, kdcache's weights policy, one-line errors.

timm is an optional extra (`pip install 'kdcache[timm]'`, part of `dev`); the
tests that build a timm model skip without it, the missing-install message is
tested either way. `test_resnet` is timm's own tiny test network (~0.4M
parameters), so every build here takes well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import zarr
from torch import nn

from kdcache.errors import ModelError, SpecError
from kdcache.models import build_model, check_output_width, list_kinds, load_checkpoint, save_checkpoint
from tests.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
SPEC = "timm:test_resnet"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")

# timm is in the dev extra, so the test suite has it: a missing timm fails these tests instead of skipping
# them (a skip would let the whole kind go untested).


def test_the_timm_kind_builds_timm_s_own_network() -> None:
    assert importlib.util.find_spec("timm") is not None, "timm is a dev dependency: pip install -e '.[dev]'"
    assert "timm" in list_kinds()
    model, card = build_model(SPEC, 10, in_channels=1, random_init=True)
    assert type(model).__module__.startswith("timm.") and card["spec"] == SPEC


def test_num_classes_and_in_channels_reach_timm() -> None:
    model, card = build_model(SPEC, 10, in_channels=1, random_init=True)
    assert not model.training
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    check_output_width(model, in_channels=1, image_size=28, num_classes=10)
    assert card == {
        "spec": SPEC, "weights": None, "weights_sha256": None, "program_sha256": None,
        "state_sha256": None, "random_init": True, "num_classes": 10, "in_channels": 1, "trained": None,
    }  # fmt: skip


def test_never_pretrained(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    seen: list[dict[str, object]] = []
    create = timm.create_model

    def spy(name: str, **kwargs: object) -> nn.Module:
        seen.append(kwargs)
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    build_model(SPEC, 7, in_channels=3, random_init=True)
    assert seen == [{"pretrained": False, "num_classes": 7, "in_chans": 3}]


def test_refused_without_weights_like_any_architecture() -> None:
    with pytest.raises(ModelError,
                       match=r"teacher timm:test_resnet has no --weights: pass --weights CKPT, or --random-init"):
        build_model(SPEC, 10, in_channels=1)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model, card = build_model(SPEC, 10, in_channels=1, random_init=True)
    ckpt = tmp_path / "t.pt"
    save_checkpoint(ckpt, model, card)
    loaded, card2 = build_model(SPEC, 10, in_channels=1, weights=ckpt)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert card2["weights"] == str(ckpt.resolve()) and card2["weights_sha256"]
    assert card2["trained"]["spec"] == SPEC and card2["random_init"] is False
    # Other classes: one line naming the shapes and what the checkpoint was saved from.
    with pytest.raises(ModelError,
                       match=r"do not fit timm:test_resnet with num_classes=5.*saved from timm:test_resnet"):
        build_model(SPEC, 5, in_channels=1, weights=ckpt)


def test_unknown_name_is_one_line_saying_how_to_find_names() -> None:
    with pytest.raises(SpecError) as info:
        build_model("timm:resnet17", 10, random_init=True)
    message = str(info.value)
    assert "\n" not in message
    assert "unknown timm model 'resnet17'" in message and "resnet18" in message
    assert "timm.list_models('resnet*')" in message


def test_a_hub_name_is_refused_nothing_is_downloaded() -> None:
    with pytest.raises(SpecError, match="not a place to load from.*nothing is downloaded"):
        build_model("timm:hf-hub:timm/resnet18.a1_in1k", 10, random_init=True)


def test_a_bare_timm_name_suggests_the_spec() -> None:
    with pytest.raises(SpecError, match="did you mean 'timm:resnet10t'"):
        build_model("resnet10t", 10)


def test_missing_timm_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails as if not installed
    with pytest.raises(ModelError) as info:
        build_model(SPEC, 10, random_init=True)
    assert str(info.value) == (
        "timm:test_resnet needs the optional package timm, which is not installed: pip install 'kdcache[timm]'"
    )
    data = "synthetic:samples=16,classes=2,size=8,channels=1"
    code, text = run_cli("train-teacher", "--data", data, "--val-data", data, "--model", SPEC, "--epochs", 1,
                         "--out", tmp_path / "t.pt")
    assert_one_line_error(code, text, "pip install 'kdcache[timm]'")


def test_cli_trains_a_timm_teacher_and_precomputes_with_it(tmp_path: Path) -> None:
    data = "synthetic:samples=64,classes=4,size=12,channels=1,seed=3"
    val = "synthetic:samples=32,classes=4,size=12,channels=1,seed=3,split=test"
    teacher = tmp_path / "teacher.pt"
    code, text = run_cli("train-teacher", "--data", data, "--val-data", val, "--model", SPEC, "--epochs", 1,
                         "--batch-size", 32, "--recipe", RECIPE, "--out", teacher)
    assert code == 0, text
    card = load_checkpoint(teacher)["card"]
    assert card["spec"] == SPEC and card["num_classes"] == 4 and card["in_channels"] == 1

    # A teacher without --weights is refused by the CLI as well.
    code, text = run_cli("precompute", "--data", data, "--teacher", SPEC, "--views", 1, "--recipe", RECIPE,
                         "--out", tmp_path / "refused.zarr")
    assert_one_line_error(code, text, "has no --weights")

    store = tmp_path / "store.zarr"
    code, text = run_cli("precompute", "--data", data, "--teacher", SPEC, "--weights", teacher, "--views", 2,
                         "--seed", 7, "--recipe", RECIPE, "--chunk-rows", 64, "--out", store)
    assert code == 0, text
    entry = zarr.open_group(store, mode="r").attrs["kdcache"]["teachers"]["test_resnet"]
    assert entry["status"] == "complete" and entry["spec"] == SPEC and entry["random_init"] is False
    assert entry["weights"] == str(teacher.resolve()) and entry["trained"]["epochs"] == 1
    # The timm teacher replays bitwise from the recorded view parameters.
    code, text = run_cli("verify", store, "--replay", 16, "--data", data)
    assert code == 0, text
    assert "bitwise equal" in text and "16" in text
    # ... and a replay with other weights under the recorded path is caught, not passed.
    good = teacher.read_bytes()
    other, other_card = build_model(SPEC, 4, in_channels=1, random_init=True)
    save_checkpoint(teacher, other, other_card)
    code, text = run_cli("verify", store, "--replay", 16, "--data", data)
    assert code != 0, text
    teacher.write_bytes(good)

    # A timm student distils from the store through the CLI: built for the store's 4 classes
    # and the data's 1 channel, trained (its weights move), with distill's run files.
    run = tmp_path / "run"
    code, text = run_cli("distill", store, "--data", data, "--val-data", val, "--student", "timm:test_efficientnet",
                         "--loss", "kd", "--epochs", 1, "--batch-size", 32, "--out", run)
    assert code == 0, text
    assert {"run.json", "metrics.jsonl", "final.pt", "summary.json"} <= {p.name for p in run.iterdir()}
    recorded = json.loads((run / "run.json").read_text())["student"]
    assert (recorded["spec"], recorded["num_classes"], recorded["in_channels"]) == ("timm:test_efficientnet", 4, 1)
    # final.pt loads into a timm model of that shape; the stem takes 1 channel, the head gives 4.
    student, _ = build_model("timm:test_efficientnet", 4, in_channels=1, random_init=True)
    student.load_state_dict(torch.load(run / "final.pt", weights_only=True))
    stem = next(m for m in student.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1 and student.get_classifier().out_features == 4
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and math.isfinite(metrics[0]["train_loss"]) and 0 <= metrics[0]["val_top1"] <= 1


def test_a_fixed_size_timm_model_fails_the_shape_check_in_one_line(tmp_path: Path) -> None:
    # timm's test_vit takes 160x160 in 16-pixel patches: 28x28 images are refused before any
    # training, by the CLI too, with one line naming the input shape.
    data = "synthetic:samples=16,classes=2,size=28,channels=1"
    code, text = run_cli("train-teacher", "--data", data, "--val-data", data, "--model", "timm:test_vit",
                         "--epochs", 1, "--out", tmp_path / "t.pt")
    assert_one_line_error(code, text, "failed on a batch of shape", exit_code=2)  # a usage error
    assert "28, 28)" in text and not (tmp_path / "t.pt").exists()


def test_a_fixed_size_timm_student_fails_before_training(tmp_path: Path) -> None:
    data = "synthetic:samples=16,classes=2,size=28,channels=1"
    teacher, card = build_model("kdcache:tiny_cnn", 2, in_channels=1, random_init=True)
    save_checkpoint(tmp_path / "t.pt", teacher, card)
    code, text = run_cli("distill", "--teacher", "kdcache:tiny_cnn", "--weights", tmp_path / "t.pt", "--views", 1,
                         "--data", data, "--val-data", data, "--student", "timm:test_vit", "--epochs", 1,
                         "--out", tmp_path / "run")
    assert_one_line_error(code, text, "student failed on a batch of shape", exit_code=2)
