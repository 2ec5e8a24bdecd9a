"""train-teacher on a recipe that mixes views (the ``mix`` op): each step trains on timm's mixed target
``lam·y + (1 − lam)·partner`` (smoothed with ``--label-smoothing``), not on the view's own label; RegT,
defined on one label per image, is refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdcache import losses
from kdcache.data import open_data
from kdcache.models import load_checkpoint
from kdcache.teacher.train import TeacherConfig, _TeacherTask
from kdcache.views import resolve_recipe
from tests.cli_helpers import assert_one_line_error, run_cli

DATA = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=8,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
MIX = {"format": 1, "name": "mix-test",
       "ops": [{"name": "mix", "configuration": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0,
                                                 "switch_prob": 0.5}}],
       "render": {"size": None, "mean": [0.5], "std": [0.25], "channels": None}}


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(MIX))
    return path


def _step(recipe_file: Path, tmp_path: Path, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One training step's loss on a batch of mixed views, with the logits and the batch it saw."""
    cfg = TeacherConfig(data=DATA, val_data=VAL, model=TINY, epochs=1, out=tmp_path / "t.pt",
                        recipe=str(recipe_file), label_smoothing=label_smoothing)
    source = open_data(DATA)
    task = _TeacherTask(cfg, source, resolve_recipe(cfg.recipe, source), torch.device("cpu"))
    batch = torch.utils.data.default_collate([task.dataset[(i, 0)] for i in range(16)])
    loss = task.step(batch, None, epoch=1)["loss"]
    with torch.no_grad():
        logits = task.model(batch["images"][0])
    return loss.detach(), logits, batch


def test_plain_ce_trains_on_the_mixed_target(recipe_file: Path, tmp_path: Path) -> None:
    loss, logits, batch = _step(recipe_file, tmp_path, 0.0)
    assert bool((batch["lam"] < 1).any()) and bool((batch["partner_label"] != batch["label"]).any())
    mixed = losses.MixedLabels(batch["label"], batch["partner_label"], batch["lam"])
    assert torch.equal(loss, losses.mixed_cross_entropy(logits, mixed))
    assert not torch.allclose(loss, F.cross_entropy(logits, batch["label"]))  # the view's own label only


def test_label_smoothing_smooths_the_mixed_target_as_timm(recipe_file: Path, tmp_path: Path) -> None:
    eps = 0.1
    loss, logits, batch = _step(recipe_file, tmp_path, eps)
    mixed = losses.MixedLabels(batch["label"], batch["partner_label"], batch["lam"])
    # timm's mixup_target(smoothing=eps): lam·smooth(y) + (1 − lam)·smooth(partner), smooth = (1 − eps)·onehot + eps/C
    target = (1 - eps) * mixed.soft_target(logits.shape[1]) + eps / logits.shape[1]
    expected = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(logits, batch["label"], label_smoothing=eps))


def test_a_mixed_recipe_trains_a_teacher_end_to_end(recipe_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.pt"
    code, text = run_cli("train-teacher", "--model", TINY, "--data", DATA, "--val-data", VAL, "--recipe", recipe_file,
                         "--epochs", 1, "--batch-size", 16, "--out", out)
    assert code == 0, text
    assert load_checkpoint(out)["card"]["trained"]["recipe"] == "mix-test"


def test_regt_on_a_mixed_recipe_is_refused_before_anything_is_written(recipe_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "t.pt"
    code, text = run_cli("train-teacher", "--model", TINY, "--data", DATA, "--val-data", VAL, "--recipe", recipe_file,
                         "--regt", 0.01, "--epochs", 1, "--out", out)
    assert_one_line_error(code, text, "--regt", "mix-test", "mix", exit_code=2)
    assert not (tmp_path / "out").exists()
