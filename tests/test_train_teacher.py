"""Training on real image folders: evaluation follows the recipe's geometry, at the size trained at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdcache.models import load_checkpoint
from tests.cli_helpers import run_cli


def _image(h: int, w: int, k: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (torch.stack([x, y, (x + y + k / 4) % 1]) * 255).to(torch.uint8)


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
def test_mixed_size_imagefolder_trains_and_evaluates_at_the_training_size(tmp_path: Path) -> None:
    from torchvision.io import write_png

    root = tmp_path / "images"
    for k, (h, w) in enumerate([(40, 60), (90, 50), (33, 33), (120, 80), (64, 48), (50, 70)]):
        folder = root / f"c{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        write_png(_image(h, w, k), str(folder / f"{k}.png"))
    data = f"imagefolder:{root}"
    teacher = tmp_path / "t.pt"
    # No --recipe: an image folder takes the imagenet recipe (random resized crop, then for
    # evaluation resize and centre crop to the same 224x224), printed.
    code, text = run_cli("train-teacher", "--data", data, "--val-data", data, "--model", "import:tests.helpers:tiny",
                         "--epochs", 1, "--batch-size", 3, "--out", teacher)
    assert code == 0, text
    assert "recipe: imagenet" in text
    assert load_checkpoint(teacher)["card"]["trained"]["recipe"] == "imagenet"
    out = tmp_path / "run"
    code, text = run_cli("distill", "--teacher", "import:tests.helpers:tiny", "--weights", teacher, "--views", 1,
                         "--data", data, "--val-data", data, "--student", "import:tests.helpers:tiny",
                         "--epochs", 1, "--batch-size", 3, "--out", out)
    assert code == 0, text
    row = json.loads((out / "metrics.jsonl").read_text())
    assert 0.0 <= row["val_top1"] <= 1.0
